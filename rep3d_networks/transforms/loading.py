"""Loading volumes with errors that name the file and say what is wrong with it: ``LoadVolumed`` and ``load_volume``."""

import gzip
import os
import zlib
from typing import Any, Optional

import nibabel as nib
from monai.data import MetaTensor
from monai.transforms import LoadImage, LoadImaged

from rep3d_networks.transforms.checks import check_geometry
from rep3d_networks.transforms.errors import VolumeError

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


def nifti_header_geometry(path) -> Optional[tuple]:
    """``(affine, shape)`` from a NIfTI file's header alone (nothing decompressed beyond it), or None."""
    if (
        not isinstance(path, (str, os.PathLike))
        or not str(path).endswith((".nii", ".nii.gz"))
        or not os.path.isfile(path)
    ):
        return None
    try:
        header = nib.load(str(path))
    except Exception:  # left to the reader, whose error is explained by describe_load_error
        return None
    return header.affine, header.shape


class LoadVolumed(LoadImaged):
    """``LoadImaged`` whose read errors name the file and the problem (empty, truncated, corrupt, not an image).

    Same arguments and output as :class:`monai.transforms.LoadImaged`, plus ``max_voxels``. When reading fails, the
    key whose file cannot be read is found and a :class:`VolumeError` ``"<file>: <problem>"`` is raised from the
    reader's error. A NIfTI file's header is checked before its data are read (:func:`check_geometry`: plausible
    voxel spacing, at most ``max_voxels`` voxels), so an oversized volume is refused without loading it.

    Args:
        max_voxels: voxel budget per file, or None for no limit.
        args, kwargs: as :class:`monai.transforms.LoadImaged`.
    """

    def __init__(self, *args: Any, max_voxels: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_voxels = max_voxels

    def __call__(self, data, reader=None):
        for key in self.key_iterator(dict(data)):
            geometry = nifti_header_geometry(data[key])
            if geometry is not None:
                check_geometry(geometry[0], geometry[1], str(data[key]), self.max_voxels)
        try:
            return super().__call__(data, reader)
        except Exception as error:
            for key in self.key_iterator(dict(data)):
                path = data[key]
                if not isinstance(path, (str, os.PathLike)):
                    continue
                try:
                    self._loader(path, reader)
                except Exception as key_error:
                    raise VolumeError(str(path), describe_load_error(str(path), key_error)) from error
            raise
