"""End-to-end tests of the MONAI Label app ``apps/rep3d`` through the real server, driven as 3D Slicer drives it.

The server runs in a subprocess on a free local port, on a temporary copy of the app and of three bundles
(``amos_ct`` and ``kits`` with weights, ``msd_pancreas`` without), shrunk so that everything runs on 2 CPU cores:
a tiny Rep3D (width 4, 3³ kernels), a 6 mm grid and one inference window. The studies folder holds the real CT
``totalseg_ct_abdomen_3mm/example_ct_sm.nii.gz``.
"""

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests
import torch
from monai.bundle import ConfigParser

from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException

from bundle_helpers import check_label_matches_image, copy_bundle

CT = "totalseg_ct_abdomen_3mm/example_ct_sm.nii.gz"
CT_LABELS = "totalseg_ct_abdomen_3mm/example_seg.nii.gz"
CT_LABELS_JSON = "totalseg_ct_abdomen_3mm/example_seg.labels.json"
SERVED = {"amos_ct": True, "kits": True, "msd_pancreas": False}  # bundle -> starts with weights
TINY = {
    "network_def#feature_size": 4,
    "network_def#depths": [1, 1, 1, 1],
    "network_def#kernel_size": 3,
    "network_def#hidden_size": 32,
    "pixdim": [6.0, 6.0, 6.0],
}
TINY_INFERENCE = {"inferer#roi_size": [64, 64, 16], "inferer#sw_batch_size": 1, "inferer#overlap": 0.0}
TINY_TRAIN = {"roi_size": [64, 64, 16], "num_samples": 1, "num_workers": 0, "cache_rate": 0.0, "learning_rate": 0.05}
SERVER_START_S = 180
TRAIN_S = 240


def write_overrides(config_file: Path, overrides: dict) -> None:
    """Sets ``id: value`` pairs (``#``-separated ids) in a bundle config file."""
    parser = ConfigParser()
    parser.read_config(str(config_file))
    for key, value in overrides.items():
        parser[key] = value
    ConfigParser.export_config_file(parser.get(), str(config_file), indent=4)


def save_random_weights(bundle: Path, seed: int) -> Path:
    """Saves a random training-form (unfolded) state dict as the bundle's ``models/model.pt``."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    torch.manual_seed(seed)
    weights = bundle / "models" / "model.pt"
    weights.parent.mkdir(exist_ok=True)
    torch.save(parser.get_parsed_content("network_def").state_dict(), weights)
    return weights


def make_tiny_bundle(name: str, dest: Path, with_weights: bool) -> Path:
    """Copies a bundle and shrinks its network, grid and windows (see module docstring)."""
    target = copy_bundle(name, dest)
    write_overrides(target / "configs" / "inference.json", {**TINY, **TINY_INFERENCE})
    write_overrides(target / "configs" / "train.json", {**TINY, **TINY_TRAIN})
    if with_weights:
        save_random_weights(target, seed=len(target.name))
    return target


def amos_label(shared_data: Path, path: Path) -> Path:
    """The TotalSegmentator labels of the sample CT mapped to the AMOS classes (as if corrected in Slicer)."""
    mapping = json.loads((shared_data / CT_LABELS_JSON).read_text())["suggested_mapping_to_AMOS15"]
    source = nib.load(shared_data / CT_LABELS)
    values = np.asarray(source.dataobj)
    label = np.zeros(values.shape, np.uint8)
    for amos, entry in mapping.items():
        label[values == entry["source_label"]] = int(amos)
    nib.save(nib.Nifti1Image(label, source.affine), path)
    return path


def copy_app(repo_root: Path, target: Path) -> Path:
    """A scratch copy of ``apps/rep3d`` (``start_server`` creates ``model/``, ``logs/`` and ``bin/`` in the app)."""
    ignore = shutil.ignore_patterns("model", "logs", "bin", "__pycache__")
    return Path(shutil.copytree(repo_root / "apps" / "rep3d", target, ignore=ignore))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Server:
    """``monailabel start_server`` for the app in a subprocess (own process group), with its log in a file."""

    def __init__(self, app: Path, studies: Path, conf: dict, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "server.log"
        command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies)]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        for key, value in conf.items():
            command += ["--conf", key, value]
        env = {**os.environ, "MONAI_LABEL_SESSION_PATH": str(workdir / "sessions")}
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_until_up(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/info/", timeout=5).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(1)
        raise TimeoutError(f"server not up after {timeout_s} s:\n{self.log_tail()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory, shared_data, repo_root):
    """A running server on tiny bundle copies; yields ``(server, client, bundles dir, studies dir)``."""
    root = tmp_path_factory.mktemp("rep3d_app")
    app = copy_app(repo_root, root / "app")
    bundles = root / "bundles"
    for name, with_weights in SERVED.items():
        make_tiny_bundle(name, bundles, with_weights)
    studies = root / "studies"
    studies.mkdir()
    shutil.copy(shared_data / CT, studies / "ct_sm.nii.gz")
    conf = {"models": ",".join(SERVED), "bundles_dir": str(bundles), "device": "cpu"}
    server = Server(app, studies, conf, root)
    try:
        server.wait_until_up(SERVER_START_S)
        yield server, MONAILabelClient(server.url, tmpdir=str(root / "client")), bundles, studies
    finally:
        server.stop()


def channel_names(bundle: Path) -> dict:
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    channels = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
    return {name.lower(): int(value) for value, name in channels.items() if name != "background"}


def check_label(label_file: str, image_file: Path, num_classes: int) -> np.ndarray:
    """The label is uint8, on the image's grid (shape and affine) and within the model's classes."""
    check_label_matches_image(Path(label_file), image_file, num_classes)
    values = np.asarray(nib.load(label_file).dataobj)
    assert values.dtype == np.uint8 and values.shape == nib.load(image_file).shape
    return values


def test_info_lists_models_labels_and_training_state(served):
    server, client, bundles, _ = served
    info = client.info()
    assert set(info["models"]) == set(info["trainers"]) == set(SERVED)
    assert set(info["strategies"]) == {"random", "first"}
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


@pytest.mark.parametrize("model", ["amos_ct", "kits"])
def test_infer_returns_label_in_input_geometry(served, model):
    """Auto-segmentation as Slicer's "Run" asks for it; the bundles resample with Spacingd (see docs: MONAI 1.6)."""
    _, client, bundles, studies = served
    preprocessing = json.loads((bundles / model / "configs" / "inference.json").read_text())["preprocessing"]
    assert "Spacingd" in [t["_target_"] for t in preprocessing["transforms"]]
    label_file, params = client.infer(model, "ct_sm", {})
    check_label(label_file, studies / "ct_sm.nii.gz", len(channel_names(bundles / model)) + 1)
    assert params["label_names"] == channel_names(bundles / model)


def test_untrained_model_refuses_inference_until_weights_appear(served):
    server, client, bundles, studies = served
    with pytest.raises(MONAILabelClientException, match="untrained"):
        client.infer("msd_pancreas", "ct_sm", {})
    save_random_weights(bundles / "msd_pancreas", seed=7)  # as a training run would
    assert client.info()["models"]["msd_pancreas"]["trained"] is True
    label_file, _ = client.infer("msd_pancreas", "ct_sm", {})
    check_label(label_file, studies / "ct_sm.nii.gz", 3)


def test_upload_label_train_and_infer_with_new_weights(served, shared_data, tmp_path):
    """Upload, "Submit Label", "Train", then the next "Run" uses the new checkpoint without a restart."""
    server, client, bundles, studies = served
    image = studies / "ct_sm.nii.gz"
    client.upload_image(str(shared_data / CT), image_id="uploaded_ct")
    client.save_label("uploaded_ct", str(amos_label(shared_data, tmp_path / "label.nii.gz")), tag="final")
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


def load_app_module(repo_root: Path, relative_path: str):
    """Imports one file of the app by path (the app's ``lib`` package is not installed)."""
    spec = importlib.util.spec_from_file_location(f"rep3d_app_{Path(relative_path).stem}", repo_root / "apps/rep3d" / relative_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_unknown_model_is_a_clear_error(repo_root):
    """``--conf models`` with a name that is not a bundle fails with the list of available ones."""
    bundles = load_app_module(repo_root, "lib/bundles.py")
    bundles_dir = str(repo_root / "bundles")
    with pytest.raises(ValueError, match="available in .*amos_ct, .*amos_mri, .*kits"):
        bundles.select_bundles(bundles_dir, "amos_ct,nope")
    assert list(bundles.select_bundles(bundles_dir, "kits, amos_ct")) == ["kits", "amos_ct"]
    assert list(bundles.select_bundles(bundles_dir, "all")) == bundles.available_bundles(bundles_dir)
    assert bundles.default_bundles_dir(str(repo_root / "apps" / "rep3d")) == os.path.realpath(bundles_dir)


def test_launcher_binds_localhost_unless_told_otherwise(repo_root):
    launcher = load_app_module(repo_root, "start_server.py")
    args = launcher.start_server_args(["--studies", "s", "--conf", "models", "kits"], "/app")
    assert args == ["start_server", "--app", "/app", "--host", "127.0.0.1", "--studies", "s", "--conf", "models", "kits"]
    assert launcher.start_server_args(["--host=0.0.0.0", "-a", "x"], "/app") == ["start_server", "--host=0.0.0.0", "-a", "x"]


def test_device_option(repo_root):
    device = load_app_module(repo_root, "lib/device.py")
    assert device.default_device({"device": "CPU"}) == "cpu"
    assert device.device_choices("cpu")[0] == "cpu"
    with pytest.raises(ValueError, match="'cpu' or 'cuda'"):
        device.default_device({"device": "tpu"})
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            device.default_device({"device": "cuda"})
