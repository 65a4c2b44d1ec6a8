"""Evaluation as in the paper: per-class summaries (mean ± std) and paired Wilcoxon comparisons of two runs.

See ``docs/evaluation.md``; the bundles' ``evaluate.json`` writes the summary through
:class:`rep3d_networks.handlers.MetricsSummary`, and ``python -m rep3d_networks.compare`` compares two runs.
"""

from rep3d_networks.evaluation.comparison import ClassComparison, compare_tables, comparison_markdown, paired_comparison
from rep3d_networks.evaluation.summary import class_names_from_meta, summary_markdown, summary_rows, write_summary
from rep3d_networks.evaluation.tables import MetricTable, align, case_keys, read_metric_table

__all__ = [
    "ClassComparison",
    "MetricTable",
    "align",
    "case_keys",
    "class_names_from_meta",
    "compare_tables",
    "comparison_markdown",
    "paired_comparison",
    "read_metric_table",
    "summary_markdown",
    "summary_rows",
    "write_summary",
]
