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

    Where appendix A.4 and the authors' code (github.com/leeh43/Rep3D, ``rep3d_encoder.py``,
    ``network_backbone.py``) differ, this follows the code, because the code is what produced the published models
    and their parameter counts (``reparam="fixed"`` has exactly 65,826,928 parameters, the paper's 65.8M):

    * the stem is the ``7³`` stride-2 convolution and a LayerNorm, without A.4's residual block of two ``3³`` convs;
    * stage 4 is not followed by a downsampling convolution (A.4 lists one after every stage): its output at 1/16
      resolution is the deepest skip, which the decoder's ``encoder5`` lifts to ``hidden_size``;
    * the decoder's MONAI ``UnetrBasicBlock`` / ``UnetrUpBlock`` use MONAI's default LeakyReLU, not the GELU that A.4
      names;
    * the block is DWConv → BatchNorm → GELU (see :class:`Rep3DBlock`).

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
        generator_kernel_size: LRBM generator convolution size (Table 3; 1 leaves the convolutions out).
        generator_norm_affine: LRBM generator norm affine: ``"channel"`` (default, keeps the mask low-rank),
            ``"tap"`` (per-tap gain and bias, v0.1) or ``"none"``; see :mod:`rep3d_networks.blocks.receptive_mask`.
        small_kernel_size: kernel of the ``csla`` parallel branch.
        norm_name: decoder normalization (MONAI name).
        res_block: residual decoder blocks.
        conv_method: large-kernel convolution method, see :func:`rep3d_networks.ops.dwconv3d`.
        deploy: build the folded (inference) form directly. It loads a folded state dict, or a training checkpoint of
            the same configuration, which it folds while loading; any other state dict raises (see
            :class:`~rep3d_networks.blocks.ReparamDepthwiseConv3d`).

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
        generator_norm_affine: str = "channel",
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
            generator_norm_affine=generator_norm_affine,
            small_kernel_size=small_kernel_size,
            conv_method=conv_method,
        )
        super().__init__(in_channels, out_channels, feature_size, depths, hidden_size, block, norm_name, res_block)
        self.reparam = reparam
