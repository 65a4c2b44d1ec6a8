"""End-to-end tests of the MONAI Label app ``apps/rep3d`` through the real server, driven as 3D Slicer drives it.

The server runs in a subprocess on a free local port, on a temporary copy of the app and of three bundles
(``amos_ct`` and ``kits`` with weights, ``msd_pancreas`` without), shrunk so that everything runs on 2 CPU cores:
a tiny Rep3D (width 4, 3³ kernels), a 6 mm grid and one inference window. The studies folder holds the real CT
``totalseg_ct_abdomen_3mm/example_ct_sm.nii.gz``.
"""

import importlib.util
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from app_helpers import CT, TRAIN_S, amos_label, check_label, file_digest, save_random_weights, serve_app
from monailabel.client.client import MONAILabelClientException
from readme_helpers import README, readme_message

SERVED = {"amos_ct": True, "kits": True, "msd_pancreas": False}  # bundle -> starts with weights


@pytest.fixture(scope="module")
def served(tmp_path_factory, shared_data, repo_root):
    """A running server on tiny bundle copies; yields ``(server, client, bundles dir, studies dir)``."""
    with serve_app(tmp_path_factory.mktemp("rep3d_app"), repo_root, shared_data / CT, SERVED) as running:
        yield running


def channel_names(bundle: Path) -> dict:
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    channels = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
    return {name.lower(): int(value) for value, name in channels.items() if name != "background"}


def test_info_lists_models_labels_and_training_state(served):
    server, client, bundles, _ = served
    info = client.info()
    assert set(info["models"]) == set(info["trainers"]) == set(SERVED)
    entropy = {f"entropy_{name}" for name in SERVED}  # tests/test_app_scoring.py tests them
    assert set(info["strategies"]) == {"random", "first"} | entropy and set(info["scoring"]) == entropy
    for name, with_weights in SERVED.items():
        model = info["models"][name]
        assert model["labels"] == channel_names(bundles / name)
        assert model["trained"] is with_weights and info["trainers"][name]["trained"] is with_weights
        assert model["description"].startswith("UNTRAINED") is not with_weights
        assert model["config"]["device"][0] == "cpu"
        assert info["trainers"][name]["config"]["max_iterations"] > 0


def test_next_sample_strategies(served):
    _, client, _, studies = served
    assert client.next_sample("first", {})["id"] == "ct_sm"
    assert client.next_sample("random", {})["id"] == "ct_sm"


@pytest.mark.latest_stack
@pytest.mark.parametrize("model", ["amos_ct", "kits"])
def test_infer_returns_label_in_input_geometry(served, model):
    """Auto-segmentation as Slicer's "Run" asks for it; the bundles resample with the Spacingd that MONAI 1.6 runs
    under MONAI Label (``rep3d_networks.transforms.Spacingd``; ``make test-latest`` runs this on MONAI 1.6)."""
    _, client, bundles, studies = served
    preprocessing = json.loads((bundles / model / "configs" / "inference.json").read_text())["preprocessing"]
    assert "rep3d_networks.transforms.Spacingd" in [t["_target_"] for t in preprocessing["transforms"]]
    label_file, params = client.infer(model, "ct_sm", {})
    check_label(label_file, studies / "ct_sm.nii.gz", len(channel_names(bundles / model)) + 1)
    assert params["label_names"] == channel_names(bundles / model)


def test_sliding_window_options_per_request(served):
    """Slicer's options of a model list the bundle's ``displayable_configs``; a request's values reach the inferer."""
    server, client, _, studies = served
    config = client.info()["models"]["amos_ct"]["config"]
    assert config["sw_overlap"] == 0.0 and config["sw_batch_size"] == 1 and config["fast"] is False  # the tiny bundles'
    check_label(client.infer("amos_ct", "ct_sm", {"fast": True, "sw_overlap": 0.5})[0], studies / "ct_sm.nii.gz", 16)
    assert "SlidingWindowInferer => {'roi_size': [64, 64, 16], 'sw_batch_size': 1, 'overlap': 0.25" in server.log_text()
    check_label(
        client.infer("amos_ct", "ct_sm", {"sw_overlap": 0.25, "sw_batch_size": 2})[0], studies / "ct_sm.nii.gz", 16
    )
    assert "SlidingWindowInferer => {'roi_size': [64, 64, 16], 'sw_batch_size': 2, 'overlap': 0.25" in server.log_text()
    with pytest.raises(MONAILabelClientException):  # MONAI's sliding window refuses it
        client.infer("amos_ct", "ct_sm", {"sw_overlap": 1.0})
    assert "SlidingWindowInferer => {'roi_size': [64, 64, 16], 'sw_batch_size': 1, 'overlap': 1.0" in server.log_text()
    check_label(client.infer("amos_ct", "ct_sm", {})[0], studies / "ct_sm.nii.gz", 16)  # defaults again


def test_precision_per_request(served):
    """Slicer's options offer the inference precision as a menu (the bundle's ``auto`` first); a request's choice
    reaches the network, the labels keep dtype and geometry; an unknown one is refused before the image is read."""
    server, client, _, studies = served
    assert client.info()["models"]["amos_ct"]["config"]["precision"] == ["auto", "float32", "bfloat16"]
    labels = {}
    for precision, autocast in [("float32", "float32"), ("bfloat16", "torch.bfloat16 autocast")]:
        labels[precision] = check_label(
            client.infer("amos_ct", "ct_sm", {"precision": precision})[0], studies / "ct_sm.nii.gz", 16
        )
        assert f"precision {precision} on cpu: {autocast}" in server.log_text()
    assert (labels["bfloat16"] == labels["float32"]).mean() > 0.95  # a random tiny network: many near ties
    requests_before = server.log_text().count("Infer Request (final)")
    assert requests_before >= 2
    with pytest.raises(
        MONAILabelClientException,
        match=r"Status: 400.*amos_ct.*precision must be one of auto, float32, bfloat16; got .*float16",
    ):
        client.infer("amos_ct", "ct_sm", {"precision": "float16"})
    assert server.log_text().count("Infer Request (final)") == requests_before


def test_untrained_model_refuses_inference_until_weights_appear(served):
    server, client, bundles, studies = served
    with pytest.raises(MONAILabelClientException, match="untrained"):
        client.infer("msd_pancreas", "ct_sm", {})
    save_random_weights(bundles / "msd_pancreas", seed=7)  # as a training run would
    assert client.info()["models"]["msd_pancreas"]["trained"] is True
    label_file, _ = client.infer("msd_pancreas", "ct_sm", {})
    check_label(label_file, studies / "ct_sm.nii.gz", 3)


@pytest.mark.latest_stack
def test_upload_label_train_and_infer_with_new_weights(served, shared_data, tmp_path):
    """Upload, "Submit Label", "Train", then the next "Run" uses the new checkpoint without a restart."""
    server, client, bundles, studies = served
    image = studies / "ct_sm.nii.gz"
    uploaded = "a_uploaded_ct"  # sorts before "ct_sm": the "first" strategy offers it while it is unlabelled
    client.upload_image(str(shared_data / CT), image_id=uploaded)
    assert client.next_sample("first", {})["id"] == uploaded
    client.save_label(uploaded, str(amos_label(shared_data, tmp_path / "label.nii.gz")), tag="final")
    assert client.next_sample("first", {})["id"] == "ct_sm"  # the labelled image is no longer offered

    weights = bundles / "amos_ct" / "models" / "model.pt"
    before_digest = file_digest(weights)
    before_label = check_label(client.infer("amos_ct", "ct_sm", {})[0], image, 16)

    params = {"max_iterations": 2, "val_interval": 2, "device": "cpu"}
    client.train_start("amos_ct", params)
    deadline = time.monotonic() + TRAIN_S
    while (status := client.train_status())["status"] in ("SUBMITTED", "RUNNING"):
        assert time.monotonic() < deadline, f"training still running after {TRAIN_S} s:\n{server.log_tail()}"
        time.sleep(2)
    assert status["status"] == "DONE", f"{status}\n{server.log_tail()}"

    assert file_digest(weights) != before_digest, "training did not write models/model.pt"
    after_label = check_label(client.infer("amos_ct", "ct_sm", {})[0], image, 16)
    assert "Reload model from cache" in server.log_text()
    assert not np.array_equal(before_label, after_label)


def test_training_progress_reaches_slicer_while_training_runs(served, shared_data, tmp_path):
    """What 3D Slicer's training monitor reads while ``/train/`` says RUNNING: ``/info/`` ``train_stats`` of the
    model (``epoch``, ``total_epochs``, ``best_metric``; ``total_time`` once done), plus Dice per label."""
    server, client, bundles, _ = served
    client.upload_image(str(shared_data / CT), image_id="progress_ct")
    client.save_label("progress_ct", str(amos_label(shared_data, tmp_path / "label.nii.gz")), tag="final")
    client.train_start("amos_ct", {"max_iterations": 4, "val_interval": 2, "device": "cpu"})
    seen, deadline = [], time.monotonic() + TRAIN_S
    while (status := client.train_status())["status"] in ("SUBMITTED", "RUNNING"):
        assert time.monotonic() < deadline, f"training still running after {TRAIN_S} s:\n{server.log_tail()}"
        if status["status"] == "RUNNING":
            seen.append(client.info().get("train_stats", {}).get("amos_ct") or {})
        time.sleep(0.5)
    assert status["status"] == "DONE", f"{status}\n{server.log_tail()}"
    running = [s for s in seen if s and "total_time" not in s]
    assert running, f"no progress while training ran: {seen}"
    assert all(s["total_epochs"] == 2 and 0 <= s["epoch"] <= 2 for s in running)
    final = client.info()["train_stats"]["amos_ct"]
    assert final["epoch"] == final["total_epochs"] == 2 and "total_time" in final
    assert isinstance(final["best_metric"], float) and final["best_metric"] == final["eval"]["best_metric"]
    labels = channel_names(bundles / "amos_ct")
    assert list(final["label_dice"]) == [name for name, _ in sorted(labels.items(), key=lambda item: item[1])]
    assert all(v is None or 0.0 <= v <= 1.0 for v in final["label_dice"].values())


def load_app_module(repo_root: Path, relative_path: str):
    """Imports one file of the app by path (the app's ``lib`` package is not installed)."""
    spec = importlib.util.spec_from_file_location(
        f"rep3d_app_{Path(relative_path).stem}", repo_root / "apps/rep3d" / relative_path
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_unknown_model_is_a_clear_error(repo_root):
    """``--conf models`` with a name that is not a bundle fails with the list of available ones."""
    bundles = load_app_module(repo_root, "lib/bundles.py")
    bundles_dir = str(repo_root / "bundles")
    with pytest.raises(ValueError, match="available in .*amos_ct, .*amos_mri, .*kits") as error:
        bundles.select_bundles(bundles_dir, "amos_ct,nope")
    for doc in (README, repo_root / "docs" / "troubleshooting.md"):  # the message as the docs quote it
        assert readme_message("Unknown model(s)", doc).fullmatch(str(error.value)), (doc, str(error.value))
    assert list(bundles.select_bundles(bundles_dir, "kits, amos_ct")) == ["kits", "amos_ct"]
    assert list(bundles.select_bundles(bundles_dir, "all")) == bundles.available_bundles(bundles_dir)
    assert bundles.default_bundles_dir(str(repo_root / "apps" / "rep3d")) == os.path.realpath(bundles_dir)


def test_launcher_binds_localhost_unless_told_otherwise(repo_root):
    launcher = load_app_module(repo_root, "start_server.py")
    args = launcher.start_server_args(["--studies", "s", "--conf", "models", "kits"], "/app")
    assert args == [
        "start_server",
        "--app",
        "/app",
        "--host",
        "127.0.0.1",
        "--studies",
        "s",
        "--conf",
        "models",
        "kits",
    ]
    assert launcher.start_server_args(["--host=0.0.0.0", "-a", "x"], "/app") == [
        "start_server",
        "--host=0.0.0.0",
        "-a",
        "x",
    ]


def test_device_option(repo_root):
    device = load_app_module(repo_root, "lib/device.py")
    assert device.default_device({"device": "CPU"}) == "cpu"
    assert device.device_choices("cpu")[0] == "cpu"
    with pytest.raises(ValueError, match="'cpu' or 'cuda'"):
        device.default_device({"device": "tpu"})
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            device.default_device({"device": "cuda"})
