"""The two pinned stacks the suite runs on: ``requirements.txt`` (``make test``, CI) and ``requirements-latest.txt``
(``make test-latest``), read as ``name -> version``."""

import re
from pathlib import Path
from typing import Dict

REPO_ROOT = Path(__file__).resolve().parents[1]
STACKS = (REPO_ROOT / "requirements.txt", REPO_ROOT / "requirements-latest.txt")


def pins(path: Path) -> Dict[str, str]:
    """``name -> version`` of the ``name==version`` lines (extras and comments dropped, names normalised)."""
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^\s#;]+)", line.strip())
        if match:
            found[match.group(1).lower().replace("_", "-")] = match.group(3)
    return found
