"""The Rep3D network family (Lee et al., "Spatially-Adaptive Gradient Re-parameterization for 3D Large Kernel
Optimization", §3.3 and appendix A.4), in reading order:

* :class:`LargeKernelEncoderDecoder`: the encoder–decoder shared by Rep3D and 3D UX-Net (``nets/uxnet.py``), which
  differ only in their encoder block;
* :class:`Rep3D`: that network with :class:`Rep3DBlock` blocks;
* :class:`Rep3DBlock`: re-parameterized depthwise conv → BatchNorm → GELU; its kernel and the LRBM mask are in
  :mod:`rep3d_networks.blocks.lrbm`;
* :class:`HierarchicalEncoder`: stem and four stages of blocks, one skip per stage;
* :class:`UnetrDecoder`: UNETR-style MONAI blocks back to full resolution;
* :func:`check_spatial_shape`: the input check.
"""

from functools import partial
from typing import Callable, List, Sequence, Union

import torch
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrUpBlock
from torch import nn

from rep3d_networks.blocks.layernorm import LayerNormChannelsFirst
from rep3d_networks.blocks.lrbm import GeneratorConfig, ReparamDepthwiseConv3d

# The one bad case of oneDNN's bfloat16 3³ convolution backward (see `_run_block`): first spatial size 2.
_BAD_BF16_DEPTH = 2


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
            ``"tap"`` (per-tap gain and bias, v0.1) or ``"none"``; see :mod:`rep3d_networks.blocks.lrbm`.
        small_kernel_size: kernel of the ``csla`` parallel branch.
        norm_name: decoder normalization (MONAI name).
        res_block: residual decoder blocks.
        conv_method: large-kernel convolution method, see :func:`rep3d_networks.ops.dwconv3d`.
        deploy: build the folded (inference) form directly. It loads a folded state dict, or a training checkpoint of
            the same configuration, which it folds while loading; any other state dict raises (see
            :class:`~rep3d_networks.blocks.lrbm.ReparamDepthwiseConv3d`).

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
        generator_config = None  # the generator options are read (and checked) for LRBM kernels only
        if reparam == "lrbm":
            generator_config = GeneratorConfig(
                generator_channels, generator_layers, generator_kernel_size, generator_norm_affine
            )
        block = partial(
            Rep3DBlock,
            kernel_size=kernel_size,
            reparam=reparam,
            deploy=deploy,
            generator_config=generator_config,
            small_kernel_size=small_kernel_size,
            conv_method=conv_method,
        )
        super().__init__(in_channels, out_channels, feature_size, depths, hidden_size, block, norm_name, res_block)
        self.reparam = reparam


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
        conv_kwargs: further :class:`ReparamDepthwiseConv3d` options (``generator_config``, ``conv_method``).
    """

    def __init__(self, channels: int, kernel_size: int = 21, reparam: str = "lrbm", **conv_kwargs) -> None:
        super().__init__()
        self.conv = ReparamDepthwiseConv3d(channels, kernel_size, reparam=reparam, bias=False, **conv_kwargs)
        self.norm = nn.BatchNorm3d(channels)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))  # [B, C, D, H, W]


class HierarchicalEncoder(nn.Module):
    """Stem (7³ conv, stride 2 → LayerNorm), then stages of blocks; stages 2–4 start with LayerNorm → 2³ conv,
    stride 2. Each stage output passes through its own LayerNorm and is returned as a skip.

    Args:
        in_channels: input channels.
        widths: channels of each stage, e.g. ``(48, 96, 192, 384)``.
        depths: blocks per stage, e.g. ``(2, 2, 2, 2)``.
        block: builds one block from its channel count.
    """

    def __init__(
        self, in_channels: int, widths: Sequence[int], depths: Sequence[int], block: Callable[[int], nn.Module]
    ) -> None:
        super().__init__()
        if len(widths) != len(depths):
            raise ValueError(f"widths {tuple(widths)} and depths {tuple(depths)} must have the same length.")
        stem = nn.Sequential(
            nn.Conv3d(in_channels, widths[0], 7, stride=2, padding=3), LayerNormChannelsFirst(widths[0])
        )
        downsamples = [
            nn.Sequential(LayerNormChannelsFirst(c_in), nn.Conv3d(c_in, c_out, 2, stride=2))
            for c_in, c_out in zip(widths[:-1], widths[1:])
        ]
        self.downsamples = nn.ModuleList([stem] + downsamples)
        self.stages = nn.ModuleList(nn.Sequential(*[block(w) for _ in range(d)]) for w, d in zip(widths, depths))
        self.norms = nn.ModuleList(LayerNormChannelsFirst(w) for w in widths)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """``[B, C_in, D, H, W]`` → skips ``[B, widths[i], D/2^(i+1), H/2^(i+1), W/2^(i+1)]``."""
        skips = []
        for downsample, stage, norm in zip(self.downsamples, self.stages, self.norms):
            x = stage(downsample(x))
            skips.append(norm(x))
        return skips


class UnetrDecoder(nn.Module):
    """Full-resolution encoder1 on the raw input, encoder2..4 on skips 0..2, encoder5 (→ hidden) on skip 3, four
    up-blocks back to full resolution, a last basic block and a 1×1 head.

    Args:
        in_channels: channels of the raw input.
        out_channels: number of output classes.
        widths: encoder stage widths ``(f, 2f, 4f, 8f)``.
        hidden_size: channels of the bottleneck (768 in the paper).
        norm_name: MONAI norm name for the decoder blocks.
        res_block: use residual basic blocks.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        widths: Sequence[int],
        hidden_size: int,
        norm_name: Union[str, tuple] = "instance",
        res_block: bool = True,
    ) -> None:
        super().__init__()
        basic = dict(spatial_dims=3, kernel_size=3, stride=1, norm_name=norm_name, res_block=res_block)
        up = dict(spatial_dims=3, kernel_size=3, upsample_kernel_size=2, norm_name=norm_name, res_block=res_block)
        encoder_in = [in_channels] + list(widths)  # raw input, skips 0..3
        encoder_out = [widths[0]] + list(widths[1:]) + [hidden_size]
        self.encoders = nn.ModuleList(
            UnetrBasicBlock(in_channels=i, out_channels=o, **basic) for i, o in zip(encoder_in, encoder_out)
        )
        decoder_in = [hidden_size] + list(widths[:0:-1])  # 768, 384, 192, 96
        decoder_out = list(widths[::-1])  # 384, 192, 96, 48
        self.up_blocks = nn.ModuleList(
            UnetrUpBlock(in_channels=i, out_channels=o, **up) for i, o in zip(decoder_in, decoder_out)
        )
        self.last_block = UnetrBasicBlock(in_channels=widths[0], out_channels=widths[0], **basic)
        self.head = UnetOutBlock(spatial_dims=3, in_channels=widths[0], out_channels=out_channels)

    def forward(self, x_in: torch.Tensor, skips: List[torch.Tensor]) -> torch.Tensor:
        inputs = [x_in] + skips
        features: List[torch.Tensor] = []  # resolutions 1, 1/2 .. 1/16
        for i, encoder in enumerate(self.encoders):
            if torch.jit.is_scripting():  # TorchScript compiles this branch only (the guard is for training)
                features.append(encoder(inputs[i]))
            else:
                features.append(_run_block(encoder, inputs[i].shape[2], inputs[i]))
        x = features[-1]
        for i, up_block in enumerate(self.up_blocks):
            skip = features[-2 - i]
            if torch.jit.is_scripting():
                x = up_block(x, skip)
            else:
                x = _run_block(up_block, skip.shape[2], x, skip)
        return self.head(self.last_block(x))  # [B, out_channels, D, H, W]


def _run_block(block: nn.Module, depth: int, *inputs: torch.Tensor) -> torch.Tensor:
    """``block(*inputs)``; in float32 when the CPU's bfloat16 convolution would give it wrong weight gradients.

    torch's CPU (oneDNN) backward of a dense bfloat16 ``conv3d`` returns wrong weight gradients (off by 100 % or more,
    often ~1e35, from uninitialised memory) when the input's first spatial size is above 1 and below the kernel size and
    there are ≥ 16 channels; float32, float16 and depthwise convolutions are right, and so is the forward pass (measured
    with torch 2.14.1 and 2.15.0, tests/test_network.py). The decoder's convolutions are 3³, so a block whose feature
    map is 2 voxels deep — the bottleneck of a 32-voxel-deep patch — leaves bfloat16 autocast while gradients are
    recorded: it is a few voxels, so float32 costs nothing. Without this, bfloat16 CPU training diverged (issue 25).

    Args:
        block: a decoder block.
        depth: first spatial size of the feature map the block's convolutions see.
        inputs: the block's inputs.
    """
    if (
        depth == _BAD_BF16_DEPTH
        and inputs[0].device.type == "cpu"
        and torch.is_grad_enabled()
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
    ):
        with torch.autocast("cpu", enabled=False):
            return block(*(x.float() for x in inputs))
    return block(*inputs)


def check_spatial_shape(x: torch.Tensor, divisor: int) -> None:
    """Raises ``ValueError`` unless ``x`` is ``[B, C, D, H, W]`` with each of D, H, W divisible by ``divisor``."""
    if x.dim() != 5:
        raise ValueError("expected a 5D input [B, C, D, H, W], got shape " + str(list(x.shape)) + ".")
    for size in x.shape[2:]:
        if size % divisor != 0:
            raise ValueError(
                "spatial size "
                + str(list(x.shape[2:]))
                + " is not divisible by "
                + str(divisor)
                + " (each of D, H, W must be); pad or crop the input, e.g. with monai.transforms.DivisiblePad."
            )
