"""Paired comparison of two per-case, per-class metric tables: mean difference and Wilcoxon signed-rank test."""

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
from scipy.stats import wilcoxon

from rep3d_networks.evaluation.markdown import format_number, markdown_table
from rep3d_networks.evaluation.tables import MetricTable, align

ALL_CLASSES = "mean over classes"
"""Name of the row that compares the per-case mean over classes."""


@dataclass(frozen=True)
class ClassComparison:
    """One row of a comparison.

    Attributes:
        name: class name (or :data:`ALL_CLASSES`).
        n: number of paired cases with a finite value in both tables.
        mean_a: mean of ``a`` over those cases.
        mean_b: mean of ``b`` over those cases.
        difference: mean of ``b - a`` over those cases.
        p_value: two-sided Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon``); NaN when there is no pair
            or every difference is zero.
    """

    name: str
    n: int
    mean_a: float
    mean_b: float
    difference: float
    p_value: float


def paired_comparison(name: str, a: np.ndarray, b: np.ndarray) -> ClassComparison:
    """Compares two paired samples, dropping pairs where either value is NaN or infinite.

    The p-value is ``scipy.stats.wilcoxon(b, a)`` (two-sided, zero differences dropped, exact distribution for
    small samples without ties, normal approximation otherwise: scipy's ``method="auto"``).
    """
    finite = np.isfinite(a) & np.isfinite(b)
    a, b = a[finite], b[finite]
    if not finite.any():
        return ClassComparison(name, 0, float("nan"), float("nan"), float("nan"), float("nan"))
    p_value = float(wilcoxon(b, a).pvalue) if np.any(b != a) else float("nan")
    return ClassComparison(name, int(finite.sum()), float(a.mean()), float(b.mean()), float((b - a).mean()), p_value)


def compare_tables(
    a: MetricTable, b: MetricTable, class_names: Optional[Sequence[str]] = None
) -> List[ClassComparison]:
    """Per-class paired comparison of ``b`` against ``a``, plus the per-case mean over classes.

    Args:
        a: reference table.
        b: table compared with ``a`` (differences are ``b - a``).
        class_names: names to show instead of the table's column names (same length, same order).

    Raises:
        ValueError: mismatched cases or classes (see :func:`rep3d_networks.evaluation.tables.align`), or
            ``class_names`` of the wrong length.
    """
    _, classes, values_a, values_b = align(a, b)
    if class_names is not None:
        if len(class_names) != len(classes):
            raise ValueError(
                f"{a.path} has {len(classes)} classes {classes}, but {len(class_names)} class names were given"
            )
        classes = list(class_names)
    rows = [paired_comparison(name, values_a[:, i], values_b[:, i]) for i, name in enumerate(classes)]
    with np.errstate(all="ignore"):
        mean_a = np.nanmean(np.where(np.isfinite(values_a), values_a, np.nan), axis=1)
        mean_b = np.nanmean(np.where(np.isfinite(values_b), values_b, np.nan), axis=1)
    rows.append(paired_comparison(ALL_CLASSES, mean_a, mean_b))
    return rows


def comparison_markdown(rows: Sequence[ClassComparison], label_a: str, label_b: str, digits: int = 4) -> str:
    """A Markdown table of :func:`compare_tables`' rows: class, n, mean a, mean b, mean (b - a), p-value."""
    header = ["class", "n", f"mean {label_a}", f"mean {label_b}", "mean (b - a)", "Wilcoxon p"]
    body = [
        [
            r.name,
            str(r.n),
            format_number(r.mean_a, digits),
            format_number(r.mean_b, digits),
            format_number(r.difference, digits, signed=True),
            format_number(r.p_value, digits, p_value=True),
        ]
        for r in rows
    ]
    return markdown_table(header, body)
