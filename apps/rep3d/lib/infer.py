"""Inference task: one Rep3D bundle served through MONAI Label's ``BundleInferTask``."""

import logging
import os
from typing import Any, Dict

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.tasks.infer.bundle import BundleInferTask

from lib.bundles import has_weights, label_names, read_metadata, weights_path
from lib.device import device_choices
from rep3d_networks.inferers import PRECISIONS, check_precision
from rep3d_networks.transforms import volume_error_message

logger = logging.getLogger(__name__)

PRECISION = "precision"
"""The ``displayable_configs`` key of the inference precision (``rep3d_networks.inferers``)."""

NETWORK_OUTPUT = "network_output"
"""Request key of the app's own callers (scoring): return the network's output instead of writing a label."""


class Rep3DInferTask(BundleInferTask):
    """Automatic segmentation with a bundle's ``configs/inference.json``.

    The bundle's ``network_def`` (the folded Rep3D) loads ``models/model.pt`` (the unfolded training checkpoint)
    strictly. ``BasicInferTask`` reloads it whenever the file's mtime changes, so weights written by
    ``/train/<model>`` are used by the next request without restarting the server.

    Unlike ``BundleInferTask``, a bundle without ``models/model.pt`` is served too: it is listed in ``/info/``
    with ``"trained": false`` and an ``UNTRAINED`` description, and inference is refused with a clear error
    (rather than returning a random-weight segmentation) until a training run has written the checkpoint.

    An image the bundle's preprocessing refuses (``ValidateVolumed``: 2D, multi-channel, NaN, unreadable...) is
    reported to the client as an ``INVALID_INPUT`` error with the file and the problem (HTTP 400 from the app).

    Labels are written as ``uint8`` in the input image's geometry (the bundle's ``InvertToLabelsd`` plus MONAI
    Label's ``Restored``). The bundle's ``displayable_configs`` (sliding-window ``sw_overlap`` and
    ``sw_batch_size``, and ``precision``: ``auto`` | ``float32`` | ``bfloat16``) are per-request options, listed
    in the model's config for Slicer; ``precision`` is listed as a menu (the bundle's value first) and an unknown
    value is refused (``INVALID_INPUT``) before the image is read.

    A request with :data:`NETWORK_OUTPUT` true (the app's scoring, not a client: ``Rep3DApp.infer`` refuses it)
    stops after the sliding window: the result is ``(None, data)`` with the network's output (logits,
    ``(C, *spatial)`` on the bundle's grid) under ``output_label_key``; no label post-processing, no file.

    Args:
        bundle: path of the bundle folder.
        conf: the app's ``--conf`` options (``preload`` is honoured as upstream).
        device: default device (``--conf device``), offered first to the client.
    """

    def __init__(self, bundle: str, conf: Dict[str, str], device: str) -> None:
        super().__init__(bundle, conf, load_strict=True)
        if not self.valid:  # upstream ignores a bundle without weights
            self._init_untrained(bundle)
        self._config["device"] = device_choices(device)
        if PRECISION in self._config:  # a list is a menu in Slicer; a request sends one of its items
            default = check_precision(self._config[PRECISION])
            self._config[PRECISION] = [default] + [p for p in PRECISIONS if p != default]

    def _init_untrained(self, bundle: str) -> None:
        """Completes the set-up that ``BundleInferTask`` skips when ``models/model.pt`` does not exist (yet)."""
        metadata = read_metadata(bundle)
        self.key_image = next(iter(metadata["network_data_format"]["inputs"]))
        self.key_pred = next(iter(metadata["network_data_format"]["outputs"]))
        self.add_post_restore = True
        BasicInferTask.__init__(
            self,
            path=weights_path(bundle),
            network=self.bundle_config.get_parsed_content(self.const.key_network_def(), instantiate=True),
            type=InferType.SEGMENTATION,
            labels=label_names(metadata),
            dimension=3,
            description=metadata.get("description", ""),
            load_strict=True,
        )
        for key in self.const.key_displayable_configs():  # as upstream: per-request options (Slicer's Options)
            if self.bundle_config.get(key):
                self.displayable_configs = self.bundle_config.get_parsed_content(key, instantiate=True)
                self._config.update(self.displayable_configs)
        self.version = metadata.get("version")
        self.valid = True
        logger.info(f"Serving untrained bundle {bundle}: inference is refused until {weights_path(bundle)} exists")

    def info(self) -> Dict[str, Any]:
        """Upstream info plus ``trained`` (checked on every call, so it turns true after training)."""
        info = super().info()
        info["trained"] = has_weights(self.bundle_path)
        if not info["trained"]:
            info["description"] = (
                f"UNTRAINED (no models/model.pt yet; save labels and Train it first). {self.description}"
            )
        return info

    def __call__(self, request, callbacks=None):
        if not has_weights(self.bundle_path):
            name = os.path.basename(self.bundle_path)
            raise MONAILabelException(
                MONAILabelError.INFERENCE_ERROR,
                f"Model '{name}' is untrained: {weights_path(self.bundle_path)} does not exist yet. "
                f"Save a few labels (Submit Label) and run Train for '{name}' first.",
            )
        if PRECISION in self._config:
            request = {**request, PRECISION: self._request_precision(request)}
        if request.get(NETWORK_OUTPUT):
            request = {**request, "skip_writer": True}  # upstream BasicInferTask option: return the data
        try:
            return super().__call__(request, callbacks)
        except Exception as error:
            message = volume_error_message(error)  # an unusable image: tell the client which and why
            if message is None:
                raise
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, message) from error

    def post_transforms(self, data=None):
        """The bundle's post-processing, none for a :data:`NETWORK_OUTPUT` request."""
        if data is not None and data.get(NETWORK_OUTPUT):
            return []
        return super().post_transforms(data)

    def _request_precision(self, request) -> str:
        """The request's ``precision`` (the first item if a list, the default menu if absent), checked."""
        precision = request.get(PRECISION, self._config[PRECISION])
        precision = precision[0] if isinstance(precision, (list, tuple)) and precision else precision
        try:
            return check_precision(precision)
        except ValueError as error:
            name = os.path.basename(self.bundle_path)
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, f"Model '{name}': {error}") from error

    def writer(self, data, extension=None, dtype=None):
        """Writes the label as ``uint8`` unless the request asks for another ``result_dtype``."""
        return super().writer(data, extension, dtype or data.get("result_dtype") or "uint8")
