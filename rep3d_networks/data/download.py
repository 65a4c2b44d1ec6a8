"""``download``: fetch and extract an official dataset archive with ``monai.apps.download_and_extract``.

* MSD Task07/Task08: the MONAI mirror of the Decathlon tars, checked against the md5 values that
  ``monai.apps.DecathlonDataset`` uses.
* AMOS22: the Zenodo zip (record 7262581). Zenodo publishes no checksum for it, so none is checked
  unless ``--md5`` is given.
* KiTS21: there is no single archive; the kits21 repository downloads each case's image with its own
  script, so this command explains that instead of downloading.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from .specs import DatasetSpec, get_dataset_spec

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
SKIP_CHECKSUM = "skip"


def kits_download_message(root_dir: Path) -> str:
    """Instructions for getting KiTS21, which has no single archive."""
    return (
        "KiTS21 has no single archive to download: its images are fetched case by case by the official "
        "repository's script. Run:\n"
        f"  git clone https://github.com/neheller/kits21 {Path(root_dir) / 'kits21'}\n"
        f"  cd {Path(root_dir) / 'kits21'} && pip install -e . && python kits21/starter_code/get_imaging.py\n"
        f"then: python -m rep3d_networks.data prepare --dataset kits --data_dir {Path(root_dir) / 'kits21'} "
        "--output_dir bundles/kits/configs"
    )


def file_md5(path: Path, chunk_size: int = 1 << 20) -> str:
    """md5 hex digest of a file."""
    digest = hashlib.md5()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def archive_name(url: str) -> str:
    """File name of the archive a URL points at.

    Raises:
        ValueError: If the name does not end with a supported archive suffix.
    """
    name = Path(unquote(urlparse(url).path)).name
    if not name.endswith(ARCHIVE_SUFFIXES):
        raise ValueError(f"URL {url} does not point at a {'/'.join(ARCHIVE_SUFFIXES)} archive")
    return name


def expected_md5(spec: DatasetSpec, md5: Optional[str]) -> Optional[str]:
    """The checksum to verify: ``md5`` if given (``"skip"`` disables checking), else the official one."""
    if md5 is None:
        return spec.md5
    md5 = str(md5).strip().lower()
    return None if md5 == SKIP_CHECKSUM else md5


def local_archive_path(url: str) -> Path:
    """Filesystem path of a ``file://`` URL.

    Raises:
        FileNotFoundError: If the file does not exist.
    """
    parsed = urlparse(url)
    source = Path(url2pathname(parsed.path if not parsed.netloc else f"//{parsed.netloc}{parsed.path}"))
    if not source.is_file():
        raise FileNotFoundError(f"local archive {source} (from {url}) does not exist")
    return source


def verify_md5(path: Path, hash_val: Optional[str], what: str) -> None:
    """Raise ValueError naming ``what`` if ``path``'s md5 is not ``hash_val`` (None skips the check)."""
    if hash_val is None:
        return
    actual = file_md5(path)
    if actual != hash_val:
        raise ValueError(f"md5 of {what} is {actual}, expected {hash_val}")


def download_dataset(
    dataset: str, root_dir: str, url: Optional[str] = None, md5: Optional[str] = None, progress: bool = True
) -> Path:
    """Download and extract ``dataset`` into ``root_dir``.

    Args:
        dataset: ``amos_ct``, ``amos_mri`` (both the AMOS22 zip), ``msd_pancreas``, ``msd_hepatic_vessel``
            or ``kits`` (raises with instructions).
        root_dir: Where the archive is saved and extracted.
        url: Alternative URL (a mirror, or ``file:///path/archive.tar``).
        md5: Expected md5 of the archive; default the official value (none for AMOS22);
            ``"skip"`` disables the check.
        progress: Show MONAI's download progress bar.

    Returns:
        The extracted dataset folder (``root_dir/amos22``, ``root_dir/Task07_Pancreas``, ...), ready for ``prepare``.

    Raises:
        NotImplementedError: For KiTS21 (see :func:`kits_download_message`).
        ValueError: Checksum mismatch, unsupported URL, or an archive without the expected top folder.
        FileNotFoundError: A ``file://`` archive that does not exist.
    """
    from monai.apps import download_and_extract, extractall  # imported lazily: MONAI (with torch) is slow to import

    spec = get_dataset_spec(dataset)
    root = Path(root_dir).expanduser()
    if spec.url is None:
        raise NotImplementedError(kits_download_message(root))
    url = url or spec.url
    hash_val = expected_md5(spec, md5)
    root.mkdir(parents=True, exist_ok=True)
    archive = root / archive_name(url)
    if archive.exists():
        verify_md5(archive, hash_val, f"the existing {archive} (a partial download? remove it and run download again)")
    if hash_val is None:
        reason = "none is published" if md5 is None else "--md5 skip"
        print(f"note: the md5 of {archive.name} is not checked ({reason})", file=sys.stderr)
    if urlparse(url).scheme == "file":
        # monai.apps.download_and_extract asks the server for the file name with requests.head(url), which
        # raises for file:// URLs (requests has no file adapter), so local archives are copied and then
        # extracted with monai.apps.extractall, the same extraction step download_and_extract uses.
        source = local_archive_path(url)
        verify_md5(source, hash_val, f"{source} (from {url})")
        if not archive.exists():
            shutil.copyfile(source, archive)
        extractall(str(archive), output_dir=str(root), hash_val=hash_val, hash_type="md5")
    else:
        try:
            download_and_extract(
                url, filepath=str(archive), output_dir=str(root), hash_val=hash_val, hash_type="md5", progress=progress
            )
        except RuntimeError as error:
            if "check of downloaded file failed" in str(error):
                raise ValueError(
                    f"md5 of {archive} downloaded from {url} is {file_md5(archive)}, expected {hash_val}; "
                    "remove the file and try again (or check the URL)"
                ) from error
            raise
    extracted = root / spec.source_dir
    if not extracted.is_dir():
        raise ValueError(
            f"{archive} did not contain the expected top folder {spec.source_dir}/ (looked for {extracted})"
        )
    return extracted
