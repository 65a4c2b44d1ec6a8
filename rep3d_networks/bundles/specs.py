"""What each of the seven bundles is: its dataset (the facts live in :mod:`rep3d_networks.data.specs`) and its prose.

A bundle is a dataset plus, for the ``*_deepedit`` bundles, the DeepEdit overlay of the recipe. Class names, label ids,
modality, spacing and intensity window come from the dataset's :class:`~rep3d_networks.data.specs.DatasetSpec`; this
module adds only what is written about the bundle (title, task, data source, references).
"""

from dataclasses import dataclass
from typing import Tuple

from rep3d_networks.data.specs import DatasetSpec, get_dataset_spec

VERSION = "0.1.0"
METHOD_REFERENCES = (
    "Lee HH, Liu Q, Bao S, Huo Y, Landman BA. Spatially-Adaptive Gradient Re-parameterization for 3D Large Kernel "
    "Optimization (Rep3D). Authors' code: https://github.com/leeh43/Rep3D",
    "Lee HH, Bao S, Huo Y, Landman BA. 3D UX-Net: A Large Kernel Volumetric ConvNet Modernizing Hierarchical "
    "Transformer for Medical Image Segmentation. ICLR 2023. https://arxiv.org/abs/2209.15076",
)
DEEPEDIT_REFERENCES = (
    "Diaz-Pinto A, et al. DeepEdit: Deep Editable Learning for Interactive Segmentation of 3D Medical Images. "
    "MICCAI DALI workshop 2022. https://arxiv.org/abs/2305.10655",
    "Diaz-Pinto A, et al. MONAI Label: A framework for AI-assisted interactive labeling of 3D medical images. "
    "Medical Image Analysis 2024. https://arxiv.org/abs/2203.12362",
)
AMOS_SOURCE = (
    "AMOS22 (MICCAI 2022 Abdominal Multi-organ Segmentation Challenge), {} cases: "
    "https://amos22.grand-challenge.org/ , download https://zenodo.org/record/7262581"
)
AMOS_REFERENCE = (
    "Ji Y, et al. AMOS: A Large-Scale Abdominal Multi-Organ Benchmark for Versatile Medical Image Segmentation. "
    "NeurIPS 2022 Datasets and Benchmarks. https://arxiv.org/abs/2206.08023"
)
KITS_SOURCE = (
    "KiTS21 (MICCAI 2021 Kidney and Kidney Tumor Segmentation Challenge): https://kits-challenge.org/kits21/ , "
    "data via https://github.com/neheller/kits21"
)
KITS_REFERENCE = (
    "Heller N, et al. The KiTS19 challenge data: 300 kidney tumor cases with clinical context, CT semantic "
    "segmentations, and surgical outcomes. arXiv:1904.00445 (2019); KiTS21 challenge: https://kits-challenge.org/kits21/"
)
MSD_SOURCE = "Medical Segmentation Decathlon {0}: http://medicaldecathlon.com/ , download https://msd-for-monai.s3-us-west-2.amazonaws.com/{0}.tar"
MSD_REFERENCE = (
    "Antonelli M, et al. The Medical Segmentation Decathlon. Nature Communications 13, 4128 (2022). "
    "https://doi.org/10.1038/s41467-022-30695-9"
)


@dataclass(frozen=True)
class BundleSpec:
    """One bundle of ``bundles/``.

    Attributes:
        name: folder name under ``bundles/`` (also the zip's top folder).
        dataset: name of its :class:`~rep3d_networks.data.specs.DatasetSpec`.
        title: metadata ``name`` and model-card title, without the DeepEdit suffix.
        target: what is segmented, as in "Segmentation of <target> with Rep3D".
        data_source: metadata ``data_source``.
        dataset_reference: the dataset's paper, last of the references.
        deepedit: the click-guided (DeepEdit) overlay of the recipe; ``base`` is the bundle it extends.
        base: the automatic bundle a DeepEdit bundle shares its classes and recipe with.
    """

    name: str
    dataset: str
    title: str
    target: str
    data_source: str
    dataset_reference: str
    deepedit: bool = False
    base: str = ""

    @property
    def data(self) -> DatasetSpec:
        """The dataset's facts (classes, label ids, modality, spacing, window)."""
        return get_dataset_spec(self.dataset)


def _automatic() -> Tuple[BundleSpec, ...]:
    return (
        BundleSpec(
            "amos_ct",
            "amos_ct",
            "Rep3D AMOS CT multi-organ segmentation",
            "15 abdominal organs in contrast CT",
            AMOS_SOURCE.format("CT"),
            AMOS_REFERENCE,
        ),
        BundleSpec(
            "amos_mri",
            "amos_mri",
            "Rep3D AMOS MRI multi-organ segmentation",
            "13 abdominal organs in MRI (AMOS MRI has no bladder or prostate/uterus labels)",
            AMOS_SOURCE.format("MRI"),
            AMOS_REFERENCE,
        ),
        BundleSpec(
            "kits",
            "kits",
            "Rep3D KiTS21 kidney, tumour and cyst segmentation",
            "kidney, renal tumour and renal cyst in contrast CT",
            KITS_SOURCE,
            KITS_REFERENCE,
        ),
        BundleSpec(
            "msd_pancreas",
            "msd_pancreas",
            "Rep3D MSD Task07 pancreas and tumour segmentation",
            "pancreas and pancreatic tumour in portal-venous CT",
            MSD_SOURCE.format("Task07_Pancreas"),
            MSD_REFERENCE,
        ),
        BundleSpec(
            "msd_hepatic_vessel",
            "msd_hepatic_vessel",
            "Rep3D MSD Task08 hepatic vessel and tumour segmentation",
            "hepatic vessels and liver tumours in portal-venous CT",
            MSD_SOURCE.format("Task08_HepaticVessel"),
            MSD_REFERENCE,
        ),
    )


def all_bundle_specs() -> dict:
    """``{name: BundleSpec}`` for the seven bundles: five automatic ones and the DeepEdit versions of two."""
    automatic = {spec.name: spec for spec in _automatic()}
    deepedit = {}
    for base in ("amos_ct", "kits"):
        spec = automatic[base]
        deepedit[f"{base}_deepedit"] = BundleSpec(
            f"{base}_deepedit",
            spec.dataset,
            spec.title,
            spec.target,
            spec.data_source,
            spec.dataset_reference,
            deepedit=True,
            base=base,
        )
    return {**automatic, **deepedit}


def get_bundle_spec(name: str) -> BundleSpec:
    """The spec of bundle ``name``.

    Raises:
        ValueError: no such bundle.
    """
    specs = all_bundle_specs()
    if name not in specs:
        raise ValueError(f"unknown bundle {name!r}; choose one of: {', '.join(specs)}")
    return specs[name]
