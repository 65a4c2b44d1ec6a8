"""Uncertainty for active learning: ``entropy_<model>`` scoring (``/scoring/``) and strategy (``/activelearning/``).

The score of an image is the mean softmax entropy of the served model's output, divided by ``log(num_classes)``
(0: every voxel certain, 1: every voxel uniform over the classes). It is averaged over the voxels of the network's
output grid, which for the automatic bundles is the bundle's foreground crop (``CropForegroundd`` of its
preprocessing, on the bundle's grid): the output stays there, it is never inverted to the image grid.

Scores live in the datastore's image info, one entry per method, with the ``st_mtime_ns`` of the ``model.pt``
they were computed with: new weights (a training run) make every score stale, and the strategy ignores stale scores.
"""

import logging
import math
import os
import time
from typing import Any, Dict, Optional

import torch
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy

from lib.bundles import weights_path
from lib.infer import NETWORK_OUTPUT, Rep3DInferTask

logger = logging.getLogger(__name__)

PREFIX = "entropy_"
CHUNK_VOXELS = 1 << 20
"""Voxels per step of the entropy sum: one step holds ``num_classes x CHUNK_VOXELS`` floats (64 MB for 16 classes)."""


def method_name(model: str) -> str:
    """The scoring method and strategy name of a model: ``entropy_<model>``."""
    return f"{PREFIX}{model}"


def weights_version(bundle: str) -> Optional[int]:
    """``st_mtime_ns`` of the bundle's ``models/model.pt``, or None while it is untrained."""
    try:
        return os.stat(weights_path(bundle)).st_mtime_ns
    except FileNotFoundError:
        return None


def current_score(image_info: Dict[str, Any], method: str, version: Optional[int]) -> Optional[float]:
    """The image's ``method`` score if it was computed with the weights ``version``, else None."""
    entry = image_info.get(method)
    if version is None or not isinstance(entry, dict) or entry.get("model_mtime_ns") != version:
        return None
    return entry.get("entropy")


def normalised_mean_entropy(logits: torch.Tensor) -> float:
    """Mean over voxels of the softmax entropy of ``logits`` ``(C, *spatial)``, divided by ``log C``.

    Summed in chunks of :data:`CHUNK_VOXELS` voxels, so that memory beyond the logits stays bounded (MONAI has no
    entropy metric; ``log_softmax`` keeps ``p log p`` finite where a probability underflows to 0).
    """
    num_classes = logits.shape[0]
    if num_classes < 2:
        raise ValueError(f"entropy needs at least 2 output channels, got {num_classes}")
    flat = logits.reshape(num_classes, -1)
    total = 0.0
    for start in range(0, flat.shape[1], CHUNK_VOXELS):
        log_p = torch.log_softmax(flat[:, start : start + CHUNK_VOXELS].float(), dim=0)
        total -= float((log_p.exp() * log_p).sum())
    return total / (flat.shape[1] * math.log(num_classes))


def untrained_error(model: str, bundle: str) -> MONAILabelException:
    return MONAILabelException(
        MONAILabelError.INVALID_INPUT,
        f"Model '{model}' is untrained ({weights_path(bundle)} does not exist): train it, then run "
        f"POST /scoring/{method_name(model)}.",
    )


class EntropyScoring(ScoringMethod):
    """Scores every unlabelled image with the served model (see the module docstring); ``/scoring/entropy_<model>``.

    Each image runs through the model's own infer task (same preprocessing, sliding window, precision, weights),
    which returns the network's output on the bundle's grid instead of a label (:data:`lib.infer.NETWORK_OUTPUT`).
    Images already scored with the current weights are skipped; a score whose weights changed while it was computed
    is not stored; an image the model refuses (unreadable, 2D...) is logged and counted as ``failed``. Returns the
    counts (``total`` unlabelled, ``skipped``, ``scored``, ``stale``, ``failed``) and ``seconds``. Request options:
    ``device`` (default: the infer task's).

    Args:
        model: the served model (bundle name).
        infer_task: its infer task.
    """

    def __init__(self, model: str, infer_task: Rep3DInferTask) -> None:
        super().__init__(f"Mean softmax entropy of '{model}' per unlabelled image (stored for {method_name(model)})")
        self.model = model
        self.method = method_name(model)
        self.infer_task = infer_task

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Dict[str, Any]:
        bundle = self.infer_task.bundle_path
        version = weights_version(bundle)
        if version is None:
            raise untrained_error(self.model, bundle)
        start = time.time()
        summary = {"total": 0, "skipped": 0, "scored": 0, "stale": 0, "failed": 0}
        for image_id in datastore.get_unlabeled_images():
            summary["total"] += 1
            if current_score(datastore.get_image_info(image_id), self.method, version) is not None:
                summary["skipped"] += 1
                continue
            try:
                entry = self.score_image(datastore.get_image_uri(image_id), request)
            except MONAILabelException as error:  # an unusable image (INVALID_INPUT): the others are still scored
                logger.error(f"{self.method}: {image_id} not scored: {error.msg}")
                summary["failed"] += 1
                continue
            if weights_version(bundle) != version:  # the network may have been reloaded mid-way: keep nothing
                logger.info(f"{self.method}: {image_id}: weights changed while scoring; not stored")
                summary["stale"] += 1
                continue
            datastore.update_image_info(image_id, {self.method: {**entry, "model_mtime_ns": version}})
            summary["scored"] += 1
        summary["seconds"] = round(time.time() - start, 2)
        logger.info(f"{self.method}: {summary}")
        return summary

    def score_image(self, image: str, request: Dict[str, Any]) -> Dict[str, Any]:
        """``{"entropy", "voxels", "seconds", "ts"}`` of one image file."""
        start = time.time()
        infer_request = {"image": image, NETWORK_OUTPUT: True, "logging": "warning"}
        if request.get("device"):
            infer_request["device"] = request["device"]
        _, data = self.infer_task(infer_request)
        logits = data[self.infer_task.output_label_key]
        logits = logits.as_tensor() if hasattr(logits, "as_tensor") else torch.as_tensor(logits)
        entropy = normalised_mean_entropy(logits)
        entry = {
            "entropy": entropy,
            "voxels": int(logits[0].numel()),
            "seconds": round(time.time() - start, 2),
            "ts": int(time.time()),
        }
        logger.info(f"{self.method}: {os.path.basename(image)}: {entry}")
        return entry


class EntropyStrategy(Strategy):
    """Next sample: the unlabelled image with the highest ``entropy_<model>`` score for the current weights.

    Unlabelled images without a current score are passed over (logged). With no current score at all the request
    is refused (``INVALID_INPUT``, HTTP 400 from the app) with the ``/scoring/`` call to make first.

    Args:
        model: the served model (bundle name).
        bundle: its bundle folder.
    """

    def __init__(self, model: str, bundle: str) -> None:
        super().__init__(f"Highest mean softmax entropy of '{model}' (run POST /scoring/{method_name(model)} first)")
        self.model = model
        self.method = method_name(model)
        self.bundle = bundle

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Optional[Dict[str, Any]]:
        datastore.refresh()  # scores are written by the scoring process: read its latest datastore file
        images = datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels"))
        if not images:
            return None
        version = weights_version(self.bundle)
        if version is None:
            raise untrained_error(self.model, self.bundle)
        scores = {image: current_score(datastore.get_image_info(image), self.method, version) for image in images}
        scores = {image: score for image, score in scores.items() if score is not None}
        if not scores:
            raise MONAILabelException(
                MONAILabelError.INVALID_INPUT,
                f"No {self.method} scores for the current weights of '{self.model}' ({len(images)} unlabelled "
                f"images; new weights make earlier scores stale): run POST /scoring/{self.method} first.",
            )
        image = max(scores, key=scores.get)
        logger.info(
            f"{self.method}: picked {image} ({scores[image]:.4f}); {len(images) - len(scores)} of "
            f"{len(images)} unlabelled images have no score for the current weights"
        )
        return {"id": image, "entropy": scores[image]}
