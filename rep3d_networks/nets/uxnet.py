"""3D UX-Net (Lee et al., ICLR 2023) with the Rep3D kernel re-parameterization switch: :class:`UXNet` is the Rep3D
encoder–decoder (:class:`~rep3d_networks.nets.rep3d.LargeKernelEncoderDecoder`) with :class:`UXNetBlock` blocks."""

from functools import partial
from typing import Sequence, Union

import torch
from torch import nn

from rep3d_networks.blocks.lrbm import GeneratorConfig, ReparamDepthwiseConv3d
from rep3d_networks.nets.rep3d import LargeKernelEncoderDecoder


class UXNet(LargeKernelEncoderDecoder):
    """3D UX-Net: the Rep3D encoder–decoder with :class:`UXNetBlock` (DW ``7³`` + grouped MLP, residual) blocks.

    ``reparam="vanilla"`` is the published 3D UX-Net (53,006,608 parameters for 1 → 16 classes);
    ``reparam="lrbm"`` adds the Rep3D mask to each depthwise kernel ("UX-Net + LRBM").

    Args:
        in_channels: input channels.
        out_channels: number of classes (logits).
        kernel_size: depthwise kernel size.
        reparam: ``"vanilla"``, ``"lrbm"``, ``"fixed"`` or ``"csla"``.
        feature_size: width of the first stage.
        depths: blocks per stage.
        hidden_size: bottleneck channels.
        layer_scale_init: initial layer scale of each block.
        norm_name: decoder normalization (MONAI name).
        res_block: residual decoder blocks.
        conv_method: large-kernel convolution method, see :func:`rep3d_networks.ops.dwconv3d`.
        deploy: build the folded (inference) form directly (loads folded or training checkpoints, see Rep3D).
        small_kernel_size: kernel of the ``csla`` parallel branch.
        generator_channels: LRBM mask per block (``"shared"``) or per channel (``"depthwise"``).
        generator_layers: LRBM generator depth.
        generator_kernel_size: LRBM generator convolution size.
        generator_norm_affine: LRBM generator norm affine (see :class:`~rep3d_networks.nets.rep3d.Rep3D`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 7,
        reparam: str = "vanilla",
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        hidden_size: int = 768,
        layer_scale_init: float = 1e-6,
        norm_name: Union[str, tuple] = "instance",
        res_block: bool = True,
        conv_method: str = "auto",
        deploy: bool = False,
        small_kernel_size: int = 3,
        generator_channels: str = "shared",
        generator_layers: int = 2,
        generator_kernel_size: int = 7,
        generator_norm_affine: str = "channel",
    ) -> None:
        generator_config = None  # the generator options are read (and checked) for LRBM kernels only
        if reparam == "lrbm":
            generator_config = GeneratorConfig(
                generator_channels, generator_layers, generator_kernel_size, generator_norm_affine
            )
        block = partial(
            UXNetBlock,
            kernel_size=kernel_size,
            reparam=reparam,
            deploy=deploy,
            layer_scale_init=layer_scale_init,
            small_kernel_size=small_kernel_size,
            generator_config=generator_config,
            conv_method=conv_method,
        )
        super().__init__(in_channels, out_channels, feature_size, depths, hidden_size, block, norm_name, res_block)
        self.reparam = reparam


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
        self,
        channels: int,
        kernel_size: int = 7,
        reparam: str = "vanilla",
        layer_scale_init: float = 1e-6,
        **conv_kwargs,
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
