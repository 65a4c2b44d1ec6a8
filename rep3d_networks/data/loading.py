"""Reading the datalists that ``prepare`` writes, from bundle configs."""

import json
from pathlib import Path
from typing import Dict, List

from monai.data import load_decathlon_datalist


def load_datalist(datalist: str, split: str, dataset_dir: str) -> List[Dict[str, str]]:
    """Loads one split of a datalist written by ``python -m rep3d_networks.data prepare``.

    Wraps :func:`monai.data.load_decathlon_datalist` (paths are relative to ``dataset_dir``) with errors that
    name the file and say what to do, and checks that every referenced file exists before training starts.

    Args:
        datalist: path of ``datalist_fold<k>.json``.
        split: ``"training"``, ``"validation"`` or ``"test"``.
        dataset_dir: root of the dataset the datalist was prepared from.

    Raises:
        FileNotFoundError: the datalist, the dataset folder or a referenced image/label is missing.
        ValueError: the datalist has no such split, or it is empty.
    """
    path = Path(datalist)
    if not path.is_file():
        raise FileNotFoundError(
            f"datalist {path} not found: create it with `python -m rep3d_networks.data prepare --dataset <name> "
            f"--data_dir <dataset root> --output_dir {path.parent}`, or point the `datalist` key at an existing one "
            "(bundle paths are relative to `bundle_root`: run from the bundle folder or pass --bundle_root)."
        )
    if not Path(dataset_dir).is_dir():
        raise FileNotFoundError(
            f"dataset_dir {dataset_dir} (used with datalist {path}) is not a folder: set `dataset_dir`."
        )
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"datalist {path} is not valid JSON: {err}") from err
    if not content.get(split):
        raise ValueError(f"datalist {path} has no entries under '{split}' (keys: {sorted(content)}).")
    items = load_decathlon_datalist(str(path), is_segmentation=True, data_list_key=split, base_dir=dataset_dir)
    for item in items:
        for key in ("image", "label"):
            if key in item and not Path(item[key]).exists():
                raise FileNotFoundError(
                    f"{item[key]} listed in {path} ('{split}', {key}) does not exist under dataset_dir {dataset_dir}."
                )
    return items
