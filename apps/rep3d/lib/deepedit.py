"""Click-guided (DeepEdit) tasks for the Rep3D DeepEdit bundles (e.g. ``bundles/amos_ct_deepedit``).

A DeepEdit bundle's network takes the image plus one guidance channel per label (background included), and its
``configs/inference.json`` turns the clicks of a request into those channels with MONAI's DeepEdit transforms.
MONAI Label serves it as an infer task of type ``deepedit``, for which 3D Slicer shows its click tools; see
``docs/interactive.md``.
"""

import json
import logging
import os
from typing import Any, Dict

from monailabel.interfaces.tasks.infer_v2 import InferType

from lib.bundles import INFERENCE_CONFIG, read_metadata
from lib.infer import Rep3DInferTask
from lib.train import Rep3DTrainTask

logger = logging.getLogger(__name__)

LABEL_NAMES_KEY = "label_names"
"""Top-level key of a DeepEdit bundle's configs: ``{label name: value}``, background included (DeepEdit convention)."""

CLICK_KEYS = ("deepgrow_probability_train", "deepgrow_probability_val")
"""Top-level ``train.json`` keys (share of iterations with simulated clicks) that a train request may set."""
INTERACTIONS_KEY = "max_interactions"
"""Top-level ``train.json`` key (rounds of simulated clicks per click iteration) that a train request may set."""


def is_deepedit(bundle: str) -> bool:
    """Whether ``bundle`` is a DeepEdit bundle: its inference config defines ``label_names``."""
    with open(os.path.join(bundle, INFERENCE_CONFIG)) as fp:
        return LABEL_NAMES_KEY in json.load(fp)


def deepedit_labels(bundle: str) -> Dict[str, int]:
    """``{name: value}`` of all output channels, background included, lower-cased (as MONAI Label's DeepEdit tasks).

    Raises:
        ValueError: the ``label_names`` of ``configs/inference.json`` (the clicks the bundle reads) differ from the
            output channels in ``configs/metadata.json`` (the labels that Slicer is told about).
    """
    _, pred = next(iter(read_metadata(bundle)["network_data_format"]["outputs"].items()))
    labels = {name.lower(): int(value) for value, name in pred.get("channel_def", {}).items()}
    with open(os.path.join(bundle, INFERENCE_CONFIG)) as fp:
        config_labels = json.load(fp)[LABEL_NAMES_KEY]
    if {name.lower(): int(value) for name, value in config_labels.items()} != labels:
        raise ValueError(
            f"{bundle}: label_names in {INFERENCE_CONFIG} {config_labels} do not match the output channel_def of "
            f"configs/metadata.json {labels}"
        )
    return dict(sorted(labels.items(), key=lambda item: item[1]))


class Rep3DDeepEditInferTask(Rep3DInferTask):
    """Interactive segmentation with clicks (MONAI Label type ``deepedit``) from a DeepEdit bundle.

    Everything else is :class:`Rep3DInferTask` (weights reloaded when they change, untrained bundles refused with
    a clear error, ``uint8`` labels in the input geometry). The request carries the clicks as Slicer sends them:
    one key per label name (background included), each a list of ``[i, j, k]`` voxel indices of the image; a
    request without clicks gives the automatic segmentation.

    Args:
        bundle: path of the bundle folder.
        conf: the app's ``--conf`` options.
        device: default device (``--conf device``).
    """

    def __init__(self, bundle: str, conf: Dict[str, str], device: str) -> None:
        labels = deepedit_labels(bundle)
        super().__init__(bundle, conf, device)
        self.type = InferType.DEEPEDIT
        self.labels = labels


class Rep3DDeepEditTrainTask(Rep3DTrainTask):
    """:class:`Rep3DTrainTask` over a DeepEdit bundle, whose ``train.json`` simulates clicks while training.

    The train options also offer the bundle's ``deepgrow_probability_train`` / ``deepgrow_probability_val``: the
    share of training / validation iterations that get simulated clicks (the others train automatic mode), and
    ``max_interactions``: the rounds of simulated clicks per such iteration.
    """

    def config(self) -> Dict[str, Any]:
        options = super().config()
        options.update({key: self.bundle_config.get(key) for key in (*CLICK_KEYS, INTERACTIONS_KEY)})
        return options

    def run_single_gpu(self, request, overrides):
        for key in CLICK_KEYS:
            if request.get(key) is not None:
                value = float(request[key])
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"{key} must be within [0, 1], got {value}")
                overrides = {**overrides, key: value}
        if request.get(INTERACTIONS_KEY) is not None:
            interactions = int(request[INTERACTIONS_KEY])
            if interactions < 1:
                raise ValueError(f"{INTERACTIONS_KEY} must be >= 1, got {interactions}")
            overrides = {**overrides, INTERACTIONS_KEY: interactions}
        super().run_single_gpu(request, overrides)
