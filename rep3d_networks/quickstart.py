"""End-to-end quickstart on a synthetic phantom, no internet needed.

``python -m rep3d_networks.quickstart --output_dir quickstart_output`` (what ``make quickstart`` runs):

1. writes a small synthetic abdominal CT phantom in the AMOS22 layout (``rep3d_networks.data phantom``),
2. prepares its datalist (``rep3d_networks.data prepare``) inside a scratch copy of ``bundles/amos_ct``,
3. trains that bundle briefly with a small Rep3D override (``monai.bundle run``, train.json),
4. evaluates the best checkpoint on the test split (train.json + evaluate.json),
5. runs bundle inference (inference.json, folded network) on the test images,
6. prints the per-class Dice / HD95 table that evaluate.json wrote and saves a PNG overlay.

Everything is written under ``output_dir``; the repository's bundle is not touched. The Dice values of a
few dozen iterations on a phantom only show that the pipeline works, not how good Rep3D is.
"""

import json
import shutil
from pathlib import Path
from typing import List

import fire
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from monai.bundle import run  # noqa: E402

from rep3d_networks.data.cli import phantom, prepare  # noqa: E402

BUNDLE = "amos_ct"
SMALL_NETWORK = {"network_def#feature_size": 8, "network_def#hidden_size": 32}
PATCH = [32, 32, 32]  # PyTorch's CPU backward of the decoder's full-resolution 3x3x3 convs dominates at larger patches


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


def save_overlay(image_path: Path, reference_path: Path, prediction_path: Path, png_path: Path, num_classes: int) -> None:
    """The axial slice with most reference foreground: image, reference label and prediction."""
    image = np.asarray(nib.load(str(image_path)).dataobj, dtype=np.float32)
    reference = np.asarray(nib.load(str(reference_path)).dataobj)
    prediction = np.asarray(nib.load(str(prediction_path)).dataobj)
    z = int(np.argmax((reference > 0).sum(axis=(0, 1))))
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, title, label in zip(axes, ["image", "reference label", "Rep3D prediction"], [None, reference, prediction]):
        ax.imshow(np.clip(image[:, :, z].T, -175, 250), cmap="gray", origin="lower")
        if label is not None:
            masked = np.ma.masked_equal(label[:, :, z].T, 0)
            ax.imshow(masked, cmap="tab20", vmin=0, vmax=num_classes - 1, alpha=0.5, origin="lower", interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def main(output_dir: str = "quickstart_output", iterations: int = 30, num_cases: int = 8, size: int = 48, seed: int = 0) -> str:
    """Runs the quickstart and returns the path of the Markdown results table.

    Args:
        output_dir: where the phantom, the bundle copy, checkpoints, predictions and results go.
        iterations: training iterations (validation every ``iterations // 2``).
        num_cases: phantom cases (split train/validation/test by ``prepare``).
        size: phantom edge length in voxels.
        seed: phantom and training seed.
    """
    out = Path(output_dir).resolve()
    bundle = out / "bundle"
    if bundle.exists():
        raise FileExistsError(f"{bundle} already exists: choose another --output_dir or remove it.")
    data_dir = Path(phantom(BUNDLE, str(out / "data"), num_cases=num_cases, size=size, seed=seed))
    shutil.copytree(repo_bundle_dir(), bundle, ignore=shutil.ignore_patterns("models", "eval", "datalist_fold*.json"))
    prepare(BUNDLE, str(data_dir), str(bundle / "configs"), seed=seed)

    common = dict(dataset_dir=str(data_dir), num_workers=0, cache_rate=1.0, **SMALL_NETWORK)
    train = dict(common, roi_size=PATCH, max_iterations=iterations, val_interval=max(1, iterations // 2))
    print(f"[quickstart] training {iterations} iterations on {data_dir}")
    run_bundle(bundle, ["train.json"], **train)
    print("[quickstart] evaluating the best checkpoint on the test split")
    run_bundle(bundle, ["train.json", "evaluate.json"], **train)

    datalist = json.loads((bundle / "configs" / "datalist_fold0.json").read_text())
    test_images = [str(data_dir / item["image"]) for item in datalist["test"]]
    reference = data_dir / datalist["test"][0]["label"]
    pred_dir = out / "predictions"
    print(f"[quickstart] inference with the folded network on {len(test_images)} test image(s)")
    run_bundle(bundle, ["inference.json"], datalist=test_images, output_dir=str(pred_dir), **{"inferer#roi_size": PATCH}, **common)

    num_classes = len(json.loads((bundle / "configs" / "metadata.json").read_text())["network_data_format"]["outputs"]["pred"]["channel_def"])
    table = (bundle / "eval" / "summary.md").read_text().strip()  # per-class Dice/HD95 written by evaluate.json
    results = out / "results.md"
    results.write_text(f"# Quickstart results ({iterations} iterations, synthetic phantom)\n\n{table}\n")
    first = Path(test_images[0])
    prediction = next(pred_dir.rglob(first.name.replace(".nii.gz", "_seg.nii.gz")))
    save_overlay(first, reference, prediction, out / "overlay.png", num_classes)
    print(table)
    print(f"[quickstart] results: {results}\n[quickstart] overlay: {out / 'overlay.png'}\n[quickstart] predictions: {pred_dir}")
    return str(results)


if __name__ == "__main__":
    fire.Fire(main)
