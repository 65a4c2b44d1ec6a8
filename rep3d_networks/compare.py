"""Compare two evaluations case by case: ``python -m rep3d_networks.compare a.csv b.csv``.

The inputs are per-case, per-class tables as MONAI's ``MetricsSaver`` writes them (``eval/val_mean_dice_raw.csv``,
``eval/val_hd95_raw.csv``; tab- or comma-separated). For every class it prints, as a Markdown table, the number of
paired cases, both means, the mean difference ``b - a`` and the two-sided paired Wilcoxon signed-rank p-value
(``scipy.stats.wilcoxon``), as in the paper's tables, plus a row for the per-case mean over classes.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from rep3d_networks.evaluation import class_names_from_meta, compare_tables, comparison_markdown, read_metric_table


def compare(a: str, b: str, meta_file: Optional[str] = None, digits: int = 4) -> str:
    """The comparison of ``b`` against ``a`` as Markdown.

    Args:
        a: reference per-case, per-class CSV.
        b: compared CSV (differences are ``b - a``).
        meta_file: a bundle's ``metadata.json``: columns ``class0..`` are then named after its output channels
            (channel 1 first when the table has one column fewer than channels, i.e. without background).
        digits: decimals shown.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: unreadable tables, or cases / classes that do not match (the message names the file).
    """
    table_a, table_b = read_metric_table(a), read_metric_table(b)
    names = None
    if meta_file:
        meta = json.loads(Path(meta_file).read_text())
        channels = meta.get("network_data_format", {}).get("outputs", {}).get("pred", {}).get("num_channels")
        columns = len(table_a.classes)
        names = class_names_from_meta(meta, columns, include_background=channels == columns)
    rows = compare_tables(table_a, table_b, names)
    title = f"Paired comparison (b - a), {len(table_a.cases)} cases\n\n- a: `{a}`\n- b: `{b}`\n\n"
    return title + comparison_markdown(rows, "a", "b", digits)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line entry point; input errors end with one ``error: ...`` line and exit status 1."""
    parser = argparse.ArgumentParser(prog="python -m rep3d_networks.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="reference per-case, per-class CSV (e.g. eval/val_mean_dice_raw.csv)")
    parser.add_argument("b", help="compared CSV; differences are b - a")
    parser.add_argument("--meta_file", help="bundle metadata.json, to name the classes")
    parser.add_argument("--output", help="also write the Markdown to this file")
    parser.add_argument("--digits", type=int, default=4, help="decimals shown (default 4)")
    args = parser.parse_args(argv)
    try:
        text = compare(args.a, args.b, args.meta_file, args.digits)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.output:
        Path(args.output).write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
