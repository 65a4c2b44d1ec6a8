"""Training task: fine-tunes one Rep3D bundle on the labels saved in the datastore (``BundleTrainTask``)."""

import logging
from typing import Any, Dict

from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.bundle import BundleTrainTask

from lib.bundles import has_weights
from lib.device import device_choices

logger = logging.getLogger(__name__)

ITERATION_KEYS = ("max_iterations", "val_interval")
"""Top-level ``train.json`` keys, counted in iterations, that a train request may set."""


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

    def config(self) -> Dict[str, Any]:
        options = super().config()
        options.pop("max_epochs", None)
        options.pop("multi_gpu", None)
        options["device"] = device_choices(self.device)
        options.update({key: self.bundle_config.get(key) for key in ITERATION_KEYS})
        return options

    def __call__(self, request: Dict[str, Any], datastore: Datastore):
        request = {"device": self.device, **request, "multi_gpu": False}
        return super().__call__(request, datastore)

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
        logger.info(f"Bundle overrides: { {k: v for k, v in overrides.items() if not k.endswith('#data')} }")
        super().run_single_gpu(request, overrides)
