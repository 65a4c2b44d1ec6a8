"""The app against a real PACS (``apps/rep3d/lib/dicomweb.py``, issue #27): Orthanc with DICOMweb on 127.0.0.1 in a
network namespace of its own (``tests/pacs_helpers.py``), the shared JPEG 2000 CT series and the 3-slice dcmqi CT
uploaded as a PACS import stores them, and everything a user does through ``MONAILabelClient``: list, next sample,
automatic and click inference, save label (DICOM SEG), the SEG read back on a fresh cache with the same label
values, training from the PACS labels; refusals for unknown series, non-image series and labels off the grid.

Needs root (``ip netns``) and ``apt-get install orthanc orthanc-dicomweb``; ``.ci/run`` installs them and sets
``REP3D_REQUIRE_PACS=1``, which turns the skip into a failure.
"""

import re
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import requests
import SimpleITK as sitk
from app_helpers import wait_for_task
from dicomweb_client import DICOMwebClient
from monailabel.client.client import MONAILabelClientException
from pacs_helpers import (
    CT_3SLICE,
    CT_SERIES,
    Orthanc,
    amos_label_on_series,
    interfaces,
    prepare_series,
    require_pacs,
    series_image,
    serve_pacs,
)
from pydicom.dataset import Dataset, FileMetaDataset

from rep3d_networks.data.specs import get_dataset_spec

SERVED = {"amos_ct": True, "amos_ct_deepedit": True}  # bundle -> starts with (random) weights
AMOS_VALUES = [0, 1, 6, 7, 8, 9, 10, 11]  # the CT's label: spleen, liver, stomach, aorta, IVC, pancreas, right adrenal
LIVER = get_dataset_spec("amos_ct").label_ids["liver"]


@pytest.fixture(scope="module")
def app_lib(repo_root):
    """The app's ``lib`` package (imported as the server imports it)."""
    sys.path.insert(0, str(repo_root / "apps" / "rep3d"))
    for module in [m for m in sys.modules if m == "lib" or m.startswith("lib.")]:
        del sys.modules[module]
    from lib import bundles, dicomweb

    yield dicomweb, bundles
    sys.path.remove(str(repo_root / "apps" / "rep3d"))


@pytest.fixture(scope="module")
def pacs(tmp_path_factory, shared_data, repo_root):
    """Orthanc holding the two CT series and the app serving it (``serve_pacs``); yields what the tests need."""
    require_pacs()
    root = tmp_path_factory.mktemp("rep3d_pacs")
    ct = prepare_series(shared_data / CT_SERIES, root / "ct", "REP3D-CT")
    ct3 = prepare_series(shared_data / CT_3SLICE, root / "ct3", "REP3D-CT3")
    with serve_pacs(root, repo_root, SERVED, ct + ct3) as (orthanc, server):
        from monailabel.client import MONAILabelClient

        yield {
            "orthanc": orthanc,
            "server": server,
            "client": MONAILabelClient(server.url, tmpdir=str(root / "client")),
            "root": root,
            "cache": root / "cache",
            "ct_dir": root / "ct",
            "ct": str(pydicom.dcmread(ct[0]).SeriesInstanceUID),
            "ct3": str(pydicom.dcmread(ct3[0]).SeriesInstanceUID),
        }


def status_of(call) -> int:
    """The HTTP status of a refused client call (``infer`` only puts it in the message: ``Status: 404; ...``)."""
    with pytest.raises(MONAILabelClientException) as error:
        call()
    return int(error.value.status_code or re.match(r"Status: (\d+)", error.value.msg).group(1))


def seg_series(orthanc: Orthanc) -> list:
    return orthanc.series("SEG")


def test_pacs_listens_on_loopback_only(pacs):
    assert interfaces() == ["lo"]  # nothing but loopback in the namespace Orthanc and the app run in
    assert requests.get(f"{pacs['orthanc'].url}/system", timeout=5).json()["Name"] == "rep3d-test-pacs"


def next_samples(client, count: int) -> set:
    """``count`` random picks, a second apart (upstream's ``random`` weighs images by the seconds since their last
    pick and fails when every image was picked within the same second)."""
    picks = set()
    for _ in range(count):
        time.sleep(1.1)
        picks.add(client.next_sample("random", {})["id"])
    return picks


def test_next_sample_offers_the_image_series(pacs):
    assert next_samples(pacs["client"], 3) <= {pacs["ct"], pacs["ct3"]}


def test_unknown_series_is_404(pacs):
    assert status_of(lambda: pacs["client"].infer("amos_ct", "1.2.3.4.5", {})) == 404


def test_infer_on_jpeg2000_series(pacs):
    """The shared CT is stored JPEG 2000 (Orthanc cannot transcode it): the app fetches it as stored and decodes it."""
    label_file, _ = pacs["client"].infer("amos_ct", pacs["ct"], {})
    reference = series_image(pacs["ct_dir"])
    label = nib.load(label_file)
    assert label.shape == reference.GetSize()
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(label.affine[:3, 3], lps_to_ras @ np.array(reference.GetOrigin()), atol=1e-3)


def test_click_inference_on_pacs_series(pacs):
    client = pacs["client"]
    labels = client.info()["models"]["amos_ct_deepedit"]["labels"]
    params = {**{name: [] for name in labels}, "liver": [[300, 250, 10]], "label": "liver"}
    label_file, _ = client.infer("amos_ct_deepedit", pacs["ct"], params)
    assert nib.load(label_file).shape == series_image(pacs["ct_dir"]).GetSize()


def test_label_off_the_grid_is_refused(pacs, tmp_path):
    """A 10³ label with an identity affine is not the CT's: refused, and no SEG claims the CT's frame of reference."""
    before = len(seg_series(pacs["orthanc"]))
    path = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((10, 10, 10), np.uint8), np.eye(4)), str(path))
    assert status_of(lambda: pacs["client"].save_label(pacs["ct"], str(path), tag="final")) == 400
    assert len(seg_series(pacs["orthanc"])) == before


@pytest.fixture(scope="module")
def submitted(pacs, shared_data):
    """The AMOS label of the CT saved as ``final`` ("Submit Label"); returns ``(label file, SEG series UID)``."""
    before = {s["SeriesInstanceUID"] for s in seg_series(pacs["orthanc"])}
    label = amos_label_on_series(shared_data, pacs["ct_dir"], pacs["root"] / "submitted.nii.gz")
    assert np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(label)))).tolist() == AMOS_VALUES
    pacs["client"].save_label(pacs["ct"], str(label), tag="final")
    new = [s["SeriesInstanceUID"] for s in seg_series(pacs["orthanc"]) if s["SeriesInstanceUID"] not in before]
    assert len(new) == 1, new
    return label, new[0]


def test_seg_series_is_refused_before_download(pacs, submitted):
    _, seg = submitted
    assert status_of(lambda: pacs["client"].infer("amos_ct", seg, {})) == 400
    assert not list(pacs["cache"].rglob(f"*{seg}*"))  # refused before anything was downloaded


def test_saved_label_is_a_seg_on_the_series(pacs, submitted):
    """One segment per organ, named after the model's classes with their label values and a colour each, the series
    description naming the models, the CT's frame of reference, every frame on a slice of the CT."""
    _, seg_uid = submitted
    orthanc = pacs["orthanc"]
    record = next(s for s in seg_series(orthanc) if s["SeriesInstanceUID"] == seg_uid)
    assert record["SeriesDescription"] == "MONAI Label Rep3D amos_ct, amos_ct_deepedit"
    web = DICOMwebClient(orthanc.dicomweb)
    ct = [pydicom.dcmread(p) for p in sorted(pacs["ct_dir"].iterdir())]
    (seg,) = web.retrieve_series(str(ct[0].StudyInstanceUID), seg_uid)
    segments = {int(s.SegmentNumber): (str(s.SegmentLabel), str(s.SegmentDescription)) for s in seg.SegmentSequence}
    names = get_dataset_spec("amos_ct").class_names
    assert [label for label, _ in segments.values()] == [names[value] for value in AMOS_VALUES[1:]]
    assert [d.rsplit(" ", 1)[1] for _, d in segments.values()] == [str(v) for v in AMOS_VALUES[1:]]
    colours = [tuple(s.RecommendedDisplayCIELabValue) for s in seg.SegmentSequence]  # viewers draw organs apart
    assert len(set(colours)) == len(colours)
    assert seg.FrameOfReferenceUID == ct[0].FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == pacs["ct"]
    positions = {tuple(round(float(v), 3) for v in s.ImagePositionPatient) for s in ct}
    frames = {
        tuple(round(float(v), 3) for v in f.PlanePositionSequence[0].ImagePositionPatient)
        for f in seg.PerFrameFunctionalGroupsSequence
    }
    assert frames and frames <= positions


def test_labelled_series_leaves_the_unlabelled_at_once(pacs, submitted):
    """Upstream caches the labelled series for two hours; the saved one must not be offered as next sample."""
    assert next_samples(pacs["client"], 3) == {pacs["ct3"]}


def test_seg_round_trip_on_a_fresh_cache(pacs, submitted, app_lib, repo_root, tmp_path):
    """A new datastore (empty cache) reads the PACS's SEG back: the same label values, voxel for voxel."""
    dicomweb, bundles = app_lib
    label, _ = submitted
    classes = {
        name: {v: n for n, v in bundles.label_names(bundles.read_metadata(str(repo_root / "bundles" / name))).items()}
        for name in SERVED
    }
    fresh = dicomweb.Rep3DDICOMwebDatastore(
        DICOMwebClient(pacs["orthanc"].dicomweb), {"Modality": "CT"}, str(tmp_path / "cache"), False, True, classes
    )
    (item,) = [item for item in fresh.datalist() if Path(item["image"]).name.startswith(pacs["ct"])]
    read = sitk.GetArrayFromImage(sitk.ReadImage(item["label"]))
    assert np.unique(read).tolist() == AMOS_VALUES
    np.testing.assert_array_equal(read, sitk.GetArrayFromImage(sitk.ReadImage(str(label))))


def test_train_from_pacs_labels(pacs, submitted):
    client, server = pacs["client"], pacs["server"]
    client.train_start("amos_ct", {"max_iterations": 2})
    wait_for_task(server, "train")
    stats = client.info()["train_stats"]["amos_ct"]
    assert (stats["num_train"], stats["num_val"]) == (1, 1), stats


def test_transfer_syntax_the_app_cannot_decode_is_refused(app_lib):
    dicomweb, _ = app_lib
    instance = Dataset()
    instance.SOPInstanceUID = "1.2.3"
    instance.file_meta = FileMetaDataset()
    instance.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.201"  # HTJ2K: GDCM in SimpleITK does not read it
    with pytest.raises(
        Exception, match=r"Series 's': instance 1.2.3 is stored as .*1.2.840.10008.1.2.4.201.*JPEG 2000"
    ) as error:
        dicomweb.check_transfer_syntaxes("s", [instance])
    assert error.value.status_code == 400
    instance.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"
    dicomweb.check_transfer_syntaxes("s", [instance])


def test_label_values_named_differently_by_two_models_need_a_name(app_lib):
    dicomweb, _ = app_lib
    classes = {"amos_ct": {1: "spleen", 6: "liver"}, "kits": {1: "kidney"}}
    store = object.__new__(dicomweb.Rep3DDICOMwebDatastore)
    store.model_classes = classes
    assert store.segments([6], None, None) == ([(6, "liver")], "MONAI Label Rep3D amos_ct")
    with pytest.raises(Exception, match="Label value 1 has no class name") as error:
        store.segments([1, 6], None, None)
    assert error.value.status_code == 400
    assert store.segments([1], None, "kits") == ([(1, "kidney")], "MONAI Label Rep3D kits")
    assert store.segments([1], [{"idx": 1, "name": "spleen"}], None)[0] == [(1, "spleen")]
