"""Receptive-field masks that re-weight a large depthwise kernel (the paper's LRBM, §3.2).

A mask ``M`` is multiplied into the kernel inside ``forward`` (``W_eff = W ⊙ M``, eq. 16). Because ``W`` is only
ever *read*, autograd gives ``∂L/∂W = M ⊙ ∂L/∂W_eff``: taps with a small mask value move slowly, which is the
spatial learning-rate field the paper derives for RepLKNet-style branches (eq. 11).

Choices this implementation makes where the paper leaves them open (each is tested):

* ``β`` is stored as ``ρ`` with ``β = softplus(ρ)`` and ``β₀ = 1``. The paper initialises ``β`` to 0, which makes
  ``P = 0/(d + 0)`` (NaN at the centre, zero elsewhere) and kills every gradient; softplus keeps ``β`` positive
  and finite for any ``ρ``.
* The generator's last LayerNorm starts with zero gain and bias, so ``fθ(P) = 0`` and ``M = P`` at step 0. The
  first optimizer step moves that gain off zero, after which every generator parameter receives gradient.
* The distance grid (and the fixed prior) is a non-persistent buffer of shape ``[1, 1, K, K, K]``: it is derived
  from ``K`` and stored once per block, never repeated per channel and never written to checkpoints.
* "LayerNorm over the K³ spatial axes" is ``nn.LayerNorm((K, K, K))``: each kernel tap has its own gain/bias,
  shared by all channels of the block.
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


class MaskGenerator(nn.Module):
    """The lightweight generator ``fθ`` of eq. 15: ``[DConv → LayerNorm(K³) → sigmoid] × (L−1) → DConv → LayerNorm(K³)``.

    Args:
        kernel_size: size ``K`` of the kernel whose mask is generated.
        groups: 1 for one mask shared by all channels, ``C`` for one mask per channel (depthwise generator).
        num_layers: number of DConv+LayerNorm layers (the paper uses 2; Table 9 ablates 1–3).
        conv_kernel_size: kernel size of the generator's depthwise convolutions (the paper uses 7).
    """

    def __init__(self, kernel_size: int, groups: int = 1, num_layers: int = 2, conv_kernel_size: int = 7) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"generator num_layers must be >= 1, got {num_layers}.")
        if conv_kernel_size < 1 or conv_kernel_size % 2 == 0:
            raise ValueError(f"generator conv_kernel_size must be a positive odd integer, got {conv_kernel_size}.")
        layers = []
        for i in range(num_layers):
            # nn.Conv3d(groups=G) computed by the fast dwconv3d (the CPU backward of nn.Conv3d costs ~40 ms per call here)
            layers.append(DepthwiseConv3d(groups, conv_kernel_size))
            layers.append(nn.LayerNorm((kernel_size, kernel_size, kernel_size)))
            if i < num_layers - 1:
                layers.append(nn.Sigmoid())
        nn.init.zeros_(layers[-1].weight)  # fθ(P) = 0 at step 0, so M = P
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
    """

    def __init__(
        self,
        kernel_size: int,
        channels: int,
        generator_channels: str = "shared",
        generator_layers: int = 2,
        generator_kernel_size: int = 7,
    ) -> None:
        super().__init__()
        if generator_channels not in ("shared", "depthwise"):
            raise ValueError(f"generator_channels must be 'shared' or 'depthwise', got {generator_channels!r}.")
        self.groups = channels if generator_channels == "depthwise" else 1
        self.prior = ReceptivePrior(kernel_size, learnable=True)
        self.generator = MaskGenerator(kernel_size, self.groups, generator_layers, generator_kernel_size)

    def forward(self) -> torch.Tensor:
        """Returns ``M`` of shape ``[G, 1, K, K, K]`` (``G`` = 1 or ``C``), broadcastable onto ``[C, 1, K, K, K]``."""
        prior = self.prior()  # [1, 1, K, K, K]
        prior_in = prior.expand(1, self.groups, -1, -1, -1)  # [1, G, K, K, K]
        return (prior_in + self.generator(prior_in)).transpose(0, 1)  # [G, 1, K, K, K]
