"""Moved to :mod:`rep3d_networks.blocks.lrbm`; this module keeps the old import path working."""

import warnings

from rep3d_networks.blocks.lrbm import (  # noqa: F401
    GENERATOR_CHANNELS,
    GENERATOR_NORM_AFFINE,
    LRBM,
    MaskGenerator,
    ReceptivePrior,
    generator_norm,
    tap_distance,
)

warnings.warn(
    "rep3d_networks.blocks.receptive_mask moved to rep3d_networks.blocks.lrbm.", DeprecationWarning, stacklevel=2
)
