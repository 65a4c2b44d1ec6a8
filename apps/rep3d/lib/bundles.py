"""Finds the Rep3D bundles that the app serves and reads what it needs from them."""

import json
import os
from typing import Dict, List

INFERENCE_CONFIG = os.path.join("configs", "inference.json")
METADATA = os.path.join("configs", "metadata.json")
WEIGHTS = os.path.join("models", "model.pt")


def default_bundles_dir(app_dir: str) -> str:
    """The repository's ``bundles/`` folder, two levels above the app (``apps/rep3d`` → ``bundles``)."""
    return os.path.realpath(os.path.join(app_dir, "..", "..", "bundles"))


def available_bundles(bundles_dir: str) -> List[str]:
    """Names of the folders in ``bundles_dir`` that hold a bundle with an inference config, sorted."""
    if not os.path.isdir(bundles_dir):
        return []
    return sorted(
        name for name in os.listdir(bundles_dir) if os.path.isfile(os.path.join(bundles_dir, name, INFERENCE_CONFIG))
    )


def select_bundles(bundles_dir: str, models: str) -> Dict[str, str]:
    """Maps each model asked for in ``--conf models`` to its bundle folder.

    Args:
        bundles_dir: folder holding one sub-folder per bundle.
        models: comma-separated bundle names, or ``"all"``.

    Returns:
        ``{name: bundle path}`` in the order asked for (alphabetical for ``"all"``).

    Raises:
        ValueError: no model asked for, a name that is not a bundle in ``bundles_dir``, or no bundle at all;
            the message lists the bundles that are available.
    """
    available = available_bundles(bundles_dir)
    if not available:
        raise ValueError(f"No bundles (folders with {INFERENCE_CONFIG}) found in {bundles_dir}; set --conf bundles_dir")
    names = available if models.strip().lower() == "all" else [m.strip() for m in models.split(",") if m.strip()]
    unknown = [name for name in names if name not in available]
    if not names or unknown:
        raise ValueError(
            f"Unknown model(s) {unknown or repr(models)} in --conf models; "
            f"available in {bundles_dir}: {', '.join(available)} (or 'all')"
        )
    return {name: os.path.join(bundles_dir, name) for name in names}


def weights_path(bundle: str) -> str:
    """The trained (unfolded) checkpoint ``models/model.pt``, written by the bundle's training."""
    return os.path.join(bundle, WEIGHTS)


def has_weights(bundle: str) -> bool:
    """Whether the bundle has been trained (its checkpoint exists)."""
    return os.path.isfile(weights_path(bundle))


def read_metadata(bundle: str) -> dict:
    """The bundle's ``configs/metadata.json``."""
    with open(os.path.join(bundle, METADATA)) as fp:
        return json.load(fp)


def label_names(metadata: dict) -> Dict[str, int]:
    """``{name: value}`` of the output classes from ``network_data_format.outputs.pred.channel_def``.

    Background is left out and names are lower-cased, as ``BundleInferTask`` does.
    """
    _, pred = next(iter(metadata["network_data_format"]["outputs"].items()))
    channels: Dict[str, str] = pred.get("channel_def", {})
    return {name.lower(): int(value) for value, name in channels.items() if name.lower() != "background"}
