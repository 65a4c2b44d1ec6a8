"""``phantom``: a small synthetic abdominal dataset written in a dataset's real layout.

Each case is a body ellipsoid (subcutaneous fat, muscle wall, visceral fat/bowel, spine and
back muscles, air outside) holding the AMOS organs as smoothly deformed ellipsoids and tubes
at plausible positions with CT-like (HU) or MRI-like (0..1000) intensities, partial-volume blur,
noise (Rician and a bias field for MRI) and synthetic lesions: kidney tumour and cyst (KiTS),
pancreatic tumour (MSD07), liver tumour plus a hepatic vessel tree (MSD08), and an unlabelled
hypodense liver lesion inside the liver label (AMOS). Labels use the dataset's own class ids.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
from scipy import ndimage

from .layout_writer import VolumePair, write_dataset_layout
from .phantom_anatomy import Organ, abdominal_organs, tissue_values
from .shapes import (
    Grid,
    deformed_ellipsoid,
    ellipsoid_distance,
    lesion_inside,
    normalized_grid,
    segment_tube,
    shifted,
    smooth_noise,
    vertical_tube,
)
from .specs import DatasetSpec, get_dataset_spec

MIN_SIZE = 24
MRI_SPACING_MM = (1.5, 1.5, 3.0)
"""Voxel spacing of the MRI phantom: slices twice as thick as its in-plane voxels (resampled to the bundle's
``pixdim``)."""


def phantom_spacing(spec: DatasetSpec) -> Tuple[float, float, float]:
    """Voxel spacing (mm) of ``spec``'s phantom: the bundle's ``pixdim`` for CT, :data:`MRI_SPACING_MM` for MRI."""
    return MRI_SPACING_MM if spec.modality == "MRI" else spec.pixdim


def phantom_affine(spacing_mm, size: int) -> np.ndarray:
    """LPS-stored affine (axis 0 to the left, axis 1 posterior, axis 2 superior) centred on the origin."""
    spacing = np.asarray(spacing_mm, dtype=float)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = -affine[:3, :3] @ np.full(3, (size - 1) / 2.0)
    return affine


def organ_mask(organ: Organ, grid: Grid, noise: np.ndarray, rng: np.random.Generator, min_radius: float) -> np.ndarray:
    """Mask of one organ with a random per-case jitter of position, size and surface."""
    center = np.asarray(organ.center) + rng.normal(0.0, 0.025, 3)
    radii = np.maximum(np.asarray(organ.radii) * rng.uniform(0.88, 1.12, 3), min_radius)
    if organ.tube_z_range is not None:
        return vertical_tube(grid, center[:2], radii[:2], organ.tube_z_range)
    return deformed_ellipsoid(grid, center, radii, shifted(noise, rng), amplitude=0.25)


def body_tissues(grid: Grid, modality: str, noise: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Intensity image of everything but the organs: air, fat, muscle wall, visceral fat, spine, back muscles."""
    values = tissue_values(modality)
    lr, ap, _ = grid
    shape = noise.shape
    scale = rng.uniform(0.94, 1.06)
    image = np.full(shape, values.air, dtype=np.float32)
    layers = (
        ((0.92, 0.74), values.fat),
        ((0.85, 0.67), values.muscle),
        ((0.80, 0.62), values.visceral),
    )
    for (r_lr, r_ap), value in layers:
        inside = np.broadcast_to(((lr / (r_lr * scale)) ** 2 + (ap / (r_ap * scale)) ** 2) < 1.0, shape)
        image[inside] = value
    cavity = np.broadcast_to(((lr / (0.80 * scale)) ** 2 + (ap / (0.62 * scale)) ** 2) < 1.0, shape)
    image[cavity] += 0.25 * abs(values.fat - values.muscle) * shifted(noise, rng)[cavity]  # bowel loops / fat
    for center, radii, value in (
        ((0.0, 0.52), (0.13, 0.11), values.bone),  # vertebral body
        ((-0.20, 0.58), (0.10, 0.07), values.muscle),  # right paraspinal muscle
        ((0.20, 0.58), (0.10, 0.07), values.muscle),  # left paraspinal muscle
    ):
        image[np.broadcast_to(((lr - center[0]) / radii[0]) ** 2 + ((ap - center[1]) / radii[1]) ** 2 < 1.0, shape)] = (
            value
        )
    return image


def hepatic_vessel_tree(liver: np.ndarray, rng: np.random.Generator, trunk_radius: float) -> np.ndarray:
    """Branching tubes from the liver centroid towards random points of the liver, clipped to the liver."""
    if not liver.any():
        return np.zeros_like(liver)
    points = np.argwhere(liver).astype(np.float32)
    hilum = points.mean(axis=0)
    tree = np.zeros_like(liver)
    for end in points[rng.choice(len(points), size=5, replace=False)]:
        tree |= segment_tube(liver.shape, hilum, end, trunk_radius)
        middle = (hilum + end) / 2.0
        for twig in points[rng.choice(len(points), size=2, replace=False)]:
            tree |= segment_tube(liver.shape, middle, middle + 0.6 * (twig - middle), max(0.8, 0.6 * trunk_radius))
    return tree & liver


def paint_lesions(
    spec: DatasetSpec, masks: Dict[str, np.ndarray], label: np.ndarray, image: np.ndarray, noise, rng
) -> None:
    """Add the dataset's synthetic lesions (and MSD08 vessels) to ``label`` and ``image`` in place."""
    values = tissue_values(spec.modality)
    size = label.shape[0]
    ids = spec.label_ids
    if spec.name == "kits":
        tumour_side, cyst_side = rng.permutation(["right kidney", "left kidney"])
        tumour = lesion_inside(masks[tumour_side], 0.7, rng, shifted(noise, rng))
        cyst = lesion_inside(masks[cyst_side], 0.45, rng, shifted(noise, rng)) & ~tumour
        label[tumour], label[cyst] = ids["tumor"], ids["cyst"]
        image[tumour] = 90 + 20 * shifted(noise, rng)[tumour]  # heterogeneous, less enhancing than cortex
        image[cyst] = values.cyst
    elif spec.name == "msd_pancreas":
        tumour = lesion_inside(masks["pancreas"], 0.8, rng, shifted(noise, rng), min_radius=1.2)
        label[tumour] = ids["tumor"]
        image[tumour] += values.lesion_offset
    elif spec.name == "msd_hepatic_vessel":
        liver = masks["liver"]
        vessels = hepatic_vessel_tree(liver, rng, trunk_radius=max(1.0, size / 40.0))
        tumour = lesion_inside(liver & ~vessels, 0.35, rng, shifted(noise, rng))
        label[vessels], label[tumour] = ids["vessel"], ids["tumor"]
        image[vessels] = values.vessel
        image[tumour] += values.lesion_offset
    else:  # AMOS: an unlabelled focal liver lesion stays inside the liver label, as in the real annotations
        lesion = lesion_inside(masks["liver"], 0.25, rng, shifted(noise, rng))
        image[lesion] += values.lesion_offset


def dataset_label_value(spec: DatasetSpec, organ: Organ) -> int:
    """Label value an organ gets in ``spec``: that of the class of the same name (both kidneys: KiTS's ``kidney``),
    0 when the dataset does not label it (MSD08 labels vessels and tumours only, painted in :func:`paint_lesions`)."""
    if spec.name == "kits" and organ.name.endswith("kidney"):
        return spec.label_ids["kidney"]
    return spec.label_ids.get(organ.name, 0)


def finish_intensities(image: np.ndarray, modality: str, noise: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Partial-volume blur, noise (and bias field for MRI), clipping to the modality's range."""
    values = tissue_values(modality)
    image = ndimage.gaussian_filter(image, 0.6)
    if modality == "CT":
        image = image + rng.normal(0.0, values.noise_sigma, image.shape)
        return np.clip(np.rint(image), -1024, 3071).astype(np.int16)
    image = image * (1.0 + 0.12 * shifted(noise, rng))  # coil bias field
    real = image + rng.normal(0.0, values.noise_sigma, image.shape)
    imaginary = rng.normal(0.0, values.noise_sigma, image.shape)
    return np.clip(np.rint(np.hypot(real, imaginary)), 0, 1000).astype(np.int16)


def synthesize_phantom_case(spec: DatasetSpec, size: int, rng: np.random.Generator) -> VolumePair:
    """One synthetic case of ``spec`` on a ``size``^3 grid.

    Args:
        spec: Dataset (decides modality, labelled organs and lesions).
        size: Edge length in voxels.
        rng: Random generator; the case is fully determined by its state.

    Returns:
        Image (int16), label (uint8) and affine.
    """
    grid = normalized_grid(size)
    noise = smooth_noise((size, size, size), sigma=size / 12.0, rng=rng)
    image = body_tissues(grid, spec.modality, noise, rng)
    label = np.zeros((size, size, size), dtype=np.uint8)
    owner = np.zeros((size, size, size), dtype=np.int16)  # index + 1 of the organ drawn last at each voxel
    min_radius = 2.0 / size  # keep small organs at least ~1 voxel thick
    cavity = ellipsoid_distance(grid[:2], (0.0, 0.0), (0.80, 0.62)) < 1.0
    organs = [o for o in abdominal_organs() if spec.modality == "CT" or o.in_mri_field_of_view]
    for index, organ in enumerate(organs, start=1):
        mask = organ_mask(organ, grid, noise, rng, min_radius) & cavity
        owner[mask] = index
        image[mask] = (organ.ct_hu if spec.modality == "CT" else organ.mri_value) + 4.0 * shifted(noise, rng)[mask]
        label[mask] = dataset_label_value(spec, organ)
    masks = {organ.name: owner == index for index, organ in enumerate(organs, start=1)}
    paint_lesions(spec, masks, label, image, noise, rng)
    image = finish_intensities(image, spec.modality, noise, rng)
    return VolumePair(image, label, phantom_affine(phantom_spacing(spec), size))


def write_phantom_dataset(
    dataset: str, output_dir: str, num_cases: int = 6, size: int = 64, seed: int = 0, overwrite: bool = False
) -> Path:
    """Write ``num_cases`` synthetic cases of ``dataset`` in its official layout under ``output_dir``.

    Args:
        dataset: Dataset name (``amos_ct``, ``amos_mri``, ``kits``, ``msd_pancreas``, ``msd_hepatic_vessel``).
        output_dir: Parent folder; e.g. ``output_dir/amos22`` or ``output_dir/kits21/data/case_00000`` is created.
        num_cases: Number of cases (at least 3 so that ``prepare`` can split them; 5 for the 5-fold datasets).
        size: Edge length of each cubic volume in voxels (at least 24).
        seed: Seed; the same seed gives identical files.
        overwrite: Replace existing files.

    Returns:
        The dataset folder to pass to ``prepare --data_dir``.

    Raises:
        ValueError: On bad arguments.
        FileExistsError: If target files exist and ``overwrite`` is False.
    """
    spec = get_dataset_spec(dataset)
    num_cases, size = int(num_cases), int(size)
    if num_cases < 1:
        raise ValueError(f"num_cases must be positive, got {num_cases}")
    if size < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE} voxels, got {size}")
    dataset_salt = zlib.crc32(spec.name.encode())  # different datasets get different cases for the same seed
    rngs = [np.random.default_rng([int(seed), index, dataset_salt]) for index in range(num_cases)]
    volumes = [synthesize_phantom_case(spec, size, rng) for rng in rngs]
    description = (
        f"Synthetic abdominal phantom for {spec.name} (rep3d_networks.data phantom, seed {seed}, {size}^3 voxels). "
        "Not patient data."
    )
    return write_dataset_layout(spec, Path(output_dir), volumes, description, overwrite=bool(overwrite))
