"""Ignite handler that writes a training run's progress to a JSON file for MONAI Label's ``/info`` ``train_stats``."""

import json
import logging
import math
import os
import tempfile
import time
from typing import Any, Dict, Mapping, Optional

import numpy as np
import torch
from ignite.engine import Engine, Events

from rep3d_networks.evaluation.summary import class_names_from_meta

logger = logging.getLogger(__name__)


def json_safe(value: Any) -> Any:
    """``value`` with tensors as lists and NaN / infinity as None (the server's JSON responses refuse them)."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return json_safe(np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value).tolist())
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def dataset_size(engine: Optional[Engine]) -> Optional[int]:
    """Number of items in the dataset of a MONAI workflow's data loader (None without one)."""
    dataset = getattr(getattr(engine, "data_loader", None), "dataset", None)
    return len(dataset) if dataset is not None else None


class TrainingStats:
    """Writes a training run's progress to a JSON file while it runs, for MONAI Label's ``/info`` ``train_stats``.

    The content is MONAI Label's own ``prepare_stats`` (``epoch``, ``total_epochs``, ``best_metric``,
    ``current_time`` while running and ``total_time`` at the end, the metrics of both engines), which the 3D Slicer
    plugin reads for its training progress and accuracy bars, plus ``label_dice``: ``{class name: Dice}`` of the
    latest validation (from the key metric's per-case details) and ``num_train`` / ``num_val``: the images (labels)
    the run trains and validates on (its data loaders' datasets). The file is written at the start, after every
    validation and epoch, and at the end; atomically (temporary file, then ``os.replace``), so a reader never
    sees half of it. Failures are logged and never stop training. ``prepare_stats`` is imported when writing, so
    that this package imports where MONAI Label is not installed (the bundles' zip).

    Args:
        path: the JSON file.
        evaluator: the validation engine (``"@validate#evaluator"``).
        meta: bundle metadata (``"@_meta_"``), for the class names.
        include_background: whether the key metric includes channel 0.
    """

    def __init__(
        self,
        path: str,
        evaluator: Optional[Engine] = None,
        meta: Optional[Mapping] = None,
        include_background: bool = False,
    ) -> None:
        self.path = path
        self.evaluator = evaluator
        self.meta = meta
        self.include_background = include_background
        self.start_ts = time.time()
        self.trainer: Optional[Engine] = None

    def attach(self, engine: Engine) -> None:
        self.trainer = engine
        for event in (Events.STARTED, Events.EPOCH_COMPLETED, Events.COMPLETED):
            engine.add_event_handler(event, self.write)
        if self.evaluator is not None:
            self.evaluator.add_event_handler(Events.EPOCH_COMPLETED, self.write)

    def label_dice(self) -> Dict[str, Optional[float]]:
        """``{class name: mean Dice over the validation cases}`` of the latest validation (empty before one)."""
        state = getattr(self.evaluator, "state", None)
        details = (getattr(state, "metric_details", None) or {}).get(getattr(state, "key_metric_name", None))
        if details is None:
            return {}
        values = torch.as_tensor(details).detach().float().cpu().numpy()
        values = values.reshape(values.shape[0], -1)
        with np.errstate(all="ignore"):
            means = np.nanmean(np.where(np.isfinite(values), values, np.nan), axis=0)
        names = class_names_from_meta(self.meta, len(means), self.include_background)
        return dict(zip(names, means.tolist()))

    def write(self, _engine: Optional[Engine] = None) -> None:
        try:
            from monailabel.tasks.train.handler import prepare_stats

            stats = prepare_stats(self.start_ts, self.trainer, self.evaluator)
            stats["label_dice"] = self.label_dice()
            stats["num_train"] = dataset_size(self.trainer)
            stats["num_val"] = dataset_size(self.evaluator)
            folder = os.path.dirname(self.path) or "."
            os.makedirs(folder, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as stream:
                json.dump(json_safe(stats), stream, allow_nan=False)
            os.replace(stream.name, self.path)
        except Exception as error:  # progress is a side output: never stop training because of it
            logger.warning(f"TrainingStats: writing {self.path} failed ({type(error).__name__}: {error})")
