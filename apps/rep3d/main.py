"""MONAI Label app serving the Rep3D bundles (``bundles/<name>/``) to 3D Slicer; see ``docs/monailabel.md``.

Options (``--conf key value``):

* ``models``: comma-separated bundle names, or ``all`` (default).
* ``bundles_dir``: folder holding the bundles (default: the repository's ``bundles/``, two levels above this app).
* ``device``: ``cpu`` or ``cuda`` (default: CUDA when available).
* ``preload``: ``true`` to load the networks at start-up (upstream ``BundleInferTask`` option).
"""

import logging
import os
from typing import Dict

from fastapi import HTTPException
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

import rep3d_networks
from lib.bundles import default_bundles_dir, select_bundles
from lib.datastore import Rep3DDatastore, check_infer_image
from lib.device import default_device
from lib.tasks import make_infer_task, make_train_task

logger = logging.getLogger(__name__)


class Rep3DApp(MONAILabelApp):
    """One inference and one training task per selected bundle (DeepEdit bundles: click-guided, type ``deepedit``),
    and the ``random`` / ``first`` strategies."""

    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]) -> None:
        bundles_dir = os.path.realpath(conf.get("bundles_dir") or default_bundles_dir(app_dir))
        self.bundles = select_bundles(bundles_dir, conf.get("models", "all"))
        self.device = default_device(conf)
        logger.info(f"Rep3D bundles from {bundles_dir}: {list(self.bundles)}; default device: {self.device}")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="Rep3D",
            description="Rep3D abdominal CT/MRI segmentation (MONAI bundles)",
            version=rep3d_networks.__version__,
        )

    def init_infers(self) -> Dict[str, InferTask]:
        return {name: make_infer_task(path, self.conf, self.device) for name, path in self.bundles.items()}

    def init_trainers(self) -> Dict[str, TrainTask]:
        trainers = {name: make_train_task(path, self.conf, self.device) for name, path in self.bundles.items()}
        return {name: task for name, task in trainers.items() if task.is_valid()}

    def init_strategies(self) -> Dict[str, Strategy]:
        return {"random": Random(), "first": First()}

    def init_datastore(self) -> Datastore:
        """A local studies folder gets ``Rep3DDatastore`` (checked ids, uploads and labels); remote ones upstream's."""
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        return Rep3DDatastore(
            self.studies,
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def infer(self, request, datastore=None):
        """Upstream ``infer`` on a checked image id; a MONAI Label error (e.g. an untrained model) reaches the client
        with its message."""
        check_infer_image(request, datastore or self.datastore())
        try:
            return super().infer(request, datastore)
        except MONAILabelException as error:
            raise HTTPException(status_code=400, detail=error.msg) from error
