"""The paper's contribution (§3.2): a large depthwise kernel re-weighted by a learnable receptive-field mask (LRBM).

Reading order: the prior ``P`` (:class:`ReceptivePrior`, eq. 12–13), the generator ``fθ`` (:class:`MaskGenerator`,
eq. 15, options in :class:`GeneratorConfig`), the mask ``M = P + fθ(P)`` (:class:`LRBM`, eq. 14) and the convolution
that uses it and its ablation variants (:class:`ReparamDepthwiseConv3d`, eq. 16). What a state dict of that
convolution holds, and how older ones load, is in :mod:`rep3d_networks.blocks.reparam_state`.

A mask ``M`` is multiplied into the kernel inside ``forward`` (``W_eff = W ⊙ M``, eq. 16). Because ``W`` is only
ever *read*, autograd gives ``∂L/∂W = M ⊙ ∂L/∂W_eff``: taps with a small mask value move slowly, which is the
spatial learning-rate field the paper derives for RepLKNet-style branches (eq. 11).

Choices this implementation makes where the paper leaves them open (each is tested):

* ``β`` is stored as ``ρ`` with ``β = softplus(ρ)`` and ``β₀ = 1``. The paper initialises ``β`` to 0, which makes
  ``P = 0/(d + 0)`` (NaN at the centre, zero elsewhere) and kills every gradient; softplus keeps ``β`` positive
  and finite for any ``ρ``.
* "Layer normalization" (eq. 15) normalizes each generator channel over its ``K³`` taps. Its affine is
  ``generator_norm_affine``: ``"channel"`` (default: one gain and one bias per channel, i.e. per norm for the shared
  generator, as the authors' code has), ``"tap"`` (a gain and a bias per tap, the v0.1 form) or ``"none"``. The
  default keeps ``M = P + fθ(P)`` *low-rank* as §3.2 says: ``fθ(P)`` is then a function of ``P`` through the two
  ``7³`` convolutions and four scalars (691 parameters per block with ``ρ``), while ``"tap"`` adds ``2·K³`` free
  values per norm (18,522 for ``K = 21``) and its last bias is a free full-rank ``K³`` offset that can reach any
  mask, whatever the generator's depth or kernel (which would confound Tables 3 and 9).
* ``M = P`` at step 0: the last norm's gain starts at zero (``"channel"``, ``"tap"``), or, with ``"none"``, the last
  convolution starts at zero (the norm of an all-zero map is zero). The first optimizer step moves it off zero, after
  which every generator parameter receives gradient. With ``"none"`` nothing scales the norm's unit-variance output,
  so the first steps move ``M`` far from ``P`` (measured in docs/reproduction.md); that is why it is not the default.
* The generator's convolutions have no bias (the norm after each cancels it exactly), and ``1³`` generator
  convolutions are left out (see :class:`MaskGenerator`): no parameter is kept that cannot learn.
* The distance grid (and the fixed prior) is a non-persistent buffer of shape ``[1, 1, K, K, K]``: it is derived
  from ``K`` and stored once per block, never repeated per channel and never written to checkpoints.
"""

import math
from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from rep3d_networks.blocks.reparam_state import (
    FORM_KEY,
    GENERATOR_CHANNELS,
    GENERATOR_NORM_AFFINE,
    REPARAM_MODES,
    check_loaded_state,
    encode_form,
    module_form,
)
from rep3d_networks.ops import dwconv3d
from rep3d_networks.ops.fft import KernelSpectrumCache


@dataclass(frozen=True)
class GeneratorConfig:
    """Options of the LRBM mask generator ``fθ``, checked once when built. ``Rep3D`` takes them as the flat arguments
    ``generator_channels``, ``generator_layers``, ``generator_kernel_size`` and ``generator_norm_affine``, the names
    its errors and the ``reparam_state`` entry use.

    Args:
        channels: ``"shared"`` (one mask for all channels, default) or ``"depthwise"`` (one per channel).
        layers: number of DConv+Norm layers (the paper uses 2; Table 9 ablates 1–3).
        kernel_size: size of the generator's depthwise convolutions (the paper uses 7; Table 3: 1–7; 1 leaves them
            out, see :class:`MaskGenerator`).
        norm_affine: affine of the generator norms, ``"channel"`` (default), ``"tap"`` or ``"none"`` (see
            :func:`generator_norm` and the module docstring).

    Raises:
        ValueError: naming the option, for settings that cannot be built or cannot learn.
    """

    channels: str = "shared"
    layers: int = 2
    kernel_size: int = 7
    norm_affine: str = "channel"

    def __post_init__(self) -> None:
        if self.channels not in GENERATOR_CHANNELS:
            raise ValueError(f"generator_channels must be one of {GENERATOR_CHANNELS}, got {self.channels!r}.")
        if self.layers < 1:
            raise ValueError(f"generator_layers must be >= 1, got {self.layers}.")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"generator_kernel_size must be a positive odd integer, got {self.kernel_size}.")
        if self.norm_affine not in GENERATOR_NORM_AFFINE:
            raise ValueError(f"generator_norm_affine must be one of {GENERATOR_NORM_AFFINE}, got {self.norm_affine!r}.")
        if self.norm_affine == "none" and self.kernel_size == 1:
            raise ValueError(
                "generator_norm_affine='none' with generator_kernel_size=1 leaves the generator without a learnable "
                "parameter (a 1³ depthwise conv only scales each channel, which the LayerNorm divides out); "
                "use generator_norm_affine='channel' or 'tap', or a larger generator_kernel_size."
            )


def tap_distance(kernel_size: int) -> torch.Tensor:
    """Euclidean distance of every tap of a ``K³`` kernel to its centre (eq. 12), shape ``[1, 1, K, K, K]``."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}.")
    offsets = torch.arange(kernel_size, dtype=torch.float32) - kernel_size // 2
    dz, dy, dx = torch.meshgrid(offsets, offsets, offsets, indexing="ij")
    return torch.sqrt(dz**2 + dy**2 + dx**2)[None, None]


class ReceptivePrior(nn.Module):
    """Reciprocal distance-decay prior ``P = β / (d + β)`` (eq. 13), 1 at the centre, decaying outwards.

    Args:
        kernel_size: odd kernel size ``K``.
        learnable: learn ``β`` (as ``softplus(ρ)``); otherwise ``β`` stays at ``beta_init`` and ``P`` is constant.
        beta_init: initial ``β`` (> 0).
    """

    def __init__(self, kernel_size: int, learnable: bool = True, beta_init: float = 1.0) -> None:
        super().__init__()
        if not beta_init > 0 or not math.isfinite(beta_init):
            raise ValueError(f"beta_init must be positive and finite, got {beta_init}.")
        self.learnable = learnable
        distance = tap_distance(kernel_size)
        if learnable:
            self.register_buffer("distance", distance, persistent=False)
            # inverse softplus, so that softplus(rho) == beta_init exactly
            self.rho = nn.Parameter(torch.tensor(beta_init + math.log(-math.expm1(-beta_init))))
        else:
            self.register_buffer("prior", beta_init / (distance + beta_init), persistent=False)

    @property
    def beta(self) -> torch.Tensor:
        return F.softplus(self.rho)

    def forward(self) -> torch.Tensor:
        """Returns ``P`` of shape ``[1, 1, K, K, K]``."""
        if self.learnable:
            beta = self.beta
            return beta / (self.distance + beta)
        return self.prior


def generator_norm(norm_affine: str, kernel_size: int, groups: int) -> nn.Module:
    """LayerNorm over the ``K³`` taps of each of the ``G`` generator channels, with the affine ``norm_affine``.

    * ``"channel"``: one gain and one bias per channel (``nn.GroupNorm(G, G)``: per-channel statistics over the taps).
    * ``"tap"``: one gain and one bias per tap, shared by the channels (``nn.LayerNorm((K, K, K))``, v0.1).
    * ``"none"``: no affine.
    """
    if norm_affine == "channel":
        return nn.GroupNorm(groups, groups)
    return nn.LayerNorm((kernel_size, kernel_size, kernel_size), elementwise_affine=norm_affine == "tap")


class DepthwiseConv3d(nn.Conv3d):
    """Depthwise ``k³`` convolution with "same" zero padding: the parameters, initialisation and state dict of
    ``nn.Conv3d(channels, channels, k, padding=k // 2, groups=channels)``, but the forward and backward go through
    :func:`rep3d_networks.ops.dwconv3d`, whose FFT path avoids PyTorch's slow CPU backward for 3D depthwise kernels.

    Args:
        channels: number of channels.
        kernel_size: odd kernel size.
        bias: add a learnable bias.
        method: :func:`dwconv3d` method.
    """

    def __init__(self, channels: int, kernel_size: int, bias: bool = True, method: str = "auto") -> None:
        super().__init__(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=bias)
        self.method = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dwconv3d(x, self.weight, self.bias, method=self.method)


class MaskGenerator(nn.Module):
    """The lightweight generator ``fθ`` of eq. 15: ``[DConv → Norm(K³) → sigmoid] × (L−1) → DConv → Norm(K³)``.

    The convolutions have no bias: each is followed by a norm over the same ``K³`` taps, which subtracts any
    per-channel constant, so a bias could never change the output (its gradient is exactly zero). For the same
    reason a ``1³`` depthwise convolution is left out (``kernel_size=1``): it multiplies each channel by one
    number, which the norm divides out (up to its ``eps``) and whose sign the norm's gain can take; what remains is
    ``Norm → σ → ... → Norm``, a pointwise map of ``P``, and ``"none"`` is refused there (no learnable parameter would
    be left). ``M = P`` at step 0 (``fθ(P) = 0``): the last norm's gain starts at zero (``"channel"``, ``"tap"``);
    with ``"none"`` the last convolution starts at zero instead, and the norm of an all-zero map is zero.

    Args:
        kernel_size: size ``K`` of the kernel whose mask is generated.
        groups: 1 for one mask shared by all channels, ``C`` for one mask per channel (depthwise generator).
        config: the generator's depth, convolution size and norm affine (its ``channels`` is given by ``groups``).
    """

    def __init__(self, kernel_size: int, groups: int = 1, config: GeneratorConfig = GeneratorConfig()) -> None:
        super().__init__()
        layers = []
        for i in range(config.layers):
            if config.kernel_size > 1:
                # nn.Conv3d(groups=G) computed by the fast dwconv3d (the CPU backward of nn.Conv3d costs ~40 ms per
                # call here)
                layers.append(DepthwiseConv3d(groups, config.kernel_size, bias=False))
            layers.append(generator_norm(config.norm_affine, kernel_size, groups))
            if i < config.layers - 1:
                layers.append(nn.Sigmoid())
        start = layers[-2] if config.norm_affine == "none" else layers[-1]  # the last conv, else the last norm's gain
        nn.init.zeros_(start.weight)  # fθ(P) = 0 at step 0, so M = P
        self.layers = nn.Sequential(*layers)

    def forward(self, prior: torch.Tensor) -> torch.Tensor:
        """Maps a prior ``[1, G, K, K, K]`` to a mask offset of the same shape."""
        return self.layers(prior)


class LRBM(nn.Module):
    """Low-rank receptive bias modelling: the learnable mask ``M = P + fθ(P)`` (eq. 14).

    Args:
        kernel_size: size ``K`` of the depthwise kernel to modulate.
        channels: channels ``C`` of that kernel (used when ``generator_config.channels="depthwise"``).
        generator_config: the generator options.
    """

    def __init__(self, kernel_size: int, channels: int, generator_config: GeneratorConfig = GeneratorConfig()) -> None:
        super().__init__()
        self.groups = channels if generator_config.channels == "depthwise" else 1
        self.prior = ReceptivePrior(kernel_size, learnable=True)
        self.generator = MaskGenerator(kernel_size, self.groups, generator_config)

    def forward(self) -> torch.Tensor:
        """Returns ``M`` of shape ``[G, 1, K, K, K]`` (``G`` = 1 or ``C``), broadcastable onto ``[C, 1, K, K, K]``."""
        prior = self.prior()  # [1, 1, K, K, K]
        prior_in = prior.expand(1, self.groups, -1, -1, -1)  # [1, G, K, K, K]
        return (prior_in + self.generator(prior_in)).transpose(0, 1)  # [G, 1, K, K, K]


class ReparamDepthwiseConv3d(nn.Module):
    """Depthwise ``K³`` convolution with a training-time re-parameterized kernel.

    ``reparam`` selects how the effective kernel is formed from the stored one:

    * ``"lrbm"``: ``W_eff = W ⊙ (P + fθ(P))`` (Rep3D, eq. 14–16).
    * ``"fixed"``: ``W_eff = W ⊙ P`` with ``β = 1`` (the "Fixed Prior" ablation; nothing extra is learnable).
    * ``"vanilla"``: ``W_eff = W`` (plain large kernel).
    * ``"csla"``: a parallel small ``k³`` depthwise branch, RepLKNet style (eq. 1). The two branches are summed
      *before* the convolution (``W_eff = W + pad(W_s)``), which gives the same output and the same gradients
      for ``W`` and ``W_s`` as two parallel convolutions at the cost of one; train it with
      :func:`rep3d_networks.optim.csla_param_groups` to give each branch its own learning rate (Table 8).

    The mask is applied inside ``forward``; the stored ``weight`` is never overwritten, so two forwards without
    an optimizer step give identical outputs. :meth:`fold` bakes ``W_eff`` into ``weight`` and drops the mask
    and the small branch, leaving a plain depthwise convolution (``folded = True``).

    The state dict says what it holds: a ``reparam_state`` entry with the folded flag and the configuration. A folded
    module (``deploy=True`` or folded in place) loads a folded state dict as is and folds a training one while
    loading, so one training checkpoint serves training, inference and export. Anything else raises (``RuntimeError``
    from ``load_state_dict``, naming what was expected and found): a folded state dict into the training form, another
    ``reparam``, kernel size or generator. State dicts of rep3d_networks 0.1 (no entry) load too. The checks are a
    load pre-hook, :func:`rep3d_networks.blocks.reparam_state.check_loaded_state`.

    Args:
        channels: number of channels ``C`` (depthwise: one ``K³`` filter per channel).
        kernel_size: odd kernel size ``K``.
        reparam: ``"lrbm"``, ``"fixed"``, ``"vanilla"`` or ``"csla"``.
        bias: add a learnable bias.
        small_kernel_size: kernel size of the ``csla`` parallel branch.
        generator_config: the LRBM generator options (``reparam="lrbm"`` only; ``None``: the paper's defaults).
        conv_method: method passed to :func:`rep3d_networks.ops.dwconv3d` (``"auto"``, ``"fft"``, ``"direct"``).
        deploy: build the folded form directly (plain kernel, no mask or small branch).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        reparam: str = "lrbm",
        bias: bool = False,
        small_kernel_size: int = 3,
        generator_config: Optional[GeneratorConfig] = None,
        conv_method: str = "auto",
        deploy: bool = False,
    ) -> None:
        super().__init__()
        if reparam not in REPARAM_MODES:
            raise ValueError(f"reparam must be one of {REPARAM_MODES}, got {reparam!r}.")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}.")
        small_kernel_ok = 1 <= small_kernel_size <= kernel_size and small_kernel_size % 2 == 1
        if reparam == "csla" and not small_kernel_ok:
            raise ValueError(f"small_kernel_size must be odd and <= kernel_size, got {small_kernel_size}.")
        if reparam == "lrbm" and generator_config is None:
            generator_config = GeneratorConfig()
        self.channels = channels
        self.kernel_size = kernel_size
        self.reparam = reparam
        self.conv_method = conv_method
        self.folded = deploy
        self.kernel_spectra = KernelSpectrumCache()
        # what a training-form twin needs, to fold an unfolded state dict while loading (see reparam_state)
        self.training_form = dict(
            channels=channels,
            kernel_size=kernel_size,
            reparam=reparam,
            bias=bias,
            small_kernel_size=small_kernel_size,
            generator_config=generator_config if reparam == "lrbm" else None,
        )
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel_size, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(channels)) if bias else None
        self.mask: Optional[nn.Module] = None
        self.small_weight: Optional[nn.Parameter] = None
        if reparam == "lrbm" and not deploy:
            self.mask = LRBM(kernel_size, channels, generator_config)
        elif reparam == "fixed" and not deploy:
            self.mask = ReceptivePrior(kernel_size, learnable=False)
        elif reparam == "csla" and not deploy:
            small_shape = (channels, 1, small_kernel_size, small_kernel_size, small_kernel_size)
            self.small_weight = nn.Parameter(torch.empty(small_shape))
        self.register_buffer(FORM_KEY, encode_form(self.form()))
        self.register_load_state_dict_pre_hook(check_loaded_state)
        self.reset_parameters()

    def form(self) -> Dict:
        """What this module's state dict holds: the folded flag and the configuration (see ``reparam_state``)."""
        return module_form(self.training_form, self.folded)

    def reset_parameters(self) -> None:
        """``nn.Conv3d``'s default initialisation for every branch."""
        for weight in (self.weight, self.small_weight):
            if weight is not None:
                nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.kernel_size**3)
            nn.init.uniform_(self.bias, -bound, bound)

    def effective_weight(self) -> torch.Tensor:
        """The kernel actually convolved, ``[C, 1, K, K, K]``."""
        weight = self.weight
        if self.mask is not None:
            weight = weight * self.mask()
        if self.small_weight is not None:
            pad = (self.kernel_size - self.small_weight.shape[-1]) // 2
            weight = weight + F.pad(self.small_weight, [pad] * 6)
        return weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.effective_weight()
        if torch.jit.is_scripting() or torch.jit.is_tracing():  # exporters see a plain depthwise conv
            return F.conv3d(x, weight, self.bias, padding=self.kernel_size // 2, groups=self.channels)
        spectra = self.kernel_spectra if self.folded else None  # a folded kernel is the same from call to call
        return dwconv3d(x, weight, self.bias, method=self.conv_method, kernel_spectra=spectra)

    @torch.no_grad()
    def fold(self) -> None:
        """Bakes the effective kernel into ``weight`` and removes the mask and the small branch (in place)."""
        if self.folded:
            return
        self.weight = nn.Parameter(self.effective_weight().detach().clone())
        self.mask = None
        self.small_weight = None
        self.folded = True
        self.reparam_state.copy_(encode_form(self.form()))

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, reparam={self.reparam!r}, folded={self.folded}, "
            f"bias={self.bias is not None}"
        )
