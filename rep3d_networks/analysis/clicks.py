"""Simulated annotator: Dice against the number of clicks, measured through a running MONAI Label server (issue #26).

For each held-out image, model and organ the annotator first asks for the automatic answer (a request without clicks),
then adds one corrective click per round and asks again, as 3D Slicer's MONAI Label module does: the request holds
every label name with all its clicks so far (``[i, j, k]`` voxel indices of the image) and ``label`` = the organ.
The click goes to the largest connected error region (false negatives and false positives of the organ taken
together), at its voxel deepest inside it (Euclidean distance in mm, the voxel spacing from the image's affine, the
outside of the image counting as outside the region: the mask is padded before the distance transform): on the organ's
name for a missed region, on ``background`` for a false one. Everything goes through
``monailabel.client.MONAILabelClient``.
"""

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import nibabel as nib
import numpy as np
import torch
from monai.metrics import compute_dice
from monailabel.client import MONAILabelClient
from scipy import ndimage

BACKGROUND = "background"
DEEPEDIT = "deepedit"
MISSED = "missed"
"""Region kind of a click on the organ: part of the reference organ that the prediction lacks (false negatives)."""
FALSE = "false"
"""Region kind of a background click: predicted organ outside the reference organ (false positives)."""
REFERENCE_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True)
class Click:
    """One simulated click: the label it is sent as, its voxel (image indices), and the region it corrects."""

    label: str
    voxel: Tuple[int, int, int]
    region: str
    region_voxels: int


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Millimetres between neighbouring voxels along each array axis (the column norms of the affine's 3x3 part)."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def deepest_voxel(region: np.ndarray, spacing: Sequence[float]) -> Tuple[int, ...]:
    """The voxel of ``region`` (a boolean mask) farthest, in mm, from every voxel outside it.

    The mask is padded with one layer of outside voxels first, so that the image's border bounds the region too
    (without it, a region reaching the border would count as unbounded there). Of equally deep voxels the one nearest
    the region's centroid is taken (then the first in C order), so that the choice does not depend on the order in
    which the image's axes are stored.
    """
    depth = ndimage.distance_transform_edt(np.pad(region, 1), sampling=spacing)[(slice(1, -1),) * region.ndim]
    deepest = np.argwhere(depth >= depth.max() * (1 - 1e-9))  # equal depths may differ in the last bit
    centroid = np.argwhere(region).mean(axis=0)
    offsets = (deepest - centroid) * np.asarray(spacing, dtype=np.float64)
    return tuple(int(v) for v in deepest[np.argmin(np.einsum("ij,ij->i", offsets, offsets))])


def largest_component(mask: np.ndarray) -> Tuple[np.ndarray, int]:
    """The largest face-connected component of a boolean mask and its voxel count (empty mask: all False, 0)."""
    components, count = ndimage.label(mask)
    if count == 0:
        return np.zeros_like(mask, dtype=bool), 0
    sizes = np.bincount(components.ravel())[1:]
    return components == int(np.argmax(sizes)) + 1, int(sizes.max())


def next_click(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float], organ: str) -> Optional[Click]:
    """The corrective click for one organ, or ``None`` when the prediction has no error left.

    Args:
        reference: boolean mask of the organ in the reference label.
        prediction: boolean mask of the organ in the model's answer (same grid).
        spacing: voxel spacing in mm along the array axes (see :func:`voxel_spacing`).
        organ: the organ's label name (the click's label for a missed region).

    Returns:
        A click at the deepest voxel of the largest error component, missed (``organ``) or false (``background``);
        a missed region wins a tie in size.
    """
    missed, missed_size = largest_component(reference & ~prediction)
    false, false_size = largest_component(prediction & ~reference)
    if missed_size == 0 and false_size == 0:
        return None
    if missed_size >= false_size:
        return Click(organ, deepest_voxel(missed, spacing), MISSED, missed_size)
    return Click(BACKGROUND, deepest_voxel(false, spacing), FALSE, false_size)


def dice(reference: np.ndarray, prediction: np.ndarray) -> float:
    """Dice of two boolean masks (MONAI's ``compute_dice``; 1.0 when both are empty)."""
    as_batch = [torch.as_tensor(mask[None, None], dtype=torch.float32) for mask in (prediction, reference)]
    return float(compute_dice(*as_batch, include_background=True, ignore_empty=False).item())


def clicks_to_reach(curve: Sequence[float], threshold: float) -> Optional[int]:
    """The first click count (0 = the automatic answer) whose Dice reaches ``threshold``; ``None`` if none does."""
    return next((count for count, value in enumerate(curve) if value >= threshold), None)


@dataclass(frozen=True)
class ServedModel:
    """What ``/info/`` says about one model: its type (``deepedit``, ``segmentation``...) and ``{label: value}``."""

    name: str
    type: str
    labels: Dict[str, int]

    @property
    def takes_clicks(self) -> bool:
        return self.type == DEEPEDIT


def served_models(info: dict, models: Optional[Sequence[str]]) -> List[ServedModel]:
    """The models asked for (default: all) as the server lists them.

    Raises:
        ValueError: a model the server does not serve (the message lists those it does).
    """
    available = info.get("models", {})
    names = list(models) if models else list(available)
    unknown = [name for name in names if name not in available]
    if unknown or not names:
        raise ValueError(f"model(s) {unknown or names} not served; the server serves: {', '.join(available) or 'none'}")
    return [
        ServedModel(name, available[name]["type"], {k.lower(): int(v) for k, v in available[name]["labels"].items()})
        for name in names
    ]


def request_keys(info: dict) -> List[str]:
    """The label names a Slicer request carries: every label of the app (``/info/`` ``labels``), background included."""
    labels = info.get("labels", [])
    names = [name.lower() for name in (labels if isinstance(labels, list) else labels.keys())]
    return list(dict.fromkeys(names + [BACKGROUND]))


def reference_files(folder: Path, image_ids: Sequence[str]) -> Dict[str, Path]:
    """``{image id: reference label file}`` of the ``<id>.nii.gz`` / ``<id>.nii`` files in ``folder``.

    Raises:
        ValueError: no such folder or file in it, or a reference whose id is not an image of the server.
    """
    if not folder.is_dir():
        raise ValueError(f"references: {folder} is not a folder")
    files = {}
    for path in sorted(folder.iterdir()):
        suffix = next((s for s in REFERENCE_SUFFIXES if path.name.endswith(s)), None)
        if suffix and path.is_file():
            files[path.name[: -len(suffix)]] = path
    if not files:
        raise ValueError(f"references: no .nii.gz or .nii files in {folder}")
    missing = [f"{files[i].name} (id {i!r})" for i in files if i not in image_ids]
    if missing:
        raise ValueError(
            f"references without an image of that id on the server: {', '.join(missing)}; "
            f"the server's images: {', '.join(sorted(image_ids)) or 'none'}"
        )
    return files


@dataclass(frozen=True)
class Reference:
    """A reference label file, checked: its image id, grid and the label values it holds."""

    image_id: str
    path: Path
    shape: Tuple[int, ...]
    affine: np.ndarray
    present: frozenset

    def load(self) -> np.ndarray:
        """The label values, as stored."""
        return np.asarray(nib.load(str(self.path)).dataobj)


def read_reference(image_id: str, path: Path) -> Reference:
    """Checks a reference label (a 3D volume of whole numbers) and notes the values it holds.

    Raises:
        ValueError: not 3D, or values that are not whole numbers (the message names the file).
    """
    image = nib.load(str(path))
    if len(image.shape) != 3:
        raise ValueError(f"reference {path}: expected a 3D label volume, got shape {image.shape}")
    values = np.asarray(image.dataobj)
    if not np.array_equal(values, np.round(values)):
        raise ValueError(f"reference {path}: label values must be whole numbers (a label map, not an image)")
    present = frozenset(np.unique(values).astype(int).tolist())
    return Reference(image_id, path, tuple(image.shape), np.asarray(image.affine), present)


def organs_to_measure(model: ServedModel, present: frozenset, organs: Optional[Sequence[str]]) -> Dict[str, int]:
    """``{organ: value}`` of the model measured on one reference: ``organs`` (default: every label of the model
    other than background), kept where the reference holds that value (``present``)."""
    names = [o.lower() for o in organs] if organs else [n for n in model.labels if n != BACKGROUND]
    return {name: model.labels[name] for name in names if model.labels[name] in present}


def check_organs(models: Sequence[ServedModel], organs: Optional[Sequence[str]]) -> None:
    """Raises ValueError naming the model and the labels it has if an organ asked for is not one of its labels."""
    for model in models:
        unknown = [o for o in organs or () if o.lower() not in model.labels or o.lower() == BACKGROUND]
        if unknown:
            raise ValueError(f"organ(s) {unknown} are not labels of model {model.name!r}: {', '.join(model.labels)}")


class Annotator:
    """Sends one model's requests for one image as Slicer does and reads the answers on the reference's grid.

    Args:
        client: the server's client.
        keys: the label names every request carries (:func:`request_keys`).
        reference: the image's reference label (its grid is the image's), loaded once here.
    """

    def __init__(self, client: MONAILabelClient, keys: Sequence[str], reference: Reference) -> None:
        self.client, self.keys, self.reference = client, list(keys), reference
        self.image_id = reference.image_id
        self.values = reference.load()
        self.spacing = voxel_spacing(reference.affine)

    def ask(self, model: str, organ: str, clicks: Sequence[Click]) -> Tuple[np.ndarray, dict]:
        """The model's label for ``clicks`` (all clicks so far) and the call's times (client wall, server total).

        The answer the client saves is deleted once read.
        """
        params = {key: [list(c.voxel) for c in clicks if c.label == key] for key in self.keys}
        params["label"] = organ
        start = time.perf_counter()
        label_file, result = self.client.infer(model, self.image_id, params)
        seconds = time.perf_counter() - start
        if not label_file:
            raise ValueError(f"model {model!r} returned no label for image {self.image_id!r}: {result}")
        try:
            answer = nib.load(label_file)
            values = np.asarray(answer.dataobj)
        finally:
            Path(label_file).unlink(missing_ok=True)
        if values.shape != self.reference.shape or not np.allclose(answer.affine, self.reference.affine, atol=1e-3):
            raise ValueError(
                f"image {self.image_id!r}: model {model!r} answered on a grid (shape {values.shape}) other than the "
                f"reference's (shape {self.reference.shape}, affine {self.reference.affine.tolist()}); "
                "the reference must lie on the image's voxel grid"
            )
        server = (result or {}).get("latencies", {}).get("total")
        return values, {"client_s": seconds, "server_s": None if server is None else float(server)}


def annotate(annotator: Annotator, model: ServedModel, organ: str, value: int, max_clicks: int) -> dict:
    """Dice after 0..max_clicks clicks of one (image, model, organ).

    A model that takes no clicks (not ``deepedit``) is asked once, without clicks, and that Dice is carried to
    every click count. When no error is left the Dice is carried too, without asking again.
    """
    reference = annotator.values == value
    clicks: List[Click] = []
    calls = []
    labels, times = annotator.ask(model.name, organ, clicks)
    curve = [dice(reference, labels == value)]
    calls.append({"clicks": 0, **times})
    while len(curve) <= max_clicks:
        click = next_click(reference, labels == value, annotator.spacing, organ) if model.takes_clicks else None
        if click is None:
            curve.append(curve[-1])
            continue
        clicks.append(click)
        labels, times = annotator.ask(model.name, organ, clicks)
        curve.append(dice(reference, labels == value))
        calls.append({"clicks": len(clicks), **times})
    return {
        "image": annotator.image_id,
        "model": model.name,
        "organ": organ,
        "value": value,
        "dice": curve,
        "clicks": [asdict(c) for c in clicks],
        "calls": calls,
        "reference_voxels": int(reference.sum()),
    }


def run_annotator(
    server_url: str, references: Path, models: Optional[Sequence[str]], organs: Optional[Sequence[str]], max_clicks: int
) -> dict:
    """Every (image, model, organ) of the references through the server; returns the settings and the records.

    Raises:
        ValueError: bad input (no server, unknown model or organ, bad reference), before any inference.
    """
    if max_clicks < 1:
        raise ValueError(f"max_clicks must be at least 1, got {max_clicks}")
    with tempfile.TemporaryDirectory(prefix="rep3d_clicks_") as tmpdir:
        client = MONAILabelClient(server_url, tmpdir=tmpdir)
        try:
            info = client.info()
            image_ids = list(client.datastore().get("objects", {}))
        except Exception as error:
            raise ValueError(f"no MONAI Label server answers at {server_url}: {error}") from error
        chosen = served_models(info, models)
        check_organs(chosen, organs)
        keys = request_keys(info)
        files = reference_files(references, image_ids)
        labels = [read_reference(image_id, path) for image_id, path in files.items()]
        plan = {
            (label.image_id, model.name): organs_to_measure(model, label.present, organs)
            for label in labels
            for model in chosen
        }
        if not any(plan.values()):
            raise ValueError(f"none of the organs asked for occurs in the references in {references}")
        records = []
        for label in labels:
            annotator = Annotator(client, keys, label)
            for model in chosen:
                for organ, value in plan[(label.image_id, model.name)].items():
                    record = annotate(annotator, model, organ, value, max_clicks)
                    curve = " ".join(f"{d:.3f}" for d in record["dice"])
                    print(f"[clicks] {model.name} {label.image_id} {organ}: Dice {curve}", flush=True)
                    records.append(record)
    asked = {o.lower() for o in organs or ()}
    skipped = {f"{image_id} / {model}": sorted(asked - set(found)) for (image_id, model), found in plan.items()}
    return {
        "server_url": server_url,
        "references": str(references),
        "max_clicks": max_clicks,
        "models": {model.name: {"type": model.type, "takes_clicks": model.takes_clicks} for model in chosen},
        "request_keys": keys,
        "absent_from_reference": {pair: names for pair, names in skipped.items() if names},
        "records": records,
    }
