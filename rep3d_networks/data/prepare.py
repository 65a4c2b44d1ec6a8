"""``prepare``: write seeded datalist JSON files for a dataset in its official layout."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

from .datalist import build_datalist, datalist_filename, write_json_files
from .layouts import dataset_base_dir, find_cases
from .nifti_checks import check_label_values, check_pair_shapes
from .specs import get_dataset_spec
from .splits import fixed_split, kfold_splits

DEFAULT_NUM_FOLDS = 5


def prepare_datalists(
    dataset: str,
    data_dir: str,
    output_dir: str,
    seed: int = 0,
    overwrite: bool = False,
    num_folds: Optional[int] = None,
    check_labels: bool = False,
) -> List[Path]:
    """Write ``datalist_fold*.json`` for ``dataset`` found under ``data_dir``.

    AMOS gets one fixed split (``datalist_fold0.json``); KiTS21 and the MSD tasks get
    ``num_folds`` (default 5) cross-validation folds ``datalist_fold0.json`` ...; see
    :mod:`rep3d_networks.data.splits`. Every image/label pair is matched by case id and its
    NIfTI headers are checked for equal shapes. Paths in the datalists are relative to the
    official top folder (``amos22``, ``kits21``, ``Task07_Pancreas``, ``Task08_HepaticVessel``;
    see :func:`rep3d_networks.data.layouts.dataset_base_dir`), whichever accepted form
    ``data_dir`` takes, so they match the bundles' ``dataset_dir``.

    Args:
        dataset: Dataset name (``amos_ct``, ``amos_mri``, ``kits``, ``msd_pancreas``, ``msd_hepatic_vessel``).
        data_dir: The official dataset folder (or the folder holding it; for KiTS also ``kits21/data``).
        output_dir: Where the datalists go (e.g. ``bundles/amos_ct/configs``).
        seed: Seed of the shuffle behind the split.
        overwrite: Replace existing datalists whose content differs (otherwise that is an error).
        num_folds: Number of folds for KiTS/MSD (default 5); not allowed for AMOS.
        check_labels: Also load every label and check its values are in the class range (slow on
            full datasets).

    Returns:
        Paths of the datalist files.

    Raises:
        FileNotFoundError: Missing folder, image, label or ``dataset.json``.
        FileExistsError: A datalist exists with different content and ``overwrite`` is False.
        ValueError: Bad layout, mismatching shapes, too few cases or bad arguments.
    """
    spec = get_dataset_spec(dataset)
    data_path = Path(data_dir).expanduser().resolve()
    cases = find_cases(spec, data_path)
    base_dir = dataset_base_dir(spec, data_path)
    for case in cases:
        check_pair_shapes(case)
        if check_labels:
            check_label_values(case.label, spec.num_classes)
    case_ids = [case.case_id for case in cases]
    metadata = {"seed": int(seed), "source_dir": base_dir.name, "modality": spec.modality}
    metadata["class_names"] = list(spec.class_names)
    if spec.uses_kfold:
        folds = DEFAULT_NUM_FOLDS if num_folds is None else int(num_folds)
        splits = kfold_splits(case_ids, folds, int(seed))
        metadata["num_folds"] = folds
        metadata["split"] = "k-fold: test = fold's chunk (disjoint across folds), validation ~10%, training = rest"
        unused: tuple = ()
    else:
        if num_folds is not None:
            raise ValueError(f"{spec.name} uses one fixed split (datalist_fold0.json); do not pass num_folds")
        split, unused = fixed_split(case_ids, spec.fixed_split_sizes, int(seed))
        splits = [split]
        metadata["num_folds"] = 1
        metadata["split"] = f"fixed seeded split, target sizes train/val/test = {list(spec.fixed_split_sizes)}"
        if unused:
            metadata["unused_cases"] = list(unused)
            print(
                f"note: {len(unused)} of {len(case_ids)} {spec.name} cases are beyond the fixed split sizes "
                f"{spec.fixed_split_sizes} and are listed under metadata.unused_cases",
                file=sys.stderr,
            )
    contents = {}
    for fold, split in enumerate(splits):
        path = Path(output_dir).expanduser() / datalist_filename(fold)
        contents[path] = build_datalist(cases, split, base_dir, {"dataset": spec.name, "fold": fold, **metadata})
    written = write_json_files(contents, bool(overwrite))
    print(f"datalist paths are relative to {base_dir}: use it as the bundle's dataset_dir", file=sys.stderr)
    return written
