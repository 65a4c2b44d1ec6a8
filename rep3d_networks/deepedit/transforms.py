"""DeepEdit transforms MONAI's ``monai.apps.deepedit`` lacks: clicks moved from the voxel grid of the image as loaded
to the grid the network sees (:class:`GuidanceToImageGridd`), label names kept stable across MONAI versions
(:class:`LabelNamesd`), click lists kept through the collation between simulated interactions (:class:`GuidanceListsd`).

3D Slicer sends DeepEdit clicks as voxel indices (IJK) of the image file. MONAI's
``AddGuidanceFromPointsDeepEditd`` / ``ResizeGuidanceMultipleLabelDeepEditd`` only rescale them by the ratio of
array shapes, which is right for ``Resized`` but not after ``Orientationd`` (axes flipped or permuted) or
``Spacingd`` (the grid origin moves by half a voxel per resampling). :class:`GuidanceToImageGridd` maps them
exactly through the image's affines instead.
"""

import json
from typing import Dict, Hashable, List, Mapping, Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform


def map_points(points: Sequence[Sequence[float]], source_affine, target_affine) -> np.ndarray:
    """Voxel indices in the grid of ``source_affine`` → (fractional) voxel indices in the grid of ``target_affine``.

    Args:
        points: ``N`` points of 3 voxel indices (extra leading values are ignored, the last 3 are used).
        source_affine: 4x4 voxel-to-world matrix of the grid the points are given in.
        target_affine: 4x4 voxel-to-world matrix of the grid to map them to.

    Returns:
        ``(N, 3)`` float array.
    """
    source = np.asarray(torch.as_tensor(source_affine, dtype=torch.float64))
    target = np.asarray(torch.as_tensor(target_affine, dtype=torch.float64))
    coords = np.asarray(points, dtype=np.float64).reshape(len(points), -1)[:, -3:]
    homogeneous = np.concatenate([coords, np.ones((len(coords), 1))], axis=1)
    return (np.linalg.solve(target, source @ homogeneous.T).T)[:, :3]


class GuidanceToImageGridd(MapTransform):
    """Maps DeepEdit guidance (label name → clicks) from the loaded image's voxel grid to its current grid.

    Put it after the spatial transforms (``Orientationd``, ``Spacingd``, crops) and before
    ``AddGuidanceSignalDeepEditd``. The clicks are read from ``data[guidance]`` as
    ``AddGuidanceFromPointsDeepEditd`` writes them when it runs right after loading (voxel indices of the file,
    e.g. Slicer's IJK), mapped with ``inverse(affine) @ original_affine`` of ``data[ref_image]`` (a ``MetaTensor``),
    rounded to the nearest voxel; clicks that fall outside the current grid are dropped (MONAI's signal transform
    would otherwise clamp them onto the border).

    Args:
        keys: the guidance key(s), e.g. ``"guidance"``.
        ref_image: key of the image whose grid the clicks are mapped to.
        allow_missing_keys: do not fail when a guidance key is absent.

    Raises:
        TypeError: ``data[ref_image]`` is not a ``MetaTensor`` (the affines are needed).
    """

    def __init__(self, keys: Hashable = "guidance", ref_image: str = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.ref_image = ref_image

    def __call__(self, data: Mapping[Hashable, object]) -> Dict[Hashable, object]:
        d = dict(data)
        image = d[self.ref_image]
        if not isinstance(image, MetaTensor):
            raise TypeError(f"'{self.ref_image}' must be a MetaTensor (with affines), got {type(image).__name__}")
        source, target = image.meta["original_affine"], image.affine
        shape = np.asarray(image.shape[1:])
        for key in self.key_iterator(d):
            d[key] = {name: self._map(clicks, source, target, shape) for name, clicks in d[key].items()}
        return d

    @staticmethod
    def _map(clicks, source, target, shape: np.ndarray) -> List[List[int]]:
        if not len(clicks):
            return []
        mapped = np.rint(map_points(clicks, source, target)).astype(int)
        inside = np.all((mapped >= 0) & (mapped < shape), axis=1)
        return mapped[inside].tolist()


class LabelNamesd(MapTransform):
    """Puts DeepEdit's ``label_names`` (label name -> value) in the data, leaving the label's values as they are.

    MONAI's ``NormalizeLabelsInDatasetd`` renumbers the labels 1, 2, ... in the order of ``label_names`` up to
    MONAI 1.5, but in alphabetical order of the names from MONAI 1.6 (``RemapLabelsToSequentiald``): with 1.6 the
    AMOS liver (6) would be trained as channel 9 while ``metadata.json`` and the inference's clicks say 6. The
    bundles' labels already hold the values of ``label_names`` (``ValidateVolumed`` checks them), so they need no
    renumbering, only the dictionary that DeepEdit's transforms read.

    Args:
        keys: the label key (only checked for presence, unless ``allow_missing_keys``).
        label_names: ``{name: value}``, background included.
        allow_missing_keys: do not fail when the label is absent.
    """

    def __init__(self, keys: Hashable, label_names: Mapping[str, int], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_names = dict(label_names)

    def __call__(self, data: Mapping[Hashable, object]) -> Dict[Hashable, object]:
        d = dict(data)
        for _ in self.key_iterator(d):
            d["label_names"] = dict(self.label_names)
        return d


class GuidanceListsd(MapTransform):
    """Keeps every label's click list through the collation between two of DeepEdit's simulated interactions.

    MONAI's ``Interaction`` collates and decollates the data between its click rounds. A label whose click list is empty
    comes back as ``None``, and when every label's list is empty the batch of one comes back as one item per label, each
    holding a label name as its clicks and all but the first without the network's prediction.
    ``AddRandomGuidanceDeepEditd`` and ``Activationsd`` then fail (``'NoneType' object is not iterable``, ``'str' object
    has no attribute 'items'``, ``softmax(): argument 'input' ... must be Tensor, not NoneType``), so
    ``max_interactions > 1`` fails in a later round (MONAI 1.5 and 1.6). This transform, last in the click transforms,
    stores each label's clicks as JSON text, the form MONAI's own ``AddInitialSeedPointMissingLabelsd`` gives them and
    that its click transforms read, which collation keeps as is; it also mends a list or dict already lost (``None``, or
    the dict collapsed to a key).

    Args:
        keys: the guidance key(s), e.g. ``"guidance"`` (a dict label name -> clicks).
        label_names_key: the dict label name -> value (``label_names``), whose names a lost click dict is rebuilt
            from.
        allow_missing_keys: do not fail when a guidance key is absent.
    """

    def __init__(self, keys, label_names_key: str = "label_names", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_names_key = label_names_key

    def __call__(self, data: Mapping[Hashable, object]) -> Dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            clicks = d[key] if isinstance(d[key], Mapping) else dict.fromkeys(d[self.label_names_key])
            d[key] = {name: click_list_json(points) for name, points in clicks.items()}
        return d


def click_list_json(points) -> str:
    """One label's clicks as JSON text: ``None`` (a list lost in collation) is no clicks; text is kept as is."""
    if isinstance(points, str):
        return points
    points = [] if points is None else np.asarray(points).tolist()
    return json.dumps(points)
