"""The ``lr-field`` experiment: how each re-parameterization spreads updates over a large kernel.

One depthwise ``K³`` layer (``K = 21``) is trained on a seeded linear regression task and the per-tap
update of its effective kernel, ``|ΔW_eff| = |W_eff(step) − W_eff(0)|``, is compared between the variants of
:class:`~rep3d_networks.blocks.ReparamDepthwiseConv3d` (vanilla, CSLA, fixed prior, LRBM) under SGD and AdamW.

The task is built so that every tap starts equally far from its target in expectation, so any
centre/periphery difference comes from the parameterization and the optimizer, not from the task:

* Inputs ``x`` are i.i.d. standard normal ``[B, C, n, n, n]`` with ``n = m + K − 1``, drawn from one seeded
  stream shared by all runs; the layer is applied with *valid* padding (output ``m³``), so every tap
  sees exactly ``B·m³`` input samples (with "same" padding the outer taps would see fewer and get
  smaller gradients even for a plain kernel).
* The target is ``y* = x ⋆ W*`` with ``W* = W_eff(0) + D`` (``target="offset"``, default), ``D`` i.i.d.
  ``U(−b, b)`` and ``b = 1/√K³`` (the default init scale). So the initial residual kernel is the same
  ``−D`` for every variant. ``target="independent"`` draws ``W*`` like an initial kernel instead (then
  CSLA starts with a larger centre residual, because its ``3³`` branch is initialised with ``b = 1/√27``).
* The loss is the mean squared error; the large kernel ``W`` starts identical in every variant.

LRBM runs once per generator norm option (``generator_norm_affine``) and also records its *mask drift*
``mean |M − P₀| / mean P₀`` after every step (``P₀``: the mask at initialisation, the prior with β = 1), and the
part of ``M`` that the generator adds, ``mean |fθ(P)| / mean P``.
"""

from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, Optional, Tuple

import torch
import torch.nn.functional as F

from rep3d_networks.analysis.kernel_geometry import centre_periphery_ratio, radial_profile, tap_distances
from rep3d_networks.analysis.masks import change_from_init
from rep3d_networks.blocks import GENERATOR_NORM_AFFINE, LRBM, GeneratorConfig, ReparamDepthwiseConv3d
from rep3d_networks.bundles.recipe import WEIGHT_DECAY
from rep3d_networks.ops import dwconv3d
from rep3d_networks.optim import csla_param_groups

VARIANTS = ("vanilla", "csla", "fixed", "lrbm")
OPTIMIZERS = ("sgd", "adamw")
TABLE8_LEARNING_RATES = {"sgd": (2e-4, 6e-4), "adamw": (2e-4, 3e-4)}  # best (large, small) per optimizer
TARGETS = ("offset", "independent")


@dataclass(frozen=True)
class RegressionTask:
    """The seeded regression problem a single depthwise layer is trained on.

    Args:
        kernel_size: large kernel size ``K``.
        channels: depthwise channels ``C``.
        output_size: edge ``m`` of the valid output; inputs have edge ``m + K − 1``.
        batch_size: inputs per step.
        target: ``"offset"`` (``W* = W_eff(0) + D``) or ``"independent"`` (``W*`` drawn like an init).
        seed: seed of the initial kernels, the target and the input stream.
        conv_method: :func:`rep3d_networks.ops.dwconv3d` method.
    """

    kernel_size: int = 21
    channels: int = 8
    output_size: int = 16
    batch_size: int = 2
    target: str = "offset"
    seed: int = 0
    conv_method: str = "auto"

    @property
    def input_size(self) -> int:
        return self.output_size + self.kernel_size - 1

    @property
    def init_scale(self) -> float:
        """Bound ``b`` of ``nn.Conv3d``'s default (Kaiming-uniform) init of a depthwise ``K³`` kernel."""
        return 1.0 / float(self.kernel_size) ** 1.5


def uniform_kernel(task: RegressionTask, seed: int) -> torch.Tensor:
    """A ``[C, 1, K, K, K]`` kernel with i.i.d. ``U(−b, b)`` taps, ``b`` = :attr:`RegressionTask.init_scale`."""
    generator = torch.Generator().manual_seed(seed)
    shape = (task.channels, 1, task.kernel_size, task.kernel_size, task.kernel_size)
    return (torch.rand(shape, generator=generator) * 2 - 1) * task.init_scale


def build_layer(variant: str, task: RegressionTask, generator_norm_affine: str = "channel") -> ReparamDepthwiseConv3d:
    """The layer of ``variant`` with the shared initial large kernel (seeded; the CSLA branch keeps its default
    init)."""
    torch.manual_seed(task.seed)
    generator_config = GeneratorConfig(norm_affine=generator_norm_affine)  # read by the lrbm variant only
    layer = ReparamDepthwiseConv3d(
        task.channels,
        task.kernel_size,
        reparam=variant,
        conv_method=task.conv_method,
        generator_config=generator_config,
    )
    with torch.no_grad():
        layer.weight.copy_(uniform_kernel(task, task.seed))
    return layer


def target_kernel(layer: ReparamDepthwiseConv3d, task: RegressionTask) -> torch.Tensor:
    """``W*`` of the task for ``layer`` (see the module docstring)."""
    if task.target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {task.target!r}")
    perturbation = uniform_kernel(task, task.seed + 1)
    if task.target == "independent":
        return perturbation
    with torch.no_grad():
        return layer.effective_weight().detach() + perturbation


def make_optimizer(
    name: str, layer: ReparamDepthwiseConv3d, lr_large: float, lr_small: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    """SGD or AdamW; CSLA layers get their small branch at ``lr_small`` (``csla_param_groups``), all else
    ``lr_large``."""
    if layer.small_weight is not None:
        groups = csla_param_groups(layer, lr_large, lr_small)
    else:
        groups = [{"params": list(layer.parameters()), "lr": lr_large}]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr_large, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr_large, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def regression_loss(layer: ReparamDepthwiseConv3d, target: torch.Tensor, x: torch.Tensor, method: str) -> torch.Tensor:
    """Mean squared error between the layer's valid correlation of ``x`` and the target kernel's."""
    with torch.no_grad():
        wanted = dwconv3d(x, target, padding="valid", method=method)
    return F.mse_loss(dwconv3d(x, layer.effective_weight(), padding="valid", method=method), wanted)


def train_and_record(
    variant: str,
    optimizer_name: str,
    task: RegressionTask,
    steps: int,
    record_at: Iterable[int],
    lr_large: float,
    lr_small: float,
    weight_decay: float = WEIGHT_DECAY,
    momentum: float = 0.0,
    generator_norm_affine: str = "channel",
) -> Dict:
    """Train one variant with one optimizer and measure ``|ΔW_eff|`` at the steps in ``record_at``.

    Returns:
        ``{"variant", "optimizer", "lr_large", "lr_small", "ratio": {step: centre/periphery ratio},
        "profile": {step: radial profile of |ΔW_eff|}, "remaining_error": mean|W_eff − W*| / its value at step 0,
        "loss": {"first", "last"}}``; ``lr_small`` is None for non-CSLA variants. LRBM runs add
        ``"generator_norm_affine"``, ``"mask_drift"`` and ``"generator_offset"`` (lists over steps 1..steps, see
        the module docstring) and ``"mask_profile"`` (radial profile of the final ``M``).
    """
    layer = build_layer(variant, task, generator_norm_affine)
    lrbm = layer.mask if isinstance(layer.mask, LRBM) else None
    target = target_kernel(layer, task)
    optimizer = make_optimizer(optimizer_name, layer, lr_large, lr_small, weight_decay, momentum)
    inputs = torch.Generator().manual_seed(task.seed + 2)
    shape = (task.batch_size, task.channels) + (task.input_size,) * 3
    with torch.no_grad():
        start = layer.effective_weight().detach().clone()
    record_at, ratios, profiles, losses, drift, offset = set(record_at), {}, {}, [], [], []
    for step in range(1, steps + 1):
        loss = regression_loss(layer, target, torch.randn(shape, generator=inputs), task.conv_method)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step in record_at:
            with torch.no_grad():
                update = (layer.effective_weight() - start).abs().mean(dim=(0, 1)).numpy()  # [K, K, K]
            ratios[step] = centre_periphery_ratio(update)
            profiles[step] = radial_profile(update)
        if lrbm is not None:
            with torch.no_grad():
                mask, prior = lrbm().mean(dim=(0, 1)).numpy(), lrbm.prior()[0, 0].numpy()
            drift.append(change_from_init(mask))
            offset.append(float(abs(mask - prior).mean() / prior.mean()))
    with torch.no_grad():
        remaining = float((layer.effective_weight() - target).abs().mean() / (start - target).abs().mean())
    run = {
        "variant": variant,
        "optimizer": optimizer_name,
        "lr_large": lr_large,
        "lr_small": lr_small if variant == "csla" else None,
        "ratio": ratios,
        "profile": profiles,
        "remaining_error": remaining,
        "loss": {"first": losses[0], "last": losses[-1]},
    }
    if lrbm is not None:
        run.update(
            generator_norm_affine=generator_norm_affine,
            mask_drift=drift,
            generator_offset=offset,
            mask_profile=radial_profile(mask),
        )
    return run


def run_label(run: Dict) -> str:
    """``lrbm (channel)`` for LRBM runs, else the variant."""
    return f"{run['variant']} ({run['generator_norm_affine']})" if "generator_norm_affine" in run else run["variant"]


def predicted_first_step_ratio(
    variant: str, optimizer_name: str, lr_large: float, lr_small: float, kernel_size: int
) -> float:
    """What the theory says the centre/periphery ratio of the first update should be.

    * vanilla: 1 (uniform gradients, uniform learning rate).
    * csla: ``(λ_L + λ_S) / λ_L`` (eq. 11 with ``α = 1``). Exact for AdamW's first (sign) step; for SGD it
      assumes the mean ``|∂L/∂W_eff|`` is the same at the centre and the periphery, true in expectation here.
    * fixed, lrbm (``M = P`` at step 0): ``∂L/∂W = P ⊙ g`` and ``ΔW_eff = P ⊙ ΔW``, so the ratio of the
      centre/periphery means of ``P²`` (SGD) or of ``P`` (AdamW's sign step). For LRBM this ignores the
      small first-step change of ``M`` itself.
    """
    if variant == "vanilla":
        return 1.0
    if variant == "csla":
        return (lr_large + lr_small) / lr_large
    distance = tap_distances(kernel_size)
    prior = 1.0 / (distance + 1.0)  # P with β = 1
    return centre_periphery_ratio(prior**2 if optimizer_name == "sgd" else prior)


def record_steps(steps: int) -> List[int]:
    """Steps at which ``|ΔW_eff|`` is measured: 1, ``steps // 10`` and ``steps``."""
    return sorted({1, max(1, steps // 10), steps})


def run_lr_field(
    task: RegressionTask,
    steps: int = 100,
    variants: Tuple[str, ...] = VARIANTS,
    optimizers: Tuple[str, ...] = OPTIMIZERS,
    learning_rates: Optional[Dict[str, Tuple[float, float]]] = None,
    weight_decay: float = WEIGHT_DECAY,
    momentum: float = 0.0,
    generator_norm_affine: Tuple[str, ...] = ("channel",),
) -> Dict:
    """All ``variants × optimizers`` runs on one task (LRBM once per ``generator_norm_affine`` option).

    Args:
        task: the regression task.
        steps: optimizer steps per run.
        variants: subset of :data:`VARIANTS`.
        optimizers: subset of :data:`OPTIMIZERS`.
        learning_rates: ``{optimizer: (lr_large, lr_small)}``; default Table 8's best values.
        weight_decay: AdamW weight decay (default the bundles', Table 5).
        momentum: SGD momentum (eq. 4–6 are plain SGD: 0).
        generator_norm_affine: LRBM generator norm options, each a subset of ``GENERATOR_NORM_AFFINE``.

    Returns:
        ``{"config": {...}, "runs": [train_and_record(...) + "predicted_first_step_ratio", ...]}``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    unknown = (
        set(variants) - set(VARIANTS)
        | set(optimizers) - set(OPTIMIZERS)
        | set(generator_norm_affine) - set(GENERATOR_NORM_AFFINE)
    )
    if unknown or not generator_norm_affine:
        raise ValueError(
            f"unknown variant/optimizer/generator_norm_affine {sorted(unknown)}; variants: {VARIANTS}, "
            f"optimizers: {OPTIMIZERS}, generator_norm_affine (at least one): {GENERATOR_NORM_AFFINE}"
        )
    learning_rates = dict(TABLE8_LEARNING_RATES, **(learning_rates or {}))
    record_at = record_steps(steps)
    runs = []
    for optimizer_name in optimizers:
        lr_large, lr_small = learning_rates[optimizer_name]
        for variant in variants:
            for norm in generator_norm_affine if variant == "lrbm" else ("channel",):
                run = train_and_record(
                    variant, optimizer_name, task, steps, record_at, lr_large, lr_small, weight_decay, momentum, norm
                )
                run["predicted_first_step_ratio"] = predicted_first_step_ratio(
                    variant, optimizer_name, lr_large, lr_small, task.kernel_size
                )
                runs.append(run)
    config = dict(
        asdict(task),
        input_size=task.input_size,
        steps=steps,
        record_at=record_at,
        learning_rates={k: list(v) for k, v in learning_rates.items() if k in optimizers},
        weight_decay=weight_decay,
        sgd_momentum=momentum,
        generator_norm_affine=list(generator_norm_affine),
        loss="mse",
        padding="valid",
        centre="distance <= 1 (7 taps)",
        periphery="distance >= 7",
    )
    return {"config": config, "runs": runs}


def summary_rows(results: Dict) -> List[List[str]]:
    """Rows ``[optimizer, variant, lrs, ratio@steps..., predicted, remaining error, mask drift, generator offset]``
    for the Markdown table (the last two at the last step, LRBM only)."""
    rows = []
    for run in results["runs"]:
        lrs = f"{run['lr_large']:g}" + (f" / {run['lr_small']:g}" if run["lr_small"] is not None else "")
        ratios = [f"{run['ratio'][step]:.2f}" for step in results["config"]["record_at"]]
        drift = [f"{run[k][-1]:.3f}" if k in run else "–" for k in ("mask_drift", "generator_offset")]
        rows.append(
            [
                run["optimizer"],
                run_label(run),
                lrs,
                *ratios,
                f"{run['predicted_first_step_ratio']:.2f}",
                f"{run['remaining_error']:.3f}",
                *drift,
            ]
        )
    return rows
