"""The ``lr-field`` experiment's LRBM generator norm options (issue #12): one LRBM run per option, its mask drift."""

import inspect
import json
from pathlib import Path

import pytest

from rep3d_networks.analysis import cli
from rep3d_networks.analysis.lr_field import RegressionTask, run_lr_field, train_and_record

TINY_TASK = dict(steps=3, channels=2, output_size=4, kernel_size=15)
BUNDLE_TRAIN = Path(__file__).resolve().parents[1] / "bundles" / "amos_ct" / "configs" / "train.json"


@pytest.mark.parametrize("function", [cli.lr_field, run_lr_field, train_and_record])
def test_default_weight_decay_is_the_bundles(function):
    bundle = json.loads(BUNDLE_TRAIN.read_text())["optimizer"]["weight_decay"]
    assert inspect.signature(function).parameters["weight_decay"].default == bundle


def test_lr_field_command_runs_lrbm_once_per_generator_norm_option(tmp_path, one_thread):
    paths = cli.commands()["lr-field"](
        str(tmp_path), variants="fixed,lrbm", optimizers="adamw", generator_norm_affine="channel,tap,none", **TINY_TASK
    )
    result = json.loads(Path(paths["json"]).read_text())
    runs = {(r["variant"], r.get("generator_norm_affine")): r for r in result["runs"]}
    assert set(runs) == {("fixed", None), ("lrbm", "channel"), ("lrbm", "tap"), ("lrbm", "none")}
    assert result["config"]["generator_norm_affine"] == ["channel", "tap", "none"]
    drift = {norm: runs["lrbm", norm]["mask_drift"] for norm in ("channel", "tap", "none")}
    assert all(len(d) == 3 and all(v > 0 for v in d) for d in drift.values())
    # with an affine the mask leaves P slowly; without one the first step lifts fθ(P) to unit variance
    assert max(drift["channel"] + drift["tap"]) < 0.05 < 1.0 < min(drift["none"])
    table = Path(paths["markdown"]).read_text()
    assert "| adamw | lrbm (none) |" in table and "mask drift @ step 3" in table
    assert Path(paths["mask_drift_png"]).stat().st_size > 1000


def test_lr_field_refuses_an_unknown_generator_norm_option():
    with pytest.raises(ValueError, match="generator_norm_affine"):
        run_lr_field(
            RegressionTask(kernel_size=15, channels=2, output_size=4),
            steps=1,
            variants=("lrbm",),
            generator_norm_affine=("pixel",),
        )
