"""3D UX-Net (Lee et al., ICLR 2023) with the Rep3D kernel re-parameterization switch."""

from functools import partial
from typing import Sequence, Union

from rep3d_networks.blocks.uxnet_block import UXNetBlock
from rep3d_networks.nets.encoder_decoder import LargeKernelEncoderDecoder


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
        reparam_kwargs: LRBM / CSLA options of :class:`ReparamDepthwiseConv3d` (``generator_channels``, ...).
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
        **reparam_kwargs,
    ) -> None:
        block = partial(
            UXNetBlock,
            kernel_size=kernel_size,
            reparam=reparam,
            deploy=deploy,
            layer_scale_init=layer_scale_init,
            conv_method=conv_method,
            **reparam_kwargs,
        )
        super().__init__(in_channels, out_channels, feature_size, depths, hidden_size, block, norm_name, res_block)
        self.reparam = reparam
