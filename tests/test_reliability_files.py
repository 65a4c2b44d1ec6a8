"""Builders of bad (and awkward but valid) input files for the reliability tests (issue #7); no tests here.

Every builder writes into ``folder`` and returns the path(s) it wrote; the sources are the real sample volumes
or the synthetic phantom.
"""

import shutil
from pathlib import Path
from typing import Tuple

import nibabel as nib
import numpy as np


def nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def read(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    image = nib.load(str(path))
    return np.asarray(image.dataobj), image.affine


def corrupt(folder: Path, source: Path) -> Path:
    """Random bytes under a ``.nii.gz`` name."""
    data = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    (folder / "corrupt.nii.gz").write_bytes(data)
    return folder / "corrupt.nii.gz"


def truncated(folder: Path, source: Path) -> Path:
    """The first half of a valid ``.nii.gz`` (an interrupted copy)."""
    raw = source.read_bytes()
    (folder / "truncated.nii.gz").write_bytes(raw[: len(raw) // 2])
    return folder / "truncated.nii.gz"


def zero_bytes(folder: Path, source: Path) -> Path:
    (folder / "empty.nii.gz").write_bytes(b"")
    return folder / "empty.nii.gz"


def two_d(folder: Path, source: Path) -> Path:
    """One axial slice saved as a 2D NIfTI."""
    data, affine = read(source)
    return nifti(folder / "slice2d.nii.gz", np.ascontiguousarray(data[:, :, data.shape[2] // 2]), affine)


def four_d(folder: Path, source: Path) -> Path:
    """Three "phases" stacked as a 4D (multi-channel) NIfTI."""
    data, affine = read(source)
    return nifti(folder / "phases4d.nii.gz", np.stack([data, data, data], axis=-1), affine)


def non_finite(folder: Path, source: Path) -> Path:
    """Float image with a few NaN and Inf voxels."""
    data, affine = read(source)
    data = data.astype(np.float32)
    data[0, 0, :3] = np.nan
    data[1, 1, :2] = np.inf
    return nifti(folder / "nan_inf.nii.gz", data, affine)


def small(folder: Path, source: Path) -> Path:
    """A corner crop far smaller than one 96³ window after resampling."""
    data, affine = read(source)
    return nifti(folder / "small.nii.gz", np.ascontiguousarray(data[:20, :20, :12]), affine)


def reoriented(folder: Path, source: Path) -> Tuple[Path, Path]:
    """The source (stored LPS) and the same voxels stored in RAS order: the same image in two orientations."""
    image = nib.load(str(source))
    assert nib.aff2axcodes(image.affine) != ("R", "A", "S")
    shutil.copy(source, folder / "stored_lps.nii.gz")
    nib.save(nib.as_closest_canonical(image), str(folder / "stored_ras.nii.gz"))
    return folder / "stored_lps.nii.gz", folder / "stored_ras.nii.gz"


def label_out_of_range(folder: Path, label: Path, num_classes: int) -> Path:
    data, affine = read(label)
    data = data.astype(np.uint8)
    data[:2, :2, :2] = num_classes + 4
    return nifti(folder / "label_out_of_range.nii.gz", data, affine)


def label_wrong_shape(folder: Path, label: Path) -> Path:
    data, affine = read(label)
    return nifti(folder / "label_wrong_shape.nii.gz", np.ascontiguousarray(data[:-4]), affine)


def label_shifted(folder: Path, label: Path, mm: float = 6.0) -> Path:
    """Same shape, origin moved by ``mm`` along x (e.g. a label drawn on another scan of the patient)."""
    data, affine = read(label)
    affine = affine.copy()
    affine[0, 3] += mm
    return nifti(folder / "label_shifted.nii.gz", data, affine)


def label_empty(folder: Path, label: Path) -> Path:
    data, affine = read(label)
    return nifti(folder / "label_empty.nii.gz", np.zeros_like(data), affine)


def not_an_image(folder: Path) -> Path:
    (folder / "notes.nii.gz").write_text("patient notes, not an image\n")
    return folder / "notes.nii.gz"
