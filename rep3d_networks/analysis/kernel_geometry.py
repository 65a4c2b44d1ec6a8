"""Where a kernel tap sits: distance to the centre, centre/periphery regions and radial profiles."""

from typing import Dict

import numpy as np

from rep3d_networks.blocks.lrbm import tap_distance

CENTRE_MAX_DISTANCE = 1.0
PERIPHERY_MIN_DISTANCE = 7.0


def tap_distances(kernel_size: int) -> np.ndarray:
    """Euclidean distance of every tap of a ``K³`` kernel to its centre, shape ``[K, K, K]`` (eq. 12)."""
    return tap_distance(kernel_size)[0, 0].numpy().astype(np.float64)


def distance_from_centre(shape) -> np.ndarray:
    """Distance of every voxel of a 3D array of ``shape`` to the voxel ``size // 2`` on each axis."""
    dz, dy, dx = (np.arange(n) - n // 2 for n in shape)
    return np.sqrt(dz[:, None, None] ** 2 + dy[None, :, None] ** 2 + dx[None, None, :] ** 2)


def centre_periphery_ratio(
    values: np.ndarray,
    centre_max: float = CENTRE_MAX_DISTANCE,
    periphery_min: float = PERIPHERY_MIN_DISTANCE,
) -> float:
    """Mean of ``values`` over the centre taps divided by its mean over the periphery taps.

    Centre: distance to the kernel centre ``<= centre_max`` (default 1: the centre and its 6 face
    neighbours, all inside a ``3³`` small branch). Periphery: distance ``>= periphery_min`` (default 7).

    Args:
        values: per-tap values ``[K, K, K]`` (e.g. ``|ΔW_eff|`` averaged over channels).
        centre_max: largest distance counted as centre.
        periphery_min: smallest distance counted as periphery.

    Returns:
        The ratio (``inf`` when the periphery mean is 0, ``nan`` when both are 0).
    """
    distance = tap_distances(values.shape[-1])
    centre = float(values[distance <= centre_max].mean())
    periphery = float(values[distance >= periphery_min].mean())
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(centre) / np.float64(periphery))


def radial_profile(values: np.ndarray) -> Dict[str, list]:
    """Mean of ``values`` in unit-width shells of distance from the centre (shell ``r`` holds ``r - ½ < d <= r + ½``).

    Works for any 3D array (a kernel or an ERF map); the centre is ``size // 2`` on every axis.

    Returns:
        ``{"radius": [0, 1, ...], "mean": [...], "count": [...]}`` over the non-empty shells.
    """
    distance = distance_from_centre(values.shape)
    shell = np.rint(distance).astype(int).ravel()
    sums = np.bincount(shell, weights=values.astype(np.float64).ravel())
    counts = np.bincount(shell)
    keep = counts > 0
    radius = np.flatnonzero(keep)
    return {"radius": radius.tolist(), "mean": (sums[keep] / counts[keep]).tolist(), "count": counts[keep].tolist()}
