"""UNETR-style decoder (MONAI blocks) used by 3D UX-Net and Rep3D."""

from typing import List, Sequence, Union

import torch
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrUpBlock
from torch import nn


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
            features.append(encoder(inputs[i]))
        x = features[-1]
        for i, up_block in enumerate(self.up_blocks):
            x = up_block(x, features[-2 - i])
        return self.head(self.last_block(x))  # [B, out_channels, D, H, W]
