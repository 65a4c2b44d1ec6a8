"""Moved to :mod:`rep3d_networks.transforms.outputs`; this module re-exports its names for old imports."""

import warnings

from rep3d_networks.transforms.outputs import (  # noqa: F401
    LABEL_INTERP,
    InvertToLabelsd,
    background_outside_crop,
    output_root,
    single_precision,
)

warnings.warn(
    "rep3d_networks.reliability.outputs moved to rep3d_networks.transforms.outputs", DeprecationWarning, stacklevel=2
)
