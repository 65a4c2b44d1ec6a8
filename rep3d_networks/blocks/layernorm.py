"""Channels-first layer normalization for volumetric feature maps."""

import torch
from torch import nn


class LayerNormChannelsFirst(nn.Module):
    """LayerNorm over the channel axis of a ``[B, C, D, H, W]`` tensor (as in ConvNeXt / 3D UX-Net).

    ``nn.LayerNorm`` only normalizes trailing axes, so a channels-first map would need two permutes;
    this normalizes axis 1 directly.

    Args:
        channels: number of channels ``C``.
        eps: added to the variance.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)  # [B, 1, D, H, W]
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None, None] * x + self.bias[:, None, None, None]
