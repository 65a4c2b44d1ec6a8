"""Build Decathlon-style datalists and write JSON files without clobbering a user's file.

A datalist looks like::

    {
      "metadata": {"dataset": "kits", "fold": 0, "num_folds": 5, "seed": 0, "source_dir": "kits21",
                   "version": "1", ...},
      "training":   [{"image": "data/case_00000/imaging.nii.gz",
                      "label": "data/case_00000/aggregated_MAJ_seg.nii.gz"}, ...],
      "validation": [...],
      "test":       [...]
    }

Paths are relative to the dataset's official top folder (``amos22``, ``kits21``, ``Task07_Pancreas``,
``Task08_HepaticVessel``), so bundles load a datalist with
``monai.data.load_decathlon_datalist(path, data_list_key="training", base_dir=dataset_dir)``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Mapping, Sequence

from .layouts import Case
from .splits import Split

DATALIST_VERSION = "1"


def datalist_filename(fold: int) -> str:
    """File name of the datalist for ``fold`` (``datalist_fold0.json``)."""
    return f"datalist_fold{fold}.json"


def relative_entry(case: Case, base_dir: Path) -> Dict[str, str]:
    """``{"image", "label"}`` with POSIX paths relative to ``base_dir``.

    Raises:
        ValueError: If a file lies outside ``base_dir`` (e.g. through a symlinked folder).
    """
    entry = {}
    for key, path in (("image", case.image), ("label", case.label)):
        try:
            entry[key] = Path(os.path.relpath(path, base_dir)).as_posix()
        except ValueError as error:  # different drive on Windows
            raise ValueError(f"{path} cannot be expressed relative to {base_dir}") from error
        if entry[key].startswith(".."):
            raise ValueError(f"{path} lies outside the dataset folder {base_dir}")
    return entry


def build_datalist(cases: Sequence[Case], split: Split, base_dir: Path, metadata: Mapping) -> dict:
    """Assemble the datalist dictionary for one split.

    Args:
        cases: All cases found by :func:`rep3d_networks.data.layouts.find_cases`.
        split: Case ids per split.
        base_dir: Folder the paths are made relative to.
        metadata: Extra information stored under ``"metadata"`` (``version`` is added).

    Returns:
        The datalist dictionary with keys ``metadata``, ``training``, ``validation``, ``test``.
    """
    by_id = {case.case_id: case for case in cases}
    datalist: dict = {"metadata": {**metadata, "version": DATALIST_VERSION}}
    for key in ("training", "validation", "test"):
        ids: List[str] = list(getattr(split, key))
        datalist[key] = [relative_entry(by_id[case_id], base_dir) for case_id in ids]
        datalist["metadata"][f"num_{key}"] = len(ids)
    return datalist


def to_json_text(content: object) -> str:
    """Stable JSON text (2-space indent, trailing newline) used for every file we write."""
    return json.dumps(content, indent=2) + "\n"


def check_writable(path: Path, text: str, overwrite: bool) -> bool:
    """Decide whether ``text`` may be written to ``path``.

    Returns:
        True if the file must be written, False if it already holds exactly ``text``.

    Raises:
        FileExistsError: If ``path`` exists with different content and ``overwrite`` is False.
    """
    if not path.exists():
        return True
    if path.is_file() and path.read_text() == text:
        return False
    if not overwrite:
        raise FileExistsError(f"{path} already exists with different content; pass --overwrite True to replace it")
    return True


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_json_files(contents: Mapping[Path, object], overwrite: bool) -> List[Path]:
    """Write several JSON files, checking all of them before writing any.

    Args:
        contents: ``{path: json-serialisable content}``.
        overwrite: Replace existing files whose content differs.

    Returns:
        The paths, in the given order (unchanged files included).

    Raises:
        FileExistsError: If any file exists with different content and ``overwrite`` is False;
            nothing is written in that case.
    """
    texts = {Path(path): to_json_text(content) for path, content in contents.items()}
    to_write = [path for path, text in texts.items() if check_writable(path, text, overwrite)]
    for path in to_write:
        write_text_atomically(path, texts[path])
    return list(texts)
