"""The analysis commands of issues #8 and #14 (``python -m rep3d_networks.analysis``), at tiny settings.

The ``lr-field`` CLI runs in a background process (started with the module's first test) while the in-process
tests run, and is checked by the last test of the file; two tiny ``convergence`` studies run side by side in two
processes started by the first test that needs them.
"""

import json
import math
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from PIL import Image

from rep3d_networks import Rep3D
from rep3d_networks.analysis import cli, convergence
from rep3d_networks.analysis.convergence import (
    MODELS,
    StudySettings,
    attach_plateau_rule,
    fitting_cap,
    run_or_load,
    time_plan,
)
from rep3d_networks.analysis.convergence_data import write_study_data
from rep3d_networks.analysis.convergence_report import DOCS_BEGIN, DOCS_END, fill_docs, grouped_runs, statement, summary
from rep3d_networks.analysis.erf import erf_summary
from rep3d_networks.analysis.kernel_geometry import centre_periphery_ratio, radial_profile, tap_distances
from rep3d_networks.analysis.model_loading import build_model, is_folded, model_kwargs, read_state_dict
from rep3d_networks.bundles.recipe import AFFINE
from rep3d_networks.data.specs import get_dataset_spec

TINY_MODEL = dict(feature_size=4, hidden_size=8)


def assert_png(path) -> None:
    path = Path(path)
    assert path.is_file() and path.stat().st_size > 1000, path
    with Image.open(path) as image:
        image.load()
        assert image.size[0] > 100 and image.size[1] > 100


@pytest.fixture(scope="module", autouse=True)
def lr_field_process(tmp_path_factory):
    """``lr-field`` through the CLI entry, in the background."""
    out = tmp_path_factory.mktemp("lr_field")
    command = [
        sys.executable,
        "-m",
        "rep3d_networks.analysis",
        "lr-field",
        "--output_dir",
        str(out),
        "--steps",
        "3",
        "--channels",
        "2",
        "--output_size",
        "4",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield process, out
    if process.poll() is None:
        process.kill()
        process.communicate()


def start(command):
    return subprocess.Popen(
        [sys.executable, "-m", "rep3d_networks.analysis", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process, timeout=300) -> str:
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr[-4000:]
    return stdout


TINY_STUDY = ["--seeds", "0", "--phantom_cases", "4", "--phantom_size", "32", "--workers", "1"]


@pytest.fixture(scope="module")
def convergence_processes(tmp_path_factory):
    """Two tiny studies through the CLI, side by side: (1) every model on the phantom, one iteration;
    (2) LRBM on the real CT slabs (if present) with the timing phase, two worker processes, a plateau rule that
    must stop the run at its second validation, and the docs block filled in a copy of docs/reproduction.md."""
    every_model = tmp_path_factory.mktemp("every_model")
    every = start(
        [
            "convergence",
            "--output_dir",
            str(every_model),
            "--datasets",
            "phantom",
            "--max_iterations",
            "1",
            "--val_interval",
            "1",
            "--time_budget_hours",
            "0",
            *TINY_STUDY,
        ]
    )
    ct_out = tmp_path_factory.mktemp("ct_plateau")
    docs = ct_out / "reproduction.md"
    docs.write_text((Path(__file__).resolve().parents[1] / "docs" / "reproduction.md").read_text())
    ct = start(
        [
            "convergence",
            "--output_dir",
            str(ct_out / "study"),
            "--datasets",
            "ct",
            "--models",
            "lrbm",
            "--max_iterations",
            "4",
            "--val_interval",
            "1",
            "--patience",
            "1",
            "--min_delta",
            "1.0",
            "--plateau_floor",
            "0",
            "--time_budget_hours",
            "1",
            "--timing_iterations",
            "2",
            "--docs_file",
            str(docs),
            *TINY_STUDY[:-1],
            "2",
        ]
    )
    yield {"every": (every, every_model), "ct": (ct, ct_out)}
    for process in (every, ct):
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_centre_periphery_ratio_and_radial_profile():
    distance = tap_distances(21)
    values = np.where(distance <= 1, 3.0, 1.0)
    assert centre_periphery_ratio(values) == pytest.approx(3.0)
    profile = radial_profile(values)
    assert profile["radius"][:3] == [0, 1, 2]
    assert profile["count"][0] == 1 and sum(profile["count"]) == 21**3
    assert profile["mean"][0] == 3.0 and profile["mean"][-1] == 1.0


def test_erf_summary_of_a_point_and_a_flat_map():
    point = np.zeros((9, 9, 9))
    point[4, 4, 4] = 2.0
    summary = erf_summary(point, radii=(1, 3))
    assert summary["mass_within"] == {1: 1.0, 3: 1.0} and summary["r50"] == 0 and summary["centre_share"] == 1.0
    flat = erf_summary(np.ones((9, 9, 9)), radii=(1, 3))
    assert flat["mass_within"] == pytest.approx(flat["uniform_within"])


def test_list_options_from_fire():
    assert cli.as_tuple("vanilla,lrbm") == ("vanilla", "lrbm")
    assert cli.as_tuple((0, 1), int) == (0, 1) and cli.as_tuple(2, int) == (2,)
    assert cli.as_crop(32) == (32, 32, 32) and cli.as_crop("48,48,32") == (48, 48, 32)
    with pytest.raises(ValueError, match="crop"):
        cli.as_crop("32,32")


def test_folded_and_wrapped_checkpoints_load(tmp_path):
    kwargs = model_kwargs(None, **TINY_MODEL)
    model = Rep3D(**kwargs)
    torch.save({"model": model.state_dict()}, tmp_path / "wrapped.pt")
    assert is_folded(read_state_dict(str(tmp_path / "wrapped.pt")), "lrbm") is False
    loaded = build_model(kwargs, str(tmp_path / "wrapped.pt"))
    assert any(k.startswith("encoder.stages.0.0.conv.mask.") for k in loaded.state_dict())
    torch.save(model.fold().state_dict(), tmp_path / "folded.pt")
    folded = build_model(kwargs, str(tmp_path / "folded.pt"))
    assert all(block.conv.folded for stage in folded.encoder.stages for block in stage)


def test_erf_of_a_fresh_model_from_a_bundle_config(tmp_path, repo_root):
    config = repo_root / "bundles" / "amos_ct" / "configs" / "train.json"
    paths = cli.erf(str(tmp_path), config=str(config), input_size=32, num_inputs=1, **TINY_MODEL)
    for key in ("erf_planes_png", "lrbm_masks_png"):
        assert_png(paths[key])
    result = json.loads(Path(paths["json"]).read_text())
    assert result["model"]["out_channels"] == get_dataset_spec("amos_ct").num_classes
    assert result["model"]["feature_size"] == 4
    mass = list(result["summary"]["mass_within"].values())
    assert all(0 < m <= 1 for m in mass) and mass == sorted(mass)
    assert mass[-1] > result["summary"]["uniform_within"]["16"]  # concentrated around the centre
    masks = result["masks"]
    assert len(masks) == 9  # 8 blocks + the prior for reference
    assert all(m["centre"] == pytest.approx(1.0) and m["centre_periphery_ratio"] > 1 for m in masks)  # M = P at init
    assert all(m["change_from_init"] == pytest.approx(0.0, abs=1e-6) for m in masks)
    assert np.load(paths["erf_npy"]).shape == (32, 32, 32)


def plateau_stop(scores, patience, min_delta, floor):
    """The iteration at which a trainer validated once per iteration with ``scores`` is stopped by the plateau rule."""
    stream = iter(scores)
    trainer, evaluator = Engine(lambda engine, batch: None), Engine(lambda engine, batch: None)
    evaluator.add_event_handler(Events.STARTED, lambda engine: engine.state.metrics.update(val_mean_dice=next(stream)))
    attach_plateau_rule(trainer, evaluator, patience, min_delta, floor)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: evaluator.run([0]))
    trainer.run([0] * len(scores), max_epochs=1)
    return trainer.state.iteration


@pytest.mark.parametrize(
    "scores, patience, stopped_at",
    [
        ([0.1, 0.2, 0.3, 0.4, 0.5], 2, 5),  # rising: never stops
        ([0.1, 0.5, 0.502, 0.503, 0.504, 0.9], 3, 5),  # three gains <= 0.005 above 0.5: stops before 0.9
        ([0.6, 0.5, 0.4, 0.3], 3, 4),  # falling
        ([0.5, 0.504, 0.5075, 0.511, 0.9], 2, 5),  # creeping: 0.5075 beats the reference 0.5 by > 0.005
        ([0.5, 0.504, 0.508, 0.509, 0.5095, 0.9], 2, 5),  # 0.508 resets; 0.509 and 0.5095 do not beat it: stop
        ([0.3], 1, 1),
        ([0.0, 0.004, 0.001, 0.0, 0.002, 0.003, 0.0], 3, 7),  # never reaches the floor: not a plateau, runs to the end
        (
            [0.0, 0.0, 0.0, 0.2, 0.2, 0.2, 0.2, 0.9],
            3,
            7,
        ),  # armed at 0.2 (iteration 4), three validations without a gain
        ([0.05, 0.1, 0.1, 0.1, 0.1, 0.9], 3, 5),  # the floor itself arms the rule
    ],
)
def test_plateau_rule_stops_a_run(scores, patience, stopped_at):
    assert plateau_stop(scores, patience, 0.005, floor=0.1) == stopped_at


def fake_run(model, seed, dice, dataset="phantom"):
    iterations = [50 * (i + 1) for i in range(len(dice))]
    return {
        "dataset": dataset,
        "model": model,
        "seed": seed,
        "parameters": 10,
        "iterations": iterations,
        "dice": dice,
        "train_seconds": [10.0 * i for i in iterations],
        "iterations_run": iterations[-1],
        "stopped_by": "plateau",
    }


@pytest.mark.parametrize(
    "curves, winner, table7",
    [
        (
            {"lrbm": [0.5, 0.7, 0.8, 0.8], "fixed": [0.4, 0.6, 0.7, 0.7], "vanilla": [0.3, 0.5, 0.6, 0.6]},
            "lrbm",
            "holds at every point",
        ),
        (
            {"lrbm": [0.3, 0.5, 0.6, 0.6], "fixed": [0.4, 0.6, 0.7, 0.7], "vanilla": [0.5, 0.7, 0.8, 0.8]},
            "vanilla",
            "does not hold at any point",
        ),
        (
            {"lrbm": [0.5, 0.5, 0.6, 0.6], "fixed": [0.4, 0.6, 0.7, 0.7], "vanilla": [0.3, 0.5, 0.6, 0.6]},
            "fixed",
            "holds at 1 of 4 points",
        ),
    ],
)
def test_statement_is_written_from_the_numbers(curves, winner, table7):
    records = [fake_run(m, seed, [d + 0.01 * seed for d in dice]) for m, dice in curves.items() for seed in (0, 1)]
    rows = summary(records)["phantom"]
    text = statement("phantom", rows, grouped_runs(records)["phantom"], patience=1, min_delta=0.005)
    assert f"highest mean best Dice: {winner}" in text and table7 in text and "it has flattened" in text
    lrbm = next(r for r in rows if r["model"] == "lrbm")
    assert lrbm["iterations_to_90"] == [150, 150] and lrbm["seconds_to_90"] == [
        1500.0,
        1500.0,
    ]  # first Dice >= 0.9 x best


@pytest.mark.parametrize(
    "winner_curve, stopped_by, expected",
    [
        (
            [0.1, 0.2, 0.3, 0.4],
            "max_iterations",
            "still rose by 0.200 over its last 2 validations (0.200 at 100 it → 0.400 at 200 it): "
            "it has **not flattened**",
        ),
        (
            [0.1, 0.4, 0.402, 0.404],
            "plateau",
            "rose by 0.004 ≤ 0.005 over its last 2 validations (100 → 200 it): it has flattened",
        ),
        ([0.1, 0.4], "max_iterations", "only 2 validations: too short"),
    ],
)
def test_statement_says_whether_the_winner_flattened(winner_curve, stopped_by, expected):
    records = [
        dict(fake_run("lrbm", 0, winner_curve), stopped_by=stopped_by),
        dict(fake_run("segresnet", 0, [0.05] * len(winner_curve)), stopped_by="plateau"),
    ]
    rows = summary(records)["phantom"]
    text = statement("phantom", rows, grouped_runs(records)["phantom"], patience=2, min_delta=0.005)
    assert expected in text and (
        ("times the early rise" in text) == ("not flattened" in expected or "too short" in expected)
    )
    assert (
        f"{1 + (stopped_by == 'plateau')} of 2 runs stopped by the plateau rule, "
        f"the others at the cap of {50 * len(winner_curve)} iterations" in text
    )


@pytest.mark.parametrize(
    "budget_hours, workers, cap", [(10.0, 1, 1000), (1.0, 1, 750), (1.0, 2, 1000), (0.3, 1, 200), (0.01, 1, None)]
)
def test_time_plan_picks_the_largest_cap_that_fits(budget_hours, workers, cap):
    # 2 seeds x (cap x (1.5 + 0.5) s + cap / 50 x (10 + 5) s) = 4.6 s x cap, shared by the workers
    settings = StudySettings(
        datasets=("phantom",), models=("lrbm", "segresnet"), seeds=(0, 1), max_iterations=1000, val_interval=50
    )
    timing = {
        "phantom": {
            "lrbm": {"seconds_per_iteration": 1.5, "seconds_per_validation": 10.0},
            "segresnet": {"seconds_per_iteration": 0.5, "seconds_per_validation": 5.0},
        }
    }
    if cap is None:
        with pytest.raises(ValueError, match="not even 50 iterations"):
            fitting_cap(timing, settings, workers, budget_hours)
        return
    assert fitting_cap(timing, settings, workers, budget_hours) == cap
    plan = time_plan(timing, replace(settings, max_iterations=cap), workers)
    assert plan["hours"] == pytest.approx(4.6 * cap / 3600 / workers) and plan["hours"] <= budget_hours
    assert [row[:4] for row in plan["rows"]] == [["phantom", "lrbm", 2, cap], ["phantom", "segresnet", 2, cap]]


def test_settings_refuse_unknown_models_and_patches_swinunetr_cannot_take():
    with pytest.raises(ValueError, match="unet3d"):
        StudySettings(models=("lrbm", "unet3d"))
    with pytest.raises(ValueError, match="multiples of 32"):
        StudySettings(roi_size=(48, 48, 32))


PHANTOM_RECIPE = convergence.training_recipe("phantom")


@pytest.mark.parametrize(
    "earlier, recipe, kept",
    [
        (
            dict(datasets=("phantom", "ct"), models=tuple(MODELS), seeds=(0, 1, 2)),
            PHANTOM_RECIPE,
            True,
        ),  # a larger study's run
        (dict(datasets=("phantom",), learning_rate=1e-3), PHANTOM_RECIPE, False),  # trained otherwise
        (dict(datasets=("phantom",), max_iterations=350), PHANTOM_RECIPE, False),
        (dict(datasets=("phantom",), plateau_floor=0.0), PHANTOM_RECIPE, False),
        (dict(datasets=("phantom",)), None, False),  # recorded before the recipe was
        (dict(datasets=("phantom",)), {**PHANTOM_RECIPE, "class_balanced": True}, False),  # another crop
    ],
)
def test_a_run_is_kept_when_it_trained_with_the_same_settings_and_recipe(tmp_path, monkeypatch, earlier, recipe, kept):
    settings = StudySettings(datasets=("phantom",), models=("lrbm",), seeds=(0,))
    data = convergence.StudyData("phantom", tmp_path, tmp_path / "datalist.json", {})
    result = convergence.run_directory(tmp_path, "phantom", "lrbm", 0) / "result.json"
    result.parent.mkdir(parents=True)
    record = {"dice": [0.5], "settings": asdict(StudySettings(**earlier))}
    result.write_text(json.dumps(record if recipe is None else {**record, "recipe": recipe}))
    monkeypatch.setattr(convergence, "train_run", lambda *args: {"dice": [0.1]})
    assert run_or_load(settings, data, "lrbm", 0, tmp_path, 0)["dice"] == ([0.5] if kept else [0.1])


@pytest.mark.parametrize(
    "dataset, crop, sampler", [("phantom", "RandCropByPosNegLabeld", None), ("ct", "RandCropByLabelClassesd", [3, 13])]
)
def test_each_dataset_trains_with_its_recipe_crop_and_sampler(tmp_path, shared_data, dataset, crop, sampler):
    data = write_study_data(dataset, tmp_path, str(shared_data), 4, 32)
    parser = convergence.bundle_parser(StudySettings(), data, tmp_path, torch.nn.Identity())
    assert parser["train#random_transforms#0"]["_target_"] == crop
    assert parser[f"{AFFINE}#prob"] == 0.0
    # the CT's two training slabs: the pelvis (background, bladder, prostate) and the upper abdomen
    weights = parser.get("train#dataloader#sampler", {}).get("weights")
    assert weights == (None if sampler is None else [float(w) for w in sampler])
    assert parser["train#dataloader#shuffle"] is (sampler is None)


def test_convergence_cli_resumed_reports_kept_runs_and_both_machines(tmp_path):
    """The documented resume (``--time_budget_hours 0``) trains nothing when every run is kept and names the machine
    the kept runs trained on (from time_plan.json) beside this one."""
    settings = StudySettings(datasets=("phantom",), models=("segresnet",), seeds=(0,), max_iterations=100)
    result = convergence.run_directory(tmp_path, "phantom", "segresnet", 0) / "result.json"
    result.parent.mkdir(parents=True)
    result.write_text(
        json.dumps({**fake_run("segresnet", 0, [0.2, 0.4]), "settings": asdict(settings), "recipe": PHANTOM_RECIPE})
    )
    (tmp_path / "time_plan.json").write_text(json.dumps({"machine": "the planning machine"}))
    paths = cli.convergence(
        str(tmp_path),
        datasets="phantom",
        models="segresnet",
        seeds="0",
        max_iterations=100,
        time_budget_hours=0,
        workers=1,
        phantom_cases=4,
        phantom_size=32,
    )
    report = Path(paths["markdown"]).read_text()
    assert (
        "study timed and started on: the planning machine; resumed on: " in report
        and "| segresnet | 10 | 1 | 0.400" in report
    )


def test_rep3d_variants_of_a_seed_start_from_the_same_shared_weights():
    vanilla, lrbm = (MODELS[name][1](8, 3).state_dict() for name in ("vanilla", "lrbm"))
    for key in ("encoder.stages.0.0.conv.weight", "decoder.head.conv.conv.weight"):
        torch.testing.assert_close(vanilla[key], lrbm[key], rtol=0, atol=0)
    other_seed = MODELS["vanilla"][1](8, 4).state_dict()
    assert not torch.equal(vanilla["encoder.stages.0.0.conv.weight"], other_seed["encoder.stages.0.0.conv.weight"])


def test_ct_data_needs_the_shared_ct(tmp_path):
    with pytest.raises(FileNotFoundError, match="example_ct.nii.gz"):
        write_study_data("ct", tmp_path, str(tmp_path / "no_shared_data"), 4, 32)


def test_ct_slabs_are_disjoint_and_held_out_organs_are_trained(tmp_path, shared_data):
    data = write_study_data("ct", tmp_path, str(shared_data), 4, 32)
    datalist = json.loads(data.datalist.read_text())
    slabs = datalist["metadata"]["slab_slices"]
    assert len(slabs) == 4 and all(stop - start == 28 for start, stop in slabs.values())
    classes = {}
    for key in ("training", "validation"):
        classes[key] = set().union(
            *(
                {int(c) for c in np.unique(np.asarray(nib.load(str(data.dataset_dir / i["label"])).dataobj)) if c}
                for i in datalist[key]
            )
        )
    assert classes["validation"] and classes["validation"] <= classes["training"]


def test_docs_block_is_present_and_refused_when_missing(repo_root, tmp_path):
    text = (repo_root / "docs" / "reproduction.md").read_text()
    assert text.count(DOCS_BEGIN) == 1 and text.count(DOCS_END) == 1
    block = text.split(DOCS_BEGIN)[1].split(DOCS_END)[0]
    assert "not been run yet" in block or "#### phantom" in block  # the placeholder or the generated results
    (tmp_path / "other.md").write_text("# no markers\n")
    with pytest.raises(ValueError, match="needs one line"):
        fill_docs({"summary": {}}, {}, tmp_path / "other.md")


def test_convergence_cli_every_model(convergence_processes):
    process, out = convergence_processes["every"]
    stdout = finish(process)
    for name in MODELS:
        assert f"[convergence] {name}: " in stdout and "parameters" in stdout  # parameter counts printed
    result = json.loads((out / "convergence.json").read_text())
    assert [row["model"] for row in result["summary"]["phantom"]] == list(MODELS)
    assert len(result["runs"]) == len(MODELS) and all(
        r["iterations"] == [1] and 0 <= r["dice"][0] <= 1 for r in result["runs"]
    )
    assert result["parameters"]["lrbm"] > result["parameters"]["segresnet"] > 0
    table = (out / "convergence.md").read_text()
    for name in MODELS:
        assert f"| {name} | {result['parameters'][name]:,} | 1 |" in table
    assert "highest mean best Dice" in table
    assert_png(out / "convergence_phantom.png")


def test_convergence_cli_timing_plateau_docs_and_erf(convergence_processes, shared_data, tmp_path):
    process, out = convergence_processes["ct"]
    finish(process)
    study = out / "study"
    plan = json.loads((study / "time_plan.json").read_text())
    assert plan["cap"] == 4 and plan["timing"]["ct"]["lrbm"]["seconds_per_iteration"] > 0
    assert "| ct | lrbm | 1 | 4 |" in (study / "time_plan.md").read_text()
    run = json.loads((study / "runs" / "ct" / "lrbm_seed0" / "result.json").read_text())
    assert run["stopped_by"] == "plateau" and run["iterations"] == [1, 2] and run["iterations_run"] == 2
    assert all(t > 0 for t in run["train_seconds"]) and math.isfinite(run["loss"][-1])
    docs = (out / "reproduction.md").read_text()
    block = docs.split(DOCS_BEGIN)[1].split(DOCS_END)[0]
    assert "#### ct" in block and "| lrbm |" in block and "not been run yet" not in block
    assert_png(out / "figures" / "convergence_ct.png")
    assert (
        docs.split(DOCS_END)[1]
        == (Path(__file__).resolve().parents[1] / "docs" / "reproduction.md").read_text().split(DOCS_END)[1]
    )

    run_dir = study / "runs" / "ct" / "lrbm_seed0"
    erf_paths = cli.erf(
        str(tmp_path / "erf"),
        checkpoint=str(run_dir / "models" / "model.pt"),
        config=str(run_dir / "model_config.json"),
        inputs="ct",
        shared_data=str(shared_data),
        input_size=32,
        num_inputs=1,
    )
    assert_png(erf_paths["lrbm_masks_png"])
    assert "checkpoint" in json.loads(Path(erf_paths["json"]).read_text())["weights"]


def test_lr_field_cli_outputs(lr_field_process):
    process, out = lr_field_process
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    assert str(out / "lr_field_radial.png") in stdout
    assert_png(out / "lr_field_radial.png")
    result = json.loads((out / "lr_field.json").read_text())
    runs = {(r["optimizer"], r["variant"]): r for r in result["runs"]}
    assert len(runs) == 8
    for run in runs.values():
        assert all(math.isfinite(v) and v > 0 for v in run["ratio"].values())
    # AdamW's first step is a sign step: eq. 11 holds exactly for CSLA, and a plain kernel moves uniformly
    assert runs["adamw", "csla"]["ratio"]["1"] == pytest.approx((2e-4 + 3e-4) / 2e-4, rel=0.01)
    assert runs["adamw", "vanilla"]["ratio"]["1"] == pytest.approx(1.0, rel=0.01)
    assert runs["adamw", "fixed"]["ratio"]["1"] == pytest.approx(
        runs["adamw", "fixed"]["predicted_first_step_ratio"], rel=0.01
    )
    assert runs["sgd", "csla"]["ratio"]["1"] > 2 and runs["sgd", "fixed"]["ratio"]["1"] > 10
    assert "| adamw | csla |" in (out / "lr_field.md").read_text()
