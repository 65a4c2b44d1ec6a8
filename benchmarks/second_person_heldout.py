"""The shared data's second person as a held-out study for the click study (``docs/interactive.md``).

``../shared/data/totalseg_ct_dicom_1mm`` is another person than the CT the real-CT click models train on: 20 DICOM
slices (0.98 x 0.98 x 2 mm, upper abdomen, no kidneys). This writes it as ``<output_dir>/heldout/images/person2.nii.gz``
(the series as SimpleITK reads it, as the app would) with its TotalSegmentator label mapped to the AMOS classes on the
same grid (``heldout/labels``; :func:`rep3d_networks.data.totalseg.amos_mapping`; the shared label file is stored
y-flipped: nearest neighbour, identity transform), and links the models' bundles, so that
``benchmarks/click_study.sh`` serves them on it:

    python benchmarks/second_person_heldout.py click_models_real_ct_1200 person2_study
    bash benchmarks/click_study.sh person2_study benchmarks/results/clicks_real_ct_person2
"""

import shutil
from pathlib import Path

import fire
import SimpleITK as sitk

from rep3d_networks.analysis.convergence_data import default_shared_data
from rep3d_networks.data.totalseg import amos_mapping, map_labels

SERIES = "totalseg_ct_dicom_1mm/example_ct_dicom"
SERIES_LABEL = "totalseg_ct_dicom_1mm/example_seg_dicom.nii.gz"  # TotalSegmentator "total" ids


def amos_label_on(image: sitk.Image, ts_label: sitk.Image) -> sitk.Image:
    """``ts_label`` mapped to the AMOS classes and resampled onto ``image``'s grid (nearest neighbour)."""
    amos = sitk.GetImageFromArray(map_labels(sitk.GetArrayFromImage(ts_label), amos_mapping("total")))
    amos.CopyInformation(ts_label)
    return sitk.Resample(amos, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def main(models_dir: str, output_dir: str, shared_data: str = None) -> None:
    """Writes ``output_dir/heldout`` and links ``output_dir/bundles`` to ``models_dir/bundles``."""
    models, out = Path(models_dir).resolve(), Path(output_dir)
    if out.exists():
        raise SystemExit(f"{out} already exists: choose a new output_dir")
    shared = Path(shared_data) if shared_data else default_shared_data()
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(shared / SERIES)))
    image = reader.Execute()
    for folder in ("images", "labels"):
        (out / "heldout" / folder).mkdir(parents=True)
    sitk.WriteImage(image, str(out / "heldout" / "images" / "person2.nii.gz"), True)
    label = amos_label_on(image, sitk.ReadImage(str(shared / SERIES_LABEL)))
    sitk.WriteImage(label, str(out / "heldout" / "labels" / "person2.nii.gz"), True)
    (out / "bundles").symlink_to(models / "bundles")
    shutil.copy(models / "results.md", out / "results.md")


if __name__ == "__main__":
    fire.Fire(main)
