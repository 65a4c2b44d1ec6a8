"""A DeepEdit copy of ``python -m rep3d_networks.click_models`` served without clicks through two inference
configs (e.g. the bundle's ``inference.json`` before and after a change): mean organ Dice per held-out image.

    git show 66b9e5c~1:bundles/amos_ct_deepedit/configs/inference.json > /tmp/inference_nocrop.json
    python benchmarks/click_crop_check.py click_models_phantom --other /tmp/inference_nocrop.json

Each run is ``monai.bundle run`` of the config with the copy's serving overrides (``trained.json``), as the app runs it.
"""

import json
from pathlib import Path

import fire
import nibabel as nib
import numpy as np
from click_guidance_check import dice, run_bundle  # this folder is on sys.path when run as a script

from rep3d_networks.click_models import REPO_BUNDLES, TRAINED


def main(models_dir: str, other: str, bundle: str = "amos_ct_deepedit", images: int = 0) -> None:
    """Prints mean organ Dice (no clicks) per held-out image: the repository's inference.json vs ``other``; the first
    ``images`` held-out images in name order (0: all)."""
    root, copy = Path(models_dir), Path(models_dir) / "bundles" / bundle
    serving = json.loads((copy / TRAINED).read_text())["serving"]
    configs = {"repository": REPO_BUNDLES / bundle / "configs" / "inference.json", "other": Path(other)}
    means = {name: [] for name in configs}
    for image in sorted((root / "heldout" / "images").glob("*.nii.gz"))[: images or None]:
        reference = np.asarray(nib.load(root / "heldout" / "labels" / image.name).dataobj)
        for name, config in configs.items():
            pred = run_bundle(copy, image, {}, config=config, overrides=serving)
            means[name].append(float(np.mean([dice(reference, pred, v) for v in np.unique(reference) if v > 0])))
            print(f"{image.name} {name}: {means[name][-1]:.3f}", flush=True)
    print("mean " + ", ".join(f"{name} {np.mean(v):.3f}" for name, v in means.items()))


if __name__ == "__main__":
    fire.Fire(main)
