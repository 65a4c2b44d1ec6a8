"""``python -m rep3d_networks.click_models``: the click study's three models, trained by one command (issue #26).

Tiny runs (2 iterations): the command makes serve-ready bundle copies (DeepEdit Rep3D, DeepEdit DynUNet, automatic
Rep3D) with the same settings, the held-out studies and their references; a copy's own ``inference.json`` runs with a
click through ``monai.bundle run``. Whether the trained models obey clicks is measured outside CI (docs/interactive.md).
"""

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from rep3d_networks import click_models
from rep3d_networks.package import sha256

COPIES = {
    "amos_ct_deepedit": "rep3d_networks.Rep3D",
    "amos_ct_deepedit_dynunet": "DynUNet",
    "amos_ct": "rep3d_networks.Rep3D",
}


def run_command(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "rep3d_networks.click_models", *args], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("click_models") / "phantom"
    return out, run_command(
        "--dataset",
        "phantom",
        "--output_dir",
        str(out),
        "--iterations",
        "2",
        "--num_heldout",
        "2",
        "--click_probability",
        "1.0",
        "--max_interactions",
        "3",
        "--guidance_sigma",
        "1.5",
        "--label_permutation",
        "0.5",
    )


def test_click_models_phantom_copies(phantom_run):
    """Three trained copies, each network as named, the same settings in train and inference, references beside
    studies."""
    out, result = phantom_run
    for name, target in COPIES.items():
        bundle = out / "bundles" / name
        inference = ConfigParser.load_config_file(str(bundle / "configs" / "inference.json"))
        assert inference["network_def"]["_target_"] == target
        assert inference["inferer"]["roi_size"] == [32, 32, 32]
        state = torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
        assert state and all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), name
    assert "network_def: rep3d_networks.Rep3D in the paper recipe, MONAI DynUNet here" in result.stdout
    assert "max_iterations: 60000 in the paper recipe, 2 here" in result.stdout
    for line in (
        "deepgrow_probability_train: 0.4 in the bundle, 1.0 here",
        "max_interactions: 1 in the bundle, 3 here",
        "guidance_sigma: 3 in the bundle, 1.5 here",
        "train#iteration_update: MONAI's DeepEdit Interaction in the bundle, rep3d_networks.deepedit."
        "PermutedLabelInteraction here (0.5 of the iterations",
    ):
        assert result.stdout.count(line) == 2, line  # both DeepEdit copies, not the automatic one
    for name in ("amos_ct_deepedit", "amos_ct_deepedit_dynunet"):  # trained and served with the same click width
        bundle = out / "bundles" / name
        assert ConfigParser.load_config_file(str(bundle / "configs" / "inference.json"))["guidance_sigma"] == 1.5
        assert any(
            line.startswith("guidance_sigma: 3 in the bundle, 1.5 here")
            for line in json.loads((bundle / click_models.TRAINED).read_text())["differences"]
        )
    studies = sorted(p.name for p in (out / "heldout" / "images").iterdir())
    assert len(studies) == 2 and studies == sorted(p.name for p in (out / "heldout" / "labels").iterdir())
    data = next((out / "data").iterdir())
    training = [
        data / item["image"] for item in click_models.json.loads((out / "datalist.json").read_text())["training"]
    ]
    digests = {sha256(path) for path in training}
    assert len(training) >= 10 and not digests & {sha256(p) for p in (out / "heldout" / "images").iterdir()}
    table = (out / "results.md").read_text()
    assert all(f"| {name} |" in table for name in COPIES)
    stale = out / "bundles" / "amos_ct_deepedit" / "configs" / "inference.json"
    stale.write_text(stale.read_text().replace('"CropForegroundd"', '"SpatialPadd"'))  # an older serving pipeline
    again = run_command("--dataset", "phantom", "--output_dir", str(out), "--iterations", "2")
    assert again.stdout.count("not trained again") == 3  # a second command never replaces trained weights
    served = ConfigParser.load_config_file(str(stale))  # but serves with the repository's current pipeline
    assert "CropForegroundd" in [t["_target_"] for t in served["preprocessing"]["transforms"]]
    assert served["guidance_sigma"] == 1.5 and served["inferer"]["roi_size"] == [32, 32, 32]  # its own settings


def test_click_models_copy_serves_clicks(phantom_run, tmp_path):
    """The DeepEdit copy's own inference.json runs with a click (as the app would), the label on the study's grid."""
    out, _ = phantom_run
    bundle = out / "bundles" / "amos_ct_deepedit"
    image = sorted((out / "heldout" / "images").iterdir())[0]
    configs = bundle / "configs"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            str(configs / "inference.json"),
            "--bundle_root",
            str(bundle),
            "--meta_file",
            str(configs / "metadata.json"),
            "--datalist",
            f"['{image}']",
            "--output_dir",
            str(tmp_path),
            "--num_workers",
            "0",
            "--clicks",
            "{'liver': [[20, 20, 20]]}",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    label = nib.load(next(tmp_path.rglob("*_seg.nii.gz")))
    assert label.shape == nib.load(image).shape and np.allclose(label.affine, nib.load(image).affine)


@pytest.mark.parametrize(
    "args, message",
    [
        ({"dataset": "mri"}, "dataset must be one of"),
        ({"models": "rep3d,unet"}, "models must be a comma-separated subset"),
        ({"iterations": -1}, "iterations must be >= 1"),
        ({"click_probability": 1.5}, "click_probability must be in"),
        ({"max_interactions": 0}, "max_interactions must be >= 1"),
        ({"guidance_sigma": 0}, "guidance_sigma must be > 0"),
        ({"label_permutation": -0.1}, "label_permutation must be in"),
    ],
)
def test_click_models_bad_arguments(args, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        click_models.main(output_dir=str(tmp_path / "x"), **args)
    assert not (tmp_path / "x").exists()  # refused before any work


def test_click_models_real_ct(tmp_path, shared_data):
    """The real-CT settings: 3 mm grid and 64 x 64 x 16 window in the copy, the test slab as the study."""
    out = tmp_path / "real_ct"
    run_command(
        "--dataset",
        "real_ct",
        "--output_dir",
        str(out),
        "--iterations",
        "2",
        "--models",
        "dynunet",
        "--shared_data",
        str(shared_data),
    )
    inference = ConfigParser.load_config_file(
        str(out / "bundles" / "amos_ct_deepedit_dynunet" / "configs" / "inference.json")
    )
    assert inference["pixdim"] == [3.0, 3.0, 3.0] and inference["inferer"]["roi_size"] == [64, 64, 16]
    assert len(list((out / "heldout" / "images").iterdir())) == 1


def test_click_crop_check_compares_two_serving_configs(phantom_run):
    """``benchmarks/click_crop_check.py`` serves a trained copy through the repository's inference.json and another
    one: given the repository's own config as the other, both columns agree (one image of two: ``--images 1``)."""
    out, _ = phantom_run
    script = click_models.REPO_BUNDLES.parent / "benchmarks" / "click_crop_check.py"
    other = click_models.REPO_BUNDLES / "amos_ct_deepedit" / "configs" / "inference.json"
    result = subprocess.run(
        [sys.executable, str(script), str(out), "--other", str(other), "--images", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.endswith(tuple("0123456789")) and ": " in line]
    assert len(rows) == 2  # the first of the 2 held-out images x 2 configs
    scores = {(image, name.rstrip(":")): float(value) for image, name, value in rows}
    assert all(scores[(image, "repository")] == scores[(image, "other")] for image, _ in scores)
