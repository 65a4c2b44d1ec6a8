"""The encoder–decoder shared by Rep3D and 3D UX-Net; the two networks differ only in their encoder block."""

from typing import Callable, Sequence, Union

import torch
from torch import nn

from rep3d_networks.nets.decoder import UnetrDecoder
from rep3d_networks.nets.encoder import HierarchicalEncoder
from rep3d_networks.nets.shape import check_spatial_shape


class LargeKernelEncoderDecoder(nn.Module):
    """:class:`HierarchicalEncoder` with a given block at widths ``(f, 2f, 4f, 8f)`` and a :class:`UnetrDecoder`.

    Args:
        in_channels: input channels.
        out_channels: number of classes (logits).
        feature_size: width ``f`` of the first stage.
        depths: blocks per stage.
        hidden_size: bottleneck channels.
        block: builds one encoder block from its channel count.
        norm_name: decoder normalization (MONAI name).
        res_block: residual decoder blocks.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        feature_size: int,
        depths: Sequence[int],
        hidden_size: int,
        block: Callable[[int], nn.Module],
        norm_name: Union[str, tuple] = "instance",
        res_block: bool = True,
    ) -> None:
        super().__init__()
        widths = [feature_size * 2**i for i in range(len(depths))]
        self.encoder = HierarchicalEncoder(in_channels, widths, depths, block)
        self.decoder = UnetrDecoder(in_channels, out_channels, widths, hidden_size, norm_name, res_block)
        self.divisor = 2 ** len(depths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, D, H, W]`` (D, H, W divisible by ``2^len(depths)``) → logits ``[B, out_channels, D, H, W]``."""
        check_spatial_shape(x, self.divisor)
        return self.decoder(x, self.encoder(x))

    def fold(self) -> "LargeKernelEncoderDecoder":
        """Folds every re-parameterized kernel in place (see :func:`rep3d_networks.fold`) and returns ``self``."""
        from rep3d_networks.fold import fold

        return fold(self)
