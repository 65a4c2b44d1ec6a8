"""Annotation sessions (``python -m rep3d_networks.analysis session`` / ``session_study``, issue #26 part 3).

The study command runs once, tiny: 24³ phantom, 2 labelled cases and an initial model of 2 iterations, a pool of 3,
one held-out case, one session with the ``first`` strategy (deterministic: the pool in name order) of one round of 2
labels and a 2-iteration fine-tuning, through the app's real server (``rep3d_networks.analysis.app_server``) and
``MONAILabelClient``. Checked: the labels reached the datastore, the training ran and wrote new weights, the server
answered ``/infer`` while it ran, the report. Then a server on a copy of that session's datastore and model refuses a
strategy it does not offer, by name, before any label is submitted, and runs the control (``none``: no labels, the same
fine-tuning); bad arguments are refused before any server is asked anything.
Whether labels raise Dice is measured outside CI (docs/annotation_sessions.md).
"""

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from rep3d_networks.analysis import cli
from rep3d_networks.analysis.app_server import SEEDED_START, free_port, running_server
from rep3d_networks.analysis.session_report import summarize
from rep3d_networks.analysis.session_study import MODEL
from rep3d_networks.package import sha256

STUDY = {
    "strategies": "first",
    "seeds": "0",
    "rounds": 1,
    "labels_per_round": 2,
    "train_iterations": 2,
    "initial_cases": 2,
    "initial_iterations": 2,
    "pool_cases": 3,
    "heldout_cases": 1,
    "size": 24,
}
COMMAND_S = 300
SERVER_START_S = 120
ONE_ROUND = {"rounds": 1, "labels_per_round": 1, "train_iterations": 1}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The study command run once (module docstring); yields (output folder, its stdout)."""
    out = tmp_path_factory.mktemp("session_study") / "study"
    command = [sys.executable, "-m", "rep3d_networks.analysis", "session_study", "--output_dir", str(out)]
    for key, value in STUDY.items():
        command += [f"--{key}", str(value)]
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=COMMAND_S, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    yield out, run.stdout


def session_of(out: Path) -> dict:
    return json.loads((out / "sessions" / "first_seed0" / "session.json").read_text())


def test_submitted_labels_reach_the_datastore(study):
    """``first`` offers the unlabelled images in name order; each one's reference label is stored as its final label."""
    out, _ = study
    session = session_of(out)
    pool = sorted(p.name.removesuffix(".nii.gz") for p in (out / "pool_labels").iterdir())
    submitted = [s["image"] for s in session["rounds"][1]["submitted"]]
    assert submitted == pool[:2]
    stored = out / "sessions" / "first_seed0" / "studies" / "labels" / "final"
    assert sorted(p.name for p in stored.iterdir()) == sorted(
        f"{i}.nii.gz" for i in session["initially_labelled"] + submitted
    )
    for image in submitted:
        source = nib.load(out / "pool_labels" / f"{image}.nii.gz").get_fdata()
        assert np.array_equal(nib.load(stored / f"{image}.nii.gz").get_fdata(), source)
    assert [r["final_labels"] for r in session["rounds"]] == [2, 4]
    assert not set(submitted) & set(session["initially_labelled"])


def test_each_round_trains_and_the_server_answers_meanwhile(study):
    """The round's /train fine-tuned the served copy on all 4 labels and wrote new weights; /infer answered while it
    ran."""
    out, _ = study
    train = session_of(out)["rounds"][1]["train"]
    assert train["params"] == {"max_iterations": 2, "val_interval": 2, "pretrained": True, "val_split": 0.0}
    assert train["epochs"] == 1 and 0.0 <= train["validation_dice"] <= 1.0
    served = out / "sessions" / "first_seed0" / "bundles" / MODEL / "models" / "model.pt"
    assert sha256(served) != sha256(out / "initial" / MODEL / "models" / "model.pt")
    log = (out / "sessions" / "first_seed0" / "server" / "server.log").read_text()
    assert (
        "Total Records for Training: 4" in log and "Restored all variables from" in log
    )  # pretrained: from the current weights
    probes = train["probes"]
    assert probes and all(p["answered"] and p["error"] is None for p in probes), probes
    assert all(0 <= p["at_s"] < train["client_s"] for p in probes)


def test_report_files_and_numbers(study):
    out, stdout = study
    for name in ("session_study.md", "session_study.png"):
        assert (out / name).stat().st_size > 0
    report = json.loads((out / "session_study.json").read_text())
    session = session_of(out)
    assert report["sessions"] == [session]
    entry = report["summary"]["strategies"]["first"]
    assert entry["labels"] == [0, 2] and entry["seeds"] == [0]
    for record, mean in zip(session["rounds"], entry["mean"]):
        pairs = [d for image in record["dice"]["images"].values() for d in image.values()]
        assert len(pairs) >= 10 and mean == pytest.approx(np.mean(pairs))
    rises = entry["mean"][1] > entry["mean"][0]
    assert ("FLAG first: mean Dice does not rise" in stdout) is not rises
    markdown = (out / "session_study.md").read_text()
    assert "| first | 0 |" in markdown and "0 labels | 2 labels" in markdown and "![" in markdown


def test_control_and_unknown_strategy_on_the_sessions_datastore(study, tmp_path):
    """A server on a copy of the session's datastore and model: a strategy it does not offer stops a session before
    any label is sent; the control (``none``) submits nothing and still fine-tunes, and its report says so."""
    out, _ = study
    for part in ("studies", "bundles"):
        shutil.copytree(out / "sessions" / "first_seed0" / part, tmp_path / part)
    stored = sorted((tmp_path / "studies" / "labels" / "final").iterdir())
    weights = tmp_path / "bundles" / MODEL / "models" / "model.pt"
    before = sha256(weights)
    conf = {"models": MODEL, "bundles_dir": str(tmp_path / "bundles"), "device": "cpu"}
    inputs = (str(out / "heldout" / "labels"), str(out / "heldout" / "images"), str(out / "pool_labels"))
    with running_server(tmp_path / "studies", conf, tmp_path / "server", SERVER_START_S) as server:
        with pytest.raises(ValueError, match=r"strategy 'nope' is not offered by the server; it offers: random, first"):
            cli.session(server.url, *inputs, str(tmp_path / "nope"), strategy="nope", **ONE_ROUND)
        assert not (tmp_path / "nope").exists()
        cli.session(server.url, *inputs, str(tmp_path / "control"), strategy="none", **ONE_ROUND)
    assert sorted((tmp_path / "studies" / "labels" / "final").iterdir()) == stored
    assert sha256(weights) != before
    session = json.loads((tmp_path / "control" / "session.json").read_text())["sessions"][0]
    assert [(r["labels"], r["submitted"], r["final_labels"]) for r in session["rounds"]] == [(0, [], 4), (0, [], 4)]
    assert session["rounds"][1]["train"]["epochs"] == 1
    assert "`none` is the control" in (tmp_path / "control" / "session.md").read_text()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"rounds": 0}, "rounds must be a whole number of at least 1"),
        ({"labels_per_round": 1.5}, "labels_per_round must be a whole number"),
        ({"strategy": ""}, "strategy must be a name"),
        ({"references": "missing"}, "references: .*missing is not a folder"),
        ({"label_source": "empty"}, "label_source: no .nii.gz or .nii files"),
        ({"heldout_images": "other"}, "must pair up by name: b in only one"),
    ],
)
def test_session_refuses_bad_arguments_before_asking_the_server(tmp_path, change, message):
    """Nothing listens on the port: a check made after contacting the server would fail with another message."""
    for folder, names in {"images": ["a"], "labels": ["a"], "other": ["a", "b"], "empty": []}.items():
        (tmp_path / folder).mkdir()
        for name in names:
            nib.save(
                nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), str(tmp_path / folder / f"{name}.nii.gz")
            )
    args = {
        "references": "labels",
        "heldout_images": "images",
        "label_source": "labels",
        "strategy": "random",
        "rounds": 1,
        "labels_per_round": 1,
        **change,
    }
    paths = {k: str(tmp_path / args.pop(k)) for k in ("references", "heldout_images", "label_source")}
    with pytest.raises(ValueError, match=message):
        cli.session(f"http://127.0.0.1:{free_port()}", output_dir=str(tmp_path / "out"), **paths, **args)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"strategies": ""}, "strategies must be comma-separated names"),
        ({"strategies": "random,random"}, "without repeats"),
        ({"seeds": "0,x"}, "seeds must be comma-separated whole numbers"),
        ({"pool_cases": 5}, r"pool_cases must be at least rounds × labels_per_round = 12"),
        ({"train_iterations": 0}, "train_iterations must be a whole number"),
        ({"size": 16}, "size must be at least 24"),
    ],
)
def test_session_study_refuses_bad_arguments_before_any_work(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        cli.session_study(str(tmp_path / "study"), **change)
    assert not (tmp_path / "study").exists()


def session_record(strategy: str, seed: int, dice: list, answered=True) -> dict:
    """A session as ``run_session`` returns it, with the given mean Dice per round (3 labels per round)."""
    probe = {
        "at_s": 1.0,
        "seconds": 0.5,
        "answered": answered,
        "error": None if answered else "MONAILabelClientException: 500",
    }
    rounds = [
        {
            "round": k,
            "labels": 3 * k,
            "submitted": [],
            "final_labels": 3 + 3 * k,
            "train": None
            if k == 0
            else {"client_s": 50.0 + seed, "probes": [probe, {**probe, "answered": True, "error": None}]},
            "dice": {"mean": d, "organs": {"liver": d}, "images": {}, "infer_s": [0.2]},
        }
        for k, d in enumerate(dice)
    ]
    return {
        "settings": {"strategy": strategy, "model": "amos_ct", "rounds": len(dice) - 1, "labels_per_round": 3},
        "seed": seed,
        "organs": {"liver": 6},
        "rounds": rounds,
    }


def test_summary_mean_sd_and_flags():
    sessions = [
        session_record("random", 0, [0.5, 0.6, 0.7]),
        session_record("random", 1, [0.5, 0.7, 0.9]),
        session_record("first", 0, [0.5, 0.5, 0.4], answered=False),
    ]
    summary = summarize(sessions)
    random = summary["strategies"]["random"]
    assert random["labels"] == [0, 3, 6] and random["seeds"] == [0, 1]
    assert random["mean"] == pytest.approx([0.5, 0.65, 0.8]) and random["sd"][0] == pytest.approx(0.0)
    assert random["sd"][2] == pytest.approx(np.std([0.7, 0.9], ddof=1))
    assert random["organs"]["liver"] == pytest.approx({"start": 0.5, "end": 0.8})
    assert random["server"][0] == pytest.approx(
        {
            "round": 1,
            "labels": 3,
            "train_s": 50.5,
            "train_s_sd": np.std([50, 51], ddof=1),
            "asked": 4,
            "answered": 4,
            "median_s": 0.5,
            "idle_median_s": 0.2,
        }
    )
    first = summary["strategies"]["first"]
    assert first["sd"] == [None, None, None] and first["server"][0]["answered"] == 1
    assert summary["flags"] == [
        "first: mean Dice does not rise from 0 labels (0.500) to 6 labels (0.400)",
        "first seed 0: Dice does not rise from 0 labels (0.500) to 6 labels (0.400)",
        "first seed 0, round 1: 1 of 2 /infer calls failed during training (first: MONAILabelClientException: 500)",
        "first seed 0, round 2: 1 of 2 /infer calls failed during training (first: MONAILabelClientException: 500)",
    ]
    with pytest.raises(ValueError, match="differ in their rounds"):
        summarize([session_record("random", 0, [0.5, 0.6]), session_record("random", 1, [0.5, 0.6, 0.7])])


def test_control_is_not_flagged_for_staying_flat_but_a_strategy_that_rises_no_more_is():
    sessions = [session_record("random", 0, [0.5, 0.55, 0.6]), session_record("none", 0, [0.5, 0.6, 0.5])]
    assert summarize(sessions)["flags"] == []
    sessions = [session_record("random", 0, [0.5, 0.55, 0.6]), session_record("none", 0, [0.5, 0.6, 0.65])]
    assert summarize(sessions)["flags"] == [
        "random: its mean rise (+0.100) is no larger than the control's, the same fine-tuning without labels (+0.150): "
        "the labels do not explain it"
    ]


def test_seeded_server_start_seeds_random(tmp_path):
    """The launcher that starts a seeded server gives the script it runs the seeded ``random`` and its arguments."""
    script = tmp_path / "draw.py"
    script.write_text("import random, sys\nprint(random.random(), sys.argv[1:])\n")
    command = [sys.executable, "-c", SEEDED_START, "7", str(script), "--x", "1"]
    run = subprocess.run(command, capture_output=True, text=True, check=True)
    assert run.stdout.split(" ", 1) == [str(random.Random(7).random()), "['--x', '1']\n"]
