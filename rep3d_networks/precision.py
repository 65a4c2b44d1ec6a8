"""Moved to :mod:`rep3d_networks.inferers`; this module re-exports its names for old imports."""

import warnings

from rep3d_networks.inferers import (  # noqa: F401
    PRECISIONS,
    PrecisionSlidingWindowInferer,
    autocast_dtype,
    autocast_network,
    check_precision,
    cpu_has_bf16,
)

warnings.warn("rep3d_networks.precision moved to rep3d_networks.inferers", DeprecationWarning, stacklevel=2)
