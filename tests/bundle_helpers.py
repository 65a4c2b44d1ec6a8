"""Helpers for tests that run the bundles through ``monai.bundle`` (tiny network, small patches)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Set

import nibabel as nib
import numpy as np
from monai.bundle import create_workflow

from rep3d_networks.data.cli import phantom, prepare, totalseg
from rep3d_networks.evaluation import read_metric_table

BUNDLES = ["amos_ct", "amos_mri", "kits", "msd_pancreas", "msd_hepatic_vessel"]
REPO_ROOT = Path(__file__).resolve().parents[1]

# The smallest Rep3D the bundles build: 4 wide, one block per stage, 3³ kernels.
SMALLEST_NETWORK = {
    "network_def#feature_size": 4,
    "network_def#depths": [1, 1, 1, 1],
    "network_def#kernel_size": 3,
    "network_def#hidden_size": 32,
}
# Small enough for 2 CPU cores: an 8-wide network, 32^3 patches, coarse spacing, 2 iterations.
TINY_NETWORK = {"network_def#feature_size": 8, "network_def#hidden_size": 32}
TINY_TRAIN = {
    **TINY_NETWORK,
    "roi_size": [32, 32, 32],
    "pixdim": [4.0, 4.0, 4.0],
    "max_iterations": 2,
    "val_interval": 2,
    "num_workers": 0,
    "cache_rate": 0.0,
    "validate#inferer#overlap": 0.25,
}
TINY_INFER = {
    **TINY_NETWORK,
    "inferer#roi_size": [32, 32, 32],
    "inferer#overlap": 0.25,
    "pixdim": [4.0, 4.0, 4.0],
    "num_workers": 0,
}


def copy_bundle(name: str, dest: Path) -> Path:
    """A scratch copy of ``bundles/<name>`` (training writes models/ and eval/ into the bundle)."""
    target = dest / name
    shutil.copytree(
        REPO_ROOT / "bundles" / name, target, ignore=shutil.ignore_patterns("models", "eval", "datalist_fold*.json")
    )
    return target


def make_dataset(name: str, source: str, root: Path, shared_data: Path = None) -> Path:
    """A dataset in ``name``'s official layout: the synthetic phantom or the real TotalSegmentator volumes."""
    if source == "phantom":
        return Path(phantom(name, str(root), num_cases=5, size=48))
    return Path(totalseg(name, str(shared_data), str(root)))


def prepare_bundle(bundle: Path, data_dir: Path) -> Path:
    prepare(bundle.name, str(data_dir), str(bundle / "configs"))
    return bundle / "configs" / "datalist_fold0.json"


def bundle_workflow(bundle: Path, configs, **override):
    """A bundle workflow created (and initialized) in-process as ``python -m monai.bundle run`` creates it."""
    files = [str(bundle / "configs" / c) for c in configs]
    return create_workflow(
        config_file=files if len(files) > 1 else files[0],
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        bundle_root=str(bundle),
        **override,
    )


def run_bundle(bundle: Path, configs, **override):
    """Runs a bundle workflow in-process as ``python -m monai.bundle run`` does (``monai.bundle.run``: create the
    workflow, run, finalize); returns the workflow, whose ``parser`` holds the objects it ran (trainer, evaluator)."""
    workflow = bundle_workflow(bundle, configs, **override)
    workflow.run()
    workflow.finalize()
    return workflow


MULTI_GPU_TRAIN = "['configs/train.json','configs/multi_gpu_train.json']"
MULTI_GPU_EVALUATE = "['configs/train.json','configs/evaluate.json','configs/multi_gpu_evaluate.json']"


def torchrun_bundle(
    bundle: Path, processes: int, overrides: dict, timeout_s: float, config_files: str = MULTI_GPU_TRAIN
) -> subprocess.CompletedProcess:
    """``torchrun`` of ``config_files`` (by default ``train.json`` + ``multi_gpu_train.json``) from the bundle folder
    (nccl on GPU, gloo on CPU), one thread per process and a Python stack on any native abort; returns the finished
    process with its output."""
    args = [a for k, v in overrides.items() for a in (f"--{k}", v if isinstance(v, str) else json.dumps(v))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nnodes=1",
            f"--nproc_per_node={processes}",
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            config_files,
            *args,
        ],
        cwd=bundle,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def num_classes(bundle: Path) -> int:
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    return meta["network_data_format"]["outputs"]["pred"]["num_channels"]


def check_label_matches_image(label_path: Path, image_path: Path, classes: int) -> Dict[str, object]:
    """Asserts a written label has the image's shape and affine and values within the classes."""
    label, image = nib.load(str(label_path)), nib.load(str(image_path))
    assert label.shape[:3] == image.shape[:3], (label.shape, image.shape)
    np.testing.assert_allclose(label.affine, image.affine, atol=1e-4)
    values = np.unique(np.asarray(label.dataobj))
    assert values.min() >= 0 and values.max() < classes, values
    return {"values": values}


# Runs ``python -m <module> <args>`` where this repository's package cannot be imported: a finder placed first on
# sys.meta_path refuses every module located under the repository root (except the Python environment's own
# packages, for a virtual environment inside the repository, as ``make`` creates it), and any ``rep3d_networks`` that
# is not the copy inside the allowed folder (the unpacked bundle), e.g. an editable install elsewhere.
# Usage: python -c BLOCKED <repository root> <allowed folder> <module or script.py> <args...>
BLOCKED = """
import importlib.abc, runpy, sys
from pathlib import Path

REPO, ALLOWED = Path(sys.argv.pop(1)).resolve(), Path(sys.argv.pop(1)).resolve()
ENVIRONMENT = Path(sys.prefix).resolve()  # MONAI's own install, also when the virtual environment is inside REPO


def locations(spec):
    paths = [spec.origin] + list(spec.submodule_search_locations or [])
    return [Path(p).resolve() for p in paths if p and p not in ("built-in", "frozen")]


class RefuseRepository(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is None:
                continue
            where = locations(spec)
            ours = name.split(".")[0] == "rep3d_networks" and not all(p.is_relative_to(ALLOWED) for p in where)
            if ours or any(p.is_relative_to(REPO) and not p.is_relative_to(ENVIRONMENT) for p in where):
                raise ModuleNotFoundError(
                    f"No module named {name!r} (blocked: {where[0] if where else name})", name=name
                )
            return spec
        return None


sys.meta_path.insert(0, RefuseRepository())
module = sys.argv.pop(1)
sys.argv[0] = module
if module.endswith(".py"):
    runpy.run_path(module, run_name="__main__")
else:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def run_blocked(allowed: Path, module: str, *args: str, cwd: Path, timeout: int = 600):
    """``python -m module args`` (or ``python script.py args``) in a subprocess that cannot import this repository's
    package (see :data:`BLOCKED`)."""
    command = [sys.executable, "-c", BLOCKED, str(REPO_ROOT), str(allowed), module, *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def split_cases(datalist: Path, split: str) -> Set[str]:
    """The images of one split of a datalist (paths relative to the dataset folder, as ``prepare`` writes them)."""
    return {os.path.normpath(item["image"]) for item in json.loads(datalist.read_text())[split]}


def evaluated_cases(bundle: Path, data_dir: Path) -> Set[str]:
    """The images that the evaluation scored (``eval/val_mean_dice_raw.csv``), relative to ``data_dir``."""
    table = read_metric_table(str(bundle / "eval" / "val_mean_dice_raw.csv"))
    return {os.path.relpath(os.path.realpath(case), os.path.realpath(data_dir)) for case in table.cases}


def check_evaluated_test_split(bundle: Path, data_dir: Path, datalist: Path) -> None:
    """The evaluation scored exactly the test split's cases, and the test split shares none with validation."""
    test = split_cases(datalist, "test")
    assert test and not test & split_cases(datalist, "validation"), "validation and test must hold different cases"
    evaluated = evaluated_cases(bundle, data_dir)
    assert evaluated == test, f"evaluated {sorted(evaluated)}, test split {sorted(test)}"
