"""Labels that teach: a simulated annotation session through a running MONAI Label server (issue #26, part 3).

Round 0 measures the served model as it is. Each further round asks the server's active-learning strategy
``labels_per_round`` times for the next image (``/activelearning/<strategy>``) and submits that image's reference
label as its ``final`` label (``PUT /datastore/label``, 3D Slicer's *Submit Label*); then it fine-tunes the model from
its current weights on every ``final`` label of the datastore (``/train/<model>``: ``pretrained`` true,
``max_iterations`` = ``val_interval`` = ``train_iterations``, ``val_split`` 0, so all labels train and the one
validation at the end, on the training images, writes the model that is then served). While the training runs it
keeps asking ``/infer/<model>`` for a held-out image and records whether and how fast the server answers; once the
training is done it measures the served model's Dice per organ on every held-out image. Held-out images are uploaded
with each ``/infer`` request and never enter the datastore: the strategy cannot offer them and training never sees
them. A strategy whose name starts with ``entropy_`` is scored first in every round (``POST /scoring/<strategy>``,
with that round's model). The strategy ``none`` is the control: the same rounds of fine-tuning with no label
submitted, so that what the labels add can be told from what the further training adds. Everything goes through
``monailabel.client`` (``MONAILabelClient``; the scoring call, which the client lacks, through its ``MONAILabelUtils``).
"""

import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import nibabel as nib
import numpy as np
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelUtils

from rep3d_networks.analysis.clicks import REFERENCE_SUFFIXES, Reference, dice, read_reference, served_models

CONTROL = "none"
"""Not a strategy of the server: the control session, which submits no label and fine-tunes as the others do."""
SCORED_PREFIX = "entropy_"
"""Strategies with this prefix rank images by scores that ``POST /scoring/<strategy>`` computes first."""
FINAL = "final"
PROBE_PAUSE_S = 2.0
"""Seconds between two ``/infer`` probes (and train-status polls) while a training runs: the probes share the CPU
with the training they watch."""
RUNNING = ("SUBMITTED", "RUNNING")
TASK_TIME = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class SessionSettings:
    """What a session does: the model trained and measured, the strategy, and how many rounds of how many labels,
    each followed by a fine-tuning of ``train_iterations`` iterations (given up after ``train_timeout_s``)."""

    model: str
    strategy: str
    rounds: int
    labels_per_round: int
    train_iterations: int
    train_timeout_s: float

    def check(self) -> None:
        """Raises ValueError naming the first bad setting."""
        for name in ("rounds", "labels_per_round", "train_iterations"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
        for name in ("model", "strategy"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ValueError(f"{name} must be a name, got {getattr(self, name)!r}")
        if not self.train_timeout_s > 0:
            raise ValueError(f"train_timeout_s must be positive, got {self.train_timeout_s!r}")


def files_by_id(folder: Path, what: str) -> Dict[str, Path]:
    """``{id: file}`` of the ``<id>.nii.gz`` / ``<id>.nii`` files in ``folder``.

    Raises:
        ValueError: not a folder, or no such file in it (the message says which of the inputs, ``what``).
    """
    if not folder.is_dir():
        raise ValueError(f"{what}: {folder} is not a folder")
    files = {}
    for path in sorted(folder.iterdir()):
        suffix = next((s for s in REFERENCE_SUFFIXES if path.name.endswith(s)), None)
        if suffix and path.is_file():
            files[path.name[: -len(suffix)]] = path
    if not files:
        raise ValueError(f"{what}: no .nii.gz or .nii files in {folder}")
    return files


@dataclass(frozen=True)
class HeldOut:
    """A held-out image and its checked reference label."""

    image: Path
    reference: Reference


def held_out_cases(images: Path, references: Path) -> List[HeldOut]:
    """Pairs every held-out image with its reference (same id) and checks the references.

    Raises:
        ValueError: an image without a reference or a reference without an image (named), or a bad reference.
    """
    image_files = files_by_id(images, "heldout_images")
    label_files = files_by_id(references, "references")
    unpaired = sorted(set(image_files) ^ set(label_files))
    if unpaired:
        raise ValueError(
            f"held-out images and references must pair up by name: {', '.join(unpaired)} in only one of "
            f"{images} and {references}"
        )
    return [HeldOut(image_files[i], read_reference(i, label_files[i])) for i in sorted(image_files)]


def final_labels(client: MONAILabelClient) -> Dict[str, bool]:
    """``{image id: has a final label}`` of the server's datastore."""
    objects = client.datastore().get("objects", {})
    return {image_id: FINAL in (entry.get("labels") or {}) for image_id, entry in objects.items()}


def score(client: MONAILabelClient, strategy: str) -> Optional[float]:
    """For an ``entropy_*`` strategy, runs the scoring method of the same name on the server and waits for it
    (``POST /scoring/<strategy>?run_sync=true``); returns its seconds (``None``: not a scored strategy).

    Raises:
        RuntimeError: the server refused or failed the scoring (its status and answer in the message).
    """
    if not strategy.startswith(SCORED_PREFIX):
        return None
    start = time.perf_counter()
    selector = f"/scoring/{MONAILabelUtils.urllib_quote_plus(strategy)}?run_sync=true"
    status, response, _, _ = MONAILabelUtils.http_method("POST", client.get_server_url(), selector)
    if status != 200:
        raise RuntimeError(f"scoring {strategy!r} failed: HTTP {status}: {response!r}")
    return time.perf_counter() - start


def infer_labels(client: MONAILabelClient, model: str, case: HeldOut) -> np.ndarray:
    """The served model's label of a held-out image (uploaded with the request), on the reference's grid.

    Raises:
        ValueError: no label returned, or a label on another grid than the reference's.
    """
    label_file, result = client.infer(model, case.reference.image_id, {}, file=str(case.image))
    if not label_file:
        raise ValueError(f"model {model!r} returned no label for held-out image {case.image}: {result}")
    try:
        answer = nib.load(label_file)
        values = np.asarray(answer.dataobj)
    finally:
        Path(label_file).unlink(missing_ok=True)
    reference = case.reference
    if values.shape != reference.shape or not np.allclose(answer.affine, reference.affine, atol=1e-3):
        raise ValueError(
            f"held-out image {case.image}: model {model!r} answered on a grid (shape {values.shape}) other than its "
            f"reference's {reference.path} (shape {reference.shape}); a reference must lie on its image's voxel grid"
        )
    return values


def measure_dice(client: MONAILabelClient, model: str, organs: Dict[str, int], cases: Sequence[HeldOut]) -> dict:
    """Dice per organ of the served model on every held-out image (MONAI's ``compute_dice``, organs present in
    the reference only); ``mean`` is over all (image, organ) pairs, ``organs`` the per-organ means over images."""
    per_image, seconds = {}, []
    for case in cases:
        start = time.perf_counter()
        values = infer_labels(client, model, case)
        seconds.append(time.perf_counter() - start)
        reference = case.reference.load()
        per_image[case.reference.image_id] = {
            organ: dice(reference == value, values == value)
            for organ, value in organs.items()
            if value in case.reference.present
        }
    pairs = [d for scores in per_image.values() for d in scores.values()]
    by_organ = {organ: [s[organ] for s in per_image.values() if organ in s] for organ in organs}
    return {
        "mean": float(np.mean(pairs)),
        "organs": {organ: float(np.mean(v)) for organ, v in by_organ.items() if v},
        "images": per_image,
        "infer_s": seconds,
    }


def probe(client: MONAILabelClient, model: str, case: HeldOut, since: float) -> dict:
    """One ``/infer`` of a held-out image while a training runs: answered or not, seconds, the error if any."""
    start = time.perf_counter()
    try:
        infer_labels(client, model, case)
        error = None
    except Exception as failure:  # a refused or failed answer is what this probe records, not a reason to stop
        error = f"{type(failure).__name__}: {failure}"
    return {"at_s": start - since, "seconds": time.perf_counter() - start, "answered": error is None, "error": error}


def task_seconds(task: dict) -> Optional[float]:
    """Seconds from a server task's ``start_ts`` to its ``end_ts`` (whole seconds; ``None`` if either is missing)."""
    try:
        return (
            datetime.strptime(task["end_ts"], TASK_TIME) - datetime.strptime(task["start_ts"], TASK_TIME)
        ).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def train_and_probe(client: MONAILabelClient, settings: SessionSettings, case: HeldOut) -> dict:
    """Fine-tunes the model from its current weights (module docstring) and probes ``/infer`` while it runs.

    Raises:
        RuntimeError: the training did not finish with ``DONE`` (its last log lines in the message), or another
            training took its place.
        TimeoutError: still running after ``train_timeout_s`` (it is stopped first).
    """
    params = {
        "max_iterations": settings.train_iterations,
        "val_interval": settings.train_iterations,
        "pretrained": True,
        "val_split": 0.0,
    }
    start = time.perf_counter()
    task = client.train_start(settings.model, dict(params))  # the client adds its client_id to the dict it gets
    probes = []
    while (status := client.train_status())["status"] in RUNNING:
        if status.get("id") != task.get("id"):
            raise RuntimeError(
                f"another training ({status.get('id')}) runs instead of this session's ({task.get('id')})"
            )
        if time.perf_counter() - start > settings.train_timeout_s:
            client.train_stop()
            raise TimeoutError(
                f"training of {settings.model!r} still running after {settings.train_timeout_s} s; stopped"
            )
        if status["status"] == "RUNNING":
            probes.append(probe(client, settings.model, case, start))
        time.sleep(PROBE_PAUSE_S)
    client_s = time.perf_counter() - start
    if status.get("id") != task.get("id") or status["status"] != "DONE":
        details = "\n".join(status.get("details") or [])
        raise RuntimeError(
            f"training of {settings.model!r} ended {status['status']} (task {status.get('id')}):\n{details}"
        )
    stats = client.info().get("train_stats", {}).get(settings.model, {})
    return {
        "task": task.get("id"),
        "params": params,
        "client_s": client_s,
        "server_s": task_seconds(status),
        "epochs": stats.get("epoch"),
        "validation_dice": stats.get("best_metric"),
        "probes": probes,
    }


def submit_labels(
    client: MONAILabelClient, settings: SessionSettings, sources: Dict[str, Path], labelled: set
) -> List[dict]:
    """Asks the strategy for ``labels_per_round`` images, one at a time, and submits each one's reference label.

    Raises:
        RuntimeError: the strategy offers nothing, an image that has a final label, or one without a label source.
    """
    submitted = []
    for _ in range(settings.labels_per_round):
        start = time.perf_counter()
        sample = client.next_sample(settings.strategy, {})
        asked_s = time.perf_counter() - start
        image_id = sample.get("id")
        if not image_id:
            raise RuntimeError(f"strategy {settings.strategy!r} offered no image: {sample}")
        if image_id in labelled:
            raise RuntimeError(f"strategy {settings.strategy!r} offered {image_id!r}, which has a final label already")
        if image_id not in sources:
            raise RuntimeError(
                f"strategy {settings.strategy!r} offered {image_id!r}, which has no label in the label source"
            )
        client.save_label(image_id, str(sources[image_id]), tag=FINAL)
        labelled.add(image_id)
        submitted.append({"image": image_id, "strategy_s": asked_s})
    return submitted


def check_server(client: MONAILabelClient, settings: SessionSettings, label_source: Path) -> tuple:
    """Checks what the server serves against the session; returns (organs, label source files, labelled images).

    Raises:
        ValueError: no server, a model it does not serve or train, a strategy it does not offer (the message lists
            the ones it does), label source files of images it does not have, or too few unlabelled images.
    """
    try:
        info = client.info()
        labelled = final_labels(client)
    except Exception as error:
        raise ValueError(f"no MONAI Label server answers at {client.get_server_url()}: {error}") from error
    model = served_models(info, [settings.model])[0]
    if settings.model not in info.get("trainers", {}):
        trained = ", ".join(info.get("trainers", {})) or "none"
        raise ValueError(f"model {settings.model!r} has no training task on the server; it trains: {trained}")
    strategies = info.get("strategies", {})
    if settings.strategy != CONTROL and settings.strategy not in strategies:
        raise ValueError(
            f"strategy {settings.strategy!r} is not offered by the server; it offers: "
            f"{', '.join(strategies) or 'no strategy'} (and {CONTROL!r}: the control, no labels)"
        )
    sources = files_by_id(label_source, "label_source")
    strangers = sorted(set(sources) - set(labelled))
    if strangers:
        raise ValueError(
            f"label_source {label_source}: no image of the id(s) {', '.join(strangers)} on the server; "
            f"its images: {', '.join(sorted(labelled)) or 'none'}"
        )
    unlabelled = [i for i, has in labelled.items() if not has]
    needed = settings.rounds * settings.labels_per_round
    without = sorted(set(unlabelled) - set(sources))
    if without:
        raise ValueError(f"label_source {label_source} has no label for the unlabelled image(s) {', '.join(without)}")
    if len(unlabelled) < needed:
        raise ValueError(
            f"the datastore has {len(unlabelled)} unlabelled image(s); {settings.rounds} rounds of "
            f"{settings.labels_per_round} labels submit {needed}"
        )
    organs = {name: value for name, value in model.labels.items() if name != "background"}
    return organs, sources, {i for i, has in labelled.items() if has}


def run_session(
    server_url: str,
    settings: SessionSettings,
    heldout_images: Path,
    references: Path,
    label_source: Path,
    log_prefix: str = "[session]",
) -> dict:
    """Round 0, then ``settings.rounds`` rounds of labels, fine-tuning and Dice (module docstring); returns the
    settings, the images and every round's record.

    Raises:
        ValueError: bad settings or inputs (before the server is asked anything), or a server that does not match
            them (before any label is submitted).
    """
    settings.check()
    cases = held_out_cases(heldout_images, references)
    files_by_id(label_source, "label_source")
    with tempfile.TemporaryDirectory(prefix="rep3d_session_") as tmpdir:
        client = MONAILabelClient(server_url, tmpdir=tmpdir)
        organs, sources, labelled = check_server(client, settings, label_source)
        initially_labelled = sorted(labelled)
        dice_0 = measure_dice(client, settings.model, organs, cases)
        print(f"{log_prefix} round 0 (0 labels): mean Dice {dice_0['mean']:.3f}", flush=True)
        rounds = [
            {
                "round": 0,
                "labels": 0,
                "submitted": [],
                "scoring_s": None,
                "train": None,
                "final_labels": len(labelled),
                "dice": dice_0,
            }
        ]
        for index in range(1, settings.rounds + 1):
            scoring_s = score(client, settings.strategy)
            submitted = [] if settings.strategy == CONTROL else submit_labels(client, settings, sources, labelled)
            stored = sum(final_labels(client).values())
            train = train_and_probe(client, settings, cases[0])
            measured = measure_dice(client, settings.model, organs, cases)
            record = {
                "round": index,
                "labels": len(labelled) - len(initially_labelled),
                "submitted": submitted,
                "scoring_s": scoring_s,
                "train": train,
                "final_labels": stored,
                "dice": measured,
            }
            rounds.append(record)
            answered = sum(p["answered"] for p in train["probes"])
            print(
                f"{log_prefix} round {index} ({record['labels']} labels: "
                f"{', '.join(s['image'] for s in submitted) or '-'}): trained {train['client_s']:.0f} s, /infer "
                f"answered {answered}/{len(train['probes'])} during training, mean Dice {measured['mean']:.3f}",
                flush=True,
            )
    return {
        "server_url": server_url,
        "settings": asdict(settings),
        "heldout_images": str(heldout_images),
        "references": str(references),
        "label_source": str(label_source),
        "heldout": [c.reference.image_id for c in cases],
        "organs": organs,
        "initially_labelled": initially_labelled,
        "probe_pause_s": PROBE_PAUSE_S,
        "rounds": rounds,
    }
