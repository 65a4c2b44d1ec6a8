"""The Rep3D encoder block."""

import torch
from torch import nn

from rep3d_networks.blocks.reparam_conv import ReparamDepthwiseConv3d


class Rep3DBlock(nn.Module):
    """Plain Rep3D block: re-parameterized depthwise ``K³`` conv (no bias) → BatchNorm3d → GELU.

    The paper describes the block twice: eq. 17 puts a BatchNorm *before* the convolution, appendix A.4 a
    LayerNorm after it. This block follows the authors' code (``rep3d_block``: ``dwconv`` → ``BatchNorm3d`` →
    ``GELU``), which produced the published models. Parameter counts cannot decide between the descriptions (a
    BatchNorm3d and a LayerNorm over ``C`` channels both have ``2C`` parameters, and before or after the conv they
    see ``C`` channels either way). There is no residual connection, as in eq. 17–18 and the code.

    Args:
        channels: number of channels.
        kernel_size: depthwise kernel size (21 in the paper).
        reparam: see :class:`ReparamDepthwiseConv3d`.
        conv_kwargs: further :class:`ReparamDepthwiseConv3d` options (generator settings, ``conv_method``).
    """

    def __init__(self, channels: int, kernel_size: int = 21, reparam: str = "lrbm", **conv_kwargs) -> None:
        super().__init__()
        self.conv = ReparamDepthwiseConv3d(channels, kernel_size, reparam=reparam, bias=False, **conv_kwargs)
        self.norm = nn.BatchNorm3d(channels)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))  # [B, C, D, H, W]
