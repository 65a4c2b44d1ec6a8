"""Tests of ``rep3d_networks.data``: phantom -> prepare for every dataset, bad layouts, no-clobber
datalists, download from local archives, and the real TotalSegmentator-based datasets.

The CLI is exercised as users run it (``python -m rep3d_networks.data ...``) once per command, in
parallel subprocesses because each one pays the import of torch/MONAI; everything else calls the
functions directly.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.data import load_decathlon_datalist

from rep3d_networks.data import (
    dataset_names,
    download_dataset,
    get_dataset_spec,
    prepare_datalists,
    write_phantom_dataset,
    write_totalseg_dataset,
)
from rep3d_networks.data.phantom import MIN_SIZE, synthesize_phantom_case
from rep3d_networks.data.phantom_anatomy import abdominal_organs
from rep3d_networks.data.slabs import class_aware_datalist
from rep3d_networks.data.splits import class_aware_split, fixed_split, fixed_split_sizes, kfold_splits

DATASETS = dataset_names()
AMOS_CT = get_dataset_spec("amos_ct")
SMALL = {"num_cases": 6, "size": 32}  # fast phantoms for the in-process tests


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def case_key(entry_path: str) -> str:
    """Case id of a datalist path: ``amos_0001`` or ``case_00000``."""
    path = Path(entry_path)
    return path.parent.name if path.name in ("imaging.nii.gz", "aggregated_MAJ_seg.nii.gz") else path.name.split(".")[0]


def load_datalists(output_dir: Path, dataset: str):
    expected = 5 if get_dataset_spec(dataset).uses_kfold else 1
    files = sorted(output_dir.glob("datalist_fold*.json"))
    assert [f.name for f in files] == [f"datalist_fold{k}.json" for k in range(expected)]
    return [json.loads(f.read_text()) for f in files], files


def check_datalists(output_dir: Path, data_dir: Path, dataset: str, num_cases: int) -> None:
    """Structure, pairing, disjoint/complete splits, relative paths and label range of prepared datalists."""
    spec = get_dataset_spec(dataset)
    datalists, files = load_datalists(output_dir, dataset)
    all_test_ids = []
    for fold, (content, path) in enumerate(zip(datalists, files)):
        assert set(content) == {"metadata", "training", "validation", "test"}
        meta = content["metadata"]
        assert meta["dataset"] == dataset and meta["fold"] == fold and meta["seed"] == 0
        assert meta["version"] == "1" and meta["source_dir"] == data_dir.name
        ids = {}
        for key in ("training", "validation", "test"):
            assert content[key], f"{path}: empty {key}"
            for entry in content[key]:
                assert set(entry) == {"image", "label"}
                assert not Path(entry["image"]).is_absolute() and not Path(entry["label"]).is_absolute()
                assert case_key(entry["image"]) == case_key(entry["label"]), entry  # paired by case id
            ids[key] = {case_key(e["image"]) for e in content[key]}
        assert not ids["training"] & ids["validation"] and not ids["training"] & ids["test"]
        assert not ids["validation"] & ids["test"]
        assert len(ids["training"] | ids["validation"] | ids["test"]) == num_cases  # complete
        all_test_ids.extend(ids["test"])
        # The bundles' loader resolves the relative paths against the dataset folder.
        for key in ("training", "validation", "test"):
            for item in load_decathlon_datalist(str(path), data_list_key=key, base_dir=str(data_dir)):
                assert Path(item["image"]).is_file() and Path(item["label"]).is_file()
                if fold == 0:
                    label = np.asarray(nib.load(item["label"]).dataobj)
                    assert label.min() >= 0 and label.max() < spec.num_classes
                    assert nib.load(item["image"]).shape == label.shape
    if spec.uses_kfold:  # the 5 test sets are disjoint
        assert len(all_test_ids) == len(set(all_test_ids))


# ---------------------------------------------------------------- phantom -> prepare, all datasets


@pytest.mark.parametrize("dataset", DATASETS)
def test_phantom_then_prepare(tmp_path, dataset):
    data_dir = write_phantom_dataset(dataset, tmp_path / "raw", **SMALL)
    assert data_dir == tmp_path / "raw" / get_dataset_spec(dataset).source_dir
    paths = prepare_datalists(dataset, str(data_dir), str(tmp_path / "configs"), check_labels=True)
    assert all(p.is_file() for p in paths)
    check_datalists(tmp_path / "configs", data_dir, dataset, SMALL["num_cases"])


def test_phantom_labels_and_layout(tmp_path):
    kits = write_phantom_dataset("kits", tmp_path, num_cases=2, size=32)
    image = nib.load(kits / "data" / "case_00000" / "imaging.nii.gz")
    assert nib.aff2axcodes(image.affine)[0] in ("S", "I")  # slice-first storage, like the real KiTS21
    labels = np.asarray(nib.load(kits / "data" / "case_00000" / "aggregated_MAJ_seg.nii.gz").dataobj)
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    ct = np.asarray(image.dataobj)
    assert ct.min() <= -900 and 100 < ct.max() < 3072  # air outside, enhancing kidneys / bone
    amos = write_phantom_dataset("amos_mri", tmp_path / "mri", num_cases=2, size=32)
    meta = json.loads((amos / "dataset.json").read_text())
    assert meta["modality"] == {"0": "MRI"} and meta["numTraining"] == 2
    mri = np.asarray(nib.load(amos / "imagesTr" / "amos_0500.nii.gz").dataobj)
    assert mri.min() >= 0 and mri.max() <= 1000
    assert np.asarray(nib.load(amos / "labelsTr" / "amos_0500.nii.gz").dataobj).max() <= 13
    again = write_phantom_dataset("amos_mri", tmp_path / "mri2", num_cases=2, size=32)
    assert md5_of(again / "labelsTr" / "amos_0501.nii.gz") == md5_of(amos / "labelsTr" / "amos_0501.nii.gz")
    with pytest.raises(FileExistsError, match="dataset.json|amos_0500"):
        write_phantom_dataset("amos_mri", tmp_path / "mri", num_cases=2, size=32)


def test_phantom_organs_are_the_amos_classes():
    """The phantom draws each AMOS class once, by the spec's name; in MRI exactly the classes AMOS MRI labels."""
    organs = abdominal_organs()
    assert sorted(organ.name for organ in organs) == sorted(AMOS_CT.class_names[1:])
    mri = get_dataset_spec("amos_mri").class_names
    assert {organ.name for organ in organs if organ.in_mri_field_of_view} == set(mri[1:])


@pytest.mark.parametrize("dataset", [name for name in DATASETS if get_dataset_spec(name).modality == "CT"])
def test_ct_phantom_is_on_the_bundle_grid(dataset):
    """A CT phantom's voxels have the spacing its bundle resamples to (``pixdim``)."""
    spec = get_dataset_spec(dataset)
    case = synthesize_phantom_case(spec, MIN_SIZE, np.random.default_rng(0))
    assert tuple(nib.affines.voxel_sizes(case.affine)) == spec.pixdim


def test_phantom_amos_ct_has_every_organ_at_the_quickstart_size(tmp_path):
    """At the quickstart's 40 voxels every one of the 15 AMOS organs is in every case, several voxels big, and
    touching organs differ in intensity (what makes the phantom learnable in minutes, issue #14)."""
    amos = write_phantom_dataset("amos_ct", tmp_path, num_cases=4, size=40)
    for label_file in sorted((amos / "labelsTr").glob("*.nii.gz")):
        labels = np.asarray(nib.load(label_file).dataobj)
        image = np.asarray(nib.load(amos / "imagesTr" / label_file.name).dataobj)
        counts = np.bincount(labels.ravel(), minlength=AMOS_CT.num_classes)
        assert counts.size == AMOS_CT.num_classes and counts[1:].min() >= 8, (label_file.name, counts.tolist())
        median = {name: np.median(image[labels == value]) for name, value in AMOS_CT.label_ids.items()}
        liver, gallbladder = median["liver"], median["gallbladder"]
        pancreas, duodenum = median["pancreas"], median["duodenum"]
        assert liver - gallbladder > 60 and pancreas - duodenum > 10


def test_amos_ct_and_mri_share_one_folder(tmp_path):
    """AMOS22 mixes CT (id < 500) and MRI (id >= 500) in one folder; each dataset takes its own."""
    ct_root = write_phantom_dataset("amos_ct", tmp_path / "ct", num_cases=5, size=24)
    mri_root = write_phantom_dataset("amos_mri", tmp_path / "mri", num_cases=5, size=24)
    for folder in ("imagesTr", "labelsTr", "imagesVa", "labelsVa"):
        for file in (mri_root / folder).glob("*.nii.gz"):
            shutil.move(str(file), ct_root / folder / file.name)
    prepare_datalists("amos_ct", str(tmp_path / "ct"), str(tmp_path / "out_ct"))  # parent of amos22 works too
    prepare_datalists("amos_mri", str(ct_root), str(tmp_path / "out_mri"))
    ct_list = json.loads((tmp_path / "out_ct" / "datalist_fold0.json").read_text())
    mri_list = json.loads((tmp_path / "out_mri" / "datalist_fold0.json").read_text())
    ct_ids = {int(case_key(e["image"])[5:]) for k in ("training", "validation", "test") for e in ct_list[k]}
    mri_ids = {int(case_key(e["image"])[5:]) for k in ("training", "validation", "test") for e in mri_list[k]}
    assert ct_ids == {1, 2, 3, 4, 5} and mri_ids == {500, 501, 502, 503, 504}
    assert ct_list["training"][0]["image"].startswith("images")  # relative to amos22/, the bundles' dataset_dir
    assert any(e["image"].startswith("imagesVa/") for k in ("training", "validation", "test") for e in mri_list[k])


def test_kits_data_dir_variants(tmp_path):
    """kits21, kits21/data and the folder above give identical datalists, relative to kits21/."""
    write_phantom_dataset("kits", tmp_path / "raw", num_cases=5, size=24)
    kits21 = tmp_path / "raw" / "kits21"
    contents = []
    for index, data_dir in enumerate((tmp_path / "raw", kits21, kits21 / "data")):
        prepare_datalists("kits", str(data_dir), str(tmp_path / f"out{index}"))
        contents.append((tmp_path / f"out{index}" / "datalist_fold2.json").read_text())
    assert contents[0] == contents[1] == contents[2]
    check_datalists(tmp_path / "out0", kits21, "kits", 5)
    assert json.loads(contents[0])["training"][0]["image"].startswith("data/case_")


# ---------------------------------------------------------------- splits


def test_split_sizes():
    assert fixed_split_sizes(200, (160, 20, 20)) == (160, 20, 20)
    assert fixed_split_sizes(33, (22, 4, 7)) == (22, 4, 7)
    assert fixed_split_sizes(10, (160, 20, 20)) == (8, 1, 1)
    assert fixed_split_sizes(3, (22, 4, 7)) == (1, 1, 1)
    with pytest.raises(ValueError, match="at least 3 cases"):
        fixed_split_sizes(2, (160, 20, 20))
    split, unused = fixed_split([f"amos_{i:04d}" for i in range(300)], (160, 20, 20), seed=0)
    assert (len(split.training), len(split.validation), len(split.test), len(unused)) == (160, 20, 20, 100)
    again, _ = fixed_split([f"amos_{i:04d}" for i in reversed(range(300))], (160, 20, 20), seed=0)
    assert again == split  # independent of input order, fixed by the seed
    folds = kfold_splits([f"case_{i:05d}" for i in range(100)], 5, seed=0)
    assert sorted(c for f in folds for c in f.test + f.validation) == [f"case_{i:05d}" for i in range(100)]
    assert all((len(f.training), len(f.validation), len(f.test)) == (80, 10, 10) for f in folds)
    assert len({c for f in folds for c in f.test}) == 50  # disjoint test sets
    with pytest.raises(ValueError, match="at least 5 cases"):
        kfold_splits(["a", "b", "c", "d"], 5, seed=0)


# the shared CT's 8 disjoint slabs (pelvis s0-s2, empty s3, abdomen s4-s7): held-out slabs only hold trained organs
PELVIS_TO_ABDOMEN = {
    "s0": {14, 15},
    "s1": {14},
    "s2": {14},
    "s3": set(),
    "s4": {2, 6, 8, 9},
    "s5": {1, 2, 3, 6, 7, 8, 9, 10, 13},
    "s6": {1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13},
    "s7": {1, 2, 3, 6, 7, 8, 9, 10, 11, 12},
}
CLASS_AWARE_CASES = [
    (PELVIS_TO_ABDOMEN, ("s5",), ("s7",)),  # s6 alone has the gallbladder (4): it must train
    ({"a": {1}, "b": {1, 2}, "c": {1, 2}}, ("a",), ("b",)),  # ties: the id that sorts first
    ({"a": {1}, "b": {2}, "c": {3}, "d": {1, 2}}, ("b",), ("a",)),
]


@pytest.mark.parametrize("classes, validation, test", CLASS_AWARE_CASES)
def test_class_aware_split(classes, validation, test):
    split = class_aware_split(classes)
    assert (split.validation, split.test) == (validation, test)
    assert sorted(split.training + split.validation + split.test) == sorted(classes)
    seen = set().union(*(classes[case] for case in split.training))
    assert classes[test[0]] | classes[validation[0]] <= seen


def test_class_aware_split_refuses_what_cannot_be_covered():
    with pytest.raises(ValueError, match="no validation/test pair"):
        class_aware_split({"a": {1}, "b": {2}, "c": {3}})
    with pytest.raises(ValueError, match="at least 3 cases"):
        class_aware_split({"a": {1}, "b": {1}})


# ---------------------------------------------------------------- bad layouts


@pytest.fixture
def pancreas_dir(tmp_path):
    return write_phantom_dataset("msd_pancreas", tmp_path / "raw", num_cases=5, size=24)


def test_missing_label_is_named(pancreas_dir, tmp_path):
    (pancreas_dir / "labelsTr" / "pancreas_003.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"labelsTr/pancreas_003\.nii\.gz"):
        prepare_datalists("msd_pancreas", str(pancreas_dir), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_unpaired_ids_are_named(pancreas_dir, tmp_path):
    labels = pancreas_dir / "labelsTr"
    (labels / "pancreas_002.nii.gz").rename(labels / "pancreas_009.nii.gz")
    with pytest.raises(FileNotFoundError, match=r"pancreas_002\.nii\.gz"):
        prepare_datalists("msd_pancreas", str(pancreas_dir), str(tmp_path / "out"))
    shutil.copy(labels / "pancreas_009.nii.gz", labels / "pancreas_002.nii.gz")
    with pytest.raises(FileNotFoundError, match=r"imagesTr/pancreas_009\.nii\.gz"):
        prepare_datalists("msd_pancreas", str(pancreas_dir), str(tmp_path / "out"))


def test_missing_dataset_json_and_empty_folder(pancreas_dir, tmp_path):
    (pancreas_dir / "dataset.json").unlink()
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        prepare_datalists("msd_pancreas", str(pancreas_dir), str(tmp_path / "out"))
    empty = tmp_path / "empty"
    empty.mkdir()
    for dataset in DATASETS:
        with pytest.raises(FileNotFoundError, match=str(empty)):
            prepare_datalists(dataset, str(empty), str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare_datalists("kits", str(tmp_path / "nowhere"), str(tmp_path / "out"))


def test_empty_image_folders_and_wrong_dataset(tmp_path):
    root = tmp_path / "Task08_HepaticVessel"
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "vessel", "2": "tumour"}}))
    with pytest.raises(ValueError, match="no labelled msd_hepatic_vessel cases"):
        prepare_datalists("msd_hepatic_vessel", str(root), str(tmp_path / "out"))
    (root / "dataset.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        prepare_datalists("msd_hepatic_vessel", str(root), str(tmp_path / "out"))
    amos = write_phantom_dataset("amos_ct", tmp_path / "a", num_cases=3, size=24)
    with pytest.raises(ValueError, match="no labelled amos_mri cases with case ids in \\[500"):
        prepare_datalists("amos_mri", str(amos), str(tmp_path / "out"))
    (amos / "dataset.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"amos22/dataset\.json is missing"):
        prepare_datalists("amos_ct", str(amos), str(tmp_path / "out"))


def test_macos_files_ignored_but_stray_files_rejected(pancreas_dir, tmp_path):
    for folder in ("imagesTr", "labelsTr"):
        (pancreas_dir / folder / "._pancreas_001.nii.gz").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (pancreas_dir / ".DS_Store").write_bytes(b"junk")
    prepare_datalists("msd_pancreas", str(pancreas_dir), str(tmp_path / "out"))
    check_datalists(tmp_path / "out", pancreas_dir, "msd_pancreas", 5)
    (pancreas_dir / "imagesTr" / "pancreas_1_copy.nii.gz").write_bytes(b"")
    with pytest.raises(ValueError, match="pancreas_1_copy"):
        prepare_datalists("msd_pancreas", str(pancreas_dir), str(tmp_path / "out2"))


def test_kits_missing_image_and_shape_mismatch(tmp_path):
    kits = write_phantom_dataset("kits", tmp_path / "raw", num_cases=5, size=24)
    image = kits / "data" / "case_00002" / "imaging.nii.gz"
    moved = tmp_path / "imaging.nii.gz"
    image.rename(moved)
    with pytest.raises(FileNotFoundError, match=r"case_00002/imaging\.nii\.gz"):
        prepare_datalists("kits", str(kits), str(tmp_path / "out"))
    nib.save(nib.Nifti1Image(np.zeros((24, 24, 20), np.int16), np.eye(4)), str(image))
    with pytest.raises(ValueError, match=r"case_00002/imaging\.nii\.gz has shape"):
        prepare_datalists("kits", str(kits), str(tmp_path / "out"))


# ---------------------------------------------------------------- never overwrite a user's file


def test_existing_datalist_not_overwritten(pancreas_dir, tmp_path):
    out = tmp_path / "configs"
    first = prepare_datalists("msd_pancreas", str(pancreas_dir), str(out))
    before = {p: p.read_bytes() for p in first}
    prepare_datalists("msd_pancreas", str(pancreas_dir), str(out))  # same content: fine, untouched
    with pytest.raises(FileExistsError, match="datalist_fold0.json already exists.*--overwrite True"):
        prepare_datalists("msd_pancreas", str(pancreas_dir), str(out), seed=1)
    assert {p: p.read_bytes() for p in first} == before  # nothing written, not even the other folds
    (out / "datalist_fold3.json").write_text('{"mine": true}\n')
    with pytest.raises(FileExistsError, match="datalist_fold3.json"):
        prepare_datalists("msd_pancreas", str(pancreas_dir), str(out))
    assert (out / "datalist_fold3.json").read_text() == '{"mine": true}\n'
    prepare_datalists("msd_pancreas", str(pancreas_dir), str(out), seed=1, overwrite=True)
    assert json.loads((out / "datalist_fold3.json").read_text())["metadata"]["seed"] == 1
    with pytest.raises(ValueError, match="fixed split"):
        prepare_datalists(
            "amos_ct", str(write_phantom_dataset("amos_ct", tmp_path, num_cases=3, size=24)), str(out), num_folds=5
        )


# ---------------------------------------------------------------- download


def make_archive(source_parent: Path, top: str, archive: Path) -> Path:
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for file in sorted((source_parent / top).rglob("*")):
                zf.write(file, file.relative_to(source_parent).as_posix())
    else:
        with tarfile.open(archive, "w") as tf:
            tf.add(source_parent / top, arcname=top)
    return archive


def test_download_local_archives(pancreas_dir, tmp_path):
    tar = make_archive(pancreas_dir.parent, "Task07_Pancreas", tmp_path / "Task07_Pancreas.tar")
    with pytest.raises(ValueError, match=f"md5 of {tar}.* expected 0123456789abcdef0123456789abcdef"):
        download_dataset(
            "msd_pancreas",
            str(tmp_path / "bad"),
            url=tar.as_uri(),
            md5="0123456789abcdef0123456789abcdef",
            progress=False,
        )
    assert not (tmp_path / "bad" / "Task07_Pancreas").exists()
    with pytest.raises(ValueError, match="md5"):  # the official md5 applies to a mirror URL by default
        download_dataset("msd_pancreas", str(tmp_path / "bad2"), url=tar.as_uri(), progress=False)
    extracted = download_dataset(
        "msd_pancreas", str(tmp_path / "dl"), url=tar.as_uri(), md5=md5_of(tar), progress=False
    )
    assert extracted == tmp_path / "dl" / "Task07_Pancreas" and (extracted / "dataset.json").is_file()
    prepare_datalists("msd_pancreas", str(extracted), str(tmp_path / "out"))
    check_datalists(tmp_path / "out", extracted, "msd_pancreas", 5)

    amos = write_phantom_dataset("amos_ct", tmp_path / "amos_src", num_cases=3, size=24)
    zipped = make_archive(amos.parent, "amos22", tmp_path / "amos22.zip")
    extracted = download_dataset(
        "amos_ct", str(tmp_path / "amos_dl"), url=zipped.as_uri(), progress=False
    )  # no md5 published
    assert (extracted / "imagesTr" / "amos_0001.nii.gz").is_file()
    wrong_top = make_archive(amos.parent, "amos22", tmp_path / "Task08_HepaticVessel.tar")
    with pytest.raises(ValueError, match="expected top folder Task08_HepaticVessel"):
        download_dataset(
            "msd_hepatic_vessel", str(tmp_path / "wrong"), url=wrong_top.as_uri(), md5="skip", progress=False
        )
    with pytest.raises(NotImplementedError, match="kits21"):
        download_dataset("kits", str(tmp_path / "kits"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        download_dataset("msd_pancreas", str(tmp_path / "x"), url=(tmp_path / "missing.tar").as_uri(), md5="skip")


def test_official_download_sources():
    from monai.apps import DecathlonDataset

    for dataset, task in (("msd_pancreas", "Task07_Pancreas"), ("msd_hepatic_vessel", "Task08_HepaticVessel")):
        spec = get_dataset_spec(dataset)
        assert spec.md5 == DecathlonDataset.md5[task] and spec.url == DecathlonDataset.resource[task]
    assert get_dataset_spec("amos_ct").url == "https://zenodo.org/record/7262581/files/amos22.zip"
    assert get_dataset_spec("amos_ct").md5 is None


# ---------------------------------------------------------------- real TotalSegmentator volumes


@pytest.mark.parametrize("dataset", DATASETS)
def test_totalseg_then_prepare(tmp_path, shared_data, dataset):
    spec = get_dataset_spec(dataset)
    data_dir = write_totalseg_dataset(dataset, str(shared_data), str(tmp_path / "raw"))
    prepare_datalists(dataset, str(data_dir), str(tmp_path / "configs"), check_labels=True)
    num_cases = 5 if spec.uses_kfold else 3
    check_datalists(tmp_path / "configs", data_dir, dataset, num_cases)
    content = json.loads((tmp_path / "configs" / "datalist_fold0.json").read_text())
    entries = [e for k in ("training", "validation", "test") for e in content[k]]
    origins, present = set(), set()
    for entry in entries:
        label_nii = nib.load(str(data_dir / entry["label"]))
        origins.add(tuple(np.round(label_nii.affine[:3, 3], 2)))
        present |= set(np.unique(np.asarray(label_nii.dataobj)).tolist())
    assert len(origins) == num_cases  # distinct slabs
    absent = {spec.label_ids["esophagus"]} if spec.family == "amos" else set()  # no esophagus in these volumes
    assert present == set(range(spec.num_classes)) - absent  # real organs (+ synthetic lesions for KiTS/MSD)


def test_totalseg_without_lesions_has_no_tumour(tmp_path, shared_data):
    data_dir = write_totalseg_dataset("kits", str(shared_data), str(tmp_path), synthetic_lesions=False)
    label = np.asarray(nib.load(str(data_dir / "data" / "case_00000" / "aggregated_MAJ_seg.nii.gz")).dataobj)
    assert set(np.unique(label)) == {0, 1}
    with pytest.raises(FileNotFoundError, match="example_ct.nii.gz"):
        write_totalseg_dataset("kits", str(tmp_path / "no_data"), str(tmp_path / "x"))


# ---------------------------------------------------------------- the CLI, as users run it


def run_cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "rep3d_networks.data", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(process: subprocess.Popen) -> str:
    stdout, stderr = process.communicate(timeout=400)
    assert process.returncode == 0, f"{process.args}\nstdout:\n{stdout}\nstderr:\n{stderr[-3000:]}"
    return stdout


@pytest.fixture(scope="module", autouse=True)
def cli_runs(request, tmp_path_factory):
    """Start one ``python -m rep3d_networks.data`` run per command when the module starts.

    Each run pays the torch/MONAI import (~10 s of CPU), so they run in the background while the
    in-process tests go on; the ``test_cli_*`` tests at the end of the file collect them. Only the
    commands whose ``test_cli_<command>`` test is selected are started.
    """
    selected = {
        item.name[len("test_cli_") :]
        for item in request.session.items
        if item.name.startswith("test_cli_") and item.module is request.module
    }
    if not selected:
        yield None
        return
    root = tmp_path_factory.mktemp("cli")
    runs = {"root": root, "configs": root / "bundles" / "msd_hepatic_vessel" / "configs"}
    processes = {}
    if "phantom" in selected:
        processes["phantom"] = run_cli("phantom", "--dataset", "amos_ct", "--output_dir", str(root / "ph"))
    if "download" in selected:
        pancreas = write_phantom_dataset("msd_pancreas", root / "src", num_cases=5, size=24)
        tar = make_archive(pancreas.parent, "Task07_Pancreas", root / "Task07_Pancreas.tar")
        processes["download"] = run_cli(
            "download",
            "--dataset",
            "msd_pancreas",
            "--root_dir",
            str(root / "dl"),
            "--url",
            tar.as_uri(),
            "--md5",
            md5_of(tar),
            "--progress",
            "False",
        )
    if "prepare" in selected:
        runs["hepatic"] = write_phantom_dataset("msd_hepatic_vessel", root / "src", num_cases=5, size=24)
        processes["prepare"] = run_cli(
            "prepare",
            "--dataset",
            "msd_hepatic_vessel",
            "--data_dir",
            str(runs["hepatic"]),
            "--output_dir",
            str(runs["configs"]),
        )
    if "totalseg" in selected:
        try:
            shared_data = request.getfixturevalue("shared_data")
            processes["totalseg"] = run_cli(
                "totalseg", "--dataset", "amos_mri", "--shared_data", str(shared_data), "--output_dir", str(root / "ts")
            )
        except (pytest.skip.Exception, pytest.fail.Exception):
            pass  # test_cli_totalseg requests shared_data itself and reports the skip or failure
    yield {**runs, "processes": processes}
    for process in processes.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_cli_phantom(cli_runs):
    output = finish(cli_runs["processes"]["phantom"])
    amos = cli_runs["root"] / "ph" / "amos22"
    assert str(amos) in output
    assert sorted(p.name for p in (amos / "imagesTr").iterdir()) == [f"amos_000{i}.nii.gz" for i in (1, 2, 3, 4, 6)]
    assert nib.load(str(amos / "imagesVa" / "amos_0005.nii.gz")).shape == (64, 64, 64)  # defaults: 6 cases of 64^3
    prepare_datalists("amos_ct", str(amos), str(cli_runs["root"] / "ph_out"))
    check_datalists(cli_runs["root"] / "ph_out", amos, "amos_ct", 6)


def test_cli_download(cli_runs):
    output = finish(cli_runs["processes"]["download"])
    extracted = cli_runs["root"] / "dl" / "Task07_Pancreas"
    assert str(extracted) in output
    assert (extracted / "labelsTr" / "pancreas_005.nii.gz").is_file()


def test_cli_prepare(cli_runs):
    output = finish(cli_runs["processes"]["prepare"])
    assert "datalist_fold4.json" in output
    check_datalists(cli_runs["configs"], cli_runs["hepatic"], "msd_hepatic_vessel", 5)


def test_cli_totalseg(cli_runs, shared_data):
    output = finish(cli_runs["processes"]["totalseg"])
    ts_root = cli_runs["root"] / "ts" / "amos22"
    assert str(ts_root) in output
    prepare_datalists("amos_mri", str(ts_root), str(cli_runs["root"] / "ts_out"))
    check_datalists(cli_runs["root"] / "ts_out", ts_root, "amos_mri", 3)


def test_class_aware_datalist_refuses_overlapping_slabs(tmp_path, shared_data):
    folder = write_totalseg_dataset("amos_ct", str(shared_data), str(tmp_path), num_cases=3, min_slab_slices=14)
    with pytest.raises(ValueError, match="overlap in z"):
        class_aware_datalist("amos_ct", Path(folder))
    folder = write_totalseg_dataset(
        "amos_ct", str(shared_data), str(tmp_path / "disjoint"), num_cases=8, min_slab_slices=14
    )
    datalist = class_aware_datalist("amos_ct", Path(folder))
    assert [Path(item["image"]).name for item in datalist["test"]] == ["amos_0008.nii.gz"]  # slices 98-111
    assert (
        len(datalist["training"]) == 6
        and datalist["metadata"]["slab_slices"]["amos_0008"][1] - datalist["metadata"]["slab_slices"]["amos_0001"][0]
        == 112
    )
