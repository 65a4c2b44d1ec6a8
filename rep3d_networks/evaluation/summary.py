"""Summary of per-case, per-class metrics: mean ± std per class and the mean over classes, as CSV and Markdown."""

import csv
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from rep3d_networks.evaluation.markdown import format_number, markdown_table

MEAN_ROW = "mean (classes without background)"


def finite_stats(values: np.ndarray) -> Tuple[float, float, int]:
    """``(mean, std, n)`` of the finite entries of ``values`` (std with ``ddof=0``, as MONAI's ``nanstd``).

    NaN (class absent from the reference) and inf (e.g. HD95 of a missed structure) are left out and not counted.
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan"), 0
    return float(finite.mean()), float(finite.std()), int(finite.size)


def summary_rows(details: Mapping[str, np.ndarray], class_names: Sequence[str]) -> List[Dict[str, object]]:
    """One row per class and a last row :data:`MEAN_ROW`.

    For each metric ``m`` (an array ``[cases, classes]``) a row has ``m_mean``, ``m_std`` and ``m_n`` (finite
    cases). The last row's mean is the mean over classes of the per-class means (the number papers report); its
    std is over cases of the per-case mean over classes, and its n counts the cases with a finite value.

    Args:
        details: metric name -> ``[cases, classes]`` values (classes without background).
        class_names: one name per class column.

    Raises:
        ValueError: a metric's number of class columns differs from ``len(class_names)``.
    """
    for metric, values in details.items():
        if np.ndim(values) != 2 or np.shape(values)[1] != len(class_names):
            raise ValueError(f"{metric}: expected [cases, {len(class_names)}] values, got shape {np.shape(values)}")
    rows: List[Dict[str, object]] = [{"class": name} for name in class_names] + [{"class": MEAN_ROW}]
    for metric, values in details.items():
        values = np.asarray(values, dtype=float)
        stats = [finite_stats(values[:, i]) for i in range(values.shape[1])]
        for row, (mean, std, n) in zip(rows, stats):
            row.update({f"{metric}_mean": mean, f"{metric}_std": std, f"{metric}_n": n})
        with np.errstate(all="ignore"):
            per_case = np.nanmean(np.where(np.isfinite(values), values, np.nan), axis=1)
            class_means = np.array([s[0] for s in stats])
            overall = float(np.nanmean(class_means)) if np.isfinite(class_means).any() else float("nan")
        _, std, n = finite_stats(per_case)
        rows[-1].update({f"{metric}_mean": overall, f"{metric}_std": std, f"{metric}_n": n})
    return rows


def summary_markdown(rows: Sequence[Mapping[str, object]], labels: Mapping[str, str], digits: int = 4) -> str:
    """Markdown table: class, then ``mean ± std (n)`` per metric, under the metric's label."""
    header = ["class"] + list(labels.values())
    body = [
        [str(row["class"])]
        + [
            f"{format_number(row[f'{m}_mean'], digits)} ± {format_number(row[f'{m}_std'], digits)} (n={row[f'{m}_n']})"
            for m in labels
        ]
        for row in rows
    ]
    return markdown_table(header, body)


def write_summary(
    details: Mapping[str, np.ndarray],
    class_names: Sequence[str],
    output_dir: str,
    labels: Optional[Mapping[str, str]] = None,
    basename: str = "summary",
) -> Tuple[Path, Path]:
    """Writes ``<basename>.csv`` and ``<basename>.md`` (see :func:`summary_rows`) into ``output_dir``.

    Args:
        details: metric name -> ``[cases, classes]`` values.
        class_names: one name per class column.
        output_dir: created if missing.
        labels: metric name -> column title in the Markdown table (default: the metric name); metrics without a
            label are left out of the Markdown table (the CSV has all).
        basename: file name without extension.

    Returns:
        The CSV and Markdown paths.
    """
    labels = dict(labels) if labels else {m: m for m in details}
    labels = {m: t for m, t in labels.items() if m in details}
    rows = summary_rows(details, class_names)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / f"{basename}.csv", out / f"{basename}.md"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    md_path.write_text(summary_markdown(rows, labels))
    return csv_path, md_path


def class_names_from_meta(meta: Optional[Mapping], num_columns: int, include_background: bool = False) -> List[str]:
    """Names of the metric columns from a bundle's ``metadata.json`` (``network_data_format.outputs.pred``).

    Args:
        meta: the bundle metadata (``@_meta_`` in a config), or None.
        num_columns: number of class columns of the metric tables.
        include_background: whether the first column is channel 0 (the metrics' ``include_background``).

    Returns:
        ``channel_def`` names of channels ``start .. start + num_columns - 1`` (``start`` = 0 or 1); ``classK``
        for a channel that has no name.
    """
    pred = ((meta or {}).get("network_data_format") or {}).get("outputs", {}).get("pred", {})
    channel_def = pred.get("channel_def") or {}
    start = 0 if include_background else 1
    return [str(channel_def.get(str(c), f"class{c}")) for c in range(start, start + num_columns)]
