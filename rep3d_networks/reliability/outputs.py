"""Where bundle inference writes its labels: always inside ``output_dir``."""

import os
from typing import Sequence


def output_root(inputs: Sequence[str], default: str) -> str:
    """The ``data_root_dir`` for ``SaveImaged``: the deepest folder holding every input.

    ``SaveImaged`` keeps each input's path relative to ``data_root_dir`` below ``output_dir``. With the dataset
    folder there, an input outside it (e.g. ``/data/new_case.nii.gz`` or a DICOM folder elsewhere) gave a
    relative path with ``..`` and the label was written outside ``output_dir``, possibly next to the input.
    The common folder of the inputs' parents keeps distinct outputs for inputs with the same name in different
    folders (KiTS ``case_*/imaging.nii.gz``) and never leaves ``output_dir``.

    Args:
        inputs: the image files or DICOM folders to be segmented.
        default: returned when there is no input.
    """
    parents = [os.path.dirname(os.path.abspath(os.path.normpath(str(path)))) for path in inputs]
    return os.path.commonpath(parents) if parents else default
