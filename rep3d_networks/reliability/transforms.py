"""MONAI dictionary transforms for the bundles' preprocessing: loading, validating and resampling input volumes."""

import os
from typing import Any, Hashable, Mapping, Optional

import nibabel as nib
from monai.config import KeysCollection
from monai.transforms import LoadImaged, MapTransform
from monai.transforms import Spacingd as MonaiSpacingd
from monai.utils import PostFix

from rep3d_networks.reliability.checks import (
    check_geometry,
    check_label_values,
    check_same_grid,
    check_volume,
    warn_if_empty,
)
from rep3d_networks.reliability.errors import VolumeError
from rep3d_networks.reliability.loading import describe_load_error


def source_name(data, default: str) -> str:
    """The file a loaded array came from (``meta["filename_or_obj"]``), else ``default``."""
    meta = getattr(data, "meta", None) or {}
    return str(meta.get("filename_or_obj") or default)


def nifti_header_geometry(path) -> Optional[tuple]:
    """``(affine, shape)`` from a NIfTI file's header alone (nothing decompressed beyond it), or None."""
    if not isinstance(path, (str, os.PathLike)) or not str(path).endswith((".nii", ".nii.gz")) or not os.path.isfile(path):
        return None
    try:
        header = nib.load(str(path))
    except Exception:  # left to the reader, whose error is explained by describe_load_error
        return None
    return header.affine, header.shape


class LoadVolumed(LoadImaged):
    """``LoadImaged`` whose read errors name the file and the problem (empty, truncated, corrupt, not an image).

    Same arguments and output as :class:`monai.transforms.LoadImaged`, plus ``max_voxels``. When reading fails, the
    key whose file cannot be read is found and a :class:`VolumeError` ``"<file>: <problem>"`` is raised from the
    reader's error. A NIfTI file's header is checked before its data are read (:func:`check_geometry`: plausible
    voxel spacing, at most ``max_voxels`` voxels), so an oversized volume is refused without loading it.

    Args:
        max_voxels: voxel budget per file, or None for no limit.
        args, kwargs: as :class:`monai.transforms.LoadImaged`.
    """

    def __init__(self, *args: Any, max_voxels: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_voxels = max_voxels

    def __call__(self, data, reader=None):
        for key in self.key_iterator(dict(data)):
            geometry = nifti_header_geometry(data[key])
            if geometry is not None:
                check_geometry(geometry[0], geometry[1], str(data[key]), self.max_voxels)
        try:
            return super().__call__(data, reader)
        except Exception as error:
            for key in self.key_iterator(dict(data)):
                path = data[key]
                if not isinstance(path, (str, os.PathLike)):
                    continue
                try:
                    self._loader(path, reader)
                except Exception as key_error:
                    raise VolumeError(str(path), describe_load_error(str(path), key_error)) from error
            raise


class ValidateVolumed(MapTransform):
    """Checks loaded, channel-first volumes and passes them through unchanged.

    Put it right after ``EnsureChannelFirstd``. Every key must be one 3D volume with ``channels`` channels and
    finite values; ``label_key`` must hold integer class ids in ``0 .. num_classes - 1`` (an empty label is
    allowed and logged) and lie on the grid of every other key (same shape and affine up to the storage axis
    order, within ``tolerance`` voxel). Every key must have a plausible voxel spacing and at most ``max_voxels``
    voxels (:func:`check_geometry`; also checked by :class:`LoadVolumed` from NIfTI headers). Errors are :class:`VolumeError` naming the file(s) and the problem.

    Args:
        keys: keys of the volumes to check (e.g. ``["image", "label"]``).
        label_key: which of them is the label, or None.
        num_classes: number of classes of the model (background included), or None to skip the range check.
        channels: channels the model takes (the images'; labels always have one).
        tolerance: allowed label/image grid misplacement as a fraction of the image's smallest voxel size.
        max_voxels: voxel budget per volume, or None for no limit.
        allow_missing_keys: do not raise for missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: Optional[str] = "label",
        num_classes: Optional[int] = None,
        channels: int = 1,
        tolerance: float = 0.1,
        max_voxels: Optional[int] = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.max_voxels = max_voxels
        self.label_key = label_key
        self.num_classes = num_classes
        self.channels = channels
        self.tolerance = tolerance

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        present = list(self.key_iterator(d))
        for key in present:
            path = source_name(d[key], str(key))
            check_geometry(getattr(d[key], "affine", None), d[key].shape[1:], path, self.max_voxels)
            if key == self.label_key:
                check_volume(d[key], path, channels=1)
                check_label_values(d[key], path, self.num_classes)
                warn_if_empty(d[key], path)
            else:
                check_volume(d[key], path, channels=self.channels)
        if self.label_key in present:
            label = d[self.label_key]
            for key in present:
                if key != self.label_key:
                    self.check_pair(d[key], label, str(key))
        return d

    def check_pair(self, image, label, key: str) -> None:
        """Same grid for an image and its label (shape only when the arrays carry no affine)."""
        image_path, label_path = source_name(image, key), source_name(label, str(self.label_key))
        if getattr(image, "affine", None) is None or getattr(label, "affine", None) is None:
            if tuple(image.shape[1:]) != tuple(label.shape[1:]):
                raise VolumeError(f"label {label_path} of image {image_path}", "shapes differ")
            return
        check_same_grid(
            image.affine, image.shape[1:], image_path, label.affine, label.shape[1:], label_path, self.tolerance
        )


class Spacingd(MonaiSpacingd):
    """MONAI's ``Spacingd`` that, besides its keys, updates only their ``<key>_meta_dict`` entries (with any MONAI).

    After resampling an image read from NIfTI, MONAI 1.6's ``Spacingd`` copies the image's metadata with
    ``dict.update`` into every entry of the data whose key starts with ``"<key>_"`` (meant for ``<key>_meta_dict``).
    Two such entries break it: MONAI Label 0.8.5 (``BasicInferTask.__call__``) keeps the request's file name as
    ``image_path``, a ``str``, so every inference request failed with ``AttributeError: 'str' object has no
    attribute 'update'`` (in our app and in MONAI Label's own ``BundleInferTask``); and DeepEdit's ``label_names``
    (label name -> value) received the NIfTI header fields, on which ``FindAllValidSlicesMissingLabelsd`` failed
    (``Tensor.__contains__ only supports Tensor or scalar``). Here the other ``<key>_*`` entries are set aside while
    MONAI's transform runs and put back unchanged; MONAI 1.5, which updates no entry, gives the same result.
    """

    def __call__(self, data: Mapping[Hashable, Any], lazy: Optional[bool] = None) -> dict:
        prefixes = tuple(f"{key}_" for key in self.keys)
        meta_dicts = {PostFix.meta(key) for key in self.keys}
        aside = {k: v for k, v in data.items()
                 if isinstance(k, str) and k.startswith(prefixes) and k not in meta_dicts}
        d = super().__call__({k: v for k, v in data.items() if k not in aside}, lazy=lazy)
        d.update(aside)
        return d
