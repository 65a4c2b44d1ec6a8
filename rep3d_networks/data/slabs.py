"""Disjoint z-slabs of one volume (``totalseg``) and their class-aware datalist (the real-CT model, the convergence
study)."""

from pathlib import Path
from typing import Dict, List, Tuple

import nibabel as nib
import numpy as np

from .datalist import build_datalist
from .layouts import dataset_base_dir, find_cases
from .specs import get_dataset_spec
from .splits import class_aware_split


def slab_classes(dataset: str, dataset_dir: Path) -> Tuple[Dict[str, Tuple[int, int]], Dict[str, set]]:
    """``({case: (first slice, stop)}, {case: foreground classes})`` of the slabs under ``dataset_dir``.

    Raises:
        ValueError: If two slabs overlap in z (a held-out slab would share voxels with a training slab).
    """
    ranges, classes = {}, {}
    for case in find_cases(get_dataset_spec(dataset), dataset_dir):
        label = nib.load(str(case.label))
        start = int(round(label.affine[2, 3] / label.header.get_zooms()[2]))
        ranges[case.case_id] = (start, start + label.shape[2])
        classes[case.case_id] = {int(c) for c in np.unique(np.asarray(label.dataobj)) if c > 0}
    ordered = sorted(ranges.items(), key=lambda item: item[1])
    for (first, (_, stop)), (second, (start, _)) in zip(ordered, ordered[1:]):
        if start < stop:
            raise ValueError(
                f"{dataset_dir}: slabs {first} and {second} overlap in z ({stop - start} slices): cut fewer slabs"
            )
    return ranges, classes


def class_aware_datalist(dataset: str, dataset_dir: Path) -> dict:
    """The datalist of the slabs under ``dataset_dir`` split by :func:`class_aware_split` (slab z-ranges in its
    metadata)."""
    spec = get_dataset_spec(dataset)
    ranges, classes = slab_classes(dataset, dataset_dir)
    metadata = {
        "dataset": dataset,
        "fold": 0,
        "class_names": list(spec.class_names),
        "split": (
            "class-aware (rep3d_networks.data.splits.class_aware_split): "
            "held-out slabs hold only organs of training slabs"
        ),
        "slab_slices": {case: list(r) for case, r in ranges.items()},
    }
    return build_datalist(
        find_cases(spec, dataset_dir), class_aware_split(classes), dataset_base_dir(spec, dataset_dir), metadata
    )


def class_counts(dataset_dir: Path, items: List[dict]) -> List[int]:
    """The number of label values (background included) in each datalist item's label under ``dataset_dir``."""
    return [len(np.unique(np.asarray(nib.load(str(Path(dataset_dir) / item["label"])).dataobj))) for item in items]
