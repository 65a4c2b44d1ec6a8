"""Data of the ``convergence`` command: a tiny AMOS-layout dataset split train/validation by z-slab, and its MONAI transforms.

With the shared real CT (``../shared/data``) the dataset is written by the ``totalseg`` data command: the
one abdomen–pelvis CT (3 mm) cut into ``num_cases`` z-slabs, labels = TotalSegmentator *predictions* mapped
to the AMOS classes. With ``num_cases=4`` the slabs are disjoint (slices 0–27, 28–55, 56–83, 84–111, inferior
to superior); the validation slab is held out whole, so training never sees its voxels, but all slabs come
from one person. Without the shared data the synthetic phantom is used instead.
"""

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from monai import transforms as mt

from rep3d_networks.data.cli import phantom, totalseg

CT_WINDOW = (-175.0, 250.0)  # AMOS CT clipping (A.2)
SHARED_CT = "totalseg_ct_abdomen_3mm/example_ct.nii.gz"


def default_shared_data() -> Path:
    """``$REP3D_SHARED_DATA`` or ``../shared/data`` beside the repository (as in ``tests/conftest.py``)."""
    return Path(os.environ.get("REP3D_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


def write_dataset(output_dir: Path, shared_data: Optional[str], num_cases: int, phantom_size: int, seed: int) -> Tuple[Path, str]:
    """Write the dataset under ``output_dir``: from the real CT when ``shared_data`` has it, else the phantom.

    Returns:
        ``(dataset folder, "totalseg" | "phantom")``.
    """
    shared = Path(shared_data) if shared_data is not None else default_shared_data()
    if (shared / SHARED_CT).is_file():
        folder = totalseg("amos_ct", str(shared), str(output_dir), num_cases=num_cases, seed=seed, overwrite=True)
        return Path(folder), "totalseg"
    folder = phantom("amos_ct", str(output_dir), num_cases=num_cases, size=phantom_size, seed=seed, overwrite=True)
    return Path(folder), "phantom"


def slab_split(dataset_dir: Path, val_case: int) -> Tuple[List[Dict[str, str]], List[Dict[str, str]]]:
    """``(train, validation)`` items ``{"image", "label", "name"}``: case ``val_case`` (in name order) validates, the rest train.

    Raises:
        ValueError: if there are fewer than two cases or ``val_case`` is out of range.
    """
    images = sorted((dataset_dir / "imagesTr").glob("*.nii.gz"))
    items = [{"image": str(p), "label": str(dataset_dir / "labelsTr" / p.name), "name": p.name} for p in images]
    if len(items) < 2 or not -len(items) <= val_case < len(items):
        raise ValueError(f"need >= 2 cases and a valid val_case, got {len(items)} cases in {dataset_dir} and val_case={val_case}")
    validation = [items[val_case]]
    return [item for item in items if item is not validation[0]], validation


def base_transforms() -> List[mt.Transform]:
    """Load, channel first, RAS, CT window to [0, 1] (native 3 mm spacing, no resampling)."""
    keys = ["image", "label"]
    return [
        mt.LoadImaged(keys=keys, image_only=True),
        mt.EnsureChannelFirstd(keys=keys),
        mt.Orientationd(keys=keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        mt.ScaleIntensityRanged(keys="image", a_min=CT_WINDOW[0], a_max=CT_WINDOW[1], b_min=0.0, b_max=1.0, clip=True),
    ]


def train_transforms(crop: Sequence[int], num_samples: int) -> mt.Compose:
    """Base transforms, then ``num_samples`` random crops (half centred on foreground) and the paper's intensity shift."""
    keys = ["image", "label"]
    return mt.Compose(
        base_transforms()
        + [
            mt.SpatialPadd(keys=keys, spatial_size=crop),
            mt.RandCropByPosNegLabeld(
                keys=keys, label_key="label", spatial_size=crop, pos=1, neg=1, num_samples=num_samples, image_key="image", image_threshold=0
            ),
            mt.RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
        ]
    )


def validation_transforms() -> mt.Compose:
    return mt.Compose(base_transforms())
