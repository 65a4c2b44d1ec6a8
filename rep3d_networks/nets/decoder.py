"""UNETR-style decoder (MONAI blocks) used by 3D UX-Net and Rep3D."""

from typing import List, Sequence, Union

import torch
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrUpBlock
from torch import nn

# The one bad case of oneDNN's bfloat16 3³ convolution backward (see `_run_block`): first spatial size 2.
_BAD_BF16_DEPTH = 2


def _run_block(block: nn.Module, depth: int, *inputs: torch.Tensor) -> torch.Tensor:
    """``block(*inputs)``; in float32 when the CPU's bfloat16 convolution would give it wrong weight gradients.

    torch's CPU (oneDNN) backward of a dense bfloat16 ``conv3d`` returns wrong weight gradients (off by 100 % or more,
    often ~1e35, from uninitialised memory) when the input's first spatial size is above 1 and below the kernel size
    and there are ≥ 16 channels; float32, float16 and depthwise convolutions are right, and so is the forward pass
    (measured with torch 2.14.1 and 2.15.0, tests/test_network.py). The decoder's convolutions are 3³, so a block whose feature map
    is 2 voxels deep — the bottleneck of a 32-voxel-deep patch — leaves bfloat16 autocast while gradients are
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
        self.encoders = nn.ModuleList(UnetrBasicBlock(in_channels=i, out_channels=o, **basic) for i, o in zip(encoder_in, encoder_out))
        decoder_in = [hidden_size] + list(widths[:0:-1])  # 768, 384, 192, 96
        decoder_out = list(widths[::-1])  # 384, 192, 96, 48
        self.up_blocks = nn.ModuleList(UnetrUpBlock(in_channels=i, out_channels=o, **up) for i, o in zip(decoder_in, decoder_out))
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
