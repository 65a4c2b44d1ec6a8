"""Reliability: clear errors for unusable inputs, atomic checkpoints, resuming interrupted training.

* :class:`LoadVolumed`, :class:`ValidateVolumed`: bundle preprocessing transforms whose errors
  (:class:`VolumeError`) name the file and the problem; :class:`Spacingd`: MONAI's, also under MONAI Label and DeepEdit on MONAI 1.6;
* :func:`load_volume`, :func:`check_volume`, :func:`check_geometry`, :func:`check_label_values`, :func:`check_same_grid`: the same checks
  as functions (used by the MONAI Label app on uploads);
* :class:`AtomicCheckpointSaver`, :class:`ResumeCheckpointLoader`, :func:`resume_checkpoint`: checkpoints written
  atomically, and the bundles' ``--resume`` option;
* :class:`InvertToLabelsd`: the inference output stage, labels on the input grid at O(voxels) memory;
* :func:`background_outside_crop`: saved probabilities outside the inference body crop are background;
* :func:`output_root`: inference labels are written inside ``output_dir`` whatever the inputs' folders.

See ``docs/troubleshooting.md`` for every message and its fix.
"""

from rep3d_networks.reliability.checkpoint import (
    AtomicCheckpointSaver,
    AtomicDiskSaver,
    ResumeCheckpointLoader,
    resume_checkpoint,
)
from rep3d_networks.reliability.checks import (
    check_finite,
    check_geometry,
    check_label_values,
    check_same_grid,
    check_volume,
)
from rep3d_networks.reliability.errors import VolumeError, find_volume_error, volume_error_message
from rep3d_networks.reliability.loading import describe_load_error, load_volume
from rep3d_networks.reliability.outputs import InvertToLabelsd, background_outside_crop, output_root
from rep3d_networks.reliability.transforms import LoadVolumed, Spacingd, ValidateVolumed

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
