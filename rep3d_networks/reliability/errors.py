"""Moved to :mod:`rep3d_networks.transforms.errors`; this module re-exports its names for old imports."""

import warnings

from rep3d_networks.transforms.errors import (  # noqa: F401
    VolumeError,
    find_volume_error,
    volume_error_message,
)

warnings.warn(
    "rep3d_networks.reliability.errors moved to rep3d_networks.transforms.errors", DeprecationWarning, stacklevel=2
)
