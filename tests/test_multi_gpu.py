"""Scale out (issue #6): ``torchrun`` with ``multi_gpu_train.json`` / ``multi_gpu_evaluate.json`` (gloo on CPU), mixed
precision settings."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
from bundle_helpers import (
    BUNDLES,
    MULTI_GPU_EVALUATE,
    REPO_ROOT,
    TINY_TRAIN,
    copy_bundle,
    make_dataset,
    prepare_bundle,
    torchrun_bundle,
)
from monai.bundle import ConfigParser

from rep3d_networks import Rep3D
from rep3d_networks.data.cli import phantom
from rep3d_networks.ops import dwconv3d

# Run after the config's own ``finalize`` (barrier, destroy_process_group) by ``--final_id``: each rank prints it
# only when that finalize returned without an error.
FINALIZED = "finalize done on rank "
REPORT_FINALIZE = {"finalize_and_report": ["@finalize", "$print('%s' + os.environ['RANK'], flush=True)" % FINALIZED]}
# Run by ``--run_id`` around the config's own ``run``: each rank records its parameters before and after training and
# the image files of every batch its training dataloader yielded, in ``rank<RANK>.pt`` in the bundle folder.
PARAMETERS = "{k: v.detach().clone() for k, v in @network_def.named_parameters()}"
RECORD_RANK = {
    "record": "${'seen': []}",
    "record_and_run": [
        "$@train#trainer.add_event_handler(ignite.engine.Events.GET_BATCH_COMPLETED, "
        "lambda engine: @record['seen'].extend(engine.state.batch['image'].meta['filename_or_obj']))",
        f"$@record.update(initial={PARAMETERS})",
        "@run",
        f"$@record.update(trained={PARAMETERS})",
        "$torch.save(@record, @bundle_root + '/rank' + os.environ['RANK'] + '.pt')",
    ],
}
# What gloo's C++ threads print when they abort at interpreter teardown, and how torchrun reports that abort.
TEARDOWN_ABORT = ("terminate called without an active exception", "Signal 6 (SIGABRT) received by PID")


def is_teardown_abort(result: subprocess.CompletedProcess) -> bool:
    """Non-zero exit only because a rank aborted after both had finished ``finalize`` (no Python error)."""
    finalized = sorted(line for line in result.stdout.splitlines() if line.startswith(FINALIZED))
    return (
        result.returncode != 0
        and finalized == [FINALIZED + "0", FINALIZED + "1"]
        and all(text in result.stderr for text in TEARDOWN_ABORT)
        and "Traceback (most recent call last)" not in result.stderr
    )


def test_two_process_gloo_training(tmp_path):
    """2 CPU processes, one epoch of 2 iterations on 4 training cases: each rank's dataloader yields its own 2 cases
    (disjoint, together the training split), both ranks end with identical parameters (DDP averages the gradients)
    that training changed, both finish and finalize, and only rank 0 writes the checkpoint and curves.

    The phantom split has a single validation case, fewer than the ranks: the validation sampler then pads
    (``even_divisible``) instead of failing.
    """
    bundle = copy_bundle("amos_ct", tmp_path / "bundles")
    data_dir = Path(phantom("amos_ct", str(tmp_path / "data"), num_cases=6, size=48))  # 4 / 1 / 1 cases
    training = {
        str(data_dir / case["image"]) for case in json.loads(prepare_bundle(bundle, data_dir).read_text())["training"]
    }
    assert len(training) == 4
    extra = tmp_path / "record.json"
    extra.write_text(json.dumps({**REPORT_FINALIZE, **RECORD_RANK}))
    overrides = {
        **TINY_TRAIN,
        "dataset_dir": str(data_dir),
        "ckpt_dir": "$@bundle_root + '/models/rank' + os.environ['RANK']",
    }
    configs = str(["configs/train.json", "configs/multi_gpu_train.json", str(extra)])
    ids = {"run_id": "record_and_run", "final_id": "finalize_and_report"}
    result = torchrun_bundle(bundle, 2, {**overrides, **ids}, timeout_s=600, config_files=configs)
    log = f"--- stdout ---\n{result.stdout[-3000:]}\n--- stderr ---\n{result.stderr[-5000:]}"
    assert result.stdout.count("SupervisedTrainer - INFO - Engine run complete") == 2, log
    assert (bundle / "models" / "rank0" / "model.pt").is_file(), log
    assert not (bundle / "models" / "rank1").exists() or not any((bundle / "models" / "rank1").iterdir())
    assert (bundle / "eval" / "training_curves.png").is_file()

    ranks = [torch.load(bundle / f"rank{rank}.pt") for rank in (0, 1)]
    seen = [set(rank["seen"]) for rank in ranks]
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) > 0 and len(seen[0]) == len(seen[1]) == 2, seen
    assert not seen[0] & seen[1], f"both ranks trained on {sorted(seen[0] & seen[1])}"
    assert seen[0] | seen[1] == training, seen
    trained = ranks[0]["trained"]
    for name, value in trained.items():
        assert torch.equal(value, ranks[1]["trained"][name]), f"{name} differs between the ranks"
    changed = [name for name, value in trained.items() if not torch.equal(value, ranks[0]["initial"][name])]
    assert len(changed) == len(trained), f"training left {sorted(set(trained) - set(changed))} unchanged"

    if is_teardown_abort(result):
        # Both ranks trained, validated, passed the final barrier and destroyed the process group; a gloo C++
        # thread then aborted the interpreter's teardown (seen once in CI, never reproduced here). No upstream
        # report matches an abort *after* destroy_process_group(). Recorded, not hidden.
        pytest.xfail(f"gloo teardown abort after both ranks finalized:\n{log}")
    assert result.returncode == 0, log
    assert result.stdout.count(FINALIZED) == 2, log


ABORT_STDERR = f"{TEARDOWN_ABORT[0]}\n...\n  traceback : {TEARDOWN_ABORT[1]} 4242\n"
TEARDOWN_CASES = [  # (stdout, stderr, return code) -> the xfail applies
    (f"{FINALIZED}0\n{FINALIZED}1\n", ABORT_STDERR, 1, True),
    (f"{FINALIZED}1\n", ABORT_STDERR, 1, False),  # rank 0's finalize failed
    (f"{FINALIZED}0\n{FINALIZED}1\n", "Traceback (most recent call last):\n" + ABORT_STDERR, 1, False),
    (f"{FINALIZED}0\n{FINALIZED}1\n", TEARDOWN_ABORT[0], 1, False),  # no SIGABRT reported by torchrun
    ("", ABORT_STDERR, 1, False),  # aborted before finalize
    (f"{FINALIZED}0\n{FINALIZED}1\n", ABORT_STDERR, 0, False),
]


@pytest.mark.parametrize("stdout,stderr,returncode,expected", TEARDOWN_CASES)
def test_teardown_xfail_only_after_both_ranks_finalized(stdout, stderr, returncode, expected):
    assert is_teardown_abort(subprocess.CompletedProcess([], returncode, stdout, stderr)) is expected


@pytest.mark.parametrize("name", BUNDLES)
def test_multi_gpu_config_follows_the_device(name):
    configs = REPO_ROOT / "bundles" / name / "configs"
    for config in ["multi_gpu_train.json", "multi_gpu_evaluate.json"]:
        multi = json.loads((configs / config).read_text())
        assert "'nccl' if torch.cuda.is_available() else 'gloo'" in " ".join(multi["initialize"])
    parser = ConfigParser()
    parser.read_config(str(configs / "train.json"))
    assert parser.get_parsed_content("amp") is torch.cuda.is_available()  # AMP on GPU only
    parser = ConfigParser()
    parser.read_config(str(configs / "inference.json"))  # float16 AMP on GPU, bfloat16 on CPUs that have it
    assert parser.get_parsed_content("inferer").precision == "auto" and "amp" not in parser.get("evaluator")


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
