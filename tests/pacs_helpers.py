"""A real PACS for the tests: Orthanc with its DICOMweb plugin (Debian packages ``orthanc``, ``orthanc-dicomweb``),
reachable on 127.0.0.1 only, and the shared DICOM series prepared as a PACS import would store them.

Orthanc 1.10 listens on all interfaces and has no option to bind loopback only, so :func:`loopback_namespace`
moves the test process (its main thread, and every process it starts from there) into a network namespace
that has nothing but ``lo`` (``ip netns``; needs root, as CI runs): Orthanc, the app and the client then talk over
127.0.0.1 and nothing outside the namespace can reach them.
"""

import ctypes
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np
import pydicom
import pytest
import requests
import SimpleITK as sitk
from app_helpers import CT_LABELS_JSON, SERVER_START_S, Server, app_conf, copy_app, free_port, make_tiny_bundle
from pydicom.uid import CTImageStorage, generate_uid

ORTHANC = "Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
CLONE_NEWNET = 0x40000000  # <sched.h>
ORTHANC_START_S = 60
CT_SERIES = "totalseg_ct_dicom_1mm/example_ct_dicom"  # 20 slices, JPEG 2000 lossless, UIDs blanked
CT_SERIES_LABEL = "totalseg_ct_dicom_1mm/example_seg_dicom.nii.gz"  # TotalSegmentator "total" ids, y flipped
CT_3SLICE = "dcmqi_ct_3slice/ct-3slice"  # 3 slices, uncompressed, with UIDs


def pacs_missing() -> Optional[str]:
    """Why the PACS tests cannot run here (``None`` when they can): not root, no ``ip``, no Orthanc or plugin."""
    if os.geteuid() != 0:
        return "the PACS tests need root for a network namespace (ip netns), as CI runs"
    if not shutil.which("ip"):
        return "'ip' (iproute2) is not installed"
    if not shutil.which(ORTHANC) or not DICOMWEB_PLUGIN.exists():
        return "Orthanc with its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb)"
    return None


def require_pacs() -> None:
    """Skips the calling test when :func:`pacs_missing` says why; under ``REP3D_REQUIRE_PACS=1`` (CI) it fails."""
    missing = pacs_missing()
    if missing:
        if os.environ.get("REP3D_REQUIRE_PACS") == "1":
            pytest.fail(f"{missing} and REP3D_REQUIRE_PACS=1")
        pytest.skip(missing)


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"setns: {os.strerror(error)}")


@contextmanager
def loopback_namespace(name: str) -> Iterator[None]:
    """Runs the calling thread (and the processes it starts) in a new network namespace holding only ``lo`` (up)."""
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        original = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
        target = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(original)
        finally:
            os.close(target)
            os.close(original)
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def interfaces() -> List[str]:
    """The network interfaces the calling thread sees (``/proc/net/dev`` follows the thread's namespace)."""
    lines = Path(f"/proc/{os.getpid()}/task/{threading.get_native_id()}/net/dev").read_text().splitlines()[2:]
    return sorted(line.split(":")[0].strip() for line in lines)


class Orthanc:
    """An Orthanc server with DICOMweb on 127.0.0.1, its database and storage in ``workdir`` (a fresh PACS)."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dicomweb = f"{self.url}/dicom-web"
        config = {
            "Name": "rep3d-test-pacs",
            "StorageDirectory": str(workdir / "storage"),
            "IndexDirectory": str(workdir / "storage"),
            "HttpPort": self.port,
            "DicomPort": free_port(),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        (workdir / "orthanc.json").write_text(json.dumps(config, indent=2))
        self.log = workdir / "orthanc.log"
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [ORTHANC, str(workdir / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + ORTHANC_START_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}/system", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"Orthanc not up after {ORTHANC_START_S} s:\n{self.log.read_text()[-3000:]}")

    def upload(self, files: List[Path]) -> None:
        """Stores DICOM files through Orthanc's REST API (as a modality's C-STORE would)."""
        for path in files:
            response = requests.post(f"{self.url}/instances", data=path.read_bytes(), timeout=30)
            response.raise_for_status()

    def series(self, modality: str = "") -> List[dict]:
        """``[{SeriesInstanceUID, Modality, SeriesDescription, ...}]`` of the stored series (optionally one
        modality)."""
        found = requests.post(
            f"{self.url}/tools/find",
            json={"Level": "Series", "Query": {"Modality": modality or "*"}, "Expand": True},
            timeout=30,
        ).json()
        return [item["MainDicomTags"] for item in found]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def serve_pacs(
    root: Path, repo_root: Path, served: dict, uploads: List[Path], port: Optional[int] = None
) -> Iterator[Tuple[Orthanc, Server]]:
    """Orthanc holding ``uploads`` and the app serving it (tiny copies of the ``served`` bundles: name -> starts with
    random weights; DICOMweb cache in ``root/cache``), both on 127.0.0.1 in a loopback-only namespace that the
    calling thread is in until the block ends; ``port``: the app's (a free one unless given)."""
    with loopback_namespace(f"rep3d-{os.getpid()}-{root.name}"):
        orthanc = Orthanc(root / "orthanc")
        server = None
        try:
            orthanc.upload(uploads)
            bundles = root / "bundles"
            for name, with_weights in served.items():
                make_tiny_bundle(name, bundles, with_weights)
            server = Server(
                copy_app(repo_root, root / "app"),
                orthanc.dicomweb,
                app_conf(served, bundles),
                root,
                env={"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(root / "cache"), "PATH": "/usr/bin:/bin"},
                port=port,
            )
            server.wait_until_up(SERVER_START_S)
            yield orthanc, server
        finally:
            if server is not None:
                server.stop()
            orthanc.stop()


def _uid(*parts: str) -> str:
    """A stable UID from ``parts`` (pydicom's ``generate_uid`` with entropy sources: same parts, same UID)."""
    return generate_uid(entropy_srcs=list(parts))


def prepare_series(source: Path, target: Path, patient_id: str) -> List[Path]:
    """A copy of the DICOM files in ``source`` with the identifiers a PACS import fills in where they are empty:
    study, series and instance UIDs (the instance UID from the file meta when it has one), SOP class, patient id.
    Pixel data and transfer syntax are kept as they are (the shared CT stays JPEG 2000)."""
    target.mkdir(parents=True, exist_ok=True)
    files = []
    for path in sorted(p for p in source.iterdir() if p.is_file()):
        ds = pydicom.dcmread(path)
        key = hashlib.sha256(str(source).encode()).hexdigest()
        ds.StudyInstanceUID = ds.get("StudyInstanceUID") or _uid(key, "study")
        ds.SeriesInstanceUID = ds.get("SeriesInstanceUID") or _uid(key, "series")
        ds.SOPInstanceUID = (
            ds.get("SOPInstanceUID") or ds.file_meta.get("MediaStorageSOPInstanceUID") or _uid(key, path.name)
        )
        ds.SOPClassUID = ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID") or CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.PatientID = ds.get("PatientID") or patient_id
        ds.PatientName = ds.get("PatientName") or patient_id
        out = target / path.name
        ds.save_as(out, write_like_original=False)
        files.append(out)
    return files


def series_image(series_dir: Path) -> sitk.Image:
    """The DICOM series as SimpleITK reads it (what the app converts: same grid)."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series_dir)))
    return reader.Execute()


def amos_label_on_series(shared_data: Path, series_dir: Path, path: Path) -> Path:
    """The TotalSegmentator label of the DICOM CT mapped to the AMOS classes and resampled onto the series' grid
    (the shared file is y-flipped: nearest neighbour, identity transform), as a NIfTI a Slicer user would submit."""
    mapping = json.loads((shared_data / CT_LABELS_JSON).read_text())["suggested_mapping_to_AMOS15"]
    source = sitk.ReadImage(str(shared_data / CT_SERIES_LABEL))
    values = sitk.GetArrayFromImage(source)
    amos = np.zeros(values.shape, np.uint8)
    for value, entry in mapping.items():
        amos[values == entry["source_label"]] = int(value)
    image = sitk.GetImageFromArray(amos)
    image.CopyInformation(source)
    on_series = sitk.Resample(
        image, series_image(series_dir), sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
    )
    sitk.WriteImage(on_series, str(path), True)
    return path
