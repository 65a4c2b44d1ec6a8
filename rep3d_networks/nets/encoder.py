"""Hierarchical four-stage encoder shared by Rep3D and 3D UX-Net."""

from typing import Callable, List, Sequence

import torch
from torch import nn

from rep3d_networks.blocks.layernorm import LayerNormChannelsFirst


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
        stem = nn.Sequential(nn.Conv3d(in_channels, widths[0], 7, stride=2, padding=3), LayerNormChannelsFirst(widths[0]))
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
