"""Geometric building blocks of the synthetic phantoms (smooth blobs, tubes, lesions).

Shapes are defined on a normalised grid: three broadcastable coordinate arrays running from -1
to 1 along the array axes (left-right, anterior-posterior, inferior-superior).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
from scipy import ndimage

Grid = Tuple[np.ndarray, np.ndarray, np.ndarray]


def normalized_grid(size: int) -> Grid:
    """Broadcastable coordinates in [-1, 1] for a ``size``^3 volume."""
    axis = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    return axis[:, None, None], axis[None, :, None], axis[None, None, :]


def smooth_noise(shape: Sequence[int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to zero mean and unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return (field - field.mean()) / max(float(field.std()), 1e-6)


def shifted(field: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same noise field circularly shifted by a random offset (a cheap independent-looking copy)."""
    return np.roll(field, tuple(int(s) for s in rng.integers(0, field.shape)), axis=(0, 1, 2))


def ellipsoid_distance(grid: Grid, center: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    """Normalised squared distance: < 1 inside the ellipsoid, 1 on its surface."""
    return sum(((axis - c) / r) ** 2 for axis, c, r in zip(grid, center, radii))


def deformed_ellipsoid(
    grid: Grid, center: Sequence[float], radii: Sequence[float], noise: np.ndarray, amplitude: float
) -> np.ndarray:
    """Ellipsoid whose surface is pushed in and out by a smooth noise field."""
    return ellipsoid_distance(grid, center, radii) + amplitude * noise < 1.0


def vertical_tube(
    grid: Grid, center_xy: Sequence[float], radii_xy: Sequence[float], z_range: Sequence[float]
) -> np.ndarray:
    """Tube along the superior-inferior axis (aorta, IVC, esophagus), limited to ``z_range``."""
    lr, ap, si = grid
    cross_section = ((lr - center_xy[0]) / radii_xy[0]) ** 2 + ((ap - center_xy[1]) / radii_xy[1]) ** 2 < 1.0
    return cross_section & (si >= z_range[0]) & (si <= z_range[1])


def voxel_grid(shape: Sequence[int]) -> Grid:
    """Broadcastable voxel index coordinates."""
    return tuple(
        np.arange(n, dtype=np.float32).reshape([-1 if i == axis else 1 for i in range(3)])
        for axis, n in enumerate(shape)
    )


def segment_tube(shape: Sequence[int], start: np.ndarray, end: np.ndarray, radius: float) -> np.ndarray:
    """Voxels within ``radius`` (voxels) of the segment ``start``-``end`` (voxel coordinates)."""
    x, y, z = voxel_grid(shape)
    direction = end - start
    length_sq = max(float(direction @ direction), 1e-6)
    t = ((x - start[0]) * direction[0] + (y - start[1]) * direction[1] + (z - start[2]) * direction[2]) / length_sq
    t = np.clip(t, 0.0, 1.0)
    dist_sq = sum((axis - start[i] - t * direction[i]) ** 2 for i, axis in enumerate((x, y, z)))
    return dist_sq <= radius**2


def lesion_inside(
    organ: np.ndarray, radius_fraction: float, rng: np.random.Generator, noise: np.ndarray, min_radius: float = 1.5
) -> np.ndarray:
    """A smooth blob centred deep inside ``organ``, clipped to the organ grown by one voxel.

    Args:
        organ: Boolean organ mask.
        radius_fraction: Blob radius as a fraction of the organ's largest inscribed radius.
        rng: Random generator (chooses the centre).
        noise: Smooth noise field that deforms the blob's surface.
        min_radius: Smallest radius in voxels.

    Returns:
        Boolean lesion mask (empty if the organ is empty).
    """
    if not organ.any():
        return np.zeros_like(organ)
    depth = ndimage.distance_transform_edt(organ)
    candidates = np.argwhere(depth >= 0.6 * depth.max())
    center = candidates[rng.integers(len(candidates))].astype(np.float32)
    radius = max(min_radius, radius_fraction * float(depth.max()))
    x, y, z = voxel_grid(organ.shape)
    dist_sq = (x - center[0]) ** 2 + (y - center[1]) ** 2 + (z - center[2]) ** 2
    blob = dist_sq * (1.0 + 0.25 * noise) < radius**2
    return blob & ndimage.binary_dilation(organ)
