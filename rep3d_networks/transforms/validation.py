"""``ValidateVolumed``: checks loaded, channel-first volumes before they reach the network."""

from typing import Hashable, Mapping, Optional

from monai.config import KeysCollection
from monai.transforms import MapTransform

from rep3d_networks.transforms.checks import (
    check_geometry,
    check_label_values,
    check_same_grid,
    check_volume,
    warn_if_empty,
)
from rep3d_networks.transforms.errors import VolumeError


def source_name(data, default: str) -> str:
    """The file a loaded array came from (``meta["filename_or_obj"]``), else ``default``."""
    meta = getattr(data, "meta", None) or {}
    return str(meta.get("filename_or_obj") or default)


class ValidateVolumed(MapTransform):
    """Checks loaded, channel-first volumes and passes them through unchanged.

    Put it right after ``EnsureChannelFirstd``. Every key must be one 3D volume with ``channels`` channels and
    finite values; ``label_key`` must hold integer class ids in ``0 .. num_classes - 1`` (an empty label is
    allowed and logged) and lie on the grid of every other key (same shape and affine up to the storage axis
    order, within ``tolerance`` voxel). Every key must have a plausible voxel spacing and at most ``max_voxels``
    voxels (:func:`check_geometry`; also checked by :class:`LoadVolumed` from NIfTI headers). Errors are
    :class:`VolumeError` naming the file(s) and the problem.

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
