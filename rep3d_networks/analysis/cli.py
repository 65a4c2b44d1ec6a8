"""Commands of ``python -m rep3d_networks.analysis`` (dispatched with ``fire``).

Examples::

    python -m rep3d_networks.analysis lr-field --output_dir out/lr_field
    python -m rep3d_networks.analysis erf --output_dir out/erf_fresh
    python -m rep3d_networks.analysis erf --output_dir out/erf_trained \\
        --checkpoint out/convergence/checkpoints/lrbm_seed0.pt --config out/convergence/model_config.json
    python -m rep3d_networks.analysis erf --output_dir out/erf_bundle --config bundles/amos_ct/configs/train.json \\
        --checkpoint bundles/amos_ct/models/model.pt
    python -m rep3d_networks.analysis convergence --output_dir out/convergence
"""

from pathlib import Path
from typing import Callable, Dict, Optional

import torch

from rep3d_networks.analysis.convergence import ConvergenceSettings, run_convergence
from rep3d_networks.analysis.convergence_data import default_shared_data, write_dataset
from rep3d_networks.analysis.convergence_report import write_convergence_report
from rep3d_networks.analysis.erf import ct_inputs, effective_receptive_field, erf_summary, random_inputs
from rep3d_networks.analysis.erf_report import write_erf_report
from rep3d_networks.analysis.lr_field import OPTIMIZERS, VARIANTS, RegressionTask, run_lr_field
from rep3d_networks.analysis.lr_field_report import write_lr_field_report
from rep3d_networks.analysis.masks import lrbm_masks
from rep3d_networks.analysis.model_loading import build_model, model_kwargs
from rep3d_networks.analysis.reports import write_json


def as_tuple(value, cast: Callable = str) -> tuple:
    """``fire`` gives ``"a,b"`` (str), ``(1, 2)`` (tuple) or ``3`` (scalar) for list options; all become a tuple."""
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    elif not isinstance(value, (list, tuple)):
        value = [value]
    return tuple(cast(v.strip() if isinstance(v, str) else v) for v in value)


def as_crop(value) -> tuple:
    """An int (cube) or three ints."""
    crop = as_tuple(value, int)
    crop = crop * 3 if len(crop) == 1 else crop
    if len(crop) != 3 or min(crop) < 1:
        raise ValueError(f"crop must be one or three positive ints, got {value!r}")
    return crop


def use_threads(num_threads: int) -> None:
    """``torch.set_num_threads`` unless 0. One thread is the default: on shared CPUs two threads stall (see ``ops``)."""
    if num_threads > 0:
        torch.set_num_threads(int(num_threads))


def announce(paths: Dict[str, Path]) -> Dict[str, str]:
    for name, path in paths.items():
        print(f"[analysis] {name}: {path}", flush=True)
    return {name: str(path) for name, path in paths.items()}


def lr_field(
    output_dir: str,
    steps: int = 100,
    channels: int = 8,
    output_size: int = 16,
    batch_size: int = 2,
    kernel_size: int = 21,
    target: str = "offset",
    seed: int = 0,
    variants=VARIANTS,
    optimizers=OPTIMIZERS,
    sgd_lrs=(2e-4, 6e-4),
    adamw_lrs=(2e-4, 3e-4),
    weight_decay: float = 0.08,
    sgd_momentum: float = 0.0,
    generator_norm_affine="channel",
    num_threads: int = 1,
) -> Dict[str, str]:
    """Per-tap update magnitude |ΔW_eff| of one depthwise K³ layer per re-parameterization and optimizer.

    Prints and writes the centre (distance ≤ 1) / periphery (distance ≥ 7) ratios at steps 1, steps/10 and
    steps (lr_field.md/.json) and the radial profiles (lr_field_radial.png); for lrbm also the mask drift from
    its initial value per generator norm option (lr_field_mask_drift.png).

    Args:
        output_dir: Folder for the results.
        steps: Optimizer steps per run.
        channels: Depthwise channels.
        output_size: Edge of the valid output (inputs are output_size + kernel_size - 1).
        batch_size: Random inputs per step.
        kernel_size: Large kernel size.
        target: offset (W* = W_eff(0) + D, same initial residual for all variants) or independent.
        seed: Seed of kernels, target and inputs.
        variants: Comma-separated subset of vanilla,csla,fixed,lrbm.
        optimizers: Comma-separated subset of sgd,adamw.
        sgd_lrs: SGD (large, small-branch) learning rates; Table 8 best: 2e-4,6e-4.
        adamw_lrs: AdamW (large, small-branch) learning rates; Table 8 best: 2e-4,3e-4.
        weight_decay: AdamW weight decay.
        sgd_momentum: SGD momentum.
        generator_norm_affine: Comma-separated LRBM generator norm options (channel,tap,none): one lrbm run each.
        num_threads: torch threads (0: torch's default).
    """
    use_threads(num_threads)
    task = RegressionTask(kernel_size, channels, output_size, batch_size, target, seed)
    lrs = {"sgd": as_tuple(sgd_lrs, float), "adamw": as_tuple(adamw_lrs, float)}
    norms = as_tuple(generator_norm_affine)
    results = run_lr_field(task, steps, as_tuple(variants), as_tuple(optimizers), lrs, weight_decay, sgd_momentum, norms)
    paths = write_lr_field_report(results, Path(output_dir))
    print(paths["markdown"].read_text())
    return announce(paths)


def erf(
    output_dir: str,
    checkpoint: Optional[str] = None,
    config: Optional[str] = None,
    folded: bool = False,
    in_channels: Optional[int] = None,
    out_channels: Optional[int] = None,
    feature_size: Optional[int] = None,
    hidden_size: Optional[int] = None,
    kernel_size: Optional[int] = None,
    depths=None,
    reparam: Optional[str] = None,
    generator_channels: Optional[str] = None,
    generator_layers: Optional[int] = None,
    generator_kernel_size: Optional[int] = None,
    generator_norm_affine: Optional[str] = None,
    inputs: str = "random",
    shared_data: Optional[str] = None,
    input_size: int = 64,
    num_inputs: int = 4,
    class_index: Optional[int] = None,
    seed: int = 0,
    device: str = "cpu",
    num_threads: int = 1,
) -> Dict[str, str]:
    """Effective receptive field of a Rep3D model and its LRBM masks (as the paper's Fig. 3).

    The model is the paper's Rep3D (1 → 16 classes, feature 48, hidden 768, kernel 21, lrbm) updated by
    --config (a bundle config's network_def, or a JSON of Rep3D arguments such as convergence's
    model_config.json), then by the explicit model options. Weights: --checkpoint (a state dict as bundle
    training saves it; folded ones are detected, only a 0.1 fixed-prior one needs --folded), else a fresh seeded init.

    Args:
        output_dir: Folder for erf.npy, erf_planes.png, lrbm_masks.png, erf.json, erf.md.
        checkpoint: Model state dict file (optional).
        config: Bundle config or model-argument JSON (optional).
        folded: The checkpoint is folded (only needed for reparam=fixed checkpoints of version 0.1).
        in_channels: Model option.
        out_channels: Model option.
        feature_size: Model option.
        hidden_size: Model option.
        kernel_size: Model option.
        depths: Model option, e.g. 2,2,2,2.
        reparam: Model option: lrbm, fixed, vanilla or csla.
        generator_channels: Model option: shared or depthwise.
        generator_layers: Model option.
        generator_kernel_size: Model option.
        generator_norm_affine: Model option: channel, tap (the 0.1 form) or none.
        inputs: random (U(0,1) volumes) or ct (random crops of the real CT in shared_data).
        shared_data: The shared/data folder (default ../shared/data beside the repository).
        input_size: Edge of the input cube (a multiple of 16).
        num_inputs: Number of inputs averaged.
        class_index: Output channel to differentiate (default: sum over all output channels).
        seed: Seed of the fresh model and of the inputs.
        device: cpu or cuda.
        num_threads: torch threads (0: torch's default).
    """
    use_threads(num_threads)
    kwargs = model_kwargs(
        config, in_channels=in_channels, out_channels=out_channels, feature_size=feature_size, hidden_size=hidden_size,
        kernel_size=kernel_size, depths=None if depths is None else as_tuple(depths, int), reparam=reparam,
        generator_channels=generator_channels, generator_layers=generator_layers, generator_kernel_size=generator_kernel_size,
        generator_norm_affine=generator_norm_affine,
    )
    model = build_model(kwargs, checkpoint, folded, seed)
    masks = lrbm_masks(model)
    if inputs == "random":
        volumes = random_inputs(input_size, num_inputs, seed)
        inputs_text = f"{num_inputs} random U(0, 1) volumes of {input_size}³"
    elif inputs == "ct":
        volumes = ct_inputs(str(shared_data or default_shared_data()), input_size, num_inputs, seed)
        inputs_text = f"{num_inputs} random {input_size}³ crops of the real CT (3 mm, window −175..250 HU → [0, 1])"
    else:
        raise ValueError(f"inputs must be 'random' or 'ct', got {inputs!r}")
    field = effective_receptive_field(model, volumes, class_index, device)
    weights = Path(checkpoint).name if checkpoint else f"fresh {kwargs['reparam']} init (seed {seed})"
    description = {
        "label": f"{weights}, {num_inputs} {inputs} inputs of {input_size}³",
        "model": kwargs,
        "weights": f"checkpoint {checkpoint}" if checkpoint else f"fresh init (seed {seed})",
        "inputs": inputs_text,
        "output": "sum over all output channels" if class_index is None else f"class {class_index}",
    }
    paths = write_erf_report(field, erf_summary(field), masks, description, Path(output_dir))
    print(paths["markdown"].read_text())
    return announce(paths)


def convergence(
    output_dir: str,
    variants=("vanilla", "fixed", "lrbm"),
    seeds=(0, 1, 2),
    iterations: int = 240,
    eval_at=None,
    crop=32,
    num_samples: int = 2,
    feature_size: int = 8,
    hidden_size: int = 32,
    kernel_size: int = 21,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.08,
    num_cases: int = 4,
    val_case: int = 2,
    shared_data: Optional[str] = None,
    phantom_size: int = 64,
    device: str = "cpu",
    num_threads: int = 1,
    save_checkpoints: bool = True,
) -> Dict[str, str]:
    """Tiny-scale Table 7: validation Dice of Rep3D variants at fixed iterations, several seeds each.

    Data: the real CT in shared_data cut into num_cases z-slabs by the totalseg data command (labels are
    TotalSegmentator predictions mapped to AMOS), or the phantom when the shared data is absent; slab
    val_case validates, the others train. Writes convergence.md/.json/.png, model_config.json and, with
    save_checkpoints, checkpoints/<variant>_seed<k>.pt (usable by the erf command).

    Args:
        output_dir: Folder for the results, the dataset (data/) and the checkpoints.
        variants: Comma-separated subset of vanilla,fixed,lrbm,csla.
        seeds: Comma-separated seeds.
        iterations: Training iterations per run.
        eval_at: Comma-separated iterations at which to validate (default: 1/6, 1/3, 2/3 and all of iterations, as Table 7's 10k/20k/40k/60k).
        crop: Training crop and sliding-window size: one int or three (multiples of 16).
        num_samples: Crops per iteration (the batch).
        feature_size: Rep3D first-stage width.
        hidden_size: Rep3D bottleneck width.
        kernel_size: Large kernel size.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay.
        num_cases: Number of z-slabs.
        val_case: Index of the validation slab.
        shared_data: The shared/data folder (default ../shared/data beside the repository).
        phantom_size: Phantom edge length when the shared data is absent.
        device: cpu or cuda.
        num_threads: torch threads (0: torch's default).
        save_checkpoints: Save each run's final state dict.
    """
    use_threads(num_threads)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = ConvergenceSettings(
        variants=as_tuple(variants), seeds=as_tuple(seeds, int), iterations=int(iterations),
        eval_at=() if eval_at is None else as_tuple(eval_at, int), crop=as_crop(crop), num_samples=num_samples,
        feature_size=feature_size, hidden_size=hidden_size, kernel_size=kernel_size, learning_rate=learning_rate,
        weight_decay=weight_decay, device=device,
    )
    dataset_dir, source = write_dataset(out / "data", shared_data, num_cases, phantom_size, seed=0)
    print(f"[analysis] dataset ({source}): {dataset_dir}", flush=True)
    checkpoint_dir = out / "checkpoints" if save_checkpoints else None
    if checkpoint_dir is not None:
        checkpoint_dir.mkdir(exist_ok=True)
    results = run_convergence(settings, dataset_dir, val_case, checkpoint_dir)
    results["data"].update(source=source, dataset_dir=str(dataset_dir))
    model_config = {k: v for k, v in settings.model_kwargs("lrbm").items() if k != "reparam"}
    paths = write_convergence_report(results, out)
    paths["model_config"] = write_json(out / "model_config.json", model_config)
    print(paths["markdown"].read_text())
    return announce(paths)


def commands() -> dict:
    """The CLI commands by name."""
    return {"lr-field": lr_field, "erf": erf, "convergence": convergence}
