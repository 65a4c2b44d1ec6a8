"""Write image/label volumes into a dataset's official folder layout.

Used by the ``phantom`` and ``totalseg`` commands so that ``prepare`` reads their output exactly
like a real download:

* AMOS22: ``amos22/{dataset.json, imagesTr, labelsTr, imagesVa, labelsVa}/amos_0001.nii.gz``
  (every fifth case goes to the ``Va`` folders; MRI ids start at 500).
* MSD: ``Task07_Pancreas/{dataset.json, imagesTr, labelsTr}/pancreas_001.nii.gz`` (Task08 alike).
* KiTS21: ``kits21/data/case_00000/{imaging.nii.gz, aggregated_MAJ_seg.nii.gz}`` plus ``kits.json``.
  Like the official KiTS files, the arrays are stored slice-first (array axis 0 is the
  superior-inferior axis); the affine is permuted to match, so world geometry is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import nibabel as nib
import numpy as np

from .datalist import to_json_text, write_text_atomically
from .layouts import KITS_IMAGE_NAME, KITS_LABEL_NAME
from .specs import AMOS_CLASS_NAMES, DatasetSpec


def msd_task_info(name: str) -> Dict[str, str]:
    """``name`` and ``description`` fields of the official MSD ``dataset.json``."""
    if name == "msd_pancreas":
        return {"name": "Pancreas", "description": "Pancreas and cancer segmentation"}
    return {"name": "HepaticVessel", "description": "Hepatic Vessels and Tumour Segmentation"}


@dataclass(frozen=True)
class VolumePair:
    """An image and its label on the same grid, arrays indexed (x, y, z) as in NIfTI.

    Attributes:
        image: Intensity array (HU for CT).
        label: Integer class array.
        affine: 4x4 voxel-to-world (RAS, mm) matrix.
    """

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray


@dataclass(frozen=True)
class PlannedCase:
    """Where one case will be written (paths relative to the dataset root)."""

    case_id: str
    image: str
    label: str
    group: str  # "training" or "validation" (AMOS imagesVa)


def dataset_root(spec: DatasetSpec, output_dir: Path) -> Path:
    """Folder that ``prepare --data_dir`` should be pointed at (``.../amos22``, ``.../kits21``)."""
    return Path(output_dir) / spec.source_dir


def plan_cases(spec: DatasetSpec, num_cases: int) -> List[PlannedCase]:
    """File names for ``num_cases`` cases in the dataset's layout."""
    planned = []
    for index in range(num_cases):
        number = spec.first_case_number + index
        if spec.family == "kits":
            case_id = f"case_{number:05d}"
            image, label = f"data/{case_id}/{KITS_IMAGE_NAME}", f"data/{case_id}/{KITS_LABEL_NAME}"
            planned.append(PlannedCase(case_id, image, label, "training"))
            continue
        width = 4 if spec.family == "amos" else 3
        case_id = f"{spec.file_prefix}_{number:0{width}d}"
        suffix = "Va" if spec.family == "amos" and index % 5 == 4 else "Tr"
        group = "validation" if suffix == "Va" else "training"
        planned.append(
            PlannedCase(case_id, f"images{suffix}/{case_id}.nii.gz", f"labels{suffix}/{case_id}.nii.gz", group)
        )
    return planned


def dataset_description_file(spec: DatasetSpec, planned: Sequence[PlannedCase], description: str) -> Dict[str, object]:
    """``{relative path: content}`` of the dataset's index file (``dataset.json`` or ``data/kits.json``)."""
    if spec.family == "kits":
        return {"data/kits.json": [{"case_id": case.case_id, "note": description} for case in planned]}
    entries = {
        group: [{"image": f"./{case.image}", "label": f"./{case.label}"} for case in planned if case.group == group]
        for group in ("training", "validation")
    }
    if spec.family == "amos":
        content = {"name": "AMOS", "description": description, "tensorImageSize": "3D"}
        class_names = AMOS_CLASS_NAMES  # AMOS22 ships one dataset.json with all 16 classes for CT and MRI.
    else:
        content = {**msd_task_info(spec.name), "note": description, "tensorImageSize": "3D"}
        class_names = spec.class_names
    content["modality"] = {"0": spec.modality}
    content["labels"] = {str(index): name for index, name in enumerate(class_names)}
    content["numTraining"] = len(entries["training"])
    if spec.family == "amos":
        content["numValidation"] = len(entries["validation"])
    content["numTest"] = 0
    content["training"] = entries["training"]
    if spec.family == "amos":
        content["validation"] = entries["validation"]
    content["test"] = []
    return {"dataset.json": content}


def to_storage_order(spec: DatasetSpec, array: np.ndarray, affine: np.ndarray):
    """Array and affine as the dataset stores them (KiTS: slice-first, axes reversed)."""
    if spec.family != "kits":
        return array, affine
    stored_affine = affine.copy()
    stored_affine[:, :3] = affine[:, [2, 1, 0]]
    return np.ascontiguousarray(np.transpose(array, (2, 1, 0))), stored_affine


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray, dtype) -> None:
    """Save ``array`` as a compressed NIfTI with scanner-anatomical qform/sform and mm units."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(np.asarray(array, dtype=dtype), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, str(path))


def write_dataset_layout(
    spec: DatasetSpec,
    output_dir: Path,
    volumes: Sequence[VolumePair],
    description: str,
    overwrite: bool = False,
) -> Path:
    """Write ``volumes`` as cases of ``spec`` under ``output_dir``.

    Args:
        spec: Dataset whose layout is reproduced.
        output_dir: Parent folder; the dataset folder (``amos22``, ``kits21``, ``Task07_Pancreas``) is created in it.
        volumes: Cases to write; labels must already use the dataset's class ids.
        description: Provenance text stored in ``dataset.json`` (or ``kits.json``).
        overwrite: Replace existing files (otherwise any existing target file is an error).

    Returns:
        The dataset folder, to be passed to ``prepare --data_dir``.

    Raises:
        FileExistsError: If a target file exists and ``overwrite`` is False (nothing is written).
        ValueError: If a label holds values outside the dataset's classes or an image and label differ in shape.
    """
    root = dataset_root(spec, Path(output_dir))
    planned = plan_cases(spec, len(volumes))
    index_files = dataset_description_file(spec, planned, description)
    targets = [root / p for case in planned for p in (case.image, case.label)] + [root / p for p in index_files]
    existing = [str(path) for path in targets if path.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{existing[0]} already exists ({len(existing)} target files exist); "
            "pass --overwrite True or choose another output_dir"
        )
    for case, volume in zip(planned, volumes):
        if volume.image.shape != volume.label.shape:
            raise ValueError(f"{case.case_id}: image shape {volume.image.shape} != label shape {volume.label.shape}")
        if volume.label.min() < 0 or volume.label.max() >= spec.num_classes:
            raise ValueError(f"{case.case_id}: label values outside 0..{spec.num_classes - 1}")
        image, affine = to_storage_order(spec, volume.image, volume.affine)
        label, _ = to_storage_order(spec, volume.label, volume.affine)
        save_nifti(root / case.image, image, affine, np.int16)
        save_nifti(root / case.label, label, affine, np.uint8)
    for relative, content in index_files.items():
        write_text_atomically(root / relative, to_json_text(content))
    return root
