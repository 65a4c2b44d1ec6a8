"""The tree passes ruff's lint and format checks as configured in ``pyproject.toml`` (``[tool.ruff]``, 120 columns).

Fix with ``ruff format . && ruff check --fix .``; what ``--fix`` cannot fix (a long string, an unused name) is named
in the failure.
"""

import subprocess
import sys

import pytest

RUFF_COMMANDS = [
    ["check", "--output-format", "concise", "."],
    ["format", "--check", "."],
]


@pytest.mark.parametrize("command", RUFF_COMMANDS, ids=["lint", "format"])
def test_ruff(command, repo_root):
    result = subprocess.run([sys.executable, "-m", "ruff", *command], cwd=repo_root, capture_output=True, text=True)
    assert result.returncode == 0, f"ruff {' '.join(command)}:\n{result.stdout}{result.stderr}"
