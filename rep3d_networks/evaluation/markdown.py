"""Small Markdown and number formatting helpers for the evaluation tables."""

import math
from typing import Sequence


def format_number(value: float, digits: int = 4, signed: bool = False, p_value: bool = False) -> str:
    """``value`` with ``digits`` decimals; ``-`` for NaN; p-values below ``10**-digits`` as ``<0.0001``."""
    if value is None or math.isnan(value):
        return "-"
    if p_value and value < 10**-digits:
        return f"<{10**-digits:.{digits}f}"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table (first column left-aligned, the others right-aligned), ending with a newline."""
    align = [":---"] + ["---:"] * (len(header) - 1)
    lines = [header, align, *rows]
    return "".join("| " + " | ".join(str(cell).replace("|", "\\|") for cell in line) + " |\n" for line in lines)
