"""Cheap consistency checks on NIfTI image/label pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import nibabel as nib
import numpy as np

from .layouts import Case


def read_spatial_shape(path: Path) -> Tuple[int, ...]:
    """Read the spatial shape of a NIfTI file from its header only.

    Raises:
        ValueError: If the file is not a readable NIfTI file.
    """
    try:
        image = nib.load(str(path))
    except Exception as error:  # nibabel raises several exception types for corrupt files
        raise ValueError(f"cannot read NIfTI header of {path}: {error}") from error
    return tuple(int(n) for n in image.shape[:3])


def check_pair_shapes(case: Case) -> None:
    """Check that a case's image and label have the same spatial shape.

    Raises:
        ValueError: If the shapes differ (the message names both files).
    """
    image_shape, label_shape = read_spatial_shape(case.image), read_spatial_shape(case.label)
    if image_shape != label_shape:
        raise ValueError(f"{case.image} has shape {image_shape} but its label {case.label} has shape {label_shape}")


def check_label_values(path: Path, num_classes: int) -> None:
    """Load a label volume and check every value is an integer in ``[0, num_classes)``.

    Raises:
        ValueError: On non-integer or out-of-range label values.
    """
    data = np.asanyarray(nib.load(str(path)).dataobj)
    values = np.unique(data)
    if not np.all(np.equal(np.mod(values, 1), 0)):
        raise ValueError(f"{path} holds non-integer label values")
    bad = values[(values < 0) | (values >= num_classes)]
    if bad.size:
        raise ValueError(f"{path} holds label values {bad.tolist()} outside 0..{num_classes - 1}")
