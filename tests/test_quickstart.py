"""The README's quickstart command, end to end on a phantom (issues #4, #14)."""

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
from PIL import Image

from rep3d_networks import Rep3D
from rep3d_networks.data.specs import get_dataset_spec
from rep3d_networks.package import sha256

# A reduced quickstart that still learns: 150 iterations on 6 phantom cases of 40³ (4 training, 1 validation, 1 test),
# about 75 CPU-seconds. Held-out mean Dice at this size, seeds 0 / 1 / 2: 0.447 / 0.426 / 0.290; the untrained
# network 0.010.
REDUCED = {"iterations": 150, "num_cases": 6, "size": 40}
MIN_MEAN_DICE = 0.2


def test_quickstart_learns(tmp_path):
    """The README's quickstart command at a reduced size, end to end: the held-out mean Dice shows it learned."""
    out = tmp_path / "quickstart"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rep3d_networks.quickstart",
            "--output_dir",
            str(out),
            *[a for k, v in REDUCED.items() for a in (f"--{k}", str(v))],
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    # the settings that differ from the paper recipe are printed, with the paper's value and the quickstart's
    assert "learning_rate: 0.0001 in the paper recipe, 0.01 here" in result.stdout
    assert "roi_size: [96, 96, 96] in the paper recipe, [32, 32, 32] here" in result.stdout
    assert "max_iterations: 60000 in the paper recipe, 150 here" in result.stdout
    table = (out / "results.md").read_text()
    assert table.startswith("# Quickstart results (150 iterations, 1 held-out phantom case(s), seed 0,")
    assert "| spleen |" in table and "| mean (classes without background) |" in table
    dice = [float(line.split("|")[2].split("±")[0]) for line in table.splitlines() if "±" in line]
    assert len(dice) == get_dataset_spec("amos_ct").num_classes  # the organs (no background) + the mean
    assert dice[-1] >= MIN_MEAN_DICE, table
    assert (out / "bundle" / "models" / "model.pt").is_file()  # the best checkpoint evaluate.json loaded
    with Image.open(out / "overlay.png") as png:
        assert png.size[0] > 100 and png.size[1] > 100
    assert list((out / "predictions").rglob("*_seg.nii.gz"))
    # a second run into the same folder refuses instead of overwriting the user's results
    again = subprocess.run(
        [sys.executable, "-m", "rep3d_networks.quickstart", "--output_dir", str(out)], capture_output=True, text=True
    )
    assert again.returncode != 0 and "already exists" in again.stderr


REAL_CT_TINY = ["--iterations", "4", "--num_validations", "1", "--weight_decay", "0.01"]


def real_ct_command(out: Path, shared_data: Path) -> List[str]:
    return [sys.executable, "-m", "rep3d_networks.real_ct", "--output_dir", str(out), "--shared_data", str(shared_data)]


@pytest.fixture(scope="module")
def real_ct_runs(tmp_path_factory, shared_data):
    """The real-CT command on a tiny setting, twice at once in fresh processes whose environments differ in what must
    not matter (OpenMP/MKL thread variables, Python's hash seed): ``[(output_dir, stdout), ...]``."""
    runs = []
    for k, threads in enumerate(("1", "2")):
        out = tmp_path_factory.mktemp(f"real_ct{k}") / "real_ct"
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONHASHSEED": str(k)}
        process = subprocess.Popen(
            real_ct_command(out, shared_data) + REAL_CT_TINY,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        runs.append((out, process))
    results = [(out, *process.communicate(timeout=1200), process.returncode) for out, process in runs]
    for _, stdout, stderr, code in results:
        assert code == 0, stdout[-2000:] + stderr[-4000:]
    return [(out, stdout) for out, stdout, _, _ in results]


def test_real_ct_model_command(real_ct_runs, shared_data, repo_root, monkeypatch):
    """``python -m rep3d_networks.real_ct`` on a tiny setting: results table, checkpoint, inference, MONAI Label app
    load."""
    out, stdout = real_ct_runs[0]
    assert "pixdim: [1.5, 1.5, 2.0] in the paper recipe, [3.0, 3.0, 3.0] here" in stdout
    assert "optimizer#weight_decay: 0.08 in the paper recipe, 0.01 here" in stdout
    assert (
        "train#random_transforms#0: RandCropByPosNegLabeld in the paper recipe, RandCropByLabelClassesd here" in stdout
    )
    assert "train#dataloader#sampler: None in the paper recipe, torch.utils.data.WeightedRandomSampler here" in stdout
    results = (out / "results.md").read_text()
    assert results.startswith("# Small Rep3D on the real CT (4 iterations, seed 0)")
    assert "| liver |" in results and "| mean (classes without background) |" in results and "one person" in results
    test_part, training_part = results.split("on the training slabs")
    assert "| liver |" in test_part and "| liver |" in training_part  # both tables, each from its own evaluate.json run
    assert (out / "bundles" / "amos_ct" / "eval_training" / "summary.md").is_file()
    bundle = out / "bundles" / "amos_ct"
    assert (bundle / "models" / "model.pt").is_file()
    assert list((out / "predictions").rglob("*_seg.nii.gz"))  # inference.json of the copy loaded the checkpoint
    # the MONAI Label app's infer task loads the copy's inference.json and checkpoint strictly, as the server would
    monkeypatch.syspath_prepend(str(repo_root / "apps" / "rep3d"))
    from lib.infer import Rep3DInferTask

    task = Rep3DInferTask(str(bundle), {}, "cpu")
    assert task.info()["trained"]
    network = task._get_network("cpu", {})
    small = Rep3D(1, 16, feature_size=8, hidden_size=32, deploy=True)  # the width the command trains, folded
    assert [tuple(p.shape) for p in network.parameters()] == [tuple(p.shape) for p in small.parameters()]
    again = subprocess.run(real_ct_command(out, shared_data), capture_output=True, text=True)
    assert again.returncode != 0 and "already exists" in again.stderr


def test_real_ct_model_is_reproducible(real_ct_runs):
    """Two fresh runs of the real-CT command with one seed give the same losses, the same checkpoint bit for bit and the
    same Dice / HD95 tables, whatever OMP_NUM_THREADS says (the command fixes torch's threads); ``results.md`` records
    the thread count and the checkpoint's SHA-256 that tie its numbers to the run."""
    losses = [re.findall(r"train_loss: (\S+)", stdout) for _, stdout in real_ct_runs]
    assert len(losses[0]) == 4 and losses[0] == losses[1], losses
    models = [
        torch.load(out / "bundles" / "amos_ct" / "models" / "model.pt", map_location="cpu") for out, _ in real_ct_runs
    ]
    assert models[0].keys() == models[1].keys()
    differing = [key for key in models[0] if not torch.equal(models[0][key], models[1][key])]
    assert not differing, (
        f"{len(differing)} of {len(models[0])} tensors differ between the two runs, e.g. {differing[:3]}"
    )
    for table in ("eval", "eval_training"):
        first, second = ((out / "bundles" / "amos_ct" / table / "summary.md").read_text() for out, _ in real_ct_runs)
        assert first == second, f"{table}/summary.md differs:\n{first}\n{second}"
    for out, stdout in real_ct_runs:
        assert "[real_ct] 1 torch thread(s), seed 0" in stdout
        run = next(line for line in (out / "results.md").read_text().splitlines() if line.startswith("Run: "))
        assert (
            ", 1 torch thread(s);" in run
            and f"checkpoint SHA-256 {sha256(out / 'bundles' / 'amos_ct' / 'models' / 'model.pt')}." in run
        ), run


def test_real_ct_crop_centres_every_present_class_alike():
    """The real-CT command's crop, parsed as train.json parses it, centres crops on a tiny organ as often as on a large
    one."""
    from monai.bundle import ConfigParser

    from rep3d_networks.bundles.recipe import class_balanced_crop

    label = np.zeros((1, 40, 40, 40), dtype=np.float32)
    label[0, :20] = 6  # liver: 32,000 voxels
    label[0, 30:33, 30:33, 30:33] = 14  # a 27-voxel organ; the 14 other classes are absent
    crop = ConfigParser({"roi_size": [1, 1, 1], "num_samples": 2, "crop": class_balanced_crop(16)}).get_parsed_content(
        "crop"
    )
    crop.set_random_state(0)
    centres = [
        float(sample["label"].flatten()[0])
        for _ in range(300)
        for sample in crop({"image": np.ones_like(label), "label": label.copy()})
    ]
    counts = {c: centres.count(c) for c in (0.0, 6.0, 14.0)}
    assert sum(counts.values()) == 600 and all(150 <= n <= 250 for n in counts.values()), (
        counts
    )  # a third each, not 27/64,000


def test_real_ct_sampler_draws_slabs_by_their_classes(tmp_path):
    """The real-CT command's sampler, weighted by :func:`class_counts` of the labels and parsed as train.json's
    dataloader parses it, draws a slab with 13 classes 13 times as often as one of air; no weights, or a zero one, is an
    error."""
    import nibabel as nib
    from monai.bundle import ConfigParser

    from rep3d_networks.bundles.recipe import SAMPLER, class_weighted_sampling
    from rep3d_networks.data.slabs import class_counts

    organs, air = np.zeros((8, 8, 4), dtype=np.uint8), np.zeros((8, 8, 4), dtype=np.uint8)
    organs.flat[:13] = np.arange(13)
    items = []
    for name, label in (("organs", organs), ("air", air)):
        nib.save(nib.Nifti1Image(label, np.eye(4)), str(tmp_path / f"{name}.nii.gz"))
        items.append({"image": f"{name}.nii.gz", "label": f"{name}.nii.gz"})
    counts = class_counts(tmp_path, items)
    assert counts == [13, 1]
    overrides = class_weighted_sampling(counts)
    assert overrides["train#dataloader#shuffle"] is False  # a torch DataLoader refuses a sampler with shuffle
    config = {
        "data": [0, 1],
        "sampler": overrides[SAMPLER],
        "loader": {
            "_target_": "DataLoader",
            "dataset": "@data",
            "sampler": "@sampler",
            "shuffle": False,
            "batch_size": 1,
        },
    }
    loader = ConfigParser(config).get_parsed_content("loader")
    torch.manual_seed(0)
    drawn = [int(batch) for _ in range(200) for batch in loader]
    assert len(drawn) == 400 and 0.88 <= drawn.count(0) / 400 <= 0.97  # 13/14 = 0.93
    for bad in ([], [3, 0]):
        with pytest.raises(ValueError, match="positive"):
            class_weighted_sampling(bad)
