"""``Spacingd``: MONAI's resampling, safe for the other ``<key>_*`` entries MONAI Label and DeepEdit keep."""

from typing import Any, Hashable, Mapping, Optional

from monai.transforms import Spacingd as MonaiSpacingd
from monai.utils import PostFix


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
        aside = {k: v for k, v in data.items() if isinstance(k, str) and k.startswith(prefixes) and k not in meta_dicts}
        d = super().__call__({k: v for k, v in data.items() if k not in aside}, lazy=lazy)
        d.update(aside)
        return d
