"""The inference output stage: labels on each input's grid at O(voxels) memory, written inside ``output_dir``."""

import os
from typing import Any, Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import Invertd, MapTransform

LABEL_INTERP = ("bilinear", "nearest")


def output_root(inputs: Sequence[str], default: str) -> str:
    """The ``data_root_dir`` for ``SaveImaged``: the deepest folder holding every input.

    ``SaveImaged`` keeps each input's path relative to ``data_root_dir`` below ``output_dir``. With the dataset
    folder there, an input outside it (e.g. ``/data/new_case.nii.gz`` or a DICOM folder elsewhere) gave a
    relative path with ``..`` and the label was written outside ``output_dir``, possibly next to the input.
    The common folder of the inputs' parents keeps distinct outputs for inputs with the same name in different
    folders (KiTS ``case_*/imaging.nii.gz``) and never leaves ``output_dir``.

    Args:
        inputs: the image files or DICOM folders to be segmented.
        default: returned when there is no input.
    """
    parents = [os.path.dirname(os.path.abspath(os.path.normpath(str(path)))) for path in inputs]
    return os.path.commonpath(parents) if parents else default


def single_precision(operations: Any) -> Any:
    """A copy of an applied-operations stack whose resampling runs in float32 (``Spacingd`` records float64).

    An inverse resampling builds its sampling grid in the recorded dtype: 3 values per output voxel, 24 bytes in
    float64, 12 in float32.
    """
    if isinstance(operations, (list, tuple)):
        return [single_precision(op) for op in operations]
    if isinstance(operations, Mapping):
        return {
            k: v.replace("float64", "float32") if k == "dtype" and isinstance(v, str) else single_precision(v)
            for k, v in operations.items()
        }
    return operations


def background_outside_crop(probabilities: torch.Tensor) -> torch.Tensor:
    """Inverted class probabilities (channel first) whose voxels outside the inference body crop are zero in every
    channel: the mass missing from 1 goes to the background channel (the crop removes only air), in place."""
    probabilities[0] += (1 - probabilities.sum(dim=0)).clamp_min(0)
    return probabilities


class InvertToLabelsd(MapTransform):
    """Class probabilities on the network's grid → one label map (``uint8``) on the input's grid.

    ``Activationsd → Invertd → AsDiscreted`` resamples every class channel back to the input grid at once: for
    16 classes in float64 that is over 100 bytes per input voxel (22.7 GB for a 512×512×400 CT). This transform
    keeps the input-grid memory at a few bytes per voxel:

    * ``interp="bilinear"`` (default): the channels are inverted one at a time with MONAI's ``Invertd`` and a running
      maximum keeps the winning class, so the labels are those of ``Invertd`` on all channels followed by
      ``argmax`` (first class on ties, as ``argmax``). MONAI has no channel-streaming inverse, hence this loop.
    * ``interp="nearest"``: ``argmax`` on the network grid, then the label map alone is inverted with nearest
      neighbour (one resampling instead of one per class; labels differ from ``"bilinear"`` along boundaries).

    The inverse resampling runs in float32 (:func:`single_precision`), whatever the preprocessing recorded.

    Args:
        keys: the prediction key(s), channel-first probabilities (e.g. after ``Activationsd(softmax=True)``).
        transform: the preprocessing applied to ``orig_keys`` (what ``Invertd`` inverts).
        orig_keys: the preprocessed image key(s) whose applied operations are inverted.
        interp: ``"bilinear"`` or ``"nearest"``, see above.
        dtype: dtype of the label map (``uint8`` holds up to 256 classes).
        allow_missing_keys: do not raise for missing keys.

    Raises:
        ValueError: unknown ``interp``, or more classes than ``dtype`` holds.
    """

    def __init__(
        self,
        keys: KeysCollection,
        transform,
        orig_keys: KeysCollection = "image",
        interp: str = "bilinear",
        dtype: torch.dtype = torch.uint8,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if interp not in LABEL_INTERP:
            raise ValueError(f"interp must be one of {LABEL_INTERP}, got {interp!r}")
        self.interp = interp
        self.dtype = dtype
        self.orig_keys = orig_keys
        self.invert = Invertd(
            keys=keys,
            transform=transform,
            orig_keys=orig_keys,
            nearest_interp=interp == "nearest",
            to_tensor=True,
            allow_missing_keys=allow_missing_keys,
        )

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for orig_key in [self.orig_keys] if isinstance(self.orig_keys, str) else self.orig_keys:
            image = d.get(orig_key)
            if isinstance(image, MetaTensor):  # same voxels, float32 resampling
                d[orig_key] = MetaTensor(
                    image.as_tensor(), meta=image.meta, applied_operations=single_precision(image.applied_operations)
                )
        for key in self.key_iterator(d):
            probabilities = d[key]
            if probabilities.shape[0] - 1 > torch.iinfo(self.dtype).max:
                raise ValueError(f"{probabilities.shape[0]} classes do not fit in {self.dtype}")
            if self.interp == "nearest":
                labels = torch.argmax(probabilities, dim=0, keepdim=True).to(self.dtype)
                d[key] = self.inverted(d, key, labels).to(self.dtype)
                continue
            best = labels = None
            for channel in range(probabilities.shape[0]):
                value = self.inverted(d, key, probabilities[channel : channel + 1])
                if best is None:
                    best, labels = value.clone(), torch.zeros_like(value, dtype=self.dtype)
                    continue
                wins = value > best  # strict: the first class wins ties, as argmax
                labels[wins] = channel
                torch.maximum(best, value, out=best)
            d[key] = labels
        return d

    def inverted(self, data: dict, key: Hashable, channels):
        """``channels`` (one or more channels of ``data[key]``) inverted to the input grid, as a MetaTensor."""
        return self.invert({**data, key: channels})[key]
