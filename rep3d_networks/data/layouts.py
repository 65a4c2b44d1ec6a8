"""Find image/label pairs in the official folder layouts of AMOS22, KiTS21 and the MSD tasks.

Pairs are matched by case id (never by sort order). Anything unexpected (an image without a
label, a label without an image, a file name that is not a case file, an empty folder, a missing
``dataset.json``) raises an exception that names the offending path. macOS metadata files
(``._*``, ``.DS_Store``) that the real MSD tars contain are ignored.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

from .specs import DatasetSpec

NIFTI_SUFFIX = ".nii.gz"
KITS_IMAGE_NAME = "imaging.nii.gz"
KITS_LABEL_NAME = "aggregated_MAJ_seg.nii.gz"
KITS_CASE_PATTERN = re.compile(r"^case_(\d{5})$")


@dataclass(frozen=True)
class Case:
    """One labelled case.

    Attributes:
        case_id: Identifier as it appears in the file or folder name (``amos_0001``, ``case_00000``).
        number: Numeric part of the id.
        image: Absolute path of the image file.
        label: Absolute path of the label file.
    """

    case_id: str
    number: int
    image: Path
    label: Path


def is_hidden_file(path: Path) -> bool:
    """True for dot files such as macOS ``._pancreas_001.nii.gz`` and ``.DS_Store``."""
    return path.name.startswith(".")


def locate_dataset_root(spec: DatasetSpec, data_dir: Path) -> Path:
    """Find the folder holding the official layout, given the folder the user pointed at.

    ``data_dir`` may be the dataset folder itself (``.../amos22``, ``.../Task07_Pancreas``,
    ``.../kits21``, ``.../kits21/data``, or any folder holding ``case_XXXXX`` folders) or the folder
    that contains it.

    Args:
        spec: Dataset description.
        data_dir: Folder given on the command line.

    Returns:
        The folder with ``dataset.json``/``imagesTr`` (AMOS, MSD) or the ``case_XXXXX`` folders (KiTS).

    Raises:
        FileNotFoundError: If ``data_dir`` does not exist or holds no recognisable layout.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data_dir {data_dir} does not exist or is not a folder")
    if spec.family == "kits":
        for candidate in (data_dir, data_dir / "data", data_dir / "kits21" / "data"):
            if candidate.is_dir() and any(KITS_CASE_PATTERN.match(p.name) for p in candidate.iterdir() if p.is_dir()):
                return candidate
        raise FileNotFoundError(
            f"no case_XXXXX folders found in {data_dir}, {data_dir / 'data'} or {data_dir / 'kits21' / 'data'} "
            f"(expected the KiTS21 layout kits21/data/case_00000/{KITS_IMAGE_NAME})"
        )
    for candidate in (data_dir, data_dir / spec.source_dir):
        if (candidate / "imagesTr").is_dir() or (candidate / "dataset.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"{data_dir} holds neither imagesTr/ nor dataset.json, and {data_dir / spec.source_dir} does not exist "
        f"(expected the official {spec.source_dir}/ layout with dataset.json, imagesTr/, labelsTr/)"
    )


def dataset_base_dir(spec: DatasetSpec, data_dir: Path) -> Path:
    """The folder datalist paths are relative to, whichever accepted form ``data_dir`` takes.

    It is the official top folder that the bundles' ``dataset_dir`` points at: ``amos22/``,
    ``Task07_Pancreas/``, ``Task08_HepaticVessel/``, or ``kits21/`` (the parent of ``data/``; a
    folder of ``case_XXXXX`` folders not called ``data`` is its own base).
    """
    root = locate_dataset_root(spec, Path(data_dir))
    if spec.family == "kits" and root.name == "data":
        return root.parent
    return root


def read_dataset_json(root: Path) -> dict:
    """Read and sanity-check the ``dataset.json`` shipped with AMOS and the MSD tasks.

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: If it is not a JSON object.
    """
    path = root / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; the official download has a dataset.json next to imagesTr/")
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(content, dict):
        raise ValueError(f"{path} must hold a JSON object, found {type(content).__name__}")
    return content


def check_dataset_json_labels(spec: DatasetSpec, root: Path, content: dict) -> None:
    """Check that ``dataset.json`` declares at least the classes the dataset should have.

    AMOS22's single ``dataset.json`` lists 16 classes for both CT and MRI, so only a *smaller* label
    set is an error (it means the folder belongs to another dataset).

    Raises:
        ValueError: If the ``labels`` entry is malformed or declares too few classes.
    """
    labels = content.get("labels")
    if labels is None:
        return
    if not isinstance(labels, dict):
        raise ValueError(f'{root / "dataset.json"}: \'labels\' must be an object like {{"0": "background"}}')
    if len(labels) < spec.num_classes:
        raise ValueError(
            f"{root / 'dataset.json'} declares {len(labels)} labels {sorted(labels.values())}, but {spec.name} has "
            f"{spec.num_classes} ({', '.join(spec.class_names)}); is this the right dataset folder?"
        )


def list_case_files(folder: Path, prefix: str) -> Dict[int, Path]:
    """Map case number to file for every ``<prefix>_<digits>.nii.gz`` in ``folder``.

    Raises:
        ValueError: On a file whose name is not a case file, or two files with the same case number.
    """
    pattern = re.compile(rf"^{re.escape(prefix)}_(\d+){re.escape(NIFTI_SUFFIX)}$")
    files: Dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if is_hidden_file(path):
            continue
        match = pattern.match(path.name)
        if match is None:
            raise ValueError(f"unexpected file {path}: expected names like {prefix}_0001{NIFTI_SUFFIX}")
        number = int(match.group(1))
        if number in files:
            raise ValueError(f"{path} and {files[number]} have the same case number {number}")
        files[number] = path
    return files


def pair_folder(images_dir: Path, labels_dir: Path, prefix: str) -> List[Case]:
    """Pair ``images_dir/<prefix>_N.nii.gz`` with ``labels_dir/<prefix>_N.nii.gz`` by case number.

    Raises:
        FileNotFoundError: If a label is missing for an image or an image for a label.
    """
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is missing")
    images = list_case_files(images_dir, prefix)
    labels = list_case_files(labels_dir, prefix)
    for number, image in images.items():
        if number not in labels:
            raise FileNotFoundError(f"label {labels_dir / image.name} for image {image} is missing")
    for number, label in labels.items():
        if number not in images:
            raise FileNotFoundError(f"image {images_dir / label.name} for label {label} is missing")
    return [
        Case(case_id=images[n].name[: -len(NIFTI_SUFFIX)], number=n, image=images[n], label=labels[n])
        for n in sorted(images)
    ]


def find_decathlon_style_cases(spec: DatasetSpec, root: Path) -> List[Case]:
    """Cases of AMOS22 (``imagesTr``+``imagesVa``) or an MSD task (``imagesTr``) under ``root``.

    ``imagesTs`` holds unlabelled test images in both datasets and is not used.
    """
    check_dataset_json_labels(spec, root, read_dataset_json(root))
    folder_pairs: List[Tuple[str, str]] = [("imagesTr", "labelsTr")]
    if spec.family == "amos":
        folder_pairs.append(("imagesVa", "labelsVa"))
    cases: List[Case] = []
    seen: Dict[int, Case] = {}
    for images_name, labels_name in folder_pairs:
        images_dir, labels_dir = root / images_name, root / labels_name
        if images_name != "imagesTr" and not images_dir.exists() and not labels_dir.exists():
            continue  # AMOS imagesVa/labelsVa are optional as a pair (e.g. a Tr-only copy).
        for case in pair_folder(images_dir, labels_dir, spec.file_prefix):
            if case.number in seen:
                raise ValueError(f"case {case.case_id} appears twice: {seen[case.number].image} and {case.image}")
            seen[case.number] = case
            if spec.accepts_case_number(case.number):
                cases.append(case)
    return cases


def find_kits_cases(root: Path) -> List[Case]:
    """Cases of KiTS21 under ``root`` (the folder holding ``case_XXXXX`` folders)."""
    cases = []
    for case_dir in sorted(p for p in root.iterdir() if p.is_dir() and KITS_CASE_PATTERN.match(p.name)):
        image, label = case_dir / KITS_IMAGE_NAME, case_dir / KITS_LABEL_NAME
        if not label.is_file():
            raise FileNotFoundError(f"label {label} is missing (KiTS21 ships it in the kits21 repository)")
        if not image.is_file():
            raise FileNotFoundError(
                f"image {image} is missing (download it with the kits21 repository's "
                "kits21/starter_code/get_imaging.py, or remove the case folder)"
            )
        number = int(KITS_CASE_PATTERN.match(case_dir.name).group(1))
        cases.append(Case(case_id=case_dir.name, number=number, image=image, label=label))
    return cases


def find_cases(spec: DatasetSpec, data_dir: Path) -> List[Case]:
    """Find all labelled cases of ``spec`` under ``data_dir``.

    Args:
        spec: Dataset description.
        data_dir: Root of the official download (see :func:`locate_dataset_root`).

    Returns:
        Cases sorted by case number.

    Raises:
        FileNotFoundError: Missing folders, images or labels (the message names the path).
        ValueError: Unexpected file names, duplicate ids, or no case at all.
    """
    root = locate_dataset_root(spec, Path(data_dir))
    cases = find_kits_cases(root) if spec.family == "kits" else find_decathlon_style_cases(spec, root)
    if not cases:
        id_note = f" with case ids in [{spec.case_id_range[0]}, {spec.case_id_range[1]})" if spec.case_id_range else ""
        raise ValueError(f"no labelled {spec.name} cases{id_note} found in {root}")
    return cases
