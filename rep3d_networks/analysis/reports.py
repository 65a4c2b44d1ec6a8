"""Writing results: JSON files and Markdown tables."""

import json
import math
from pathlib import Path
from typing import Iterable, List, Sequence

import numpy as np


def to_jsonable(value):
    """Turn numpy scalars/arrays, paths and tuples into plain JSON values; non-finite floats become None."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, content) -> Path:
    """Write ``content`` as indented JSON (see :func:`to_jsonable`) and return ``path``."""
    path.write_text(json.dumps(to_jsonable(content), indent=2) + "\n")
    return path


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_std(values: List[float], digits: int = 3) -> str:
    """``"mean ± std"`` (sample std, ``ddof=1``; just the mean for one value; ``"n/a"`` if all are NaN)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "n/a"
    if len(finite) == 1:
        return f"{finite[0]:.{digits}f}"
    return f"{np.mean(finite):.{digits}f} ± {np.std(finite, ddof=1):.{digits}f}"
