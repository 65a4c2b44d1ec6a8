"""``nn.Conv3d`` (depthwise, "same" padding) computed with the fast :func:`rep3d_networks.ops.dwconv3d`."""

import torch
from torch import nn

from rep3d_networks.ops import dwconv3d


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
