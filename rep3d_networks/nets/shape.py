"""Input shape validation shared by the networks."""

import torch


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
