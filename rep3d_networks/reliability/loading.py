"""Loading images with errors that name the file and say what is wrong with it."""

import gzip
import os
import zlib
from typing import Optional

from monai.data import MetaTensor
from monai.transforms import LoadImage

from rep3d_networks.reliability.errors import VolumeError

FORMATS = "a NIfTI (.nii, .nii.gz), NRRD or other ITK-readable 3D image, or a folder holding one DICOM series"


def gzip_problem(path: str) -> Optional[str]:
    """What is wrong with a ``.gz`` file's compressed stream, or None if it decompresses to the end."""
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 24):
                pass
    except EOFError:
        return "is truncated (the compressed data ends early): copy or download it again"
    except (OSError, zlib.error) as error:
        return f"is not valid gzip data ({error}): it is corrupt or not a .nii.gz file"
    return None


def describe_load_error(path: str, error: BaseException) -> str:
    """A short explanation of why ``path`` could not be read (``error`` is what the reader raised)."""
    path = str(path)
    if not os.path.exists(path):
        return "does not exist"
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return "is empty (0 bytes): the copy or export did not finish; write it again"
    if os.path.isfile(path) and path.endswith(".gz"):
        problem = gzip_problem(path)
        if problem:
            return problem
    if os.path.isdir(path):
        return f"is a folder without a readable DICOM series ({type(error).__name__}: {error}); expected {FORMATS}"
    return f"cannot be read as an image ({type(error).__name__}: {error}); expected {FORMATS}"


def load_volume(path: str, dtype=None) -> MetaTensor:
    """Reads ``path`` channel-first with MONAI's ``LoadImage`` (file or DICOM folder).

    Raises:
        VolumeError: the file is missing, empty, truncated, corrupt or not an image.
    """
    try:
        return LoadImage(image_only=True, ensure_channel_first=True, dtype=dtype)(path)
    except Exception as error:
        raise VolumeError(path, describe_load_error(path, error)) from error
