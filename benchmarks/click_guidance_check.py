"""Does a DeepEdit model of ``python -m rep3d_networks.click_models`` use its guidance channels at all?

For one held-out image, each DeepEdit copy is run through its own ``configs/inference.json`` (``monai.bundle run
--clicks``, the bundle's user entry point) three ways, and the Dice of every organ in the reference is printed:
no clicks; every organ present (and background) seeded at its deepest voxel, as MONAI's DeepEdit training seeds
them (``AddInitialSeedPointMissingLabelsd``: one seed per label, everywhere at once); only this organ clicked at its
deepest voxel, as the simulated annotator's first click on a missed organ would be.

    python benchmarks/click_guidance_check.py click_models_phantom --image amos_0001

``--images_dir`` / ``--labels_dir`` check an image the models were trained on instead (e.g. ``<models_dir>/data/
amos22/imagesTr`` and ``labelsTr``): a network that segments its training image as well without clicks as with them
has learned to need nothing from its guidance channels.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import fire
import nibabel as nib
import numpy as np
import torch
from monai.metrics import compute_dice

from rep3d_networks.analysis.clicks import deepest_voxel, voxel_spacing

BUNDLES = ("amos_ct_deepedit", "amos_ct_deepedit_dynunet")


def run_bundle(bundle: Path, image: Path, clicks: dict, config: Path = None, overrides: dict = None) -> np.ndarray:
    """The bundle's label for ``image`` with ``clicks`` (label name -> voxel indices of the image), through its own
    ``configs/inference.json`` or ``config``, with ``overrides`` (config id -> value) on the command line."""
    configs = bundle / "configs"
    options = [arg for key, value in (overrides or {}).items() for arg in (f"--{key}", json.dumps(value))]
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "monai.bundle",
                "run",
                "--config_file",
                str(config or configs / "inference.json"),
                "--bundle_root",
                str(bundle),
                "--meta_file",
                str(configs / "metadata.json"),
                "--datalist",
                f"['{image}']",
                "--output_dir",
                out,
                "--num_workers",
                "0",
                "--clicks",
                json.dumps(clicks),
                *options,
            ],
            check=True,
            capture_output=True,
        )
        return np.asarray(nib.load(next(Path(out).rglob("*_seg.nii.gz"))).dataobj)


def dice(reference: np.ndarray, prediction: np.ndarray, value: int) -> float:
    pair = [torch.as_tensor(a == value)[None, None].float() for a in (prediction, reference)]
    return float(compute_dice(*pair, include_background=True))


def main(models_dir: str, image: str = "amos_0001", images_dir: str = None, labels_dir: str = None) -> None:
    """Prints, per DeepEdit copy and organ, Dice with no clicks | every organ seeded | only this organ clicked.

    ``images_dir`` / ``labels_dir``: where ``<image>.nii.gz`` and its reference are (default: the held-out ones,
    ``<models_dir>/heldout/images`` and ``heldout/labels``)."""
    root = Path(models_dir)
    image_path = Path(images_dir or root / "heldout" / "images") / f"{image}.nii.gz"
    reference_image = nib.load(Path(labels_dir or root / "heldout" / "labels") / f"{image}.nii.gz")
    reference = np.asarray(reference_image.dataobj)
    spacing = voxel_spacing(reference_image.affine)
    for name in BUNDLES:
        bundle = root / "bundles" / name
        label_names = json.loads((bundle / "configs" / "inference.json").read_text())["label_names"]
        organs = {
            value: organ for organ, value in label_names.items() if organ != "background" and (reference == value).any()
        }
        seeds = {organ: [list(deepest_voxel(reference == value, spacing))] for value, organ in organs.items()}
        seeds["background"] = [list(deepest_voxel(reference == 0, spacing))]
        none, seeded = run_bundle(bundle, image_path, {}), run_bundle(bundle, image_path, seeds)
        print(f"{name} ({image}): organ | no clicks | every organ seeded | only this organ clicked", flush=True)
        rows = []
        for value, organ in organs.items():
            alone = run_bundle(bundle, image_path, {organ: seeds[organ]})
            rows.append([dice(reference, p, value) for p in (none, seeded, alone)])
            print(f"  {organ:22s} " + " | ".join(f"{v:.3f}" for v in rows[-1]), flush=True)
        print("  mean                   " + " | ".join(f"{v:.3f}" for v in np.mean(rows, axis=0)), flush=True)


if __name__ == "__main__":
    fire.Fire(main)
