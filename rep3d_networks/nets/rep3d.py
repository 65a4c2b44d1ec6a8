"""Rep3D: a plain large-kernel 3D segmentation network with learnable receptive-field re-parameterization."""

from functools import partial
from typing import Sequence, Union

from rep3d_networks.blocks.rep3d_block import Rep3DBlock
from rep3d_networks.nets.encoder_decoder import LargeKernelEncoderDecoder


class Rep3D(LargeKernelEncoderDecoder):
    """Rep3D (Lee et al., "Spatially-Adaptive Gradient Re-parameterization for 3D Large Kernel Optimization").

    Encoder: 4 stages of :class:`Rep3DBlock` (depthwise ``21³`` → BN → GELU) at widths ``(f, 2f, 4f, 8f)``;
    decoder: UNETR-style MONAI blocks (as 3D UX-Net). During training each depthwise kernel is multiplied by a
    mask (``reparam``); :meth:`fold` bakes the mask into the kernels for inference.

    Args:
        in_channels: input channels.
        out_channels: number of classes (logits).
        feature_size: width ``f`` of the first stage (48 in the paper).
        depths: blocks per stage.
        kernel_size: depthwise kernel size (21 in the paper).
        hidden_size: bottleneck channels (768 in the paper).
        reparam: ``"lrbm"`` (Rep3D), ``"fixed"`` (M = P), ``"vanilla"`` (M = 1) or ``"csla"`` (21³ + 3³ branch).
        generator_channels: LRBM mask per block (``"shared"``) or per channel (``"depthwise"``).
        generator_layers: LRBM generator depth (Table 9).
        generator_kernel_size: LRBM generator convolution size.
        small_kernel_size: kernel of the ``csla`` parallel branch.
        norm_name: decoder normalization (MONAI name).
        res_block: residual decoder blocks.
        conv_method: large-kernel convolution method, see :func:`rep3d_networks.ops.dwconv3d`.
        deploy: build the folded (inference) form directly (loads folded or training checkpoints, see Rep3D). It loads a folded state dict, or a training
            checkpoint of the same configuration, which it folds while loading.

    Example::

        net = Rep3D(in_channels=1, out_channels=16)
        logits = net(torch.zeros(1, 1, 96, 96, 96))  # [1, 16, 96, 96, 96]
        net.fold()  # same eval outputs, plain depthwise kernels
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        kernel_size: int = 21,
        hidden_size: int = 768,
        reparam: str = "lrbm",
        generator_channels: str = "shared",
        generator_layers: int = 2,
        generator_kernel_size: int = 7,
        small_kernel_size: int = 3,
        norm_name: Union[str, tuple] = "instance",
        res_block: bool = True,
        conv_method: str = "auto",
        deploy: bool = False,
    ) -> None:
        block = partial(
            Rep3DBlock,
            kernel_size=kernel_size,
            reparam=reparam,
            deploy=deploy,
            generator_channels=generator_channels,
            generator_layers=generator_layers,
            generator_kernel_size=generator_kernel_size,
            small_kernel_size=small_kernel_size,
            conv_method=conv_method,
        )
        super().__init__(in_channels, out_channels, feature_size, depths, hidden_size, block, norm_name, res_block)
        self.reparam = reparam
