"""Zip a bundle as the MONAI model zoo ships it: ``python -m rep3d_networks.package bundles/amos_ct``.

The archive has one top folder named after the bundle, holding ``configs/``, ``docs/``, ``models/``, ``LICENSE``,
``large_files.yml`` and the code, so that ``python -m monai.bundle download --name <bundle> --url file://<zip>
--bundle_dir <dir>`` unpacks it into ``<dir>/<bundle>`` and it runs where only MONAI is installed. What goes in:

* every file of ``configs/`` except the datalists ``datalist_fold*.json`` (written by ``prepare`` for one copy of
  the dataset and re-created by it: the split is seeded) and MONAI Label's ``monailabel_train.json``;
* ``docs/`` (all files), ``LICENSE``, ``large_files.yml``;
* ``rep3d_networks/``: the Python files of this package that the shipped configs import (their ``_target_`` and
  ``$``-expressions, and what those modules import in turn; see :mod:`rep3d_networks.vendor`), so that the configs'
  ``rep3d_networks.*`` names import from the bundle root (on the import path when a bundle runs from its folder, as
  the model zoo's ``scripts/`` convention assumes, and when MONAI Label serves it). Not under the zoo's
  ``scripts/``: its code is imported as ``scripts.*`` from the bundle root, the only folder MONAI puts on the path
  (MONAI Label when it loads a bundle, ``monai.bundle run`` after the configs' ``initialize``), while the configs
  name ``rep3d_networks.*``;
* ``models/model.pt`` from ``--weights`` or else from the bundle, ``models/model.ts`` and the 5-fold models
  ``models/fold<k>/model.pt`` when the bundle has them. Nothing else (no ``eval/``, no logs).

Publishing weights: with ``--weights model.pt --weights_url URL`` the weights stay out of the zip; ``large_files.yml``
lists ``models/model.pt`` with that URL and the file's SHA-256, so that ``python -m monai.bundle
download_large_files --bundle_path <dir>/<bundle>`` fetches them and refuses a file with another hash, and
``metadata.json`` gets ``eval_metrics`` (the mean over classes of each metric) from the bundle's evaluation summary
``eval/summary.csv`` (written by ``evaluate.json``; ``--eval_dir`` for another folder).

The zip is reproducible: entries sorted, fixed timestamps (1980-01-01) and permissions, fixed compression, so
packaging the same files twice gives the same SHA-256. An existing zip is kept unless ``--overwrite``.
"""

import argparse
import csv
import fnmatch
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import yaml

from rep3d_networks.evaluation.summary import MEAN_ROW
from rep3d_networks.vendor import vendored_files

EXCLUDED_CONFIGS = ("datalist_fold*.json", "monailabel_train.json")
REQUIRED = ("configs/metadata.json", "configs/inference.json", "docs/README.md", "LICENSE", "large_files.yml")
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def bundle_files(bundle: Path, weights: Optional[Path] = None) -> Dict[str, Path]:
    """Archive names (relative to the bundle folder) -> source files, sorted by name.

    Raises:
        FileNotFoundError: a required file (:data:`REQUIRED`) or ``weights`` is missing.
    """
    files: Dict[str, Path] = {}
    for path in sorted((bundle / "configs").glob("*")):
        if path.is_file() and not any(fnmatch.fnmatch(path.name, p) for p in EXCLUDED_CONFIGS):
            files[f"configs/{path.name}"] = path
    for path in sorted((bundle / "docs").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            files[path.relative_to(bundle).as_posix()] = path
    for name in ("LICENSE", "large_files.yml", "models/model.pt", "models/model.ts"):
        if (bundle / name).is_file():
            files[name] = bundle / name
    for path in sorted((bundle / "models").glob("fold*/model.pt")):
        files[path.relative_to(bundle).as_posix()] = path
    if weights is not None:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"weights {weights}: no such file")
        files["models/model.pt"] = Path(weights)
    missing = [name for name in REQUIRED if name not in files]
    if missing:
        raise FileNotFoundError(f"{bundle} is not a complete bundle: missing {missing}")
    return dict(sorted(files.items()))


def eval_metrics(eval_dir: Path) -> Dict[str, float]:
    """``{metric: mean over classes}`` from the last row of ``eval_dir/summary.csv`` (see ``MetricsSummary``).

    Raises:
        FileNotFoundError: no summary (run ``evaluate.json`` first).
        ValueError: the summary has no mean row or no finite metric.
    """
    summary = eval_dir / "summary.csv"
    if not summary.is_file():
        raise FileNotFoundError(f"{summary} not found: evaluate the weights first (configs/evaluate.json writes it)")
    with summary.open(newline="") as f:
        rows = [row for row in csv.DictReader(f) if row.get("class") == MEAN_ROW]
    if not rows:
        raise ValueError(f"{summary}: no row {MEAN_ROW!r}")
    metrics = {k[: -len("_mean")]: float(v) for k, v in rows[0].items() if k.endswith("_mean") and v not in ("", None)}
    metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
    if not metrics:
        raise ValueError(f"{summary}: no finite metric in the row {MEAN_ROW!r}")
    return metrics


def published_weights(bundle: Path, weights: Path, url: str, eval_dir: Path) -> Dict[str, bytes]:
    """``large_files.yml`` (url and SHA-256 of ``weights``) and ``configs/metadata.json`` with ``eval_metrics``."""
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    meta["eval_metrics"] = eval_metrics(eval_dir)
    entry = {"path": "models/model.pt", "url": url, "hash_val": sha256(weights), "hash_type": "sha256"}
    large_files = yaml.safe_dump({"large_files": [entry]}, sort_keys=False)
    return {
        "configs/metadata.json": (json.dumps(meta, indent=4) + "\n").encode(),
        "large_files.yml": large_files.encode(),
    }


def write_zip(files: Dict[str, Union[Path, bytes]], top: str, output: Path) -> None:
    """Writes ``files`` (source paths or contents) under the folder ``top`` into ``output`` with fixed metadata."""
    with zipfile.ZipFile(output, "w") as archive:
        for name, source in files.items():
            info = zipfile.ZipInfo(f"{top}/{name}", date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, so that external_attr holds the permissions below on every OS
            info.external_attr = 0o100644 << 16
            if isinstance(source, bytes):
                archive.writestr(info, source)
                continue
            with source.open("rb") as src, archive.open(info, "w", force_zip64=source.stat().st_size > 2**31) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package(
    bundle_dir: str,
    output: Optional[str] = None,
    weights: Optional[str] = None,
    overwrite: bool = False,
    weights_url: Optional[str] = None,
    eval_dir: Optional[str] = None,
) -> Path:
    """Zips ``bundle_dir`` (see the module docstring) and returns the zip path.

    Args:
        bundle_dir: the bundle folder; its name is the bundle name and the archive's top folder.
        output: zip path; default ``dist/<name>_v<version>.zip`` (version from ``configs/metadata.json``).
        weights: training checkpoint to ship as ``models/model.pt`` (default: the bundle's own, if any).
        overwrite: replace an existing zip.
        weights_url: where ``weights`` are published: they are then listed in ``large_files.yml`` (url, SHA-256)
            instead of zipped, and ``metadata.json`` gets ``eval_metrics`` from the evaluation summary.
        eval_dir: folder of that summary (default ``<bundle_dir>/eval``).

    Raises:
        FileNotFoundError: not a bundle folder, missing weights or evaluation summary.
        FileExistsError: ``output`` exists and ``overwrite`` is false.
        ValueError: ``weights_url`` without ``weights``, or an unusable evaluation summary.
    """
    bundle = Path(bundle_dir).resolve()
    if not (bundle / "configs" / "metadata.json").is_file():
        raise FileNotFoundError(f"{bundle_dir} is not a bundle folder (no configs/metadata.json)")
    version = json.loads((bundle / "configs" / "metadata.json").read_text())["version"]
    target = Path(output) if output else Path("dist") / f"{bundle.name}_v{version}.zip"
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists: pass --overwrite to replace it")
    if weights_url and not weights:
        raise ValueError("--weights_url needs --weights (the file published at that URL)")
    files: Dict[str, Union[Path, bytes]] = dict(bundle_files(bundle, Path(weights) if weights else None))
    configs = [path for name, path in files.items() if name.startswith("configs/") and name.endswith(".json")]
    files.update(vendored_files(configs))
    if weights_url:
        files.pop("models/model.pt")
        files.update(
            published_weights(bundle, Path(weights), weights_url, Path(eval_dir) if eval_dir else bundle / "eval")
        )
    files = dict(sorted(files.items()))
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)
    try:
        write_zip(files, bundle.name, Path(partial))
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return target


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line entry point; input errors end with one ``error: ...`` line and exit status 1."""
    parser = argparse.ArgumentParser(prog="python -m rep3d_networks.package", description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle_dir", help="bundle folder, e.g. bundles/amos_ct")
    parser.add_argument("--output", help="zip path (default dist/<name>_v<version>.zip)")
    parser.add_argument("--weights", help="checkpoint to ship as models/model.pt")
    parser.add_argument(
        "--weights_url", help="URL the --weights are published at: listed in large_files.yml, not zipped"
    )
    parser.add_argument(
        "--eval_dir", help="folder of the evaluation summary.csv for eval_metrics (default <bundle>/eval)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing zip")
    args = parser.parse_args(argv)
    try:
        target = package(args.bundle_dir, args.output, args.weights, args.overwrite, args.weights_url, args.eval_dir)
    except (FileNotFoundError, FileExistsError, KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    with zipfile.ZipFile(target) as archive:
        names = archive.namelist()
    if not args.weights_url and not any(n.endswith("models/model.pt") for n in names):
        print("warning: no models/model.pt in the archive (no --weights and none in the bundle)", file=sys.stderr)
    code = f"{names[0].split('/')[0]}/rep3d_networks/"
    vendored = [n for n in names if n.startswith(code)]
    listed = [n for n in names if n not in vendored] + [f"{code} ({len(vendored)} vendored Python files)"]
    print(f"{target}\nsha256 {sha256(target)}\n" + "\n".join(f"  {n}" for n in listed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
