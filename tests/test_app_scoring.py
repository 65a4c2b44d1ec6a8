"""The ``entropy_<model>`` uncertainty scoring and strategy of the MONAI Label app (issue #26), through the real server.

The server runs on a tiny copy of ``amos_ct`` with random weights (as in ``tests/test_app.py``); the studies are the
sample CT and two variants of it uploaded through the client (mirrored, brighter), so that their scores differ.
``POST /scoring/entropy_amos_ct`` runs in a background process of the server, as MONAI Label runs it for Slicer.

The server runs with ``MONAI_LABEL_DATASTORE_AUTO_RELOAD=false``: without the file watcher (which, when on, reloads
``datastore_v2.json`` in each process shortly after another one wrote it, a second later on network mounts) a
process that writes an old copy of the file loses what others wrote every time, not only within that delay.
"""

import json
import math
import os
import re
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from app_helpers import CT, amos_label, save_random_weights, serve_app, task_status, wait_for_task
from monai.bundle import ConfigParser
from monailabel.client.client import MONAILabelClientException, MONAILabelUtils

SERVED = {"amos_ct": True}
METHOD = "entropy_amos_ct"
SCORING_S = 180
LABEL_INFO = {"label_info": [{"name": "liver", "idx": 6}], "client_id": "annotator"}  # as Slicer sends with a label


@pytest.fixture(scope="module")
def served(tmp_path_factory, shared_data, repo_root):
    """A running server with the images ``ct_sm``, ``flipped`` and ``brighter``; yields ``(server, client, bundles,
    studies)``."""
    root = tmp_path_factory.mktemp("rep3d_scoring")
    source = nib.load(shared_data / CT)
    values = np.asarray(source.dataobj, dtype=np.float32)
    with serve_app(
        root, repo_root, shared_data / CT, SERVED, env={"MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false"}
    ) as running:
        for name, volume in {"flipped": values[::-1], "brighter": values + 150.0}.items():
            nib.save(nib.Nifti1Image(np.ascontiguousarray(volume), source.affine), root / f"{name}.nii.gz")
            running[1].upload_image(str(root / f"{name}.nii.gz"), image_id=name)
        yield running


def start_scoring(server) -> None:
    status, response, _, _ = MONAILabelUtils.http_method("POST", server.url, f"/scoring/{METHOD}")
    assert status == 200, response


def scoring_result(server) -> dict:
    """The summary the finished scoring run returned (upstream logs it as ``Result: {...}``)."""
    lines = [line for line in wait_for_task(server, "scoring", SCORING_S)["details"] if "Result: {" in line]
    assert lines, task_status(server, "scoring")
    return json.loads(lines[-1].split("Result: ", 1)[1])


def entries(objects: dict) -> dict:
    """``{image id: {"info": image info, "labels": {tag: label info}}}`` from a datastore listing's ``objects``."""
    return {
        k: {"info": v["image"]["info"], "labels": {t: label["info"] for t, label in v["labels"].items()}}
        for k, v in objects.items()
    }


def stored(studies: Path) -> dict:
    """:func:`entries` of the datastore file, which holds what every process stored."""
    return entries(json.loads((studies / "datastore_v2.json").read_text())["objects"])


def weights_version(bundles: Path) -> int:
    return os.stat(bundles / "amos_ct" / "models" / "model.pt").st_mtime_ns


def model_grid_voxels(bundle: Path, image: Path) -> int:
    """Voxels of the image after the bundle's preprocessing (resampled, foreground-cropped): the network's grid."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    return int(np.prod(parser.get_parsed_content("preprocessing")({"image": str(image)})["image"].shape[1:]))


def test_strategy_without_scores_is_refused(served):
    _, client, _, _ = served
    info = client.info()
    assert METHOD in info["scoring"] and METHOD in info["strategies"]
    with pytest.raises(
        MONAILabelClientException,
        match=rf"Status: 400.*No {METHOD} scores for the current weights of "
        rf"\W+amos_ct\W+ \(3 unlabelled images.*run POST /scoring/{METHOD} first",
    ):
        client.next_sample(METHOD, {})


def test_scores_are_stored_the_strategy_picks_the_highest_and_labels_saved_meanwhile_stay(
    served, shared_data, tmp_path
):
    """A label saved (with Slicer's label info) while the scoring process stores scores is kept: the scoring process
    loaded the datastore before the label existed, and upstream would write that copy back."""
    server, client, bundles, studies = served
    version = weights_version(bundles)
    label = amos_label(shared_data, tmp_path / "label.nii.gz")  # on the grid of all three images
    start_scoring(server)
    deadline = time.monotonic() + SCORING_S
    while not re.search(rf"{METHOD}: \w+\.nii\.gz: ", server.log_text()):  # the first image is scored
        assert time.monotonic() < deadline and task_status(server, "scoring")["status"] in ("SUBMITTED", "RUNNING"), (
            server.log_tail()
        )
        time.sleep(0.2)
    client.save_label("brighter", str(label), tag="final", params=LABEL_INFO)
    assert task_status(server, "scoring")["status"] == "RUNNING", "scoring ended before the label was saved"
    result = scoring_result(server)
    assert result["total"] == 3 and result["scored"] == 3 and result["skipped"] == 0

    images = stored(studies)
    for labels in (images["brighter"]["labels"], entries(client.datastore()["objects"])["brighter"]["labels"]):
        assert labels.get("final", {}).get("label_info") == LABEL_INFO["label_info"], f"label lost: {labels}"

    voxels = model_grid_voxels(bundles / "amos_ct", studies / "ct_sm.nii.gz")
    scores = {}
    for image in ("ct_sm", "flipped", "brighter"):
        entry = images[image]["info"][METHOD]
        assert entry["model_mtime_ns"] == version and entry["voxels"] == voxels, entry
        assert 0.0 < entry["entropy"] < 1.0
        scores[image] = entry["entropy"]
    assert len(set(scores.values())) == 3, scores  # different images, different scores
    unlabelled = {k: v for k, v in scores.items() if k != "brighter"}
    sample = client.next_sample(METHOD, {})
    assert sample["id"] == max(unlabelled, key=unlabelled.get) and sample["entropy"] == max(unlabelled.values())


def test_images_scored_with_the_current_weights_are_skipped(served):
    """A second run scores only the new images; one the model refuses (a 2D file copied into the studies folder)
    is reported and does not stop the others."""
    server, client, _, studies = served
    before = stored(studies)
    client.upload_image(str(studies / "ct_sm.nii.gz"), image_id="copy")
    nib.save(nib.Nifti1Image(np.zeros((32, 32), np.float32), np.eye(4)), studies / "flat.nii.gz")
    start_scoring(server)
    result = scoring_result(server)
    assert (result["total"], result["skipped"], result["scored"], result["failed"]) == (4, 2, 1, 1), result
    assert re.search(rf"{METHOD}: flat not scored: .*flat\.nii\.gz", server.log_text()), server.log_tail()
    after = stored(studies)
    assert all(after[k]["info"][METHOD] == before[k]["info"][METHOD] for k in ("ct_sm", "flipped"))
    assert after["copy"]["info"][METHOD]["entropy"] == pytest.approx(
        after["ct_sm"]["info"][METHOD]["entropy"], abs=1e-6
    )


def test_new_weights_make_the_scores_stale(served):
    """A training run (here: new weights written as one would) makes every stored score stale."""
    _, client, bundles, studies = served
    save_random_weights(bundles / "amos_ct", seed=99)
    scored = [v["info"][METHOD] for v in stored(studies).values() if METHOD in v["info"]]
    assert len(scored) == 4 and all(entry["model_mtime_ns"] != weights_version(bundles) for entry in scored)
    with pytest.raises(MONAILabelClientException, match=rf"Status: 400.*No {METHOD} scores for the current weights"):
        client.next_sample(METHOD, {})


def test_normalised_entropy(repo_root, monkeypatch):
    """The score's arithmetic, in chunks with a remainder: the mean of ``torch.distributions``' entropy / log C."""
    monkeypatch.syspath_prepend(str(repo_root / "apps" / "rep3d"))
    for module in [m for m in sys.modules if m == "lib" or m.startswith("lib.")]:
        monkeypatch.delitem(sys.modules, module)
    from lib import scoring

    monkeypatch.setattr(scoring, "CHUNK_VOXELS", 7)
    logits = torch.randn(5, 4, 3, 2, generator=torch.Generator().manual_seed(0)) * 3
    expected = torch.distributions.Categorical(logits=logits.movedim(0, -1)).entropy().mean() / math.log(5)
    assert scoring.normalised_mean_entropy(logits) == pytest.approx(float(expected), rel=1e-6)
    assert scoring.normalised_mean_entropy(torch.zeros(16, 3, 3, 3)) == pytest.approx(1.0)
    assert scoring.normalised_mean_entropy(torch.tensor([[1e4], [0.0]])) == pytest.approx(0.0, abs=1e-6)
