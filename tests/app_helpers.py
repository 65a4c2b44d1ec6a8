"""The MONAI Label app under test: tiny bundle copies, the server started by README.md's command, its client.

Shared by the app, DeepEdit-app and reliability tests. Bundles are shrunk so that a server runs on 2 CPU cores: a tiny
Rep3D (width 4, 3³ kernels), a 6 mm grid and one inference window.
"""

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence, Tuple

import nibabel as nib
import numpy as np
import requests
import torch
from bundle_helpers import SMALLEST_NETWORK, check_label_matches_image, copy_bundle
from monai.bundle import ConfigParser
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelUtils
from readme_helpers import fill, readme_command

CT = "totalseg_ct_abdomen_3mm/example_ct_sm.nii.gz"
CT_LABELS = "totalseg_ct_abdomen_3mm/example_seg.nii.gz"
CT_LABELS_JSON = "totalseg_ct_abdomen_3mm/example_seg.labels.json"
TINY = {**SMALLEST_NETWORK, "pixdim": [6.0, 6.0, 6.0]}
TINY_INFERENCE = {
    "inferer#roi_size": [64, 64, 16],
    "displayable_configs#sw_batch_size": 1,
    "displayable_configs#sw_overlap": 0.0,
}
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


def launch_command(app: Path, studies: Path, conf: dict, port: int, launcher: Sequence[str] = ()) -> list:
    """README.md's ``python apps/rep3d/start_server.py --studies ... --conf models ...`` for the app copy ``app``
    (``conf["models"]`` in the README's models slot, the other ``conf`` pairs and the port appended); with a
    ``launcher`` (a script and its arguments), python runs that script, which is given the rest of the command."""
    command = readme_command("python apps/rep3d/start_server.py")
    models = command[command.index("models", command.index("--conf")) + 1]
    values = {
        "apps/rep3d/start_server.py": str(app / "start_server.py"),
        "/data/ct": str(studies),
        models: conf["models"],
    }
    command = [sys.executable, *launcher, *fill(command[1:], values)]
    for key, value in conf.items():
        command += [] if key == "models" else ["--conf", key, value]
    return command + ["--port", str(port)]


class Server:
    """The app's server started as README.md says (``start_server.py``, which binds 127.0.0.1) in a subprocess
    (own process group), with its log in a file; ``launcher``: see :func:`launch_command`; ``port``: a free one
    unless given."""

    def __init__(
        self,
        app: Path,
        studies: Path,
        conf: dict,
        workdir: Path,
        env: Optional[dict] = None,
        launcher: Sequence[str] = (),
        port: Optional[int] = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "server.log"
        command = launch_command(app, studies, conf, self.port, launcher)
        env = {**os.environ, "MONAI_LABEL_SESSION_PATH": str(workdir / "sessions"), **(env or {})}
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


@contextmanager
def serve_app(
    root: Path,
    repo_root: Path,
    study: Path,
    served: dict,
    env: Optional[dict] = None,
    launcher: Sequence[str] = (),
    conf: Optional[dict] = None,
) -> Iterator[Tuple[Server, MONAILabelClient, Path, Path]]:
    """Runs the app on tiny copies of the ``served`` bundles (name -> starts with random weights) under ``root``, with
    ``study`` copied into the studies folder as ``ct_sm.nii.gz``; yields ``(server, client, bundles dir, studies dir)``.
    ``env`` and ``launcher``: see :class:`Server`; ``conf``: more ``--conf`` options (see :func:`app_conf`).
    """
    app = copy_app(repo_root, root / "app")
    bundles = root / "bundles"
    for name, with_weights in served.items():
        make_tiny_bundle(name, bundles, with_weights)
    studies = root / "studies"
    studies.mkdir()
    shutil.copy(study, studies / "ct_sm.nii.gz")
    server = Server(app, studies, app_conf(served, bundles, conf), root, env, launcher)
    try:
        server.wait_until_up(SERVER_START_S)
        yield server, MONAILabelClient(server.url, tmpdir=str(root / "client")), bundles, studies
    finally:
        server.stop()


def app_conf(served: dict, bundles: Path, extra: Optional[dict] = None) -> dict:
    """The ``--conf`` options of :func:`serve_app`: the served models from ``bundles`` on the CPU, plus ``extra``."""
    return {"models": ",".join(served), "bundles_dir": str(bundles), "device": "cpu", **(extra or {})}


def task_status(server: Server, kind: str) -> dict:
    """The latest ``train`` or ``scoring`` task of the server (``GET /<kind>/``, with the client's request helper)."""
    status, response, _, _ = MONAILabelUtils.http_method("GET", server.url, f"/{kind}/")
    assert status == 200, f"GET /{kind}/: {status} {response!r}"
    return json.loads(response)


def wait_for_task(server: Server, kind: str, timeout_s: float = TRAIN_S, expected: str = "DONE") -> dict:
    """Polls :func:`task_status` until the task has ended; fails unless it ended ``expected``."""
    deadline = time.monotonic() + timeout_s
    while (status := task_status(server, kind))["status"] in ("SUBMITTED", "RUNNING"):
        assert time.monotonic() < deadline, f"{kind} still running after {timeout_s} s:\n{server.log_tail()}"
        time.sleep(0.5)
    assert status["status"] == expected, f"{status}\n{server.log_tail()}"
    return status


def check_label(label_file: str, image_file: Path, num_classes: int) -> np.ndarray:
    """The label is uint8, on the image's grid (shape and affine) and within the model's classes."""
    check_label_matches_image(Path(label_file), image_file, num_classes)
    values = np.asarray(nib.load(label_file).dataobj)
    assert values.dtype == np.uint8 and values.shape == nib.load(image_file).shape
    return values
