"""Dataset tooling for the Rep3D bundles: datalists, downloads, phantoms and real-data test sets.

Command line: ``python -m rep3d_networks.data <command>`` with the commands

* ``prepare``: seeded Decathlon-style datalists (``datalist_fold*.json``) from an official layout
  (AMOS22, KiTS21, MSD Task07/Task08), paths relative to ``data_dir``;
* ``download``: official archives through ``monai.apps.download_and_extract`` (MSD, AMOS22);
* ``phantom``: a synthetic abdominal phantom dataset in a dataset's official layout;
* ``totalseg``: a tiny dataset in the official layout from the real TotalSegmentator volumes.
"""

from .download import download_dataset
from .phantom import write_phantom_dataset
from .prepare import prepare_datalists
from .specs import dataset_names, get_dataset_spec
from .totalseg import write_totalseg_dataset

__all__ = [
    "dataset_names",
    "download_dataset",
    "get_dataset_spec",
    "prepare_datalists",
    "write_phantom_dataset",
    "write_totalseg_dataset",
]
