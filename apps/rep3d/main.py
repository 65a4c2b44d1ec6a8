"""MONAI Label app serving the Rep3D bundles (``bundles/<name>/``) to 3D Slicer; see ``docs/monailabel.md``.

Options (``--conf key value``):

* ``models``: comma-separated bundle names, or ``all`` (default).
* ``bundles_dir``: folder holding the bundles (default: the repository's ``bundles/``, two levels above this app).
* ``device``: ``cpu`` or ``cuda`` (default: CUDA when available).
* ``preload``: ``true`` to load the networks at start-up (upstream ``BundleInferTask`` option).
* ``auto_scoring``: ``true`` to run ``/scoring/entropy_<model>`` after each finished training of ``<model>``
  (default ``false``).
"""

import logging
import os
from contextlib import contextmanager
from typing import Dict, Iterator

from fastapi import HTTPException
from lib.bundles import default_bundles_dir, label_names, read_metadata, select_bundles
from lib.datastore import Rep3DDatastore, check_infer_image
from lib.device import default_device
from lib.dicomweb import Rep3DDICOMwebDatastore, dcmqi_bin
from lib.infer import NETWORK_OUTPUT
from lib.scoring import method_name
from lib.tasks import make_entropy_strategies, make_infer_task, make_scoring_methods, make_train_task
from lib.viewer_proxy import forward_viewer_accept_header
from monailabel.config import settings
from monailabel.datastore.dicom import DICOMWebDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.utils.others.generic import strtobool

import rep3d_networks

logger = logging.getLogger(__name__)


@contextmanager
def client_errors() -> Iterator[None]:
    """A MONAI Label error raised by a task (e.g. an untrained model) reaches the client as HTTP 400 with its
    message, not as a bare 500."""
    try:
        yield
    except MONAILabelException as error:
        raise HTTPException(status_code=400, detail=error.msg) from error


class Rep3DApp(MONAILabelApp):
    """One inference and one training task per selected bundle (DeepEdit bundles: click-guided, type ``deepedit``),
    the ``random`` / ``first`` strategies, and per automatic bundle the ``entropy_<model>`` scoring and strategy."""

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
        # upstream's MONAI_LABEL_AUTO_UPDATE_SCORING (default on) would score at start-up and on every next-sample
        # request; here scoring runs when asked, or after training with --conf auto_scoring true (see train)
        self._auto_update_scoring = False
        self.auto_scoring = strtobool(conf.get("auto_scoring", "false"))

    def init_infers(self) -> Dict[str, InferTask]:
        return {name: make_infer_task(path, self.conf, self.device) for name, path in self.bundles.items()}

    def init_trainers(self) -> Dict[str, TrainTask]:
        trainers = {name: make_train_task(path, self.conf, self.device) for name, path in self.bundles.items()}
        return {name: task for name, task in trainers.items() if task.is_valid()}

    def init_strategies(self) -> Dict[str, Strategy]:
        return {"random": Random(), "first": First(), **make_entropy_strategies(self._infers)}

    def init_scoring_methods(self) -> Dict[str, ScoringMethod]:
        return make_scoring_methods(self._infers)

    def init_datastore(self) -> Datastore:
        """A local studies folder gets ``Rep3DDatastore`` (checked ids, uploads and labels), a DICOMweb URL
        ``Rep3DDICOMwebDatastore`` (the same checks, exact label values in DICOM SEG; ``docs/pacs.md``) on the client
        and cache upstream builds from its settings; other remote datastores (XNAT, DSA) are upstream's."""
        if self.studies.startswith(("http://", "https://")):
            os.environ["PATH"] = os.pathsep.join([dcmqi_bin(), os.environ.get("PATH", "")])  # upstream runs it by name
            forward_viewer_accept_header()  # OHIF reads compressed series through upstream's proxy
            upstream = super().init_datastore()
            if not isinstance(upstream, DICOMWebDatastore):
                return upstream
            classes = {
                name: {v: n for n, v in label_names(read_metadata(path)).items()} for name, path in self.bundles.items()
            }
            return Rep3DDICOMwebDatastore.from_upstream(upstream, classes)
        return Rep3DDatastore(
            self.studies,
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def infer(self, request, datastore=None):
        """Upstream ``infer`` on a checked image id; task errors as :func:`client_errors`."""
        check_infer_image(request, datastore or self.datastore())
        if request.get(NETWORK_OUTPUT):
            raise HTTPException(status_code=400, detail=f"'{NETWORK_OUTPUT}' is the app's own scoring option")
        with client_errors():
            return super().infer(request, datastore)

    def next_sample(self, request):
        """Upstream ``next_sample``; a strategy's refusal (``entropy_*`` without scores) as :func:`client_errors`."""
        with client_errors():
            return super().next_sample(request)

    def train(self, request):
        """Upstream ``train`` (run in the training process), then, with ``--conf auto_scoring true``, the model's
        ``entropy_<model>`` scoring, started on the server (upstream ``async_scoring``: ``POST /scoring/...``)."""
        result = super().train(request)
        method = method_name(request.get("model", ""))
        if self.auto_scoring and method in self._scoring_methods:
            logger.info(f"auto_scoring: starting {method} for the new weights")
            self.async_scoring(method)
        return result
