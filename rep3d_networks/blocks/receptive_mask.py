"""Receptive-field masks that re-weight a large depthwise kernel (the paper's LRBM, §3.2).

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

import torch
import torch.nn.functional as F
from torch import nn

from rep3d_networks.blocks.depthwise_conv import DepthwiseConv3d


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


GENERATOR_NORM_AFFINE = ("channel", "tap", "none")  # order is part of the reparam_state format: only append
GENERATOR_CHANNELS = ("shared", "depthwise")  # likewise


def generator_norm(norm_affine: str, kernel_size: int, groups: int) -> nn.Module:
    """LayerNorm over the ``K³`` taps of each of the ``G`` generator channels, with the affine ``norm_affine``.

    * ``"channel"``: one gain and one bias per channel (``nn.GroupNorm(G, G)``: per-channel statistics over the taps).
    * ``"tap"``: one gain and one bias per tap, shared by the channels (``nn.LayerNorm((K, K, K))``, v0.1).
    * ``"none"``: no affine.
    """
    if norm_affine == "channel":
        return nn.GroupNorm(groups, groups)
    if norm_affine == "tap":
        return nn.LayerNorm((kernel_size, kernel_size, kernel_size))
    if norm_affine == "none":
        return nn.LayerNorm((kernel_size, kernel_size, kernel_size), elementwise_affine=False)
    raise ValueError(f"generator_norm_affine must be one of {GENERATOR_NORM_AFFINE}, got {norm_affine!r}.")


def check_generator_options(channels: str, num_layers: int, conv_kernel_size: int, norm_affine: str) -> None:
    """Raises ``ValueError`` naming the option for LRBM generator settings that cannot be built or cannot learn."""
    if channels not in GENERATOR_CHANNELS:
        raise ValueError(f"generator_channels must be one of {GENERATOR_CHANNELS}, got {channels!r}.")
    if num_layers < 1:
        raise ValueError(f"generator num_layers must be >= 1, got {num_layers}.")
    if conv_kernel_size < 1 or conv_kernel_size % 2 == 0:
        raise ValueError(f"generator conv_kernel_size must be a positive odd integer, got {conv_kernel_size}.")
    if norm_affine not in GENERATOR_NORM_AFFINE:
        raise ValueError(f"generator_norm_affine must be one of {GENERATOR_NORM_AFFINE}, got {norm_affine!r}.")
    if norm_affine == "none" and conv_kernel_size == 1:
        raise ValueError(
            "generator_norm_affine='none' with generator_kernel_size=1 leaves the generator without a learnable "
            "parameter (a 1³ depthwise conv only scales each channel, which the LayerNorm divides out); "
            "use generator_norm_affine='channel' or 'tap', or a larger generator_kernel_size."
        )


class MaskGenerator(nn.Module):
    """The lightweight generator ``fθ`` of eq. 15: ``[DConv → Norm(K³) → sigmoid] × (L−1) → DConv → Norm(K³)``.

    The convolutions have no bias: each is followed by a norm over the same ``K³`` taps, which subtracts any
    per-channel constant, so a bias could never change the output (its gradient is exactly zero). For the same
    reason a ``1³`` depthwise convolution is left out (``conv_kernel_size=1``): it multiplies each channel by one
    number, which the norm divides out (up to its ``eps``) and whose sign the norm's gain can take; what remains is
    ``Norm → σ → ... → Norm``, a pointwise map of ``P``, and ``"none"`` is refused there (no learnable parameter would
    be left). ``M = P`` at step 0 (``fθ(P) = 0``): the last norm's gain starts at zero (``"channel"``, ``"tap"``);
    with ``"none"`` the last convolution starts at zero instead, and the norm of an all-zero map is zero.

    Args:
        kernel_size: size ``K`` of the kernel whose mask is generated.
        groups: 1 for one mask shared by all channels, ``C`` for one mask per channel (depthwise generator).
        num_layers: number of DConv+Norm layers (the paper uses 2; Table 9 ablates 1–3).
        conv_kernel_size: kernel size of the generator's depthwise convolutions (the paper uses 7; Table 3: 1–7).
        norm_affine: affine of the norms, see :func:`generator_norm`.
    """

    def __init__(
        self, kernel_size: int, groups: int = 1, num_layers: int = 2, conv_kernel_size: int = 7, norm_affine: str = "channel"
    ) -> None:
        super().__init__()
        check_generator_options("shared", num_layers, conv_kernel_size, norm_affine)
        layers = []
        for i in range(num_layers):
            if conv_kernel_size > 1:
                # nn.Conv3d(groups=G) computed by the fast dwconv3d (the CPU backward of nn.Conv3d costs ~40 ms per call here)
                layers.append(DepthwiseConv3d(groups, conv_kernel_size, bias=False))
            layers.append(generator_norm(norm_affine, kernel_size, groups))
            if i < num_layers - 1:
                layers.append(nn.Sigmoid())
        start = layers[-2] if norm_affine == "none" else layers[-1]  # the last conv, else the last norm's gain
        nn.init.zeros_(start.weight)  # fθ(P) = 0 at step 0, so M = P
        self.layers = nn.Sequential(*layers)

    def forward(self, prior: torch.Tensor) -> torch.Tensor:
        """Maps a prior ``[1, G, K, K, K]`` to a mask offset of the same shape."""
        return self.layers(prior)


class LRBM(nn.Module):
    """Low-rank receptive bias modelling: the learnable mask ``M = P + fθ(P)`` (eq. 14).

    Args:
        kernel_size: size ``K`` of the depthwise kernel to modulate.
        channels: channels ``C`` of that kernel (used when ``generator_channels="depthwise"``).
        generator_channels: ``"shared"`` (one mask for all channels, default) or ``"depthwise"`` (one per channel).
        generator_layers: number of generator layers (1, 2 or 3).
        generator_kernel_size: generator convolution size (1, 3, 5 or 7).
        generator_norm_affine: affine of the generator norms, ``"channel"`` (default), ``"tap"`` or ``"none"``
            (see :func:`generator_norm` and the module docstring).
    """

    def __init__(
        self,
        kernel_size: int,
        channels: int,
        generator_channels: str = "shared",
        generator_layers: int = 2,
        generator_kernel_size: int = 7,
        generator_norm_affine: str = "channel",
    ) -> None:
        super().__init__()
        check_generator_options(generator_channels, generator_layers, generator_kernel_size, generator_norm_affine)
        self.groups = channels if generator_channels == "depthwise" else 1
        self.prior = ReceptivePrior(kernel_size, learnable=True)
        self.generator = MaskGenerator(
            kernel_size, self.groups, generator_layers, generator_kernel_size, generator_norm_affine
        )

    def forward(self) -> torch.Tensor:
        """Returns ``M`` of shape ``[G, 1, K, K, K]`` (``G`` = 1 or ``C``), broadcastable onto ``[C, 1, K, K, K]``."""
        prior = self.prior()  # [1, 1, K, K, K]
        prior_in = prior.expand(1, self.groups, -1, -1, -1)  # [1, G, K, K, K]
        return (prior_in + self.generator(prior_in)).transpose(0, 1)  # [G, 1, K, K, K]
