"""Training task: fine-tunes one Rep3D bundle on the labels saved in the datastore (``BundleTrainTask``)."""

import glob
import json
import logging
import os
from typing import Any, Dict

from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.bundle import BundleTrainTask
from monailabel.utils.others.generic import strtobool

from lib.bundles import has_weights
from lib.device import device_choices
from rep3d_networks.handlers import TrainingStats, resume_checkpoint

logger = logging.getLogger(__name__)

STATS_FILE = os.path.join("models", "train_stats.json")
"""Where a training run of the app writes its progress, in the bundle folder (read by ``Rep3DTrainTask.stats``)."""

ITERATION_KEYS = ("max_iterations", "val_interval", "checkpoint_interval")
"""Top-level ``train.json`` keys, counted in iterations, that a train request may set."""

RESUME = "resume"
"""Train option and ``train.json`` key: continue the interrupted run from its last resume checkpoint."""


class Rep3DTrainTask(BundleTrainTask):
    """Runs the bundle's ``configs/train.json`` (``monai.bundle.run``) on the datastore's ``final`` labels.

    MONAI Label starts it in a background process per ``/train/<model>`` request; the bundle's ``CheckpointSaver``
    writes ``<bundle>/models/model.pt``.

    Differences from ``BundleTrainTask``:

    * Length is counted in iterations, as in the bundles: the request's ``max_iterations`` / ``val_interval``
      override the bundle keys of the same name, and upstream's ``train#trainer#max_epochs`` override is dropped
      (the bundle derives ``max_epochs`` from them; an "epoch" there is ``val_interval`` iterations).
    * With too few labels for a validation split, validation runs on the training images, so that the bundle's
      key-metric ``CheckpointSaver`` still writes ``models/model.pt`` (which inference then reloads).
    * ``pretrained: false`` works (upstream calls ``os.path.exists(None)``) and the checkpoint loads strictly.
    * ``stats()`` (the ``train_stats`` of ``/info``, which 3D Slicer shows as training progress and accuracy) is
      written while training runs by :class:`TrainingStats`, added to the bundle's ``train#handlers``.
    * ``checkpoint_interval`` and ``resume`` are train options: the bundle writes a resume checkpoint (network,
      optimizer, scheduler, trainer state; atomically) every ``checkpoint_interval`` iterations to
      ``models/resume``; ``resume: true`` continues the interrupted run from the newest one (its own length and
      schedule: ignite restores ``max_epochs`` and the iteration) instead of starting from ``models/model.pt``.
      Without a checkpoint the run is refused with a message saying so. A run without ``resume`` deletes the
      checkpoints of the earlier run first, so that ``resume`` always means the latest run.
    * A ``max_iterations`` below ``val_interval`` lowers ``val_interval`` to it (the bundle's epoch is
      ``val_interval`` iterations long, so the run would otherwise train ``val_interval`` iterations).
    * Single process only (no ``multi_gpu`` option): upstream's ``torchrun`` path writes its overrides to a config
      file that the iteration overrides (added in ``run_single_gpu``) would not reach; ``multi_gpu_train.json``
      is not used.

    Args:
        bundle: path of the bundle folder.
        conf: the app's ``--conf`` options.
        device: default device (``--conf device``).
    """

    def __init__(self, bundle: str, conf: Dict[str, str], device: str) -> None:
        super().__init__(bundle, conf, load_strict=True)
        self.device = device

    def info(self) -> Dict[str, Any]:
        info = super().info()
        info["trained"] = has_weights(self.bundle_path)
        if not info["trained"]:
            info["description"] = f"UNTRAINED (no models/model.pt yet). {self.description}"
        return info

    def stats(self) -> Dict[str, Any]:
        """The latest progress of this bundle's training (``{}`` before the first run), see :class:`TrainingStats`."""
        path = os.path.join(self.bundle_path, STATS_FILE)
        try:
            with open(path) as stream:
                return json.load(stream)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            logger.warning(f"Cannot read training progress {path}: {error}")
            return {}

    def _update_overrides(self, overrides: Dict[str, Any]) -> None:
        handlers = overrides.get(self.const.key_train_handlers())
        handlers = list(
            handlers if handlers is not None else self.bundle_config.get(self.const.key_train_handlers(), [])
        )
        stats = f"{TrainingStats.__module__}.{TrainingStats.__name__}"
        handlers.append(
            {
                "_target_": stats,
                "path": os.path.join(self.bundle_path, STATS_FILE),
                "evaluator": "@validate#evaluator",
                "meta": "@_meta_",
            }
        )
        overrides[self.const.key_train_handlers()] = handlers

    def config(self) -> Dict[str, Any]:
        options = super().config()
        options.pop("max_epochs", None)
        options.pop("multi_gpu", None)
        options["device"] = device_choices(self.device)
        options.update({key: self.bundle_config.get(key) for key in ITERATION_KEYS})
        options[RESUME] = False
        return options

    def resume_dir(self) -> str:
        """The bundle's ``resume_dir`` (``models/resume``), where its resume checkpoints are written."""
        return self.bundle_config.get_parsed_content("resume_dir")

    def __call__(self, request: Dict[str, Any], datastore: Datastore):
        request = {"device": self.device, **request, "multi_gpu": False}
        stale = os.path.join(self.bundle_path, STATS_FILE)
        if os.path.exists(stale):  # the previous run's progress is not this run's
            os.remove(stale)
        resume = strtobool(request.get(RESUME, False))
        if resume:
            checkpoint = self._resume_checkpoint()
            logger.info(f"Resuming from {checkpoint}")
            request["pretrained"] = False  # the resume checkpoint holds the network's weights
        else:
            for old in glob.glob(os.path.join(self.resume_dir(), "*.pt")):  # an abandoned run's: resume means ours
                os.remove(old)
        return super().__call__({**request, RESUME: resume}, datastore)

    def _resume_checkpoint(self) -> str:
        """The newest resume checkpoint (``rep3d_networks.handlers.resume_checkpoint``).

        Raises:
            ValueError: there is none; the message says what to do instead.
        """
        try:
            return resume_checkpoint(self.resume_dir(), True)
        except FileNotFoundError as error:
            name = os.path.basename(self.bundle_path)
            message = (
                f"Model '{name}': resume requested, but there is no checkpoint to resume from in {self.resume_dir()} "
                f"(a run writes one every checkpoint_interval iterations; a run without resume deletes the earlier "
                f"run's). Train without resume: pretrained: true continues from the current weights."
            )
            logger.error(message)
            raise ValueError(message) from error

    def _partition_datalist(self, datalist, request, shuffle=False):
        train, val = super()._partition_datalist(datalist, request, shuffle)
        if val is not None and not val:
            logger.warning("Too few labelled images for a validation split: validating on the training images")
            val = train
        return train, val

    def _load_checkpoint(self, model_pytorch, pretrained, train_handlers):
        if pretrained:
            super()._load_checkpoint(model_pytorch, pretrained, train_handlers)

    def run_single_gpu(self, request, overrides):
        overrides = {k: v for k, v in overrides.items() if k != self.const.key_train_trainer_max_epochs()}
        overrides.update({key: int(request[key]) for key in ITERATION_KEYS if request.get(key) is not None})
        iterations = overrides.get("max_iterations", self.bundle_config.get("max_iterations"))
        if iterations < overrides.get("val_interval", self.bundle_config.get("val_interval")):
            logger.info(f"val_interval lowered to max_iterations={iterations}")
            overrides["val_interval"] = iterations
        overrides[RESUME] = request[RESUME]
        logger.info(f"Bundle overrides: { {k: v for k, v in overrides.items() if not k.endswith('#data')} }")
        super().run_single_gpu(request, overrides)
