"""Picks the task classes for a bundle: click-guided (DeepEdit) bundles get the DeepEdit tasks."""

from typing import Dict

from lib.deepedit import Rep3DDeepEditInferTask, Rep3DDeepEditTrainTask, is_deepedit
from lib.infer import Rep3DInferTask
from lib.train import Rep3DTrainTask


def make_infer_task(bundle: str, conf: Dict[str, str], device: str) -> Rep3DInferTask:
    """The inference task for ``bundle``: type ``deepedit`` for a DeepEdit bundle, ``segmentation`` otherwise."""
    task = Rep3DDeepEditInferTask if is_deepedit(bundle) else Rep3DInferTask
    return task(bundle, conf, device)


def make_train_task(bundle: str, conf: Dict[str, str], device: str) -> Rep3DTrainTask:
    """The training task for ``bundle`` (the DeepEdit one also offers the click-simulation probabilities)."""
    task = Rep3DDeepEditTrainTask if is_deepedit(bundle) else Rep3DTrainTask
    return task(bundle, conf, device)
