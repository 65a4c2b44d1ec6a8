"""The commands and messages that README.md gives users, read from README.md so that tests run them as typed."""

import re
import shlex
from pathlib import Path
from typing import Dict, List

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"


def shell_lines(text: str) -> List[str]:
    """The command lines of the ```bash blocks (continuations joined) and of the inline code spans."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        lines += block.replace("\\\n", " ").splitlines()
    lines += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return lines


def readme_command(prefix: str, contains: str = "", path: Path = README) -> List[str]:
    """The first command of ``path`` that starts with ``prefix`` (and holds ``contains``), split as a shell would."""
    for line in shell_lines(path.read_text()):
        if line.strip().startswith(prefix) and contains in line:
            return shlex.split(line, comments=True)
    raise AssertionError(f"{path} has no command starting with {prefix!r} that holds {contains!r}")


def fill(command: List[str], values: Dict[str, str]) -> List[str]:
    """``command`` with the README's placeholder paths and names replaced (``values``: text -> replacement)."""
    filled = []
    for arg in command:
        for text, replacement in values.items():
            arg = arg.replace(text, replacement)
        filled.append(arg)
    return filled


def readme_message(start: str, path: Path = README) -> re.Pattern:
    """The message (first code span of the first cell) of the table row whose message starts with ``start``, as a
    pattern in which ``...`` and ``<placeholder>`` stand for any text."""
    for cell in re.findall(r"^\|[^|`]*`([^`]+)`", path.read_text(), flags=re.M):
        if cell.startswith(start):
            parts = re.split(r"(\.\.\.|<[^>]+>)", cell)
            return re.compile("".join(".+" if i % 2 else re.escape(part) for i, part in enumerate(parts)))
    raise AssertionError(f"{path} has no table row starting with `{start}")
