"""What a bundle's zip vendors (``rep3d_networks.vendor``): the package files its configs import, transitively."""

import ast
import re
import zipfile
from modulefinder import ModuleFinder
from pathlib import Path

import pytest
from bundle_helpers import REPO_ROOT, copy_bundle

from rep3d_networks.package import bundle_files, package
from rep3d_networks.vendor import import_closure, imported_names, module_files

BUNDLE_NAMES = sorted(p.name for p in (REPO_ROOT / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())
NOT_VENDORED = (
    "rep3d_networks/analysis/",
    "rep3d_networks/quickstart.py",
    "rep3d_networks/real_ct.py",
    "rep3d_networks/click_models.py",
    "rep3d_networks/package.py",
    "rep3d_networks/vendor.py",
)
DOTTED = re.compile(r"\brep3d_networks(?:\.\w+)*")
FROM_IMPORT = re.compile(r"from (rep3d_networks[\w.]*) import (\w+)")


def shipped_configs(bundle: Path):
    files = bundle_files(bundle)
    return [path for name, path in files.items() if name.startswith("configs/") and name.endswith(".json")]


def closure_by_modulefinder(bundle: Path, tmp_path: Path):
    """The package files that the configs' ``rep3d_networks`` names need, found apart from ``vendor``: every such name
    in the configs' text, imported by a script that the standard library's ``modulefinder`` follows (it reads the
    bytecode, function bodies included, and runs nothing); only the repository is searched, so other packages are
    not followed."""
    text = "\n".join(path.read_text() for path in shipped_configs(bundle))
    names = set(DOTTED.findall(text)) | {f"{module}.{name}" for module, name in FROM_IMPORT.findall(text)}
    script = tmp_path / "configs_import.py"
    script.write_text("".join(f"from {n.rpartition('.')[0]} import {n.rpartition('.')[2]}\n" for n in sorted(names)))
    finder = ModuleFinder(path=[str(REPO_ROOT)])
    finder.run_script(str(script))
    found = [m.__file__ for name, m in finder.modules.items() if name.split(".")[0] == "rep3d_networks"]
    return {Path(f).resolve().relative_to(REPO_ROOT).as_posix() for f in found}


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_zip_vendors_exactly_the_import_closure_of_its_configs(tmp_path, name):
    """The zip's ``rep3d_networks/`` is the closure that ``modulefinder`` finds from the configs: the code that
    inference, training and evaluation import, not the analysis, quickstart or click-study code."""
    bundle = copy_bundle(name, tmp_path / "bundles")
    archive = package(str(bundle), str(tmp_path / f"{name}.zip"))
    with zipfile.ZipFile(archive) as zipped:
        vendored = {n[len(name) + 1 :] for n in zipped.namelist() if n.startswith(f"{name}/rep3d_networks/")}
    expected = closure_by_modulefinder(bundle, tmp_path)
    assert vendored == expected
    assert {"rep3d_networks/__init__.py", "rep3d_networks/nets/rep3d.py"} <= vendored
    assert not [n for n in vendored if n.startswith(NOT_VENDORED)]


# A package written for the test: (source, module it is in, is a package's __init__, the dotted names it imports)
IMPORTS = [
    ("import rep3d_networks.ops", "rep3d_networks.nets.rep3d", False, {"rep3d_networks.ops"}),
    ("from rep3d_networks.ops import dwconv3d", "x", False, {"rep3d_networks.ops.dwconv3d"}),
    ("from .download import fetch", "rep3d_networks.data", True, {"rep3d_networks.data.download.fetch"}),
    ("from . import specs", "rep3d_networks.data.cli", False, {"rep3d_networks.data.specs"}),
    ("from ..ops import dwconv3d", "rep3d_networks.nets.rep3d", False, {"rep3d_networks.ops.dwconv3d"}),
    ("from rep3d_networks.data import *", "x", False, {"rep3d_networks.data"}),
    ("def f():\n    import rep3d_networks.tracking\n", "x", False, {"rep3d_networks.tracking"}),  # lazy import
]


@pytest.mark.parametrize("source, module, is_package, expected", IMPORTS)
def test_imported_names_resolve_relative_and_lazy_imports(source, module, is_package, expected):
    assert imported_names(ast.parse(source), module, is_package) == expected


FAKE_PACKAGE = {
    "__init__.py": "from rep3d_networks.nets import Net\n",
    "nets/__init__.py": "from .net import Net\n",
    "nets/net.py": "def Net():\n    from rep3d_networks.ops import conv\n",
    "ops.py": "import torch\n",
    "data/__init__.py": "from .loading import load\nfrom .download import fetch\n",
    "data/loading.py": "",
    "data/download.py": "",
    "analysis/__init__.py": "import rep3d_networks.data\n",
    "tracking.py": "",
}
CLOSURES = [  # names the configs use -> files that importing them runs
    (["rep3d_networks.nets.Net"], ["__init__.py", "nets/__init__.py", "nets/net.py", "ops.py"]),
    (
        ["rep3d_networks.tracking.sqlite_store"],
        ["__init__.py", "nets/__init__.py", "nets/net.py", "ops.py", "tracking.py"],
    ),
    # data/__init__ imports download too, which the configs never name: it runs, so it ships
    (
        ["rep3d_networks.data.loading.load"],
        [
            "__init__.py",
            "data/__init__.py",
            "data/download.py",
            "data/loading.py",
            "nets/__init__.py",
            "nets/net.py",
            "ops.py",
        ],
    ),
]


@pytest.mark.parametrize("names, expected", CLOSURES)
def test_import_closure_follows_package_inits_and_lazy_imports(tmp_path, names, expected):
    for path, source in FAKE_PACKAGE.items():
        (tmp_path / "rep3d_networks" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "rep3d_networks" / path).write_text(source)
    found = import_closure(names, tmp_path)
    assert sorted(p.relative_to(tmp_path / "rep3d_networks").as_posix() for p in found) == expected
    assert module_files("rep3d_networks.nets.Net.forward", tmp_path) == [
        tmp_path / "rep3d_networks" / "__init__.py",
        tmp_path / "rep3d_networks" / "nets" / "__init__.py",
    ]
