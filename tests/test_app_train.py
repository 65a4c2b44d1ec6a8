"""Nothing lost in the annotation loop (issue #26): labels saved while a training runs, a server killed mid-training.

Through the real server and ``MONAILabelClient``, on a tiny copy of ``amos_ct`` (random weights to start with, as in
``tests/test_app.py``): a resume request without a checkpoint is refused; a label saved while ``/train/`` runs is
kept and counted by the next run (``num_train`` of ``/info/`` ``train_stats``); the server's process group is killed
(SIGKILL) during a run that writes resume checkpoints, a new server on the same folders serves the last complete
``model.pt`` and resumes the run (``resume: true``), then scores the new weights (``--conf auto_scoring true``).
"""

import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
from app_helpers import (
    CT,
    SERVER_START_S,
    TRAIN_S,
    Server,
    amos_label,
    app_conf,
    check_label,
    file_digest,
    serve_app,
    task_status,
    wait_for_task,
)
from monailabel.client import MONAILabelClient

from rep3d_networks.handlers import TrainingStats

SERVED = {"amos_ct": True}
KILLED_RUN = {"max_iterations": 3, "val_interval": 3, "checkpoint_interval": 1}


@pytest.fixture(scope="module")
def session(tmp_path_factory, shared_data, repo_root):
    """``(root, server, client, bundles, studies)`` of a running server; ``ct_sm`` has a ``final`` label and
    ``second`` (the same CT uploaded again) none yet."""
    root = tmp_path_factory.mktemp("rep3d_train")
    label = amos_label(shared_data, root / "label.nii.gz")
    with serve_app(root / "first", repo_root, shared_data / CT, SERVED) as (server, client, bundles, studies):
        client.save_label("ct_sm", str(label), tag="final")
        client.upload_image(str(shared_data / CT), image_id="second")
        yield root, server, client, bundles, studies


def test_training_stats_old_path_gives_the_package_handler(repo_root, monkeypatch):
    """``TrainingStats`` moved from the app's ``lib/train.py`` to ``rep3d_networks.handlers``; the old path works."""

    def app_modules():
        return [m for m in sys.modules if m == "lib" or m.startswith("lib.")]

    monkeypatch.syspath_prepend(str(repo_root / "apps" / "rep3d"))
    for module in app_modules():
        monkeypatch.delitem(sys.modules, module)
    try:
        from lib import train

        assert train.TrainingStats is TrainingStats
    finally:
        for module in app_modules():
            del sys.modules[module]


def running_stats(server, client, deadline: float) -> dict:
    """The model's ``train_stats`` once the running training has written them (its data are loaded by then)."""
    while not (stats := client.info().get("train_stats", {}).get("amos_ct")) or "total_time" in stats:
        assert time.monotonic() < deadline and task_status(server, "train")["status"] in ("SUBMITTED", "RUNNING"), (
            server.log_tail()
        )
        time.sleep(0.2)
    return stats


def test_resume_without_checkpoint_is_refused(session):
    _, server, client, bundles, _ = session
    before = file_digest(bundles / "amos_ct" / "models" / "model.pt")
    client.train_start("amos_ct", {"resume": True})
    details = "\n".join(wait_for_task(server, "train", expected="ERROR")["details"])
    assert re.search(
        r"ValueError: Model 'amos_ct': resume requested, but there is no checkpoint to resume from in "
        r".*models/resume .*Train without resume: pretrained: true continues from the current weights",
        details,
    ), details
    assert file_digest(bundles / "amos_ct" / "models" / "model.pt") == before


def test_label_saved_while_training_runs_is_used_by_the_next_run(session, tmp_path):
    """Fine-tuning from the current weights (``pretrained``, the default) with only ``max_iterations`` given, as the
    annotation-session study asks for it; a label saved meanwhile is not this run's but the next one's."""
    root, server, client, bundles, _ = session
    weights = bundles / "amos_ct" / "models" / "model.pt"
    before = file_digest(weights)
    client.train_start("amos_ct", {"max_iterations": 2})
    running_stats(server, client, time.monotonic() + TRAIN_S)
    client.save_label("second", str(root / "label.nii.gz"), tag="final")
    assert task_status(server, "train")["status"] == "RUNNING", "the run ended before the label was saved"
    wait_for_task(server, "train")
    stats = client.info()["train_stats"]["amos_ct"]
    assert (stats["num_train"], stats["num_val"], stats["epoch"], stats["total_epochs"]) == (1, 1, 1, 1), stats
    assert "val_interval lowered to max_iterations=2" in server.log_text()
    assert "Add Checkpoint Loader for Path" in server.log_text() and file_digest(weights) != before
    assert set(client.datastore()["objects"]["second"]["labels"]) == {"final"}


def test_killed_server_restarts_serves_its_model_and_resumes(session):
    root, server, client, bundles, studies = session
    weights = bundles / "amos_ct" / "models" / "model.pt"
    complete = file_digest(weights)
    client.train_start("amos_ct", KILLED_RUN)
    deadline = time.monotonic() + TRAIN_S
    assert running_stats(server, client, deadline)["num_train"] == 2  # the label saved during the last run
    resume_dir = bundles / "amos_ct" / "models" / "resume"
    while not list(resume_dir.glob("*.pt")):
        assert time.monotonic() < deadline and task_status(server, "train")["status"] == "RUNNING", server.log_tail()
        time.sleep(0.1)
    os.killpg(server.process.pid, signal.SIGKILL)  # the server and its training process
    server.process.wait()
    assert file_digest(weights) == complete and torch.load(weights, weights_only=True)

    # a new server on the same app, bundles and studies
    restarted = Server(
        root / "first" / "app", studies, app_conf(SERVED, bundles, {"auto_scoring": "true"}), mkdir(root / "restarted")
    )
    try:
        restarted.wait_until_up(SERVER_START_S)
        client = MONAILabelClient(restarted.url, tmpdir=str(root / "restarted" / "client"))
        assert client.info()["models"]["amos_ct"]["trained"]
        check_label(client.infer("amos_ct", "ct_sm", {})[0], studies / "ct_sm.nii.gz", 16)
        client.upload_image(str(studies / "ct_sm.nii.gz"), image_id="unlabelled")

        client.train_start("amos_ct", {**KILLED_RUN, "resume": True})
        wait_for_task(restarted, "train")
        resumed = re.search(
            r"Resumed from \S+resume_checkpoint_iteration=(\d+)\.pt at iteration (\d+)", restarted.log_text()
        )
        assert resumed and int(resumed.group(1)) == int(resumed.group(2)) >= 1, restarted.log_tail()
        stats = client.info()["train_stats"]["amos_ct"]
        assert (stats["num_train"], stats["epoch"], stats["total_epochs"]) == (2, 1, 1), stats

        wait_for_task(restarted, "scoring")  # started by the training process (auto_scoring)
        sample = client.next_sample("entropy_amos_ct", {})
        assert sample["id"] == "unlabelled"
        assert sample["entropy_amos_ct"]["model_mtime_ns"] == os.stat(weights).st_mtime_ns
    finally:
        restarted.stop()


def mkdir(path: Path) -> Path:
    path.mkdir()
    return path
