"""Scale out (issue #6): ``torchrun`` with ``multi_gpu_train.json`` / ``multi_gpu_evaluate.json`` (gloo on CPU), mixed
precision settings."""

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from bundle_helpers import (
    BUNDLES, MULTI_GPU_EVALUATE, REPO_ROOT, TINY_TRAIN, copy_bundle, make_dataset, prepare_bundle, torchrun_bundle,
)
from rep3d_networks import Rep3D
from rep3d_networks.ops import dwconv3d


def test_two_process_gloo_training(tmp_path):
    """2 CPU processes, 2 iterations: both ranks finish, only rank 0 writes the checkpoint and the curves.

    The phantom split has a single validation case, fewer than the ranks: the validation sampler then pads
    (``even_divisible``) instead of failing.
    """
    bundle = copy_bundle("kits", tmp_path / "bundles")
    data_dir = make_dataset("kits", "phantom", tmp_path / "data")
    prepare_bundle(bundle, data_dir)
    overrides = {**TINY_TRAIN, "dataset_dir": str(data_dir), "ckpt_dir": "$@bundle_root + '/models/rank' + os.environ['RANK']"}
    result = torchrun_bundle(bundle, 2, overrides, timeout_s=600)
    log = f"--- stdout ---\n{result.stdout[-3000:]}\n--- stderr ---\n{result.stderr[-5000:]}"
    assert result.stdout.count("SupervisedTrainer - INFO - Engine run complete") == 2, log
    assert (bundle / "models" / "rank0" / "model.pt").is_file(), log
    assert not (bundle / "models" / "rank1").exists() or not any((bundle / "models" / "rank1").iterdir())
    assert (bundle / "eval" / "training_curves.png").is_file()
    if result.returncode != 0 and "terminate called without an active exception" in result.stderr:
        # Both ranks trained, validated and logged completion; the abort came from gloo's C++ threads at process
        # teardown (seen once in CI, never reproduced here; upstream: pytorch/pytorch#179291). Recorded, not hidden.
        pytest.xfail(f"gloo teardown abort after both ranks completed:\n{log}")
    assert result.returncode == 0, log


@pytest.mark.parametrize("name", BUNDLES)
def test_multi_gpu_config_follows_the_device(name):
    configs = REPO_ROOT / "bundles" / name / "configs"
    for config in ["multi_gpu_train.json", "multi_gpu_evaluate.json"]:
        multi = json.loads((configs / config).read_text())
        assert "'nccl' if torch.cuda.is_available() else 'gloo'" in " ".join(multi["initialize"])
    for config in ["train.json", "inference.json"]:
        parser = ConfigParser()
        parser.read_config(str(configs / config))
        assert parser.get_parsed_content("amp") is torch.cuda.is_available()  # AMP on GPU only


@pytest.mark.parametrize("method", ["fft", "direct"])
def test_dwconv_stays_float32_under_autocast(method):
    """Inside autocast (as with ``amp``) the large-kernel convolution still computes in float32."""
    torch.manual_seed(0)
    x = torch.randn(1, 4, 16, 16, 16, requires_grad=True)
    w = torch.randn(4, 1, 9, 9, 9, requires_grad=True)
    reference = dwconv3d(x, w, method=method)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = dwconv3d(x, w, method=method)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, reference, rtol=1e-6, atol=1e-5)
    y.sum().backward()
    assert x.grad.dtype == torch.float32 and w.grad.dtype == torch.float32


def test_two_process_gloo_evaluation(tmp_path):
    """``multi_gpu_evaluate.json``: 2 CPU processes share the test cases; rank 0 writes one row per case."""
    bundle = copy_bundle("kits", tmp_path / "bundles")
    data_dir = make_dataset("kits", "phantom", tmp_path / "data")
    datalist_file = prepare_bundle(bundle, data_dir)
    datalist = json.loads(datalist_file.read_text())
    datalist["test"] = datalist["test"] + datalist["training"][:1]  # two cases: one per rank
    datalist_file.write_text(json.dumps(datalist))
    torch.manual_seed(0)
    (bundle / "models").mkdir()
    torch.save(Rep3D(1, 4, feature_size=8, hidden_size=32).state_dict(), bundle / "models" / "model.pt")
    overrides = {**TINY_TRAIN, "dataset_dir": str(data_dir)}
    result = torchrun_bundle(bundle, 2, overrides, timeout_s=600, config_files=MULTI_GPU_EVALUATE)
    log = f"--- stdout ---\n{result.stdout[-3000:]}\n--- stderr ---\n{result.stderr[-5000:]}"
    assert result.stdout.count("SupervisedEvaluator - INFO - Engine run complete") == 2, log
    rows = (bundle / "eval" / "val_mean_dice_raw.csv").read_text().splitlines()[1:]
    evaluated = sorted(Path(row.split(",")[0]).relative_to(data_dir).as_posix() for row in rows)
    assert evaluated == sorted(case["image"] for case in datalist["test"]), rows
    assert (bundle / "eval" / "summary.md").is_file()
    assert result.returncode == 0, log
