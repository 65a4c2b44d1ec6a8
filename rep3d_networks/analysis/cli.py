"""Commands of ``python -m rep3d_networks.analysis`` (dispatched with ``fire``).

Examples::

    python -m rep3d_networks.analysis lr-field --output_dir out/lr_field
    python -m rep3d_networks.analysis erf --output_dir out/erf_fresh
    python -m rep3d_networks.analysis erf --output_dir out/erf_trained \\
        --config out/convergence/runs/ct/lrbm_seed0/model_config.json \\
        --checkpoint out/convergence/runs/ct/lrbm_seed0/models/model.pt
    python -m rep3d_networks.analysis erf --output_dir out/erf_bundle --config bundles/amos_ct/configs/train.json \\
        --checkpoint bundles/amos_ct/models/model.pt
    python -m rep3d_networks.analysis convergence --output_dir out/convergence
    python -m rep3d_networks.analysis clicks --server_url http://127.0.0.1:8000 --references /data/ct_labels \\
        --output_dir out/clicks
    python -m rep3d_networks.analysis session --server_url http://127.0.0.1:8000 --references /data/heldout/labels \\
        --heldout_images /data/heldout/images --label_source /data/pool_labels --output_dir out/session
    python -m rep3d_networks.analysis session_study --strategies random --seeds 0,1,2 --output_dir out/session_study
"""

import json
import os
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Dict, Optional

import torch

from rep3d_networks.analysis.clicks import run_annotator
from rep3d_networks.analysis.clicks_report import write_clicks_report
from rep3d_networks.analysis.convergence import (
    MODELS,
    StudySettings,
    describe,
    fitting_cap,
    measure_timing,
    model_parameters,
    run_study,
    time_plan,
    worker_pool,
)
from rep3d_networks.analysis.convergence_data import (
    PHANTOM_CASES,
    PHANTOM_SIZE,
    RECIPES,
    default_shared_data,
    write_study_data,
)
from rep3d_networks.analysis.convergence_report import DOCS_BEGIN, fill_docs, plan_markdown, write_study_report
from rep3d_networks.analysis.erf import ct_inputs, effective_receptive_field, erf_summary, random_inputs
from rep3d_networks.analysis.erf_report import write_erf_report
from rep3d_networks.analysis.lr_field import OPTIMIZERS, VARIANTS, RegressionTask, run_lr_field
from rep3d_networks.analysis.lr_field_report import write_lr_field_report
from rep3d_networks.analysis.masks import lrbm_masks
from rep3d_networks.analysis.model_loading import build_model, model_kwargs
from rep3d_networks.analysis.reports import write_json
from rep3d_networks.analysis.session import SessionSettings, run_session
from rep3d_networks.analysis.session_report import write_session_report
from rep3d_networks.analysis.session_study import MODEL as STUDY_MODEL
from rep3d_networks.analysis.session_study import run_study as run_session_study
from rep3d_networks.bundles.recipe import WEIGHT_DECAY
from rep3d_networks.data.phantom import MIN_SIZE as PHANTOM_MIN_SIZE


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
    weight_decay: float = WEIGHT_DECAY,
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
        weight_decay: AdamW weight decay (default the bundles', Table 5).
        sgd_momentum: SGD momentum.
        generator_norm_affine: Comma-separated LRBM generator norm options (channel,tap,none): one lrbm run each.
        num_threads: torch threads (0: torch's default).
    """
    use_threads(num_threads)
    task = RegressionTask(kernel_size, channels, output_size, batch_size, target, seed)
    lrs = {"sgd": as_tuple(sgd_lrs, float), "adamw": as_tuple(adamw_lrs, float)}
    norms = as_tuple(generator_norm_affine)
    results = run_lr_field(
        task, steps, as_tuple(variants), as_tuple(optimizers), lrs, weight_decay, sgd_momentum, norms
    )
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
        config,
        in_channels=in_channels,
        out_channels=out_channels,
        feature_size=feature_size,
        hidden_size=hidden_size,
        kernel_size=kernel_size,
        depths=None if depths is None else as_tuple(depths, int),
        reparam=reparam,
        generator_channels=generator_channels,
        generator_layers=generator_layers,
        generator_kernel_size=generator_kernel_size,
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


def machine_note(workers: int, num_threads: int) -> str:
    """CPU, processes, threads and the load average when the study started (the cores may be shared)."""
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, {workers} process(es) × "
        f"{num_threads or torch.get_num_threads()} thread(s), load average at the start {load}"
    )


def convergence(
    output_dir: str,
    datasets=("phantom", "ct"),
    models=tuple(MODELS),
    seeds=(0, 1, 2),
    max_iterations: int = StudySettings.max_iterations,
    val_interval: int = StudySettings.val_interval,
    patience: int = StudySettings.patience,
    min_delta: float = StudySettings.min_delta,
    plateau_floor: float = StudySettings.plateau_floor,
    width: int = StudySettings.width,
    roi_size=StudySettings.roi_size[0],
    learning_rate: float = StudySettings.learning_rate,
    val_overlap: float = StudySettings.val_overlap,
    time_budget_hours: float = 1.9,
    timing_iterations: int = 10,
    plan_only: bool = False,
    workers: int = 2,
    num_threads: int = 1,
    shared_data: Optional[str] = None,
    phantom_cases: int = PHANTOM_CASES,
    phantom_size: int = PHANTOM_SIZE,
    docs_file: Optional[str] = None,
    device: str = "cpu",
) -> Dict[str, str]:
    """Convergence study: validation Dice against iterations and seconds, run to a plateau, several models and seeds.

    Every run is the amos_ct bundle's training (train.json parsed in-process, network_def replaced; see
    rep3d_networks.analysis.convergence). First the seconds per iteration and per validation of every model are
    measured (timing_iterations each, in `workers` processes) and the iteration cap is lowered so that the runs fit
    what is left of time_budget_hours (time_plan.md); then every dataset × seed × model runs until the plateau rule or
    the cap. Writes convergence.md/.json, convergence_<dataset>.png, runs/<dataset>/<model>_seed<k>/ (result.json, the
    bundle's models/model.pt and eval/; Rep3D runs also model_config.json for the erf command). A run whose
    result.json holds the same settings is kept, so an interrupted study resumes.

    Args:
        output_dir: Folder for everything.
        datasets: Comma-separated subset of phantom,ct.
        models: Comma-separated subset of lrbm,fixed,vanilla,csla,uxnet,segresnet,swinunetr.
        seeds: Comma-separated seeds.
        max_iterations: Iteration cap per run (lowered to fit time_budget_hours).
        val_interval: Iterations between validations.
        patience: Plateau rule: validations in a row without a Dice gain above min_delta before a run stops.
        min_delta: Plateau rule: the Dice gain that counts as an improvement.
        plateau_floor: Plateau rule: armed from the first validation with at least this Dice (a run that has not
            started learning runs on).
        width: First-stage width of every model (SwinUNETR: the next multiple of 12).
        roi_size: Training patch and sliding-window size: one int or three (multiples of 32).
        learning_rate: AdamW learning rate.
        val_overlap: Sliding-window overlap of the validation.
        time_budget_hours: Wall-clock budget of the whole command, runs at the cap (0: no timing, keep max_iterations).
        timing_iterations: Iterations per model in the timing measurement.
        plan_only: Measure and write the time plan, train nothing else.
        workers: Runs in parallel processes.
        num_threads: torch threads per process (0: torch's default).
        shared_data: The shared/data folder (default ../shared/data beside the repository), for the ct dataset.
        phantom_cases: Phantom cases (the quickstart's 20).
        phantom_size: Phantom edge in voxels (the quickstart's 40).
        docs_file: Also write the results between the convergence-study markers of this file (docs/reproduction.md).
        device: cpu or cuda.
    """
    start = time.perf_counter()
    use_threads(num_threads)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    docs = Path(docs_file) if docs_file else None
    if docs is not None and DOCS_BEGIN not in docs.read_text():
        raise ValueError(f"{docs}: has no line {DOCS_BEGIN!r} to write the results after")
    settings = StudySettings(
        datasets=as_tuple(datasets),
        models=as_tuple(models),
        seeds=as_tuple(seeds, int),
        max_iterations=int(max_iterations),
        val_interval=int(val_interval),
        patience=int(patience),
        min_delta=float(min_delta),
        plateau_floor=float(plateau_floor),
        width=int(width),
        roi_size=as_crop(roi_size),
        learning_rate=float(learning_rate),
        val_overlap=float(val_overlap),
        device=device,
    )
    parameters = model_parameters(settings.models, settings.width)
    for name, count in parameters.items():
        print(f"[convergence] {name}: {describe(name, settings.width)}: {count:,} parameters", flush=True)
    machine = machine_note(workers, num_threads)
    data = {
        name: write_study_data(name, out / "data", shared_data, phantom_cases, phantom_size)
        for name in settings.datasets
    }
    pool = worker_pool(workers)
    try:
        if time_budget_hours > 0 or plan_only:
            timing = measure_timing(settings, data, out, pool, num_threads, timing_iterations)
            left = time_budget_hours - (time.perf_counter() - start) / 3600  # the budget covers data, timing and runs
            cap = fitting_cap(timing, settings, workers, left) if time_budget_hours > 0 else settings.max_iterations
            note = (
                f"Measured with {timing_iterations} iterations per model in {(time.perf_counter() - start) / 60:.1f} "
                f"min (data and timing; left of the budget: {max(0.0, left):.2f} h); {machine}."
            )
            plan = time_plan(timing, replace(settings, max_iterations=cap), workers)
            write_json(
                out / "time_plan.json",
                {"timing": timing, "plan": plan, "cap": cap, "budget_hours": time_budget_hours, "machine": machine},
            )
            (out / "time_plan.md").write_text(plan_markdown(plan, note))
            print((out / "time_plan.md").read_text(), flush=True)
            if plan_only:
                return announce({"time_plan": out / "time_plan.md"})
            settings = replace(settings, max_iterations=cap)
        elif (
            out / "time_plan.json"
        ).is_file():  # a resumed study: its kept runs trained on the machine the plan measured
            machine = (
                f"study timed and started on: {json.loads((out / 'time_plan.json').read_text())['machine']}; "
                f"resumed on: {machine}"
            )
        records = run_study(settings, data, out, pool, num_threads)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    results = {
        "settings": asdict(settings),
        "machine": machine,
        "parameters": parameters,
        "runs": records,
        "data": {name: {**d.split, "recipe": RECIPES[name].why} for name, d in data.items()},
    }
    paths = write_study_report(results, out)
    if docs is not None:
        paths["docs"] = fill_docs(results, paths, docs)
    print(paths["markdown"].read_text())
    return announce(paths)


def clicks(
    server_url: str,
    references: str,
    output_dir: str,
    models=None,
    organs=None,
    max_clicks: int = 10,
) -> Dict[str, str]:
    """Simulated annotator: Dice against clicks of the models of a running MONAI Label server (see docs/interactive.md).

    Per image of --references, model and organ: the answer without clicks, then one corrective click per round at the
    voxel deepest inside the largest error region (missed → the organ, false → background), all clicks sent again as
    3D Slicer does (rep3d_networks.analysis.clicks). Writes clicks.md/.json/.png: mean Dice after 0, 1, 2, 3, 5, 10
    clicks per organ and overall, NoC@80/85/90, seconds per click, and the curve checks (a click-taking model whose
    curve stays flat, any step where it falls), which are also printed as FLAG lines.

    Args:
        server_url: The running server, e.g. http://127.0.0.1:8000.
        references: Folder of reference labels named <image id>.nii.gz (image ids of the server's studies), each on
            its image's voxel grid, with the label values of the models.
        output_dir: Folder for the results.
        models: Comma-separated model names (default: every model the server lists).
        organs: Comma-separated label names (default: every label of a model other than background that the
            reference holds).
        max_clicks: Clicks per (image, organ).
    """
    results = run_annotator(
        server_url,
        Path(references),
        as_tuple(models) if models else None,
        as_tuple(organs) if organs else None,
        int(max_clicks),
    )
    summary, paths = write_clicks_report(results, Path(output_dir))
    print(paths["markdown"].read_text())
    for check in summary["curve_checks"].values():
        for message in check["flags"]:
            print(f"[clicks] !!! FLAG {message}", flush=True)
    return announce(paths)


SESSION_TITLE = (
    "Labels that teach: held-out Dice against submitted labels (annotation sessions through the MONAI Label server)"
)


def print_flags(summary: dict, prefix: str) -> None:
    for message in summary["flags"]:
        print(f"{prefix} !!! FLAG {message}", flush=True)


def session(
    server_url: str,
    references: str,
    heldout_images: str,
    label_source: str,
    output_dir: str,
    model: str = "amos_ct",
    strategy: str = "random",
    rounds: int = 4,
    labels_per_round: int = 3,
    train_iterations: int = 100,
    train_timeout_s: float = 1800,
) -> Dict[str, str]:
    """Simulated annotation session through a running MONAI Label server (see docs/annotation_sessions.md).

    Round 0 measures the served model; each round asks /activelearning/<strategy> for labels_per_round images and
    submits their reference labels, fine-tunes the model from its weights (/train/<model>) while asking /infer all
    the while, then measures held-out Dice (rep3d_networks.analysis.session). Writes session.md/.json/.png: Dice
    against submitted labels, per organ, the server's answers during training, and FLAG lines (also printed) when
    Dice does not rise or /infer failed during training.

    Args:
        server_url: The running server, e.g. http://127.0.0.1:8000.
        references: Folder of the held-out images' reference labels, <id>.nii.gz, on the images' grids.
        heldout_images: Folder of the held-out images, <id>.nii.gz (not in the server's datastore: each /infer uploads
            one).
        label_source: Folder of the reference labels of the datastore's unlabelled images, <image id>.nii.gz.
        output_dir: Folder for the results.
        model: The model trained and measured (a model the server serves and trains).
        strategy: The active-learning strategy (random, first; entropy_<model> is scored first, every round), or
            none: the control, which submits no label and fine-tunes the same rounds.
        rounds: Rounds of labels and fine-tuning after round 0.
        labels_per_round: Labels submitted per round.
        train_iterations: Fine-tuning iterations per round.
        train_timeout_s: Seconds after which a fine-tuning is stopped and the session fails.
    """
    settings = SessionSettings(model, strategy, rounds, labels_per_round, train_iterations, train_timeout_s)
    result = run_session(server_url, settings, Path(heldout_images), Path(references), Path(label_source))
    summary, paths = write_session_report(
        [result], Path(output_dir), "session", SESSION_TITLE, [f"Server {server_url}.", ""]
    )
    print(paths["markdown"].read_text())
    print_flags(summary, "[session]")
    return announce(paths)


def study_preamble(study: dict, initial: dict, sessions: list) -> list:
    """The study report's first lines: data, initial model, servers, seeds, machine and time (from the records, so
    that a resumed study reports the time its parts took)."""
    s = study
    loads = [v for session in sessions for v in session["load_average"]]
    minutes = [session["minutes"] for session in sessions]
    return [
        f"`python -m rep3d_networks.analysis session_study`: phantom (`rep3d_networks.data phantom`, {s['size']}³ "
        f"voxels, data seed {s['data_seed']}): {s['initial_cases']} labelled cases, {s['pool_cases']} unlabelled pool "
        f"cases and {s['heldout_cases']} held-out cases drawn with another seed. Initial model: `bundles/amos_ct` with "
        f"the quickstart's settings, trained {initial['iterations']} iterations on the labelled cases only (validation "
        f"Dice {initial['best_validation_dice']:.3f} on those same cases; {initial['run']}). Every session starts from "
        f"a fresh "
        "copy of that model and of the datastore, on its own server (`apps/rep3d/start_server.py` on 127.0.0.1, "
        "`OMP_NUM_THREADS=1`, its `random` seeded with the session's seed, MONAI Label's automatic re-scoring off). A "
        "seed changes only the `random` strategy's draws: each fine-tuning runs in a new process from torch's fixed "
        "default seed and repeats exactly for the same labels and weights, so the control runs once.",
        "",
        "Settings that differ from the paper recipe: " + "; ".join(initial["differences"]) + ".",
        "",
        f"Time: initial model {initial['training_minutes']:.1f} min, sessions {min(minutes):.1f}–{max(minutes):.1f} "
        f"min each, {initial['training_minutes'] + sum(minutes):.0f} min in all, on "
        f"{platform.processor() or platform.machine()} with {os.cpu_count()} logical CPUs, one process at a time; "
        f"1-minute load average at the sessions' starts and ends {min(loads):.1f}–{max(loads):.1f} (other jobs shared "
        f"the cores).",
        "",
    ]


def names(value, what: str) -> tuple:
    """Comma-separated names, none empty or repeated (``what`` names the option in the error)."""
    items = as_tuple(value)
    if not items or len(set(items)) != len(items):
        raise ValueError(f"{what} must be comma-separated names without repeats, got {value!r}")
    return items


def session_study(
    output_dir: str,
    strategies="random",
    seeds=(0, 1, 2),
    rounds: int = 4,
    labels_per_round: int = 3,
    train_iterations: int = 100,
    initial_cases: int = 3,
    initial_iterations: int = 600,
    pool_cases: int = 15,
    heldout_cases: int = 4,
    data_seed: int = 0,
    size: int = 40,
    train_timeout_s: float = 1800,
    num_threads: int = 1,
) -> Dict[str, str]:
    """The annotation-session study on the phantom in one command (rep3d_networks.analysis.session_study).

    Makes the phantom data, trains the initial model on initial_cases labelled cases, then runs a session for every
    strategy × seed, each from fresh copies of the initial model and datastore on its own server, and writes
    session_study.md/.json/.png into output_dir (sessions/<strategy>_seed<k>/ hold each session's server log and
    session.json; finished sessions are kept when the command runs again).

    Args:
        output_dir: Folder for everything.
        strategies: Comma-separated strategies of the app, e.g. random,first (entropy_amos_ct: scored every round),
            and none: the control (no labels, the same rounds of fine-tuning).
        seeds: Comma-separated seeds (one session per strategy and seed, the control once; a seed seeds the
            server's random, i.e. the random strategy's draws).
        rounds: Rounds of labels and fine-tuning after round 0.
        labels_per_round: Labels submitted per round.
        train_iterations: Fine-tuning iterations per round.
        initial_cases: Labelled phantom cases of the initial model (in the datastore with their labels).
        initial_iterations: Training iterations of the initial model (600: the quickstart's).
        pool_cases: Unlabelled phantom cases the strategies choose from (at least rounds × labels_per_round).
        heldout_cases: Held-out phantom cases (another seed) on which Dice is measured.
        data_seed: Seed of the phantom and of the initial training.
        size: Phantom edge in voxels (40: the quickstart's).
        train_timeout_s: Seconds after which a fine-tuning is stopped and the study fails.
        num_threads: torch threads of this process (the initial training; 0: torch's default).
    """
    start = time.perf_counter()
    chosen = names(strategies, "strategies")
    seed_list = names(seeds, "seeds")
    if not all(s.lstrip("-").isdigit() for s in seed_list):
        raise ValueError(f"seeds must be comma-separated whole numbers, got {seeds!r}")
    seed_list = tuple(int(s) for s in seed_list)
    settings = SessionSettings(STUDY_MODEL, chosen[0], rounds, labels_per_round, train_iterations, train_timeout_s)
    settings.check()
    counts = {"initial_cases": initial_cases, "initial_iterations": initial_iterations, "heldout_cases": heldout_cases}
    for name, value in counts.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
    if not isinstance(pool_cases, int) or pool_cases < rounds * labels_per_round:
        raise ValueError(
            f"pool_cases must be at least rounds × labels_per_round = {rounds * labels_per_round}, got {pool_cases!r}"
        )
    if not isinstance(size, int) or size < PHANTOM_MIN_SIZE:
        raise ValueError(f"size must be at least {PHANTOM_MIN_SIZE} voxels, got {size!r}")
    use_threads(num_threads)
    out = Path(output_dir).resolve()
    results = run_session_study(
        out,
        chosen,
        seed_list,
        settings,
        int(data_seed),
        initial_cases,
        initial_iterations,
        pool_cases,
        heldout_cases,
        size,
    )
    preamble = study_preamble(results["study"], results["initial_model"], results["sessions"])
    summary, paths = write_session_report(
        results["sessions"],
        out,
        "session_study",
        SESSION_TITLE,
        preamble,
        {"study": results["study"], "initial_model": results["initial_model"]},
    )
    print(f"[session_study] this command: {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    print(paths["markdown"].read_text())
    print_flags(summary, "[session_study]")
    return announce(paths)


def commands() -> dict:
    """The CLI commands by name."""
    return {
        "lr-field": lr_field,
        "erf": erf,
        "convergence": convergence,
        "clicks": clicks,
        "session": session,
        "session_study": session_study,
    }
