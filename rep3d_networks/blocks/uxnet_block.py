"""The 3D UX-Net encoder block (Lee et al., ICLR 2023), with a switchable kernel re-parameterization."""

import torch
from torch import nn

from rep3d_networks.blocks.reparam_conv import ReparamDepthwiseConv3d


class UXNetBlock(nn.Module):
    """3D UX-Net block: DW ``K³`` conv (bias) → channels-last LayerNorm → grouped 1×1 (4× expand) → GELU →
    grouped 1×1 → layer scale, plus the residual.

    With ``reparam="lrbm"`` the depthwise kernel gets the Rep3D mask ("UX-Net + LRBM").

    Args:
        channels: number of channels.
        kernel_size: depthwise kernel size (7 in 3D UX-Net).
        reparam: see :class:`ReparamDepthwiseConv3d`; ``"vanilla"`` is the published UX-Net.
        layer_scale_init: initial value of the per-channel layer scale ``γ``.
        conv_kwargs: further :class:`ReparamDepthwiseConv3d` options.
    """

    def __init__(
        self, channels: int, kernel_size: int = 7, reparam: str = "vanilla", layer_scale_init: float = 1e-6, **conv_kwargs
    ) -> None:
        super().__init__()
        self.conv = ReparamDepthwiseConv3d(channels, kernel_size, reparam=reparam, bias=True, **conv_kwargs)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.pwconv1 = nn.Conv3d(channels, 4 * channels, kernel_size=1, groups=channels)
        self.act = nn.GELU()
        self.pwconv2 = nn.Conv3d(4 * channels, channels, kernel_size=1, groups=channels)
        self.gamma = nn.Parameter(layer_scale_init * torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        y = self.norm(y.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)  # LayerNorm over C, back to [B, C, D, H, W]
        y = self.pwconv2(self.act(self.pwconv1(y)))
        return x + self.gamma[:, None, None, None] * y
