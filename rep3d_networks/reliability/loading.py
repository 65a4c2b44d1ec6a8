"""Moved to :mod:`rep3d_networks.transforms.loading`; this module re-exports its names for old imports."""

import warnings

from rep3d_networks.transforms.loading import (  # noqa: F401
    FORMATS,
    describe_load_error,
    gzip_problem,
    load_volume,
)

warnings.warn(
    "rep3d_networks.reliability.loading moved to rep3d_networks.transforms.loading", DeprecationWarning, stacklevel=2
)
