"""Moved to :mod:`rep3d_networks.transforms` (``loading``, ``validation``, ``spatial``); re-exported for old imports."""

import warnings

from rep3d_networks.transforms.loading import LoadVolumed, nifti_header_geometry  # noqa: F401
from rep3d_networks.transforms.spatial import Spacingd  # noqa: F401
from rep3d_networks.transforms.validation import ValidateVolumed, source_name  # noqa: F401

warnings.warn(
    "rep3d_networks.reliability.transforms moved to rep3d_networks.transforms", DeprecationWarning, stacklevel=2
)
