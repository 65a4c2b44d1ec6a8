"""Picks the task classes for a bundle: click-guided (DeepEdit) bundles get the DeepEdit tasks, automatic ones
an ``entropy_<model>`` scoring method and strategy."""

from typing import Dict

from monailabel.interfaces.tasks.infer_v2 import InferType

from lib.deepedit import Rep3DDeepEditInferTask, Rep3DDeepEditTrainTask, is_deepedit
from lib.infer import Rep3DInferTask
from lib.scoring import EntropyScoring, EntropyStrategy, method_name
from lib.train import Rep3DTrainTask


def make_infer_task(bundle: str, conf: Dict[str, str], device: str) -> Rep3DInferTask:
    """The inference task for ``bundle``: type ``deepedit`` for a DeepEdit bundle, ``segmentation`` otherwise."""
    task = Rep3DDeepEditInferTask if is_deepedit(bundle) else Rep3DInferTask
    return task(bundle, conf, device)


def make_train_task(bundle: str, conf: Dict[str, str], device: str) -> Rep3DTrainTask:
    """The training task for ``bundle`` (the DeepEdit one also offers the click-simulation probabilities)."""
    task = Rep3DDeepEditTrainTask if is_deepedit(bundle) else Rep3DTrainTask
    return task(bundle, conf, device)


def automatic(infers: Dict[str, Rep3DInferTask]) -> Dict[str, Rep3DInferTask]:
    """The infer tasks of the automatic (segmentation, not click-guided) models."""
    return {name: task for name, task in infers.items() if task.type == InferType.SEGMENTATION}


def make_scoring_methods(infers: Dict[str, Rep3DInferTask]) -> Dict[str, EntropyScoring]:
    """``{entropy_<model>: scoring}`` for each automatic model."""
    return {method_name(name): EntropyScoring(name, task) for name, task in automatic(infers).items()}


def make_entropy_strategies(infers: Dict[str, Rep3DInferTask]) -> Dict[str, EntropyStrategy]:
    """``{entropy_<model>: strategy}`` for each automatic model."""
    return {method_name(name): EntropyStrategy(name, task.bundle_path) for name, task in automatic(infers).items()}
