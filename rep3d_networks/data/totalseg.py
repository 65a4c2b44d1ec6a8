"""``totalseg``: a tiny dataset in a bundle's real layout built from the real TotalSegmentator volumes.

Source volumes (``../shared/data``, see its README; they are never copied into the repository):

* CT (``amos_ct``, ``kits``, ``msd_pancreas``, ``msd_hepatic_vessel``): by default
  ``totalseg_ct_abdomen_3mm/example_ct.nii.gz`` with ``example_seg_fast_force_split.nii.gz``
  (abdomen and pelvis, complete kidneys); ``--ct_source small`` uses ``example_ct_sm.nii.gz`` with
  ``example_seg.nii.gz`` (upper abdomen).
* MRI (``amos_mri``): ``totalseg_mr_abdomen_3mm/example_mr_sm.nii.gz`` with ``example_seg_mr.nii.gz``.

Caveats, by construction:

* There is one subject per modality. To get several cases the volume is cut into z-slabs around
  the labelled structures; slabs overlap when the organs span fewer slices than
  ``num_cases`` times ``min_slab_slices``, and in any case all slabs come from one person, so the
  cases are **not independent** (train/test leakage): use the result as a realistic smoke test, not
  for accuracy claims.
* The labels are TotalSegmentator **predictions** mapped to the bundle's classes with the README's
  table (AMOS ids; KiTS kidney = TS 2+3; MSD07 pancreas = TS 7; MSD08 "vessel" = TS 63 IVC + 64
  portal/splenic vein within 6 mm of the liver, a proxy since TotalSegmentator has no hepatic-vessel
  class).
* No real tumours exist. With ``synthetic_lesions`` (default on) the KiTS, MSD07 and MSD08 cases
  get a **synthetic** lesion blob inside the organ (kidney tumour and cyst, pancreatic tumour,
  liver tumour) that is written into both the label and the image (hypodense intensities);
  this is recorded in the dataset's ``dataset.json``/``kits.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import nibabel as nib
import numpy as np
from scipy import ndimage

from .layout_writer import VolumePair, write_dataset_layout
from .shapes import lesion_inside, smooth_noise
from .specs import DatasetSpec, get_dataset_spec

LIVER_TS_LABEL = 5  # TotalSegmentator liver, in both the total and total_mr tasks


@dataclass(frozen=True)
class SourcePair:
    """A TotalSegmentator image and its label file, relative to ``shared_data``."""

    image: str
    label: str
    task: str  # TotalSegmentator task: "total" (CT) or "total_mr"


def source_pair(spec: DatasetSpec, ct_source: str) -> SourcePair:
    """Which shared volumes a dataset is built from.

    Raises:
        ValueError: If ``ct_source`` is not ``"full"`` or ``"small"``.
    """
    if spec.modality == "MRI":
        folder = "totalseg_mr_abdomen_3mm"
        return SourcePair(f"{folder}/example_mr_sm.nii.gz", f"{folder}/example_seg_mr.nii.gz", "total_mr")
    folder = "totalseg_ct_abdomen_3mm"
    if ct_source == "full":
        return SourcePair(f"{folder}/example_ct.nii.gz", f"{folder}/example_seg_fast_force_split.nii.gz", "total")
    if ct_source == "small":
        return SourcePair(f"{folder}/example_ct_sm.nii.gz", f"{folder}/example_seg.nii.gz", "total")
    raise ValueError(f"ct_source must be 'full' or 'small', got {ct_source!r}")


def amos_mapping(task: str) -> Dict[int, int]:
    """``{TotalSegmentator label: AMOS id}`` from the shared-data README table."""
    total = (1, 2, 3, 4, 15, 5, 6, 52, 63, 7, 8, 9, 19, 21, 22)
    total_mr = (1, 2, 3, 4, 12, 5, 6, 23, 24, 7, 8, 9, 14, 16, 17)
    return {ts: amos_id for amos_id, ts in enumerate(total if task == "total" else total_mr, start=1)}


def label_mapping(spec: DatasetSpec, task: str) -> Dict[int, int]:
    """``{TotalSegmentator label: dataset class}`` for ``spec``."""
    if spec.family == "amos":
        return {ts: amos_id for ts, amos_id in amos_mapping(task).items() if amos_id < spec.num_classes}
    if spec.name == "kits":
        return {2: 1, 3: 1}
    if spec.name == "msd_pancreas":
        return {7: 1}
    return {63: 1, 64: 1}  # MSD08 vessel proxy: IVC + portal/splenic vein (clipped to the liver region later)


def mapped_label(spec: DatasetSpec, ts_label: np.ndarray, task: str) -> np.ndarray:
    """The dataset's label volume from a TotalSegmentator label volume.

    For MSD08 the vessel proxy (TS 63 IVC + 64 portal/splenic vein) is kept only within 2 voxels
    (6 mm) of the liver (TS 5), since the real Task08 labels vessels inside the liver.
    """
    label = map_labels(ts_label, label_mapping(spec, task))
    if spec.name == "msd_hepatic_vessel":
        label[~ndimage.binary_dilation(ts_label == LIVER_TS_LABEL, iterations=2)] = 0
    return label


def map_labels(ts_label: np.ndarray, mapping: Dict[int, int]) -> np.ndarray:
    """Apply a label mapping; unmapped TotalSegmentator labels become background."""
    lookup = np.zeros(max(int(ts_label.max()), max(mapping)) + 1, dtype=np.uint8)
    for ts_value, value in mapping.items():
        lookup[ts_value] = value
    return lookup[ts_label.astype(np.intp)]


def load_source(shared_data: Path, pair: SourcePair) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load image (int16), TotalSegmentator label and affine, checking files, grids and orientation.

    Raises:
        FileNotFoundError: If a file is missing.
        ValueError: If the grids differ or the third array axis is not superior-inferior.
    """
    paths = [Path(shared_data) / pair.image, Path(shared_data) / pair.label]
    for path in paths:
        if not path.is_file():
            readme = Path(shared_data) / "README.md"
            raise FileNotFoundError(f"{path} is missing (expected the shared test data described in {readme})")
    image_nii, label_nii = nib.load(str(paths[0])), nib.load(str(paths[1]))
    if image_nii.shape != label_nii.shape or not np.allclose(image_nii.affine, label_nii.affine, atol=1e-3):
        raise ValueError(f"{paths[1]} is not on the grid of {paths[0]}")
    if nib.aff2axcodes(image_nii.affine)[2] not in ("S", "I"):
        raise ValueError(f"{paths[0]}: third array axis is not superior-inferior, cannot cut z-slabs")
    image = np.clip(np.asanyarray(image_nii.dataobj), -32768, 32767).astype(np.int16)
    label = np.asanyarray(label_nii.dataobj).astype(np.int16)
    return image, label, image_nii.affine


def slab_ranges(target: np.ndarray, num_slabs: int, min_slices: int) -> List[Tuple[int, int]]:
    """``num_slabs`` distinct z-ranges ``[start, stop)`` that each contain part of ``target``.

    Slabs are at least ``min_slices`` thick (so they overlap when the target is short) and spread
    evenly over the target's z-extent; with several slabs the thickness is capped at 60 % of the
    volume depth.

    Raises:
        ValueError: If ``target`` is empty or too short for ``num_slabs`` distinct slabs.
    """
    depth = target.shape[2]
    occupied = np.flatnonzero(target.any(axis=(0, 1)))
    if occupied.size == 0:
        raise ValueError("the structure that defines the slabs is empty in the source volume")
    first, last = int(occupied[0]), int(occupied[-1])
    thickness = max(int(min_slices), int(np.ceil((last - first + 1) / num_slabs)))
    thickness = min(thickness, depth if num_slabs == 1 else max(1, int(np.ceil(0.6 * depth))))
    low, high = first, last + 1 - thickness  # slabs inside the target's extent, when it is long enough
    if high - low < num_slabs - 1:
        low, high = first - thickness // 2, last - thickness // 2  # slabs centred on the target's slices
    low, high = max(low, 0), min(high, depth - thickness)
    if high - low < num_slabs - 1:
        low, high = max(0, first - thickness + 1), min(depth - thickness, last)  # any slab touching the target
    if high - low < num_slabs - 1:
        raise ValueError(
            f"cannot cut {num_slabs} distinct slabs of {thickness} slices around slices {first}..{last} of {depth}"
        )
    starts = [int(np.floor(v + 1e-6)) for v in np.linspace(low, high, num_slabs)]
    return [(start, start + thickness) for start in starts]


def slab_affine(affine: np.ndarray, start: int) -> np.ndarray:
    """Affine of a z-slab starting at slice ``start``."""
    shifted = affine.copy()
    shifted[:3, 3] = affine[:3, :3] @ np.array([0.0, 0.0, float(start)]) + affine[:3, 3]
    return shifted


def add_synthetic_lesions(
    spec: DatasetSpec, image: np.ndarray, label: np.ndarray, ts_label: np.ndarray, rng: np.random.Generator
) -> None:
    """Paint synthetic lesions into ``label`` and ``image`` in place (KiTS, MSD07, MSD08 only).

    KiTS: a tumour (2, ~90 HU) and a cyst (3, ~8 HU) in the kidneys. MSD07: a hypodense tumour (2)
    in the pancreas. MSD08: a hypodense tumour (2) in the liver (TotalSegmentator label 5), away
    from the vessel-proxy voxels.
    """
    noise = smooth_noise(label.shape, sigma=2.0, rng=rng)
    if spec.name == "kits":
        tumour = lesion_inside(label == 1, 0.7, rng, noise, min_radius=1.5)
        cyst = lesion_inside((label == 1) & ~tumour, 0.4, rng, np.roll(noise, 7, axis=0), min_radius=1.0) & ~tumour
        label[tumour], label[cyst] = 2, 3
        image[tumour] = np.rint(90 + 15 * noise[tumour])
        image[cyst] = np.rint(8 + 6 * noise[cyst])
        return
    if spec.name == "msd_pancreas":
        tumour = lesion_inside(label == 1, 0.8, rng, noise, min_radius=1.2)
    else:
        liver_without_vessels = (ts_label == LIVER_TS_LABEL) & (label == 0)
        tumour = lesion_inside(liver_without_vessels, 0.35, rng, noise, min_radius=1.2) & (label != 1)
    label[tumour] = 2
    image[tumour] = np.rint(image[tumour] - 45 + 8 * noise[tumour])


def build_totalseg_volumes(
    spec: DatasetSpec,
    shared_data: Path,
    num_cases: int,
    min_slab_slices: int,
    synthetic_lesions: bool,
    ct_source: str,
    seed: int,
) -> List[VolumePair]:
    """Cut the mapped source volume into ``num_cases`` slab cases (see the module docstring)."""
    pair = source_pair(spec, ct_source)
    image, ts_label, affine = load_source(Path(shared_data), pair)
    label = mapped_label(spec, ts_label, pair.task)
    volumes = []
    for index, (start, stop) in enumerate(slab_ranges(label > 0, num_cases, min_slab_slices)):
        slab_image, slab_label = image[:, :, start:stop].copy(), label[:, :, start:stop].copy()
        if synthetic_lesions:
            rng = np.random.default_rng([int(seed), index])
            add_synthetic_lesions(spec, slab_image, slab_label, ts_label[:, :, start:stop], rng)
        volumes.append(VolumePair(slab_image, slab_label, slab_affine(affine, start)))
    return volumes


def write_totalseg_dataset(
    dataset: str,
    shared_data: str,
    output_dir: str,
    num_cases: Optional[int] = None,
    min_slab_slices: int = 16,
    synthetic_lesions: bool = True,
    ct_source: str = "full",
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a tiny real-image dataset for ``dataset`` in its official layout under ``output_dir``.

    Args:
        dataset: Dataset name (``amos_ct``, ``amos_mri``, ``kits``, ``msd_pancreas``, ``msd_hepatic_vessel``).
        shared_data: The ``shared/data`` folder beside the repository.
        output_dir: Parent folder for the dataset folder (``amos22``, ``kits21``, ``Task07_Pancreas``...).
        num_cases: Number of z-slab cases; default 3 for AMOS and 5 for the 5-fold datasets (KiTS, MSD).
        min_slab_slices: Minimum slab thickness in slices (3 mm each).
        synthetic_lesions: Add synthetic tumour/cyst blobs for KiTS, MSD07 and MSD08 (see module docstring).
        ct_source: ``"full"`` (abdomen-pelvis, default) or ``"small"`` (upper abdomen) CT source.
        seed: Seed of the synthetic lesions.
        overwrite: Replace existing files.

    Returns:
        The dataset folder to pass to ``prepare --data_dir``.

    Raises:
        FileNotFoundError: Missing shared data.
        FileExistsError: If target files exist and ``overwrite`` is False.
        ValueError: On bad arguments.
    """
    spec = get_dataset_spec(dataset)
    num_cases = (5 if spec.uses_kfold else 3) if num_cases is None else int(num_cases)
    if num_cases < 1:
        raise ValueError(f"num_cases must be positive, got {num_cases}")
    with_lesions = bool(synthetic_lesions) and spec.family != "amos"
    volumes = build_totalseg_volumes(
        spec, Path(shared_data), num_cases, int(min_slab_slices), with_lesions, ct_source, int(seed)
    )
    pair = source_pair(spec, ct_source)
    description = (
        f"Built by rep3d_networks.data totalseg from the TotalSegmentator example volumes {pair.image} / {pair.label} "
        f"(Apache-2.0): {num_cases} z-slabs (possibly overlapping) of ONE subject; "
        "labels are TotalSegmentator predictions mapped "
        f"to {spec.name} classes"
        + ("; tumour/cyst labels are SYNTHETIC blobs painted into label and image." if with_lesions else ".")
    )
    return write_dataset_layout(spec, Path(output_dir), volumes, description, overwrite=bool(overwrite))
