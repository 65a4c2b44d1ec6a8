"""The shared data's second person as a held-out study for the click study (``docs/interactive.md``).

``../shared/data/totalseg_ct_dicom_1mm`` is another person than the CT the real-CT click models train on: 20 DICOM
slices (0.98 x 0.98 x 2 mm, upper abdomen, no kidneys). This writes it as ``<output_dir>/heldout/images/person2.nii.gz``
(the series as SimpleITK reads it, as the app would) with its TotalSegmentator label mapped to the AMOS classes on the
same grid (``heldout/labels``; the PACS tests' mapping, ``tests/pacs_helpers.py``), and links the models' bundles, so
that ``benchmarks/click_study.sh`` serves them on it:

    python benchmarks/second_person_heldout.py click_models_real_ct_1200 person2_study
    bash benchmarks/click_study.sh person2_study benchmarks/results/clicks_real_ct_person2
"""

import shutil
import sys
from pathlib import Path

import fire
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pacs_helpers import CT_SERIES, amos_label_on_series, series_image

from rep3d_networks.analysis.convergence_data import default_shared_data


def main(models_dir: str, output_dir: str, shared_data: str = None) -> None:
    """Writes ``output_dir/heldout`` and links ``output_dir/bundles`` to ``models_dir/bundles``."""
    models, out = Path(models_dir).resolve(), Path(output_dir)
    if out.exists():
        raise SystemExit(f"{out} already exists: choose a new output_dir")
    shared = Path(shared_data) if shared_data else default_shared_data()
    series = shared / CT_SERIES
    for folder in ("images", "labels"):
        (out / "heldout" / folder).mkdir(parents=True)
    sitk.WriteImage(series_image(series), str(out / "heldout" / "images" / "person2.nii.gz"), True)
    amos_label_on_series(shared, series, out / "heldout" / "labels" / "person2.nii.gz")
    (out / "bundles").symlink_to(models / "bundles")
    shutil.copy(models / "results.md", out / "results.md")


if __name__ == "__main__":
    fire.Fire(main)
