"""The analysis commands of issue #8 (``python -m rep3d_networks.analysis``), at tiny settings.

The ``lr-field`` CLI runs in a background process (started with the module's first test) while the
in-process tests run, and is checked by the last test of the file.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rep3d_networks import Rep3D
from rep3d_networks.analysis import cli
from rep3d_networks.analysis.convergence import ConvergenceSettings, paired_model
from rep3d_networks.analysis.convergence_data import write_dataset
from rep3d_networks.analysis.erf import erf_summary
from rep3d_networks.analysis.kernel_geometry import centre_periphery_ratio, radial_profile, tap_distances
from rep3d_networks.analysis.model_loading import build_model, is_folded, model_kwargs, read_state_dict

TINY_MODEL = dict(feature_size=4, hidden_size=8)


def assert_png(path) -> None:
    path = Path(path)
    assert path.is_file() and path.stat().st_size > 1000, path
    with Image.open(path) as image:
        image.load()
        assert image.size[0] > 100 and image.size[1] > 100


@pytest.fixture(scope="module", autouse=True)
def lr_field_process(tmp_path_factory):
    """``lr-field`` through the CLI entry, in the background."""
    out = tmp_path_factory.mktemp("lr_field")
    command = [sys.executable, "-m", "rep3d_networks.analysis", "lr-field", "--output_dir", str(out), "--steps", "3",
               "--channels", "2", "--output_size", "4"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield process, out
    if process.poll() is None:
        process.kill()
        process.communicate()


def test_centre_periphery_ratio_and_radial_profile():
    distance = tap_distances(21)
    values = np.where(distance <= 1, 3.0, 1.0)
    assert centre_periphery_ratio(values) == pytest.approx(3.0)
    profile = radial_profile(values)
    assert profile["radius"][:3] == [0, 1, 2]
    assert profile["count"][0] == 1 and sum(profile["count"]) == 21**3
    assert profile["mean"][0] == 3.0 and profile["mean"][-1] == 1.0


def test_erf_summary_of_a_point_and_a_flat_map():
    point = np.zeros((9, 9, 9))
    point[4, 4, 4] = 2.0
    summary = erf_summary(point, radii=(1, 3))
    assert summary["mass_within"] == {1: 1.0, 3: 1.0} and summary["r50"] == 0 and summary["centre_share"] == 1.0
    flat = erf_summary(np.ones((9, 9, 9)), radii=(1, 3))
    assert flat["mass_within"] == pytest.approx(flat["uniform_within"])


def test_list_options_from_fire():
    assert cli.as_tuple("vanilla,lrbm") == ("vanilla", "lrbm")
    assert cli.as_tuple((0, 1), int) == (0, 1) and cli.as_tuple(2, int) == (2,)
    assert cli.as_crop(32) == (32, 32, 32) and cli.as_crop("48,48,32") == (48, 48, 32)
    with pytest.raises(ValueError, match="crop"):
        cli.as_crop("32,32")


def test_folded_and_wrapped_checkpoints_load(tmp_path):
    kwargs = model_kwargs(None, **TINY_MODEL)
    model = Rep3D(**kwargs)
    torch.save({"model": model.state_dict()}, tmp_path / "wrapped.pt")
    assert is_folded(read_state_dict(str(tmp_path / "wrapped.pt")), "lrbm") is False
    loaded = build_model(kwargs, str(tmp_path / "wrapped.pt"))
    assert any(k.startswith("encoder.stages.0.0.conv.mask.") for k in loaded.state_dict())
    torch.save(model.fold().state_dict(), tmp_path / "folded.pt")
    folded = build_model(kwargs, str(tmp_path / "folded.pt"))
    assert all(block.conv.folded for stage in folded.encoder.stages for block in stage)


def test_erf_of_a_fresh_model_from_a_bundle_config(tmp_path, repo_root):
    config = repo_root / "bundles" / "amos_ct" / "configs" / "train.json"
    paths = cli.erf(str(tmp_path), config=str(config), input_size=32, num_inputs=1, **TINY_MODEL)
    for key in ("erf_planes_png", "lrbm_masks_png"):
        assert_png(paths[key])
    result = json.loads(Path(paths["json"]).read_text())
    assert result["model"]["out_channels"] == 16 and result["model"]["feature_size"] == 4
    mass = list(result["summary"]["mass_within"].values())
    assert all(0 < m <= 1 for m in mass) and mass == sorted(mass)
    assert mass[-1] > result["summary"]["uniform_within"]["16"]  # concentrated around the centre
    masks = result["masks"]
    assert len(masks) == 9  # 8 blocks + the prior for reference
    assert all(m["centre"] == pytest.approx(1.0) and m["centre_periphery_ratio"] > 1 for m in masks)  # M = P at init
    assert all(m["change_from_init"] == pytest.approx(0.0, abs=1e-6) for m in masks)
    assert np.load(paths["erf_npy"]).shape == (32, 32, 32)


def test_convergence_then_erf_of_its_checkpoint(tmp_path, shared_data):
    out = tmp_path / "convergence"
    paths = cli.convergence(
        str(out), iterations=2, seeds="0,1", crop=32, shared_data=str(shared_data), **TINY_MODEL
    )
    result = json.loads(Path(paths["json"]).read_text())
    assert result["data"]["source"] == "totalseg" and len(result["runs"]) == 6
    for run in result["runs"]:
        assert run["iterations"] == [1, 2] and all(0 <= d <= 1 for d in run["dice"])
        assert all(t > 0 for t in run["train_seconds"]) and math.isfinite(run["loss"][-1])
    table = Path(paths["markdown"]).read_text().split("Per run:")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| variant")]
    assert [r.split("|")[1].strip() for r in rows] == ["vanilla", "fixed", "lrbm"]
    assert all(r.split("|")[2].strip() == "2" for r in rows)  # seed count
    assert_png(paths["png"])

    erf_paths = cli.erf(
        str(tmp_path / "erf"), checkpoint=str(out / "checkpoints" / "lrbm_seed0.pt"), config=paths["model_config"],
        inputs="ct", shared_data=str(shared_data), input_size=32, num_inputs=1,
    )
    assert_png(erf_paths["lrbm_masks_png"])
    assert "checkpoint" in json.loads(Path(erf_paths["json"]).read_text())["weights"]


def test_variants_of_a_seed_start_from_the_same_shared_weights():
    settings = ConvergenceSettings(iterations=4, **TINY_MODEL)
    assert settings.eval_points == [1, 3, 4]  # 1/6, 1/3, 2/3 and all of the iterations, rounded
    vanilla, lrbm = paired_model(settings, "vanilla", 3).state_dict(), paired_model(settings, "lrbm", 3).state_dict()
    for key in ("encoder.stages.0.0.conv.weight", "decoder.head.conv.conv.weight"):
        torch.testing.assert_close(vanilla[key], lrbm[key], rtol=0, atol=0)
    other_seed = paired_model(settings, "vanilla", 4).state_dict()
    assert not torch.equal(vanilla["encoder.stages.0.0.conv.weight"], other_seed["encoder.stages.0.0.conv.weight"])


def test_convergence_data_falls_back_to_the_phantom(tmp_path):
    folder, source = write_dataset(tmp_path, str(tmp_path / "no_shared_data"), num_cases=3, phantom_size=32, seed=0)
    assert source == "phantom" and len(list((folder / "imagesTr").glob("*.nii.gz"))) == 3


def test_lr_field_cli_outputs(lr_field_process):
    process, out = lr_field_process
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    assert str(out / "lr_field_radial.png") in stdout
    assert_png(out / "lr_field_radial.png")
    result = json.loads((out / "lr_field.json").read_text())
    runs = {(r["optimizer"], r["variant"]): r for r in result["runs"]}
    assert len(runs) == 8
    for run in runs.values():
        assert all(math.isfinite(v) and v > 0 for v in run["ratio"].values())
    # AdamW's first step is a sign step: eq. 11 holds exactly for CSLA, and a plain kernel moves uniformly
    assert runs["adamw", "csla"]["ratio"]["1"] == pytest.approx((2e-4 + 3e-4) / 2e-4, rel=0.01)
    assert runs["adamw", "vanilla"]["ratio"]["1"] == pytest.approx(1.0, rel=0.01)
    assert runs["adamw", "fixed"]["ratio"]["1"] == pytest.approx(runs["adamw", "fixed"]["predicted_first_step_ratio"], rel=0.01)
    assert runs["sgd", "csla"]["ratio"]["1"] > 2 and runs["sgd", "fixed"]["ratio"]["1"] > 10
    assert "| adamw | csla |" in (out / "lr_field.md").read_text()
