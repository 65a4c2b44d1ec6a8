"""Organ table of the synthetic abdominal phantom.

Coordinates are normalised to [-1, 1]: ``lr`` grows towards the patient's left, ``ap`` towards
posterior and ``si`` towards superior (the array axes of an LPS-stored volume, the usual storage of
CT NIfTI files converted from DICOM). Intensities are typical portal-venous CT HU and T1-weighted
post-contrast MRI values scaled to 0..1000.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from .specs import get_dataset_spec


@dataclass(frozen=True)
class Organ:
    """One organ of the phantom.

    Attributes:
        name: AMOS class name, as in the ``amos_ct`` dataset spec (which gives its label value).
        center: Centre ``(lr, ap, si)`` in normalised coordinates.
        radii: Semi-axes ``(lr, ap, si)``; for tubes only the first two are used.
        ct_hu: CT intensity (HU).
        mri_value: MRI intensity (0..1000).
        tube_z_range: ``(si_min, si_max)`` for vertical tubes (aorta, IVC, esophagus); ``None`` for blobs.
    """

    name: str
    center: Tuple[float, float, float]
    radii: Tuple[float, float, float]
    ct_hu: float
    mri_value: float
    tube_z_range: Tuple[float, float] = None

    @property
    def in_mri_field_of_view(self) -> bool:
        """Whether AMOS MRI (upper abdomen) labels it: the pelvic organs it does not label are not drawn in MRI."""
        return self.name in get_dataset_spec("amos_mri").class_names


def abdominal_organs() -> Tuple[Organ, ...]:
    """The 15 AMOS organs in painting order (later organs are drawn over earlier ones).

    Positions follow an axial CT of the upper abdomen and pelvis; CT values are portal-venous HU. The small
    organs (adrenal glands, esophagus, gallbladder, duodenum, prostate/uterus) are drawn about twice their
    true size relative to the body, so that at the phantom's 32-48 voxel resolution each is several voxels
    thick (a 2 mm adrenal limb would be sub-voxel and unlearnable); neighbours differ by >= 40 HU or by side.
    """
    return (
        Organ("liver", (-0.38, 0.00, 0.42), (0.36, 0.40, 0.36), 105, 450),
        Organ("spleen", (0.52, 0.26, 0.46), (0.16, 0.21, 0.24), 125, 380),
        Organ("stomach", (0.30, -0.22, 0.50), (0.22, 0.17, 0.22), 15, 280),
        Organ("right kidney", (-0.40, 0.36, 0.00), (0.15, 0.15, 0.26), 175, 540),
        Organ("left kidney", (0.40, 0.36, 0.04), (0.15, 0.15, 0.26), 175, 540),
        Organ("aorta", (0.07, 0.30, 0.0), (0.095, 0.095, 0.0), 230, 680, tube_z_range=(-0.60, 0.80)),
        Organ("inferior vena cava", (-0.15, 0.27, 0.0), (0.10, 0.085, 0.0), 150, 620, tube_z_range=(-0.60, 0.70)),
        Organ("pancreas", (0.14, 0.04, 0.18), (0.26, 0.10, 0.11), 85, 480),
        Organ("duodenum", (-0.20, -0.08, 0.04), (0.11, 0.11, 0.17), 35, 320),
        Organ("gallbladder", (-0.30, -0.34, 0.24), (0.12, 0.11, 0.15), -5, 120),
        Organ("right adrenal gland", (-0.22, 0.38, 0.40), (0.11, 0.10, 0.15), 45, 400),
        Organ("left adrenal gland", (0.24, 0.38, 0.40), (0.11, 0.10, 0.15), 45, 400),
        Organ("esophagus", (0.05, 0.18, 0.0), (0.10, 0.10, 0.0), 50, 300, tube_z_range=(0.80, 1.0)),
        Organ("urinary bladder", (0.0, -0.20, -0.70), (0.24, 0.18, 0.18), 5, 150),
        Organ("prostate/uterus", (0.0, 0.12, -0.84), (0.13, 0.12, 0.12), 70, 350),
    )


@dataclass(frozen=True)
class TissueValues:
    """Intensities of the tissues around the organs (HU for CT, 0..1000 for MRI)."""

    air: float
    fat: float
    muscle: float
    visceral: float
    bone: float
    noise_sigma: float
    lesion_offset: float
    cyst: float
    vessel: float


def tissue_values(modality: str) -> TissueValues:
    """Background tissue intensities for ``"CT"`` or ``"MRI"``."""
    if modality == "CT":
        return TissueValues(
            air=-1000,
            fat=-100,
            muscle=50,
            visceral=-70,
            bone=450,
            noise_sigma=12,
            lesion_offset=-45,
            cyst=5,
            vessel=180,
        )
    return TissueValues(
        air=5, fat=780, muscle=250, visceral=560, bone=330, noise_sigma=15, lesion_offset=-180, cyst=120, vessel=700
    )
