"""Old home of the input checks, the bundles' transforms and the checkpoint handlers; import them from their new one.

* :mod:`rep3d_networks.transforms`: :class:`LoadVolumed`, :class:`ValidateVolumed`, :class:`Spacingd`,
  :class:`InvertToLabelsd`, :func:`background_outside_crop`, :func:`output_root`, the checks (:func:`check_volume`,
  ...), :func:`load_volume` and :class:`VolumeError`;
* :mod:`rep3d_networks.handlers`: :class:`AtomicCheckpointSaver`, :class:`ResumeCheckpointLoader`,
  :func:`resume_checkpoint`.

The names stay importable from here (and from the old modules) for configs and code written before the move.
"""

import warnings

from rep3d_networks.handlers.checkpoint import (
    AtomicCheckpointSaver,
    AtomicDiskSaver,
    ResumeCheckpointLoader,
    resume_checkpoint,
)
from rep3d_networks.transforms import (
    InvertToLabelsd,
    LoadVolumed,
    Spacingd,
    ValidateVolumed,
    VolumeError,
    background_outside_crop,
    check_finite,
    check_geometry,
    check_label_values,
    check_same_grid,
    check_volume,
    describe_load_error,
    find_volume_error,
    load_volume,
    output_root,
    volume_error_message,
)

warnings.warn(
    "rep3d_networks.reliability moved to rep3d_networks.transforms and rep3d_networks.handlers",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "InvertToLabelsd",
    "LoadVolumed",
    "ResumeCheckpointLoader",
    "Spacingd",
    "ValidateVolumed",
    "VolumeError",
    "background_outside_crop",
    "check_finite",
    "check_geometry",
    "check_label_values",
    "check_same_grid",
    "check_volume",
    "describe_load_error",
    "find_volume_error",
    "load_volume",
    "output_root",
    "resume_checkpoint",
    "volume_error_message",
]
