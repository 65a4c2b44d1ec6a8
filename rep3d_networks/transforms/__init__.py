"""MONAI transforms of the bundles: loading and checking input volumes, resampling, and the inference output stage.

* :class:`LoadVolumed`, :class:`ValidateVolumed`: preprocessing whose errors (:class:`VolumeError`) name the file
  and the problem; :class:`Spacingd`: MONAI's, also safe under MONAI Label and DeepEdit on MONAI 1.6;
* :func:`load_volume`, :func:`check_volume`, :func:`check_geometry`, :func:`check_label_values`,
  :func:`check_same_grid`: the same checks as functions (used by the MONAI Label app on uploads);
* :class:`InvertToLabelsd`: the inference output stage, labels on the input grid at O(voxels) memory;
* :func:`background_outside_crop`: saved probabilities outside the inference body crop are background;
* :func:`output_root`: inference labels are written inside ``output_dir`` whatever the inputs' folders.

See ``docs/troubleshooting.md`` for every message and its fix.
"""

from rep3d_networks.transforms.checks import (
    check_finite,
    check_geometry,
    check_label_values,
    check_same_grid,
    check_volume,
)
from rep3d_networks.transforms.errors import VolumeError, find_volume_error, volume_error_message
from rep3d_networks.transforms.loading import LoadVolumed, describe_load_error, load_volume
from rep3d_networks.transforms.outputs import InvertToLabelsd, background_outside_crop, output_root
from rep3d_networks.transforms.spatial import Spacingd
from rep3d_networks.transforms.validation import ValidateVolumed

__all__ = [
    "InvertToLabelsd",
    "LoadVolumed",
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
    "volume_error_message",
]
