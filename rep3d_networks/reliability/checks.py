"""Moved to :mod:`rep3d_networks.transforms.checks`; this module re-exports its names for old imports."""

import warnings

from rep3d_networks.transforms.checks import (  # noqa: F401
    SPACING_RANGE_MM,
    canonical_grid,
    check_finite,
    check_geometry,
    check_label_values,
    check_same_grid,
    check_volume,
    grid_distance_mm,
    shape_text,
    voxel_spacing,
    warn_if_empty,
)

warnings.warn(
    "rep3d_networks.reliability.checks moved to rep3d_networks.transforms.checks", DeprecationWarning, stacklevel=2
)
