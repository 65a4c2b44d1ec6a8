"""The annotation-session study on the phantom in one command (``python -m rep3d_networks.analysis session_study``).

1. Data (seeded): ``initial_cases + pool_cases`` phantom cases (``rep3d_networks.data phantom``, the quickstart's
   40³ volumes) and ``heldout_cases`` more drawn with another seed (as ``rep3d_networks.click_models`` does). The
   first ``initial_cases`` are labelled: the datastore holds their ``final`` labels; the other images are the
   unlabelled pool whose reference labels are the session's label source; the held-out cases measure Dice.
2. The initial model: a copy of ``bundles/amos_ct`` trained on the labelled cases only, with the quickstart's
   settings (``click_models.train_overrides``: small Rep3D, 32³ patches, learning rate 1e-2), validated on the same
   cases (there is nothing else labelled). The same settings go into the copy's ``train.json`` and
   ``inference.json``, so that the app fine-tunes and serves it as it was trained.
3. For every strategy × seed, from a fresh copy of the initial model and of the datastore: the app's server
   (:mod:`rep3d_networks.analysis.app_server`, its ``random`` seeded with the seed, MONAI Label's automatic
   re-scoring off: an ``entropy_*`` session scores once per round itself) and a session
   (:mod:`rep3d_networks.analysis.session`). A session whose ``session.json`` holds the same settings is kept, so an
   interrupted study resumes.
4. One report over all sessions (:mod:`rep3d_networks.analysis.session_report`).

What a seed changes: only the server's ``random``, i.e. the ``random`` strategy's draws. The app's training task
does not run the bundle's ``initialize`` (MONAI Label calls ``monai.bundle.run`` with ``init_id=None``), but every
training runs in a new process whose torch generator starts from torch's fixed default seed, so the fine-tuning of
the same labels from the same weights repeats exactly (measured: three control sessions gave the same Dice to every
digit). The control (``none``: no labels, no draws) therefore runs once, with the first seed.
"""

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Sequence

from rep3d_networks.analysis.app_server import running_server
from rep3d_networks.analysis.reports import write_json
from rep3d_networks.analysis.session import CONTROL, SessionSettings, run_session
from rep3d_networks.click_models import (
    DATASET,
    MODELS,
    SETTINGS,
    TRAINED,
    fresh_copy,
    label_of,
    run_line,
    serve_ready,
    train_copy,
    train_overrides,
    write_config,
)
from rep3d_networks.data.cli import phantom
from rep3d_networks.quickstart import recipe_differences

MODEL = "amos_ct"
NETWORK = MODELS["auto"][2]
"""The quickstart's small Rep3D (``click_models``' automatic copy)."""
HELDOUT_SEED_OFFSET = 1000
"""Held-out cases are drawn with ``data_seed`` + this, as ``click_models.phantom_data`` draws them."""
HELDOUT_PREFIX = "heldout_"
RUN_LENGTH = ("max_iterations", "val_interval")
"""Keys of the initial training that the app's train requests set themselves (not written into ``train.json``)."""
SERVER_START_S = 300


@dataclass(frozen=True)
class StudyData:
    """The folders of a study: the datastore to copy, the pool's labels, the held-out images and their references."""

    studies: Path
    label_source: Path
    heldout_images: Path
    references: Path


def make_data(out: Path, seed: int, initial_cases: int, pool_cases: int, heldout_cases: int, size: int) -> tuple:
    """Writes the phantom cases and the study folders (module docstring, step 1); returns the :class:`StudyData`,
    the phantom folder and the initial model's datalist (training = validation = the labelled cases)."""
    cases = Path(
        phantom(DATASET, str(out / "data" / "cases"), num_cases=initial_cases + pool_cases, size=size, seed=seed)
    )
    images = sorted(cases.glob("images*/*.nii.gz"), key=lambda p: p.name)
    source = Path(
        phantom(
            DATASET,
            str(out / "data" / "heldout_source"),
            num_cases=heldout_cases,
            size=size,
            seed=seed + HELDOUT_SEED_OFFSET,
        )
    )
    data = StudyData(out / "studies", out / "pool_labels", out / "heldout" / "images", out / "heldout" / "labels")
    for folder in (data.studies / "labels" / "final", data.label_source, data.heldout_images, data.references):
        folder.mkdir(parents=True)
    for image in sorted(source.glob("images*/*.nii.gz")):  # prefixed: the two phantoms number their cases alike
        shutil.copy(image, data.heldout_images / f"{HELDOUT_PREFIX}{image.name}")
        shutil.copy(label_of(image), data.references / f"{HELDOUT_PREFIX}{image.name}")
    for index, image in enumerate(images):
        shutil.copy(image, data.studies / image.name)
        labelled = index < initial_cases
        shutil.copy(
            label_of(image), (data.studies / "labels" / "final" if labelled else data.label_source) / image.name
        )
    initial = [
        {"image": str(p.relative_to(cases)), "label": str(label_of(p).relative_to(cases))}
        for p in images[:initial_cases]
    ]
    return data, cases, {"training": initial, "validation": initial}


def train_initial_model(bundle: Path, cases: Path, datalist: Dict, iterations: int, seed: int) -> dict:
    """Trains the initial model into a serve-ready copy (module docstring, step 2) unless its :data:`TRAINED`
    record exists; returns the record (settings that differ from the paper recipe, validation Dice, minutes)."""
    if (bundle / TRAINED).exists():
        print(f"[session_study] initial model: trained already ({bundle / TRAINED}), not trained again", flush=True)
        return json.loads((bundle / TRAINED).read_text())
    fresh_copy(MODEL, bundle, datalist)
    train = {**train_overrides("phantom", cases, datalist, iterations, seed), **NETWORK}
    differences = recipe_differences(bundle, train)
    print(
        f"[session_study] initial model: {len(datalist['training'])} labelled cases, {iterations} iterations; settings "
        f"that "
        "differ from the paper recipe (bundles/amos_ct/configs/train.json):",
        flush=True,
    )
    for line in differences:
        print(f"[session_study]   {line}", flush=True)
    began = time.perf_counter()
    best = train_copy(bundle, train)
    minutes = (time.perf_counter() - began) / 60
    serve_ready(bundle, MODEL, {**NETWORK, "inferer#roi_size": SETTINGS["phantom"][0]})
    write_config(bundle, "train.json", {k: v for k, v in train.items() if k not in RUN_LENGTH and k != "dataset_dir"})
    record = {
        "cases": [item["image"] for item in datalist["training"]],
        "iterations": iterations,
        "best_validation_dice": best,
        "training_minutes": minutes,
        "differences": differences,
        "run": run_line(),
    }
    (bundle / TRAINED).write_text(json.dumps(record, indent=2))
    print(
        f"[session_study] initial model: validation Dice {best:.3f} (on its training cases) after {minutes:.1f} min",
        flush=True,
    )
    return record


def run_seeded_session(out: Path, data: StudyData, initial: Path, settings: SessionSettings, seed: int) -> dict:
    """One session from fresh copies of the initial model and the datastore, on its own server (module docstring,
    step 3); a finished one with the same settings is read back instead."""
    name = f"{settings.strategy}_seed{seed}"
    folder = out / "sessions" / name
    result_file = folder / "session.json"
    if result_file.exists():
        kept = json.loads(result_file.read_text())
        if kept["settings"] == asdict(settings):
            print(f"[session_study] {name}: finished already ({result_file}), kept", flush=True)
            return kept
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(initial, folder / "bundles" / MODEL)
    shutil.copytree(data.studies, folder / "studies")
    conf = {"models": MODEL, "bundles_dir": str(folder / "bundles"), "device": "cpu"}
    env = {"MONAI_LABEL_AUTO_UPDATE_SCORING": "false"}
    began, load = time.perf_counter(), os.getloadavg()[0]
    with running_server(folder / "studies", conf, folder / "server", SERVER_START_S, seed, env) as server:
        print(
            f"[session_study] {name}: server up at {server.url} after {time.perf_counter() - began:.0f} s", flush=True
        )
        try:
            result = run_session(
                server.url, settings, data.heldout_images, data.references, data.label_source, f"[session_study] {name}"
            )
        except Exception:
            print(f"[session_study] {name}: failed; end of the server log:\n{server.log_tail()}", flush=True)
            raise
    result.update(seed=seed, minutes=(time.perf_counter() - began) / 60, load_average=[load, os.getloadavg()[0]])
    write_json(result_file, result)
    return result


def run_study(
    out: Path,
    strategies: Sequence[str],
    seeds: Sequence[int],
    settings: SessionSettings,
    data_seed: int,
    initial_cases: int,
    initial_iterations: int,
    pool_cases: int,
    heldout_cases: int,
    size: int,
) -> dict:
    """Steps 1-3 of the module docstring; returns the study's settings, the initial model's record and every session.

    Raises:
        ValueError: ``out`` holds a study whose data or initial model were made with other settings.
    """
    made = {
        "data_seed": data_seed,
        "initial_cases": initial_cases,
        "initial_iterations": initial_iterations,
        "pool_cases": pool_cases,
        "heldout_cases": heldout_cases,
        "size": size,
    }
    record_file = out / "study_data.json"
    if record_file.exists():
        saved = json.loads(record_file.read_text())
        if saved["made"] != made:
            raise ValueError(f"{out} holds a study made with {saved['made']}, not {made}: choose another output_dir")
        data = StudyData(**{k: Path(v) for k, v in saved["data"].items()})
        cases, datalist = Path(saved["cases"]), saved["datalist"]
    else:
        shutil.rmtree(out / "data", ignore_errors=True)  # an interrupted start: make the data again
        for folder in ("studies", "pool_labels", "heldout"):
            shutil.rmtree(out / folder, ignore_errors=True)
        data, cases, datalist = make_data(out, data_seed, initial_cases, pool_cases, heldout_cases, size)
        write_json(record_file, {"made": made, "data": asdict(data), "cases": cases, "datalist": datalist})
    initial = out / "initial" / MODEL
    record = train_initial_model(initial, cases, datalist, initial_iterations, data_seed)
    sessions: List[dict] = []
    for strategy in strategies:
        for seed in seeds[:1] if strategy == CONTROL else seeds:  # the control repeats exactly (module docstring)
            strategy_settings = SessionSettings(**{**asdict(settings), "strategy": strategy})
            sessions.append(run_seeded_session(out, data, initial, strategy_settings, seed))
    study = {**made, "strategies": list(strategies), "seeds": list(seeds)}
    return {"study": study, "initial_model": record, "sessions": sessions}
