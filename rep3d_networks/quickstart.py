"""End-to-end quickstart on a synthetic phantom, no internet needed.

``python -m rep3d_networks.quickstart --output_dir quickstart_output`` (what ``make quickstart`` runs):

1. writes a small synthetic abdominal CT phantom in the AMOS22 layout (``rep3d_networks.data phantom``),
2. prepares its datalist (``rep3d_networks.data prepare``) inside a scratch copy of ``bundles/amos_ct``,
3. trains that bundle with a small Rep3D (``monai.bundle run`` of train.json with command-line overrides),
4. evaluates the best checkpoint on the held-out test cases (train.json + evaluate.json),
5. runs bundle inference (inference.json, folded network) on the test images,
6. prints the per-class Dice / HD95 table that evaluate.json wrote and saves a PNG overlay.

Everything is written under ``output_dir``; the repository's bundle is not touched. The settings that differ
from the paper's recipe (so that a CPU finishes in minutes) are listed by :func:`recipe_differences` and
printed at the start.
"""

import json
import shutil
import time
from pathlib import Path
from typing import Dict, List

import fire
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser, run

from rep3d_networks.bundles.recipe import AFFINE, CROP, SAMPLER
from rep3d_networks.data.cli import phantom, prepare

BUNDLE = "amos_ct"
SMALL_NETWORK = {"network_def#feature_size": 8, "network_def#hidden_size": 32}
PATCH = [
    32,
    32,
    32,
]  # most of the cropped 40-voxel phantom body (37 x 30 x 40 voxels); CPU time grows with the patch volume
LEARNING_RATE = 1e-2
ITERATIONS = 600
AFFINE_PROB = 0.0  # train.json's RandAffined (recipe.AFFINE): the phantom varies enough between cases


def repo_bundle_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "bundles" / BUNDLE


def run_bundle(bundle: Path, configs: List[str], **override) -> None:
    """``python -m monai.bundle run`` in-process, with the bundle's metadata and logging config."""
    files = [str(bundle / "configs" / c) for c in configs]
    run(
        config_file=files,
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        bundle_root=str(bundle),
        **override,
    )


def shown(value):
    """A config value as the differences print it: a component by its ``_target_``."""
    return value["_target_"] if isinstance(value, dict) and "_target_" in value else value


def recipe_differences(bundle: Path, train: Dict) -> List[str]:
    """One line per setting in which the quickstart's overrides differ from the bundle's (the paper's) train.json."""
    paper = ConfigParser.load_config_file(str(bundle / "configs" / "train.json"))
    why = {
        "network_def#feature_size": "a 2-core CPU trains a narrow network in minutes",
        "network_def#hidden_size": "bottleneck scaled down with the width",
        "pixdim": "the real CT's own 3 mm grid: no resampling, 8 times fewer voxels per organ",
        "roi_size": (
            "CPU time grows with the patch volume (phantom: 32³ holds most of its 40-voxel body; "
            "real CT: 64 x 64 x 16 covers a third of a slab)"
        ),
        "learning_rate": (
            "a narrow network from scratch converges within hundreds, not tens of thousands, of iterations"
        ),
        "optimizer#weight_decay": (
            "AdamW shrinks the weights by learning rate × weight decay every step; "
            "the paper's 1e-4 × 0.08 = 8e-6 becomes 8e-4 at the CPU learning rate"
        ),
        "max_iterations": "minutes, not days, on a CPU",
        "val_interval": "validation (best-checkpoint selection) several times in a short run",
        f"{AFFINE}#prob": (
            "no random rotation/scaling (the phantom cases already vary in organ shape and position; "
            "a 30° tilt turns a real-CT slab of 14 slices out of the patch)"
        ),
        CROP: (
            "crop centres drawn class by class: most real-CT organs are a few hundred voxels beside the liver's "
            "tens of thousands"
        ),
        SAMPLER: (
            "slabs drawn in proportion to the classes they hold: 5 of the 6 training slabs hold pelvis or air, "
            "one most organs"
        ),
    }
    lines = []
    for key, reason in why.items():
        value = ConfigParser(paper).get(key)  # None: not set in the paper recipe (the sampler)
        if key in train and train[key] != value:
            lines.append(f"{key}: {shown(value)} in the paper recipe, {shown(train[key])} here ({reason})")
    return lines


def save_overlay(
    image_path: Path, reference_path: Path, prediction_path: Path, png_path: Path, num_classes: int
) -> None:
    """The axial slice with most reference foreground: image, reference label and prediction.

    Shown in the radiological convention (anterior up, patient's left on the right) for LPS-stored volumes
    such as the phantom's.
    """
    image = np.asarray(nib.load(str(image_path)).dataobj, dtype=np.float32)
    reference = np.asarray(nib.load(str(reference_path)).dataobj)
    prediction = np.asarray(nib.load(str(prediction_path)).dataobj)
    z = int(np.argmax((reference > 0).sum(axis=(0, 1))))
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, title, label in zip(axes, ["image", "reference label", "Rep3D prediction"], [None, reference, prediction]):
        ax.imshow(np.clip(image[:, :, z].T, -175, 250), cmap="gray", origin="upper")
        if label is not None:
            masked = np.ma.masked_equal(label[:, :, z].T, 0)
            ax.imshow(
                masked, cmap="tab20", vmin=0, vmax=num_classes - 1, alpha=0.5, origin="upper", interpolation="nearest"
            )
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def main(
    output_dir: str = "quickstart_output",
    iterations: int = ITERATIONS,
    learning_rate: float = LEARNING_RATE,
    num_cases: int = 20,
    size: int = 40,
    seed: int = 0,
    num_threads: int = 1,
) -> str:
    """Runs the quickstart and returns the path of the Markdown results table.

    Args:
        output_dir: where the phantom, the bundle copy, checkpoints, predictions and results go.
        iterations: training iterations (validation every ``iterations // 6``, the best checkpoint is evaluated).
        learning_rate: AdamW learning rate.
        num_cases: phantom cases (split train/validation/test by ``prepare``; 20 gives 16/2/2).
        size: phantom edge length in voxels (1.5 x 1.5 x 2 mm, the bundle's spacing).
        seed: phantom, split and training seed.
        num_threads: torch CPU threads (1: on shared cores two threads stall, see ``rep3d_networks.ops``; 0 keeps
            torch's default).
    """
    start = time.perf_counter()
    out = Path(output_dir).resolve()
    bundle = out / "bundle"
    if bundle.exists():
        raise FileExistsError(f"{bundle} already exists: choose another --output_dir or remove it.")
    if int(iterations) < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if num_threads > 0:
        torch.set_num_threads(int(num_threads))
    data_dir = Path(phantom(BUNDLE, str(out / "data"), num_cases=num_cases, size=size, seed=seed))
    shutil.copytree(repo_bundle_dir(), bundle, ignore=shutil.ignore_patterns("models", "eval", "datalist_fold*.json"))
    prepare(BUNDLE, str(data_dir), str(bundle / "configs"), seed=seed)

    affine = ConfigParser(ConfigParser.load_config_file(str(bundle / "configs" / "train.json")))[AFFINE]["_target_"]
    if affine != "RandAffined":
        raise ValueError(f"{bundle}/configs/train.json: {AFFINE} is {affine}, the quickstart expects RandAffined")
    common = dict(dataset_dir=str(data_dir), num_workers=0, cache_rate=1.0, **SMALL_NETWORK)
    interval = max(1, int(iterations) // 6)
    train = dict(
        common,
        roi_size=PATCH,
        learning_rate=float(learning_rate),
        max_iterations=int(iterations),
        val_interval=interval,
        checkpoint_interval=int(iterations),
        **{f"{AFFINE}#prob": AFFINE_PROB},
        initialize=[f"$monai.utils.set_determinism(seed={int(seed)})"],
    )
    print("[quickstart] settings that differ from the paper recipe (bundles/amos_ct/configs/train.json):")
    for line in recipe_differences(bundle, train):
        print(f"[quickstart]   {line}")
    print(f"[quickstart] training {iterations} iterations on {data_dir}")
    run_bundle(bundle, ["train.json"], **train)
    print("[quickstart] evaluating the best checkpoint on the held-out test cases")
    run_bundle(bundle, ["train.json", "evaluate.json"], **train)

    datalist = json.loads((bundle / "configs" / "datalist_fold0.json").read_text())
    test_images = [str(data_dir / item["image"]) for item in datalist["test"]]
    reference = data_dir / datalist["test"][0]["label"]
    pred_dir = out / "predictions"
    print(f"[quickstart] inference with the folded network on {len(test_images)} test image(s)")
    inference = {"inferer#roi_size": PATCH}
    run_bundle(bundle, ["inference.json"], datalist=test_images, output_dir=str(pred_dir), **inference, **common)

    num_classes = len(
        json.loads((bundle / "configs" / "metadata.json").read_text())["network_data_format"]["outputs"]["pred"][
            "channel_def"
        ]
    )
    table = (bundle / "eval" / "summary.md").read_text().strip()  # per-class Dice/HD95 written by evaluate.json
    minutes = (time.perf_counter() - start) / 60
    results = out / "results.md"
    results.write_text(
        f"# Quickstart results ({iterations} iterations, {len(test_images)} held-out phantom case(s), seed {seed}, "
        f"{minutes:.1f} min)\n\n{table}\n"
    )
    first = Path(test_images[0])
    prediction = next(pred_dir.rglob(first.name.replace(".nii.gz", "_seg.nii.gz")))
    save_overlay(first, reference, prediction, out / "overlay.png", num_classes)
    print(table)
    print(f"[quickstart] {minutes:.1f} min in all")
    print(
        f"[quickstart] results: {results}\n[quickstart] overlay: "
        f"{out / 'overlay.png'}\n[quickstart] predictions: {pred_dir}"
    )
    return str(results)


if __name__ == "__main__":
    fire.Fire(main)
