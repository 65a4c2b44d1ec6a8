"""Checks of loaded image / label volumes that end in a :class:`VolumeError` naming the file and the problem.

The arrays are channel-first (``C, X, Y, Z``, as after MONAI's ``EnsureChannelFirstd``); affines map voxel
indices to RAS millimetres (MONAI's convention, for NIfTI, NRRD and DICOM alike).
"""

import logging
from itertools import product
from typing import Optional, Sequence, Tuple

import nibabel as nib
import numpy as np
import torch

from rep3d_networks.transforms.errors import VolumeError

logger = logging.getLogger(__name__)


def shape_text(shape: Sequence[int]) -> str:
    """``(3, 4, 5)`` → ``"3x4x5"``."""
    return "x".join(str(int(n)) for n in shape)


def check_volume(data, path: str, channels: Optional[int] = 1) -> None:
    """A single 3D volume with ``channels`` channels and finite values.

    Args:
        data: channel-first array or tensor.
        path: the file it was read from (for the message).
        channels: expected number of channels, or None for any.

    Raises:
        VolumeError: 2D data (also a single slice stored as 3D), a 4D / multi-channel image, or NaN / Inf values.
    """
    spatial = tuple(data.shape[1:])
    if len(spatial) != 3:
        raise VolumeError(
            path,
            f"is a {len(spatial)}D image (shape {shape_text(spatial)}); Rep3D segments 3D volumes: "
            "export the whole series as one 3D file (NIfTI, NRRD or a DICOM series folder).",
        )
    if min(spatial) < 2:
        raise VolumeError(
            path,
            f"has a single slice (shape {shape_text(spatial)}): it is a 2D image stored as 3D; Rep3D segments "
            "3D volumes: export the whole series as one 3D file.",
        )
    if channels is not None and data.shape[0] != channels:
        raise VolumeError(
            path,
            f"has {data.shape[0]} channels (a 4D or multi-channel image, spatial shape {shape_text(spatial)}), "
            f"but the model takes {channels}: save one 3D volume per file (e.g. one MR sequence or contrast phase).",
        )
    check_finite(data, path)


SPACING_RANGE_MM = (0.01, 50.0)
"""Voxel sizes (mm) outside this range are header errors (e.g. metres or micrometres written as mm)."""


def voxel_spacing(affine) -> np.ndarray:
    """Voxel size (mm) along each array axis: the lengths of the affine's columns."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def check_geometry(
    affine,
    shape: Sequence[int],
    path: str,
    max_voxels: Optional[int] = None,
    spacing_range: Sequence[float] = SPACING_RANGE_MM,
) -> None:
    """A plausible voxel spacing and, if ``max_voxels`` is set, at most that many voxels; cheap, run before heavy work.

    Args:
        affine: voxel-to-world affine (mm); None skips the spacing check.
        shape: spatial shape.
        path: the file (for the message).
        max_voxels: the voxel budget (e.g. the bundles' ``max_voxels``), or None for no limit.
        spacing_range: ``(smallest, largest)`` accepted voxel size in mm.

    Raises:
        VolumeError: a voxel size outside ``spacing_range``, or more voxels than ``max_voxels``.
    """
    if affine is not None:
        spacing = voxel_spacing(affine)
        low, high = spacing_range
        if not np.all((spacing >= low) & (spacing <= high)):
            raise VolumeError(
                path,
                f"has voxel spacing {' x '.join(f'{s:.3g}' for s in spacing)} mm, outside the plausible "
                f"{low:g}..{high:g} mm: the header's spacing is wrong (e.g. written in metres or micrometres); fix the "
                "header (pixdim / spacing) and save the file again.",
            )
    voxels = int(np.prod([int(n) for n in shape], dtype=np.int64))
    if max_voxels is not None and voxels > int(max_voxels):
        raise VolumeError(
            path,
            f"has {shape_text(shape)} = {voxels:,} voxels, more than the limit of {int(max_voxels):,} voxels "
            "(the bundle's `max_voxels`): crop or downsample the volume, or raise `max_voxels` if the machine has "
            "the memory for it.",
        )


def check_finite(data, path: str) -> None:
    """No NaN or infinite voxel values.

    Raises:
        VolumeError: with the number of NaN and infinite voxels.
    """
    values = torch.as_tensor(data)
    if not values.is_floating_point() or bool(torch.isfinite(values).all()):
        return
    nan, inf = int(torch.isnan(values).sum()), int(torch.isinf(values).sum())
    raise VolumeError(
        path,
        f"has {nan} NaN and {inf} infinite voxel values; replace them (e.g. with the background intensity, "
        "numpy.nan_to_num) and save the file again.",
    )


def check_label_values(data, path: str, num_classes: Optional[int]) -> None:
    """Integer class ids in ``0 .. num_classes - 1`` (any non-negative integer when ``num_classes`` is None).

    Raises:
        VolumeError: non-integer values, or values outside the classes (listed).
    """
    values = torch.as_tensor(data)
    if values.is_floating_point() and bool((values != torch.round(values)).any()):
        raise VolumeError(
            path,
            "holds non-integer values: it looks like an image or an interpolated label; a label holds "
            "integer class ids (resample labels with nearest neighbour).",
        )
    upper = np.inf if num_classes is None else num_classes - 1
    if float(values.min()) >= 0 and float(values.max()) <= upper:
        return
    unique = torch.unique(values).cpu().numpy()
    bad = [int(v) for v in unique if v < 0 or v > upper][:20]
    allowed = "non-negative integers" if num_classes is None else f"0..{num_classes - 1}"
    raise VolumeError(
        path,
        f"holds label values {bad} outside the model's classes {allowed} (listed in the bundle's "
        "configs/metadata.json): remap them to the model's class ids, or use the bundle whose classes they are.",
    )


def warn_if_empty(data, path: str) -> bool:
    """Logs a warning (and returns True) for a label that is all background; training handles it."""
    if bool((torch.as_tensor(data) != 0).any()):
        return False
    logger.warning(
        f"{path}: the label is empty (background only). Training uses it (background-only patches); "
        "its validation Dice is undefined and left out of the mean."
    )
    return True


def canonical_grid(affine, shape: Sequence[int]) -> Tuple[np.ndarray, Tuple[int, ...]]:
    """The affine and spatial shape of the volume re-oriented to the closest canonical (RAS) axis order.

    Two volumes stored with different axis orders or flips but on the same physical grid get the same result.
    """
    affine = np.asarray(affine, dtype=np.float64)
    shape = tuple(int(n) for n in shape)
    ornt = nib.io_orientation(affine)
    canonical_affine = affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    canonical_shape = [0, 0, 0]
    for axis, (target, _) in enumerate(ornt):
        canonical_shape[int(target)] = shape[axis]
    return canonical_affine, tuple(canonical_shape)


def grid_distance_mm(affine_a, affine_b, shape: Sequence[int]) -> float:
    """Largest distance (mm) between the two grids' positions of the corner voxels of a ``shape`` volume."""
    corners = np.array([[*corner, 1.0] for corner in product(*[(0, n - 1) for n in shape])]).T
    return float(np.linalg.norm((np.asarray(affine_a) @ corners - np.asarray(affine_b) @ corners)[:3], axis=0).max())


def check_same_grid(
    image_affine,
    image_shape: Sequence[int],
    image_path: str,
    label_affine,
    label_shape: Sequence[int],
    label_path: str,
    tolerance: float = 0.1,
) -> None:
    """The label lies on its image's voxel grid (up to the storage axis order and flips).

    Args:
        image_affine, image_shape, image_path: the image's affine, spatial shape and file.
        label_affine, label_shape, label_path: the label's.
        tolerance: allowed misplacement of the grid's corners, as a fraction of the image's smallest voxel size.

    Raises:
        VolumeError: naming both files, for different shapes or grids further apart than the tolerance.
    """
    image_affine, image_shape = canonical_grid(image_affine, image_shape)
    label_affine, label_shape = canonical_grid(label_affine, label_shape)
    where = f"label {label_path} of image {image_path}"
    if image_shape != label_shape:
        raise VolumeError(
            where,
            f"has shape {shape_text(label_shape)} but its image has {shape_text(image_shape)} (RAS axis "
            "order): draw or resample the label on the image's own grid (nearest neighbour).",
        )
    spacing = float(np.linalg.norm(image_affine[:3, :3], axis=0).min())
    distance = grid_distance_mm(image_affine, label_affine, image_shape)
    if distance > tolerance * spacing:
        raise VolumeError(
            where,
            f"is not on its image's grid: corner voxels are up to {distance:.3g} mm apart "
            f"(tolerance {tolerance * spacing:.3g} mm, i.e. {tolerance} voxel). Check that the label belongs to "
            "this image, or resample it onto the image grid (nearest neighbour).",
        )
