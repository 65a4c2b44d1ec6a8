"""Static description of the five datasets the bundles train on: the one source of their facts.

Everything that differs between AMOS CT, AMOS MRI, KiTS21, MSD Task07 and MSD Task08
(folder names, file naming, class names and label ids, modality, resampling spacing, intensity window, download
URL and checksum, split scheme) lives in one :class:`DatasetSpec` per dataset, returned by :func:`get_dataset_spec`.
The bundles' configs, metadata and model-card class tables are rendered from these specs
(``python -m rep3d_networks.bundles render``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

AMOS_CLASS_NAMES = (
    "background",
    "spleen",
    "right kidney",
    "left kidney",
    "gallbladder",
    "esophagus",
    "liver",
    "stomach",
    "aorta",
    "inferior vena cava",
    "pancreas",
    "right adrenal gland",
    "left adrenal gland",
    "duodenum",
    "urinary bladder",
    "prostate/uterus",
)


@dataclass(frozen=True)
class DatasetSpec:
    """How one dataset is laid out, labelled, downloaded and split.

    Attributes:
        name: CLI name (``amos_ct``, ``amos_mri``, ``kits``, ``msd_pancreas``, ``msd_hepatic_vessel``).
        family: Layout family: ``"amos"``, ``"kits"`` or ``"msd"``.
        modality: ``"CT"`` or ``"MRI"``.
        source_dir: Name of the top folder of the official download (``amos22``, ``kits21``, ``Task07_Pancreas``).
        class_names: Class names indexed by label value; index 0 is background.
        file_prefix: Case file prefix for AMOS/MSD (``amos`` in ``amos_0001.nii.gz``); ``None`` for KiTS.
        case_id_range: Half-open range ``[low, high)`` of numeric case ids that belong to the dataset
            (AMOS CT ids are < 500, AMOS MRI ids are >= 500); ``None`` accepts every id.
        url: Official archive URL, or ``None`` where no single archive exists (KiTS21).
        md5: Official md5 of the archive, or ``None`` where none is published.
        fixed_split_sizes: ``(train, val, test)`` sizes of the fixed AMOS split; ``None`` means k-fold.
        first_case_number: Number of the first synthetic case (AMOS MRI ids start at 500).
        pixdim: Spacing (mm) the bundles resample every volume to before training and inference (also the voxel
            spacing of the CT phantoms, see :func:`rep3d_networks.data.phantom.phantom_spacing`).
        intensity_range: Window ``(low, high)`` clipped and scaled to [0, 1] (HU for CT, signal for MRI).
    """

    name: str
    family: str
    modality: str
    source_dir: str
    class_names: Tuple[str, ...]
    file_prefix: Optional[str]
    case_id_range: Optional[Tuple[int, int]]
    url: Optional[str]
    md5: Optional[str]
    fixed_split_sizes: Optional[Tuple[int, int, int]]
    first_case_number: int
    pixdim: Tuple[float, float, float] = (1.5, 1.5, 2.0)
    intensity_range: Tuple[float, float] = (-175, 250)

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return len(self.class_names)

    @property
    def label_ids(self) -> dict:
        """``{class name: label value}`` (background is 0)."""
        return {name: index for index, name in enumerate(self.class_names)}

    @property
    def uses_kfold(self) -> bool:
        """True for datasets split into 5 cross-validation folds (KiTS, MSD)."""
        return self.fixed_split_sizes is None

    def accepts_case_number(self, number: int) -> bool:
        """Whether a numeric case id belongs to this dataset (AMOS CT vs MRI)."""
        if self.case_id_range is None:
            return True
        low, high = self.case_id_range
        return low <= number < high


def all_dataset_specs() -> dict:
    """Return ``{name: DatasetSpec}`` for every supported dataset (built fresh on each call)."""
    msd_base = "https://msd-for-monai.s3-us-west-2.amazonaws.com"
    amos_url = "https://zenodo.org/record/7262581/files/amos22.zip"
    specs = (
        DatasetSpec(
            name="amos_ct",
            family="amos",
            modality="CT",
            source_dir="amos22",
            class_names=AMOS_CLASS_NAMES,
            file_prefix="amos",
            case_id_range=(0, 500),
            url=amos_url,
            md5=None,  # Zenodo record 7262581 publishes no checksum for amos22.zip.
            fixed_split_sizes=(160, 20, 20),
            first_case_number=1,
        ),
        DatasetSpec(
            name="amos_mri",
            family="amos",
            modality="MRI",
            source_dir="amos22",
            class_names=AMOS_CLASS_NAMES[:14],
            file_prefix="amos",
            case_id_range=(500, 10000),
            url=amos_url,
            md5=None,
            fixed_split_sizes=(22, 4, 7),
            first_case_number=500,
            pixdim=(1.0, 1.0, 1.0),
            intensity_range=(0, 1000),
        ),
        DatasetSpec(
            name="kits",
            family="kits",
            modality="CT",
            source_dir="kits21",
            class_names=("background", "kidney", "tumor", "cyst"),
            file_prefix=None,
            case_id_range=None,
            url=None,
            md5=None,
            fixed_split_sizes=None,
            first_case_number=0,
        ),
        DatasetSpec(
            name="msd_pancreas",
            family="msd",
            modality="CT",
            source_dir="Task07_Pancreas",
            class_names=("background", "pancreas", "tumor"),
            file_prefix="pancreas",
            case_id_range=None,
            url=f"{msd_base}/Task07_Pancreas.tar",
            md5="4f7080cfca169fa8066d17ce6eb061e4",  # monai.apps.DecathlonDataset.md5["Task07_Pancreas"]
            fixed_split_sizes=None,
            first_case_number=1,
        ),
        DatasetSpec(
            name="msd_hepatic_vessel",
            family="msd",
            modality="CT",
            source_dir="Task08_HepaticVessel",
            class_names=("background", "vessel", "tumor"),
            file_prefix="hepaticvessel",
            case_id_range=None,
            url=f"{msd_base}/Task08_HepaticVessel.tar",
            md5="641d79e80ec66453921d997fbf12a29c",  # monai.apps.DecathlonDataset.md5["Task08_HepaticVessel"]
            fixed_split_sizes=None,
            first_case_number=1,
            intensity_range=(0, 230),
        ),
    )
    return {spec.name: spec for spec in specs}


def dataset_names() -> Tuple[str, ...]:
    """Names accepted by ``--dataset``."""
    return tuple(all_dataset_specs())


def get_dataset_spec(name: str) -> DatasetSpec:
    """Look up a dataset by its CLI name.

    Args:
        name: One of :func:`dataset_names`.

    Returns:
        The dataset's :class:`DatasetSpec`.

    Raises:
        ValueError: If ``name`` is not a supported dataset.
    """
    specs = all_dataset_specs()
    if name not in specs:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(specs)}")
    return specs[name]
