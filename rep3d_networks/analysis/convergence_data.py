"""Data of the ``convergence`` study: the quickstart's phantom and the real CT slabs, each with its datalist.

* ``phantom``: the quickstart's synthetic abdominal CT (:mod:`rep3d_networks.data.phantom`, 20 cases of 40³ voxels
  at the bundle's 1.5 × 1.5 × 2 mm, all 15 AMOS organs), split by ``prepare`` (seed 0: 16 training, 2 validation,
  2 test cases).
* ``ct``: the one abdomen–pelvis CT of ``../shared/data`` at its own 3 mm, cut by the ``totalseg`` data command into
  4 disjoint z-slabs of 28 slices (labels: TotalSegmentator *predictions* mapped to AMOS), split with
  :func:`rep3d_networks.data.splits.class_aware_split`, so that every organ of a held-out slab is also in a training
  slab (a seeded random split once held out both pelvic slabs and gave Dice 0).

In both, the study's curves are measured on the validation *and* test cases of the split (no model is selected
on them, so there is no reason to keep the test cases apart, and more held-out organs make a steadier curve).
All CT slabs come from one person: the real-CT Dice values measure learning dynamics, not accuracy.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

from rep3d_networks.data.cli import phantom, prepare, totalseg
from rep3d_networks.data.datalist import write_json_files
from rep3d_networks.data.layouts import dataset_base_dir
from rep3d_networks.data.slabs import class_aware_datalist
from rep3d_networks.data.specs import get_dataset_spec

BUNDLE = "amos_ct"
SHARED_CT = "totalseg_ct_abdomen_3mm/example_ct.nii.gz"
PHANTOM_CASES, PHANTOM_SIZE = 20, 40  # the quickstart's phantom (rep3d_networks.quickstart.main defaults)
CT_SLABS, CT_SLAB_SLICES = 4, 28  # 4 x 28 slices tile the CT's 112 slices without overlap; 28 pads to a 32-deep patch


@dataclass(frozen=True)
class StudyRecipe:
    """How one dataset differs from the bundle's train.json (``None``: the bundle's value); ``why`` goes into the
    report."""

    name: str
    pixdim: Optional[Tuple[float, float, float]]
    affine_prob: Optional[float]
    class_balanced: bool  # crop centres class by class (rep3d_networks.bundles.recipe.class_balanced_crop), not pos/neg
    class_weighted: (
        bool  # training cases drawn in proportion to their classes (recipe.class_weighted_sampling), not uniformly
    )
    why: str


RECIPES: Dict[str, StudyRecipe] = {
    "phantom": StudyRecipe(
        "phantom",
        None,
        0.0,
        False,
        False,
        "the quickstart's phantom at the bundle's 1.5 × 1.5 × 2 mm; RandAffined off as in the quickstart (the phantom "
        "cases vary enough); the bundle's pos/neg crop (every patch holds most of the 15 organs)",
    ),
    "ct": StudyRecipe(
        "ct",
        (3.0, 3.0, 3.0),
        0.0,
        True,
        True,
        "the shared CT at its own 3 mm (no resampling); as in the real-CT command (rep3d_networks.real_ct): crop "
        "centres drawn class by class (RandCropByLabelClassesd: with the recipe's pos/neg crop no CNN passed Dice 0.02 "
        "in 350 iterations), slabs drawn in proportion to the classes they hold (WeightedRandomSampler: the pelvic "
        "slab holds two organs, the upper-abdomen slabs most) and RandAffined off (a 30° tilt turns much of a 28-slice "
        "slab out of the patch)",
    ),
}


@dataclass(frozen=True)
class StudyData:
    """A written dataset: its folder (the bundle's ``dataset_dir``), its datalist and its split."""

    name: str
    dataset_dir: Path
    datalist: Path
    split: Dict[str, list]


def default_shared_data() -> Path:
    """``$REP3D_SHARED_DATA`` or ``../shared/data`` beside the repository (as in ``tests/conftest.py``)."""
    return Path(os.environ.get("REP3D_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


def held_out_datalist(datalist: Dict) -> Dict:
    """The datalist with the test cases moved into ``validation`` (the study measures its curves on both)."""
    merged = dict(datalist, validation=list(datalist["validation"]) + list(datalist["test"]), test=[])
    merged["metadata"] = dict(datalist.get("metadata", {}), study="validation = validation + test of the split")
    return merged


def split_names(datalist: Dict) -> Dict[str, list]:
    return {key: [Path(item["image"]).name for item in datalist[key]] for key in ("training", "validation")}


def write_phantom_data(output_dir: Path, num_cases: int = PHANTOM_CASES, size: int = PHANTOM_SIZE) -> StudyData:
    """The quickstart's phantom under ``output_dir/phantom`` and its study datalist."""
    folder = Path(phantom(BUNDLE, str(output_dir / "phantom"), num_cases=num_cases, size=size, seed=0, overwrite=True))
    configs = output_dir / "phantom_split"
    prepare(BUNDLE, str(folder), str(configs), seed=0, overwrite=True)
    datalist = held_out_datalist(json.loads((configs / "datalist_fold0.json").read_text()))
    path = write_json_files({output_dir / "phantom_datalist.json": datalist}, overwrite=True)[0]
    return StudyData("phantom", folder, path, split_names(datalist))


def write_ct_data(output_dir: Path, shared_data: Path) -> StudyData:
    """The shared CT's disjoint slabs under ``output_dir/ct`` and their class-aware study datalist.

    Raises:
        FileNotFoundError: If ``shared_data`` lacks the CT (before any work).
    """
    if not (shared_data / SHARED_CT).is_file():
        raise FileNotFoundError(
            f"{shared_data / SHARED_CT} not found: pass --shared_data "
            f"(the shared/data folder) or leave out the ct dataset"
        )
    folder = Path(
        totalseg(
            BUNDLE,
            str(shared_data),
            str(output_dir / "ct"),
            num_cases=CT_SLABS,
            min_slab_slices=CT_SLAB_SLICES,
            overwrite=True,
        )
    )
    datalist = held_out_datalist(class_aware_datalist(BUNDLE, folder))
    path = write_json_files({output_dir / "ct_datalist.json": datalist}, overwrite=True)[0]
    return StudyData("ct", dataset_base_dir(get_dataset_spec(BUNDLE), folder), path, split_names(datalist))


def write_study_data(
    name: str, output_dir: Path, shared_data: Optional[str], phantom_cases: int, phantom_size: int
) -> StudyData:
    """Write dataset ``name`` (``phantom`` or ``ct``) under ``output_dir``.

    Raises:
        ValueError: For another name.
    """
    if name == "phantom":
        return write_phantom_data(output_dir, phantom_cases, phantom_size)
    if name == "ct":
        return write_ct_data(output_dir, Path(shared_data) if shared_data else default_shared_data())
    raise ValueError(f"dataset must be one of {sorted(RECIPES)}, got {name!r}")
