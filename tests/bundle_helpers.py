"""Helpers for tests that run the bundles through ``monai.bundle`` (tiny network, small patches)."""

import json
import os
import shutil
from pathlib import Path
from typing import Dict, Set

import nibabel as nib
import numpy as np
from monai.bundle import run

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
TINY_INFER = {**TINY_NETWORK, "inferer#roi_size": [32, 32, 32], "inferer#overlap": 0.25, "pixdim": [4.0, 4.0, 4.0], "num_workers": 0}


def copy_bundle(name: str, dest: Path) -> Path:
    """A scratch copy of ``bundles/<name>`` (training writes models/ and eval/ into the bundle)."""
    target = dest / name
    shutil.copytree(REPO_ROOT / "bundles" / name, target, ignore=shutil.ignore_patterns("models", "eval", "datalist_fold*.json"))
    return target


def make_dataset(name: str, source: str, root: Path, shared_data: Path = None) -> Path:
    """A dataset in ``name``'s official layout: the synthetic phantom or the real TotalSegmentator volumes."""
    if source == "phantom":
        return Path(phantom(name, str(root), num_cases=5, size=48))
    return Path(totalseg(name, str(shared_data), str(root)))


def prepare_bundle(bundle: Path, data_dir: Path) -> Path:
    prepare(bundle.name, str(data_dir), str(bundle / "configs"))
    return bundle / "configs" / "datalist_fold0.json"


def run_bundle(bundle: Path, configs, **override) -> None:
    """Runs a bundle workflow in-process through ``monai.bundle.run`` (what ``python -m monai.bundle run`` calls)."""
    files = [str(bundle / "configs" / c) for c in configs]
    run(
        config_file=files if len(files) > 1 else files[0],
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        bundle_root=str(bundle),
        **override,
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
