"""Per-case, per-class metric tables in the layout of MONAI's ``MetricsSaver`` (``<metric>_raw.csv``).

One header row (``filename``, one column per class, optionally MONAI's per-case ``mean`` column), then one row per
case: the case (image path) and one value per class. Tab- or comma-separated.
"""

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

MEAN_COLUMN = "mean"
"""MONAI's per-case mean over classes; recomputed when needed, never read as a class."""


@dataclass(frozen=True)
class MetricTable:
    """A per-case, per-class metric table.

    Attributes:
        path: the file it was read from (for error messages).
        cases: case names (first column), in file order.
        classes: class names (header), without MONAI's ``mean`` column.
        values: ``[len(cases), len(classes)]`` floats (NaN / inf kept as read).
    """

    path: str
    cases: Tuple[str, ...]
    classes: Tuple[str, ...]
    values: np.ndarray


def read_metric_table(path: str) -> MetricTable:
    """Reads a ``MetricsSaver`` ``*_raw.csv`` (tab- or comma-separated).

    Args:
        path: the file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: empty file, ragged rows, non-numeric values or duplicate cases (the message names the file
            and the line).
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    lines = [line for line in file.read_text().splitlines() if line.strip()]
    if len(lines) < 2:
        raise ValueError(f"{path}: expected a header and at least one case row, found {len(lines)} line(s)")
    delimiter = "\t" if "\t" in lines[0] else ","
    rows = list(csv.reader(lines, delimiter=delimiter))
    header = [h.strip() for h in rows[0]]
    while len(header) > len(rows[1]) and header[-1] == MEAN_COLUMN:
        header.pop()  # MONAI 1.5's write_metrics_reports repeats "mean" in the header of every metric after the first
    keep = [i for i, name in enumerate(header[1:], start=1) if name != MEAN_COLUMN]
    if not keep:
        raise ValueError(f"{path}: the header {header} has no class columns")
    cases, values = [], []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}, line {number}: {len(row)} fields, the header has {len(header)}")
        try:
            values.append([float(row[i]) for i in keep])
        except ValueError as error:
            raise ValueError(f"{path}, line {number}: non-numeric value ({error})") from None
        cases.append(row[0].strip())
    duplicates = sorted({c for c in cases if cases.count(c) > 1})
    if duplicates:
        raise ValueError(f"{path}: duplicate cases {duplicates[:3]}")
    return MetricTable(str(path), tuple(cases), tuple(header[i] for i in keep), np.asarray(values, dtype=float))


def case_keys(cases: Sequence[str]) -> List[str]:
    """Case names below the folder common to all of them (so that runs on two copies of a dataset match).

    ``/data/kits21/data/case_00000/imaging.nii.gz`` becomes ``case_00000/imaging.nii.gz`` when every case lies
    under ``/data/kits21/data``. Names without a folder are kept as they are.
    """
    folders = [os.path.dirname(c) for c in cases]
    if not all(folders):
        return list(cases)
    try:
        root = os.path.commonpath(folders)
    except ValueError:  # mixed absolute and relative paths
        return list(cases)
    return [os.path.relpath(c, root) for c in cases]


def align(a: MetricTable, b: MetricTable) -> Tuple[List[str], List[str], np.ndarray, np.ndarray]:
    """The two tables' values on the same cases and classes, in ``a``'s order.

    Cases match by name, or else by their path below each file's common folder (see :func:`case_keys`).

    Returns:
        ``(cases, classes, values_a, values_b)``, the arrays ``[cases, classes]``.

    Raises:
        ValueError: the classes or the cases differ; the message names both files and the differences.
    """
    if set(a.classes) != set(b.classes):
        raise ValueError(
            f"{b.path} has classes {list(b.classes)} but {a.path} has {list(a.classes)}: "
            "compare tables of the same metric on the same label set"
        )
    keys_a, keys_b = (
        (list(a.cases), list(b.cases)) if set(a.cases) == set(b.cases) else (case_keys(a.cases), case_keys(b.cases))
    )
    if set(keys_a) != set(keys_b):
        only_a, only_b = sorted(set(keys_a) - set(keys_b)), sorted(set(keys_b) - set(keys_a))
        raise ValueError(
            f"the cases differ: {len(only_a)} only in {a.path} (e.g. {only_a[:3]}), "
            f"{len(only_b)} only in {b.path} (e.g. {only_b[:3]}); cases are matched by name, or by their path "
            "below the folder common to each file's cases"
        )
    rows_b: Dict[str, int] = {k: i for i, k in enumerate(keys_b)}
    cols_b = [b.classes.index(c) for c in a.classes]
    values_b = b.values[[rows_b[k] for k in keys_a]][:, cols_b]
    return list(a.cases), list(a.classes), a.values, values_b
