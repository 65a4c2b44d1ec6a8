"""The package code a bundle's configs need, found without importing it: what ``package`` copies into the zip.

A config reaches this package through a ``_target_`` (``"rep3d_networks.handlers.MetricsSummary"``) or a
``$``-expression (``"$from rep3d_networks.reliability import output_root"``). Importing such a name runs the file of
every package on its path (``rep3d_networks/__init__.py``, ``handlers/__init__.py``) and of the module itself, and
those files import others, also inside functions (a lazy import counts, as it runs when the function is called). The
closure over these imports, read from the source with :mod:`ast`, is the set of files the bundle runs.
"""

import ast
import re
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Set

from monai.bundle import ConfigExpression, ConfigParser

import rep3d_networks


def config_strings(config) -> Iterator[str]:
    """The ``_target_`` values and ``$``-expressions anywhere in a parsed config."""
    if isinstance(config, dict):
        if isinstance(config.get("_target_"), str):
            yield config["_target_"]
        for value in config.values():
            yield from config_strings(value)
    elif isinstance(config, list):
        for value in config:
            yield from config_strings(value)
    elif ConfigExpression.is_expression(config):
        yield config


def imported_names(tree: ast.AST, module: str, is_package: bool) -> Set[str]:
    """Dotted names that the import statements of ``tree`` (anywhere, also in functions) import.

    ``from a.b import c`` gives ``a.b.c`` (``c`` may be a module or a name defined in ``a.b``); relative imports are
    resolved against ``module`` (a package's ``__init__`` when ``is_package``).
    """
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names.update(base if alias.name == "*" else f"{base}.{alias.name}" for alias in node.names)
    return names


def referenced_names(config_files: Iterable[Path]) -> Set[str]:
    """Dotted names of this package that the configs' targets and expressions use."""
    package = rep3d_networks.__name__
    dotted = re.compile(rf"\b{package}(?:\.\w+)*")
    names = set()
    for path in config_files:
        for text in config_strings(ConfigParser.load_config_file(path)):
            if ConfigExpression.is_import_statement(text):
                names.update(imported_names(ast.parse(text[1:]), "", False))
            else:
                names.update(dotted.findall(text))
    return {n for n in names if n.split(".")[0] == package}


def module_files(name: str, root: Path) -> List[Path]:
    """Files that importing ``name`` (or the module that defines it) runs: the ``__init__.py`` of each package on
    its path, then the module's file; a part that is no module (a class, a function) ends the path."""
    files: List[Path] = []
    folder = root
    for part in name.split("."):
        folder = folder / part
        if (folder / "__init__.py").is_file():
            files.append(folder / "__init__.py")
        elif folder.with_suffix(".py").is_file():
            files.append(folder.with_suffix(".py"))
            break
        else:
            break
    return files


def import_closure(names: Iterable[str], root: Path) -> Set[Path]:
    """Files under ``root`` (the folder holding the package) that importing ``names`` runs, transitively.

    A package's ``__init__.py`` counts with all its imports, also those of modules the configs never name: it runs
    whenever anything below it is imported, so a copy without those modules would fail at that import (shipping a
    trimmed ``__init__`` instead would change what the package exposes under the configs' names).
    """
    package = rep3d_networks.__name__
    todo = [f for name in names for f in module_files(name, root)]
    found: Set[Path] = set()
    while todo:
        path = todo.pop()
        if path in found:
            continue
        found.add(path)
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        is_package = path.name == "__init__.py"
        module = module[: -len(".__init__")] if is_package else module
        tree = ast.parse(path.read_text(), str(path))
        for name in imported_names(tree, module, is_package):
            if name.split(".")[0] == package:
                todo.extend(module_files(name, root))
    return found


def vendored_files(config_files: Iterable[Path]) -> Dict[str, Path]:
    """Archive names (``rep3d_networks/...``) -> the package's Python files that ``config_files`` need, sorted."""
    root = Path(rep3d_networks.__file__).resolve().parents[1]
    files = import_closure(referenced_names(config_files), root)
    return {path.relative_to(root).as_posix(): path for path in sorted(files)}
