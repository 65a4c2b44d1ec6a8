"""Interrupted training resumes; checkpoints are written atomically; training is deterministic (issue #7).

The bundles save model, optimizer, LR scheduler, trainer (iteration, epoch) and the best-model record to
``models/resume/`` every ``checkpoint_interval`` iterations with ``AtomicCheckpointSaver``; ``--resume true``
loads the newest one. Runs use a tiny network on the phantom, one torch thread.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from app_helpers import write_overrides
from bundle_helpers import SMALLEST_NETWORK, copy_bundle, make_dataset, prepare_bundle, run_bundle
from ignite.engine import Engine
from monai.handlers import CheckpointSaver

from rep3d_networks.handlers import AtomicCheckpointSaver, resume_checkpoint
from rep3d_networks.handlers.checkpoint import checkpoint_iteration

BUNDLE = "msd_pancreas"
TINY = {
    **SMALLEST_NETWORK,
    "network_def#kernel_size": 7,  # 7³ kernels on 16³ maps: the FFT path of dwconv3d (forward and backward)
    "pixdim": [4.0, 4.0, 4.0],
    "roi_size": [32, 32, 32],
    "num_samples": 1,
    "num_workers": 0,
    "cache_rate": 1.0,
    "validate#inferer#overlap": 0.0,
}
# ReduceLROnPlateau that halves the LR at every validation after the first (no value beats the best by 10).
EVERY_VALIDATION_HALVES_LR = {
    "lr_scheduler#patience": 0,
    "lr_scheduler#factor": 0.5,
    "lr_scheduler#threshold": 10.0,
    "lr_scheduler#threshold_mode": "abs",
}
MAX_ITERATIONS, VAL_INTERVAL, CHECKPOINT_INTERVAL = 12, 2, 2
LEARNING_RATE = 0.1
# Augmentation and data order are not in a checkpoint (docs/troubleshooting.md): with one training case and a
# centre crop instead of the random transforms, a resumed run must end with the uninterrupted run's weights.
DETERMINISTIC_INPUT = {
    "train#random_transforms": [
        {"_target_": "CenterSpatialCropd", "keys": ["image", "label"], "roi_size": "@roi_size"}
    ],
    "learning_rate": LEARNING_RATE,
}
BODY_HU, DENSE_HU = -175, 100  # threshold labels: classes a tiny network separates within a few iterations


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A tiny ``msd_pancreas`` copy with a phantom datalist; returns the bundle (dataset in ``bundle.parent``)."""
    root = tmp_path_factory.mktemp("resume")
    target = copy_bundle(BUNDLE, root / "bundles")
    write_overrides(target / "configs" / "train.json", {**TINY, **EVERY_VALIDATION_HALVES_LR})
    prepare_bundle(target, make_dataset(BUNDLE, "phantom", root / "data"))
    return target


def threshold_label(image: Path, path: Path, classes=(1, 2)) -> Path:
    """``classes[0]`` where ``image`` is above ``BODY_HU``, ``classes[1]`` above ``DENSE_HU``, written to ``path``."""
    source = nib.load(str(image))
    values = np.asarray(source.dataobj)
    label = np.where(values > DENSE_HU, classes[1], np.where(values > BODY_HU, classes[0], 0)).astype(np.uint8)
    nib.save(nib.Nifti1Image(label, source.affine), str(path))
    return path


@pytest.fixture(scope="module")
def deterministic_bundle(bundle) -> Path:
    """A copy of ``bundle`` that trains on its first training case, centre-cropped (``DETERMINISTIC_INPUT``), with
    threshold labels, and validates on the same image with the two classes swapped: the validation Dice rises and
    then falls, so the best ``model.pt`` is saved before the end and a resumed run must keep it."""
    target = Path(shutil.copytree(bundle, bundle.parent / "deterministic"))
    write_overrides(target / "configs" / "train.json", DETERMINISTIC_INPUT)
    datalist = target / "configs" / "datalist_fold0.json"
    content = json.loads(datalist.read_text())
    data, image = dataset_dir(bundle), content["training"][0]["image"]
    labels = {
        split: threshold_label(data / image, data / "labelsTr" / f"resume_{split}.nii.gz", classes)
        for split, classes in (("training", (1, 2)), ("validation", (2, 1)))
    }
    pairs = {split: [{"image": image, "label": str(label.relative_to(data))}] for split, label in labels.items()}
    datalist.write_text(json.dumps({**content, **pairs}))
    return target


def dataset_dir(bundle: Path) -> Path:
    return next((bundle.parent.parent / "data").iterdir())


def start_training(bundle: Path, log: Path, *extra: str) -> subprocess.Popen:
    """``python -m monai.bundle run training`` from the bundle folder, as users run it."""
    command = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        "configs/train.json",
        "--dataset_dir",
        str(dataset_dir(bundle)),
        "--max_iterations",
        str(MAX_ITERATIONS),
        "--val_interval",
        str(VAL_INTERVAL),
        "--checkpoint_interval",
        str(CHECKPOINT_INTERVAL),
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        return subprocess.Popen(
            command, cwd=bundle, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def iterations_logged(text: str) -> list:
    """Global iteration numbers of the ``StatsHandler`` lines ``Epoch: e/E, Iter: i/L -- train_loss``."""
    return [(int(e) - 1) * int(n) + int(i) for e, i, n in re.findall(r"Epoch: (\d+)/\d+, Iter: (\d+)/(\d+) --", text)]


def lr_after(validations: int) -> float:
    return LEARNING_RATE * 0.5 ** (validations - 1)


def best_logged(text: str) -> tuple:
    """``(best value, its epoch)`` of the last ``StatsHandler`` line ``Key metric: ... best value: v at epoch: e``
    (the evaluator's ``best_metric``; its epoch is the trainer's, one per ``VAL_INTERVAL`` iterations)."""
    value, epoch = re.findall(r"Key metric: val_mean_dice best value: (\S+) at epoch: (\d+)", text)[-1]
    return float(value), int(epoch)


def tensors_differing(first: dict, second: dict) -> list:
    """The keys of two state dicts whose tensors differ (the unshared keys if the key sets differ)."""
    if first.keys() != second.keys():
        return sorted(set(first) ^ set(second))
    return [k for k in first if not torch.equal(first[k], second[k])]


def test_kill_and_resume(deterministic_bundle, tmp_path):
    """SIGKILL after the best validation; ``--resume true`` continues from the newest checkpoint with the same LR
    state and ends with the uninterrupted run's weights, best ``model.pt`` and best metric (the later, worse
    validations must not replace ``model.pt``)."""
    bundle = deterministic_bundle
    uninterrupted = start_training(
        bundle, tmp_path / "uninterrupted.log", "--ckpt_dir", str(tmp_path / "uninterrupted")
    )
    assert uninterrupted.wait(timeout=400) == 0, (tmp_path / "uninterrupted.log").read_text()[-3000:]
    log = (tmp_path / "uninterrupted.log").read_text()
    best, best_epoch = best_logged(log)
    dice = [float(v) for v in re.findall(r"Metrics -- val_mean_dice: (\S+)", log)]
    kill_after = best_epoch * VAL_INTERVAL  # the resumed run starts at or after the best validation
    assert kill_after < MAX_ITERATIONS - CHECKPOINT_INTERVAL, f"no validation worse than the best after it: {dice}"

    resume_dir = bundle / "models" / "resume"
    first = start_training(bundle, tmp_path / "first.log")
    deadline = time.monotonic() + 400
    while not any(checkpoint_iteration(p) >= kill_after for p in resume_dir.glob("*.pt")):
        assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    reached = max(iterations_logged((tmp_path / "first.log").read_text()))
    newest = Path(resume_checkpoint(str(resume_dir), "true"))
    start = checkpoint_iteration(newest)
    assert kill_after <= start < MAX_ITERATIONS and reached - start <= CHECKPOINT_INTERVAL, (reached, start)
    saved = torch.load(newest, weights_only=True)
    assert saved["trainer"]["iteration"] == start
    assert saved["optimizer"]["param_groups"][0]["lr"] == lr_after(start // VAL_INTERVAL)

    second = start_training(bundle, tmp_path / "second.log", "--resume", "true")
    assert second.wait(timeout=400) == 0, (tmp_path / "second.log").read_text()[-3000:]
    log = (tmp_path / "second.log").read_text()
    assert f"Resumed from models/resume/{newest.name} at iteration {start}" in log
    assert iterations_logged(log) == list(range(start + 1, MAX_ITERATIONS + 1))  # continues, no restart
    final_name = f"resume_checkpoint_iteration={MAX_ITERATIONS}.pt"
    final = torch.load(resume_dir / final_name, weights_only=True)
    assert final["optimizer"]["param_groups"][0]["lr"] == lr_after(MAX_ITERATIONS // VAL_INTERVAL)
    assert final["lr_scheduler"]["last_epoch"] == MAX_ITERATIONS // VAL_INTERVAL
    expected = torch.load(tmp_path / "uninterrupted" / "resume" / final_name, weights_only=True)
    different = tensors_differing(final["model"], expected["model"])
    assert not different, f"final weights: {len(different)} tensors differ from the uninterrupted run: {different[:3]}"
    best_model = torch.load(bundle / "models" / "model.pt", weights_only=True)
    different = tensors_differing(best_model, torch.load(tmp_path / "uninterrupted" / "model.pt", weights_only=True))
    assert not different, f"model.pt: {len(different)} tensors differ from epoch {best_epoch}'s: {different[:3]}"
    record, expected_record = final["best_model_saver"], expected["best_model_saver"]
    assert record == expected_record, (record, expected_record)  # ignite's (Dice, file) record, the evaluator's best
    assert best_logged(log) == (best, best_epoch), (best_logged(log), best, best_epoch)
    print(
        f"validation Dice {dice}: best {best:.4f} at iteration {kill_after}; killed at iteration {reached}, "
        f"resumed from {start}: {reached - start} iteration(s) lost"
    )


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint in .*start without --resume"):
        resume_checkpoint(str(tmp_path), "true")
    assert resume_checkpoint(str(tmp_path), "false") is None and resume_checkpoint(str(tmp_path), False) is None
    with pytest.raises(ValueError, match="neither true/false nor a checkpoint file"):
        resume_checkpoint(str(tmp_path), "maybe")


def fail_mid_write(checkpoint, target, **kwargs) -> None:
    """A ``torch.save`` that dies half-way (full disk, killed process)."""
    if hasattr(target, "write"):
        target.write(b"PK\x03\x04 half a checkpoint")
    else:
        Path(target).write_bytes(b"PK\x03\x04 half a checkpoint")
    raise OSError("simulated crash while writing")


@pytest.mark.parametrize("saver_class", [AtomicCheckpointSaver, CheckpointSaver])
def test_checkpoint_survives_a_failed_write(saver_class, tmp_path, monkeypatch):
    """``models/model.pt`` stays the previous complete file when writing the new one fails (MONAI's does not)."""
    network = torch.nn.Linear(3, 2)
    saver = saver_class(
        save_dir=str(tmp_path),
        save_dict={"model": network},
        save_key_metric=True,
        key_metric_name="dice",
        key_metric_filename="model.pt",
    )
    engine = Engine(lambda engine, batch: None)
    engine.state.metrics = {"dice": 0.1}
    saver.metrics_completed(engine)
    previous = {k: v.clone() for k, v in network.state_dict().items()}
    torch.nn.init.ones_(network.weight)
    engine.state.metrics = {"dice": 0.2}
    monkeypatch.setattr(torch, "save", fail_mid_write)
    with pytest.raises(OSError, match="simulated crash"):
        saver.metrics_completed(engine)
    monkeypatch.undo()
    if saver_class is CheckpointSaver:  # upstream: removed first, then written in place
        path = tmp_path / "model.pt"
        assert not path.is_file() or path.read_bytes().startswith(b"PK\x03\x04 half")
        return
    loaded = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(torch.equal(loaded[k], previous[k]) for k in previous)
    assert os.listdir(tmp_path) == ["model.pt"]  # the temporary file was removed


def test_nan_metric_does_not_block_later_saves(tmp_path):
    """A first validation without foreground (NaN Dice) must not be kept as the best forever."""
    network = torch.nn.Linear(3, 2)
    saver = AtomicCheckpointSaver(
        save_dir=str(tmp_path),
        save_dict={"model": network},
        save_key_metric=True,
        key_metric_name="dice",
        key_metric_filename="model.pt",
    )
    engine = Engine(lambda engine, batch: None)
    for dice in (float("nan"), 0.3):
        engine.state.metrics = {"dice": dice}
        torch.nn.init.constant_(network.weight, dice)
        saver.metrics_completed(engine)
    assert torch.load(tmp_path / "model.pt", weights_only=True)["weight"].eq(0.3).all()


def train_and_load(bundle: Path, run: str, iterations: int) -> dict:
    """``iterations`` training iterations in-process; returns the resume checkpoint written at the end."""
    folder = bundle.parent / run
    run_bundle(
        bundle,
        ["train.json"],
        dataset_dir=str(dataset_dir(bundle)),
        ckpt_dir=str(folder),
        output_dir=str(folder / "eval"),
        max_iterations=iterations,
        val_interval=iterations,
        checkpoint_interval=iterations,
    )
    return torch.load(folder / "resume" / f"resume_checkpoint_iteration={iterations}.pt", weights_only=True)


def test_same_seed_same_weights(bundle):
    """Two runs, same seed (``set_determinism(seed=0)`` in ``initialize``) and data: bit-identical weights."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        first, second = (train_and_load(bundle, run, 3) for run in ("run_a", "run_b"))
    finally:
        torch.set_num_threads(threads)
    assert first["model"].keys() == second["model"].keys()
    different = [k for k in first["model"] if not torch.equal(first["model"][k], second["model"][k])]
    assert not different, different
    assert first["optimizer"]["state"].keys() == second["optimizer"]["state"].keys()
    for key, state in first["optimizer"]["state"].items():
        assert all(torch.equal(state[k], second["optimizer"]["state"][key][k]) for k in state)
