"""Click-guided Rep3D (DeepEdit) in the MONAI Label app ``apps/rep3d``, through the real server (issue #9).

The server runs on scratch copies of the app and of ``amos_ct_deepedit`` (random weights), ``kits_deepedit``
(untrained) and ``amos_ct`` (automatic), shrunk as in ``tests/test_app.py`` (4-wide Rep3D, 3³ kernels, 6 mm grid,
one window); the study is the real CT ``totalseg_ct_abdomen_3mm/example_ct_sm.nii.gz``. Clicks are sent with
``MONAILabelClient`` exactly as 3D Slicer's MONAI Label module sends them for a ``deepedit`` model: one request key
per label name of the app (``/info/`` ``labels``), each a list of ``[i, j, k]`` voxel indices of the image, plus
``label`` (the segment being edited).

What is checked about clicks: **that the guidance reaches the network**, not that a trained model obeys it. Training a
model until its clicks are obeyed takes longer than this test may run on 2 CPU cores (see ``docs/interactive.md``), so
the checks are fixed, deterministic ones on random weights: the same clicks give the same label; a click changes the
label, more often within 30 mm of the click than farther away; the same point clicked as another label gives another
result (the click goes to that label's guidance channel); a label name the model does not have (another model's, as
Slicer sends all of them) changes nothing. The DeepEdit training loop itself (simulated clicks,
``monai.apps.deepedit.interaction.Interaction``) runs through ``/train`` for 2 iterations.
"""

import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from app_helpers import CT, amos_label, check_label, file_digest, serve_app
from monailabel.client.client import MONAILabelClientException
from scipy import ndimage

from rep3d_networks.data.specs import get_dataset_spec

SERVED = {"amos_ct_deepedit": True, "kits_deepedit": False, "amos_ct": True}  # bundle -> starts with weights
AMOS = get_dataset_spec("amos_ct")
AMOS_LIVER = AMOS.label_ids["liver"]
NEAR_MM = 30.0
TRAIN_S = 300  # DeepEdit training (click simulation) takes longer than the automatic models'


@pytest.fixture(scope="module")
def served(tmp_path_factory, shared_data, repo_root):
    """A running server; yields ``(server, client, bundles dir, studies dir)``."""
    with serve_app(tmp_path_factory.mktemp("rep3d_deepedit_app"), repo_root, shared_data / CT, SERVED) as running:
        yield running


@pytest.fixture(scope="module")
def liver_voxel(shared_data, tmp_path_factory) -> list:
    """The voxel (image index) deepest inside the liver of the sample CT."""
    label = amos_label(shared_data, tmp_path_factory.mktemp("label") / "label.nii.gz")
    inside = np.pad(np.asarray(nib.load(str(label)).dataobj) == AMOS_LIVER, 1)
    depth = ndimage.distance_transform_edt(inside)[1:-1, 1:-1, 1:-1]
    return [int(v) for v in np.unravel_index(np.argmax(depth), depth.shape)]


def slicer_params(info: dict, label: str, clicks: dict) -> dict:
    """The request of Slicer's MONAI Label module for a ``deepedit`` model (``onClickDeepgrow``, multi-label)."""
    return {**{name: clicks.get(name, []) for name in info["labels"]}, "label": label}


def infer(client, studies: Path, params: dict, model: str = "amos_ct_deepedit"):
    label_file, result = client.infer(model, "ct_sm", params)
    return check_label(label_file, studies / "ct_sm.nii.gz", 16), result


def test_info_lists_deepedit_models_with_background(served):
    _, client, _, _ = served
    info = client.info()
    models = info["models"]
    assert models["amos_ct_deepedit"]["type"] == models["kits_deepedit"]["type"] == "deepedit"
    assert models["amos_ct"]["type"] == "segmentation"
    assert models["amos_ct_deepedit"]["labels"]["background"] == 0
    amos_labels = models["amos_ct_deepedit"]["labels"]
    assert amos_labels["liver"] == AMOS_LIVER and len(amos_labels) == AMOS.num_classes
    assert models["kits_deepedit"]["labels"] == get_dataset_spec("kits").label_ids
    assert "background" in info["labels"] and "tumor" in info["labels"]  # what Slicer sends clicks for
    assert models["amos_ct_deepedit"]["trained"] and not models["kits_deepedit"]["trained"]
    trainer = info["trainers"]["amos_ct_deepedit"]["config"]
    assert (
        trainer["deepgrow_probability_train"] == 0.4
        and trainer["max_iterations"] > 0
        and trainer["max_interactions"] == 1
    )
    assert set(info["scoring"]) == {"entropy_amos_ct"}  # uncertainty scoring for the automatic model only
    assert set(info["strategies"]) == {"random", "first", "entropy_amos_ct"}


def test_untrained_deepedit_model_is_refused(served):
    _, client, _, _ = served
    with pytest.raises(MONAILabelClientException, match="untrained"):
        client.infer("kits_deepedit", "ct_sm", {"kidney": [[30, 40, 10]], "label": "kidney"})


def test_clicks_reach_the_network(served, liver_voxel):
    """Guidance-reaches-network check (random weights, deterministic); see the module docstring."""
    _, client, _, studies = served
    info = client.info()
    automatic, result = infer(client, studies, slicer_params(info, "liver", {}))
    assert result["label_names"]["liver"] == AMOS_LIVER
    liver, _ = infer(client, studies, slicer_params(info, "liver", {"liver": [liver_voxel]}))
    liver_again, _ = infer(client, studies, slicer_params(info, "liver", {"liver": [liver_voxel]}))
    spleen, _ = infer(client, studies, slicer_params(info, "spleen", {"spleen": [liver_voxel]}))
    foreign, _ = infer(client, studies, slicer_params(info, "tumor", {"tumor": [liver_voxel]}))

    np.testing.assert_array_equal(liver, liver_again)
    np.testing.assert_array_equal(automatic, foreign)  # another model's label: not an input of this one
    assert not np.array_equal(liver, spleen)  # each label has its own guidance channel
    changed = liver != automatic
    assert changed.any()
    spacing = np.asarray(nib.load(str(studies / "ct_sm.nii.gz")).header.get_zooms()[:3])
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in changed.shape], indexing="ij"), axis=-1)
    near = np.linalg.norm((grid - np.asarray(liver_voxel)) * spacing, axis=-1) < NEAR_MM
    # random weights change voxels everywhere (instance norms, bottleneck), but more often near the click
    assert changed[near].mean() > changed[~near].mean(), (changed[near].mean(), changed[~near].mean())


def test_background_click_reaches_the_network(served, liver_voxel):
    _, client, _, studies = served
    info = client.info()
    automatic, _ = infer(client, studies, slicer_params(info, "liver", {}))
    background, _ = infer(client, studies, slicer_params(info, "background", {"background": [liver_voxel]}))
    assert not np.array_equal(automatic, background)


@pytest.mark.latest_stack
def test_train_deepedit_through_the_server(served, shared_data, tmp_path, liver_voxel):
    """Upload, "Submit Label", "Train" (simulated clicks in every iteration, 3 rounds each: MONAI's ``Interaction``
    fails in its second round without ``GuidanceListsd``), then clicks use the new weights."""
    server, client, bundles, studies = served
    client.upload_image(str(shared_data / CT), image_id="uploaded_ct")
    client.save_label("uploaded_ct", str(amos_label(shared_data, tmp_path / "label.nii.gz")), tag="final")
    info = client.info()
    infer(client, studies, slicer_params(info, "liver", {"liver": [liver_voxel]}))  # the network is now cached
    weights = bundles / "amos_ct_deepedit" / "models" / "model.pt"
    before = file_digest(weights)

    client.train_start(
        "amos_ct_deepedit",
        {"max_iterations": 2, "val_interval": 2, "deepgrow_probability_train": 1.0, "max_interactions": 3},
    )
    deadline = time.monotonic() + TRAIN_S
    while (status := client.train_status())["status"] in ("SUBMITTED", "RUNNING"):
        assert time.monotonic() < deadline, f"training still running after {TRAIN_S} s:\n{server.log_tail()}"
        time.sleep(2)
    assert status["status"] == "DONE", f"{status}\n{server.log_tail()}"
    assert "Number of simulated clicks" in server.log_text()  # MONAI's click simulation ran
    assert file_digest(weights) != before, "training did not write models/model.pt"

    infer(client, studies, slicer_params(info, "liver", {"liver": [liver_voxel]}))
    assert "Reload model from cache" in server.log_text()


def test_app_picks_deepedit_tasks_for_deepedit_bundles(repo_root, monkeypatch):
    """``--conf models all`` serves every bundle; only the DeepEdit ones get the click-guided tasks."""
    monkeypatch.syspath_prepend(str(repo_root / "apps" / "rep3d"))
    for module in [m for m in sys.modules if m == "lib" or m.startswith("lib.")]:
        monkeypatch.delitem(sys.modules, module)
    from lib.bundles import select_bundles
    from lib.deepedit import deepedit_labels, is_deepedit

    bundles = select_bundles(str(repo_root / "bundles"), "all")
    deepedit = {name for name, path in bundles.items() if is_deepedit(path)}
    assert deepedit == {"amos_ct_deepedit", "kits_deepedit"}
    for name in deepedit:
        labels = deepedit_labels(bundles[name])
        assert labels["background"] == 0 and list(labels.values()) == list(range(len(labels)))
