"""Command-line commands of ``python -m rep3d_networks.data`` (dispatched with ``fire``).

Examples::

    python -m rep3d_networks.data phantom --dataset kits --output_dir /tmp/phantom
    python -m rep3d_networks.data prepare --dataset kits --data_dir /tmp/phantom/kits21 \\
        --output_dir bundles/kits/configs
    python -m rep3d_networks.data download --dataset msd_pancreas --root_dir /data
    python -m rep3d_networks.data totalseg --dataset amos_ct --shared_data ../shared/data --output_dir /tmp/ts
"""

from __future__ import annotations

from typing import List, Optional

from .download import download_dataset
from .phantom import write_phantom_dataset
from .prepare import prepare_datalists
from .totalseg import write_totalseg_dataset


def require_text(name: str, value) -> Optional[str]:
    """Reject values that ``fire`` parsed into numbers (e.g. an all-digit md5 would lose leading zeros).

    Raises:
        ValueError: If ``value`` is neither None nor a string.
    """
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"--{name} was parsed as {type(value).__name__} {value!r}; quote it, e.g. --{name} '\"{value}\"'")


def prepare(
    dataset: str,
    data_dir: str,
    output_dir: str,
    seed: int = 0,
    overwrite: bool = False,
    num_folds: Optional[int] = None,
    check_labels: bool = False,
) -> List[str]:
    """Write seeded Decathlon-style datalists (datalist_fold*.json) for an official dataset layout.

    Args:
        dataset: amos_ct | amos_mri | kits | msd_pancreas | msd_hepatic_vessel.
        data_dir: The official dataset folder (amos22, kits21 or kits21/data, Task07_Pancreas, ...) or its
            parent; datalist paths are relative to the official top folder (the bundle's dataset_dir).
        output_dir: Bundle configs folder, e.g. bundles/amos_ct/configs.
        seed: Split seed.
        overwrite: Replace existing datalists with different content.
        num_folds: KiTS/MSD folds (default 5).
        check_labels: Also check every label's values (loads all labels).

    Returns:
        The datalist paths.
    """
    paths = prepare_datalists(
        dataset,
        require_text("data_dir", data_dir),
        require_text("output_dir", output_dir),
        seed,
        overwrite,
        num_folds,
        check_labels,
    )
    return [str(path) for path in paths]


def download(
    dataset: str, root_dir: str, url: Optional[str] = None, md5: Optional[str] = None, progress: bool = True
) -> str:
    """Download and extract the official archive (MSD tars with md5; AMOS22 zip, no published md5).

    Args:
        dataset: amos_ct | amos_mri | msd_pancreas | msd_hepatic_vessel (kits explains how to get KiTS21).
        root_dir: Folder for the archive and the extracted dataset.
        url: Alternative URL (mirror or file:///path/archive.tar).
        md5: Expected md5 (default: the official one); "skip" disables the check.
        progress: Show a progress bar.

    Returns:
        The extracted dataset folder.
    """
    root = require_text("root_dir", root_dir)
    return str(download_dataset(dataset, root, require_text("url", url), require_text("md5", md5), progress))


def phantom(
    dataset: str, output_dir: str, num_cases: int = 6, size: int = 64, seed: int = 0, overwrite: bool = False
) -> str:
    """Write a synthetic abdominal phantom dataset in the dataset's official layout.

    Args:
        dataset: amos_ct | amos_mri | kits | msd_pancreas | msd_hepatic_vessel.
        output_dir: Parent folder of the dataset folder that is created.
        num_cases: Number of cases.
        size: Volume edge length in voxels.
        seed: Seed.
        overwrite: Replace existing files.

    Returns:
        The dataset folder (pass it to prepare --data_dir).
    """
    output = require_text("output_dir", output_dir)
    return str(write_phantom_dataset(dataset, output, num_cases, size, seed, overwrite))


def totalseg(
    dataset: str,
    shared_data: str,
    output_dir: str,
    num_cases: Optional[int] = None,
    min_slab_slices: int = 16,
    synthetic_lesions: bool = True,
    ct_source: str = "full",
    seed: int = 0,
    overwrite: bool = False,
) -> str:
    """Build a tiny dataset in the official layout from the real TotalSegmentator volumes in shared/data.

    The one subject per modality is cut into z-slabs (overlapping cases); labels are TotalSegmentator
    predictions mapped to the dataset's classes; KiTS/MSD tumours are synthetic (see rep3d_networks.data.totalseg).

    Args:
        dataset: amos_ct | amos_mri | kits | msd_pancreas | msd_hepatic_vessel.
        shared_data: Path to the shared/data folder beside the repository.
        output_dir: Parent folder of the dataset folder that is created.
        num_cases: Number of slab cases (default 3 for AMOS, 5 for KiTS/MSD).
        min_slab_slices: Minimum slab thickness in slices.
        synthetic_lesions: Add synthetic tumours/cysts for KiTS and MSD.
        ct_source: full (example_ct, abdomen-pelvis) or small (example_ct_sm).
        seed: Seed of the synthetic lesions.
        overwrite: Replace existing files.

    Returns:
        The dataset folder (pass it to prepare --data_dir).
    """
    return str(
        write_totalseg_dataset(
            dataset,
            require_text("shared_data", shared_data),
            require_text("output_dir", output_dir),
            num_cases,
            min_slab_slices,
            synthetic_lesions,
            ct_source,
            seed,
            overwrite,
        )
    )


def commands() -> dict:
    """The CLI commands by name."""
    return {"prepare": prepare, "download": download, "phantom": phantom, "totalseg": totalseg}
