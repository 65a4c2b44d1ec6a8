"""The five MONAI bundles, run through ``monai.bundle`` on phantom and real data (issue #4)."""

import json
import subprocess
import sys

import pytest
from monai.bundle import ConfigWorkflow, verify_metadata

from bundle_helpers import (
    BUNDLES,
    REPO_ROOT,
    TINY_INFER,
    TINY_TRAIN,
    check_evaluated_test_split,
    check_label_matches_image,
    copy_bundle,
    make_dataset,
    num_classes,
    prepare_bundle,
    run_bundle,
)

EXPECTED_CLASSES = {"amos_ct": 16, "amos_mri": 14, "kits": 4, "msd_pancreas": 3, "msd_hepatic_vessel": 3}
# The only keys in which the bundles' configs may differ from amos_ct's (the rest must stay in step).
DATASET_KEYS = {"dataset_dir", "num_classes", "pixdim", "intensity_range"}


@pytest.mark.parametrize("name", BUNDLES)
def test_metadata_verifies_against_official_schema(name, bundle_schema):
    meta = REPO_ROOT / "bundles" / name / "configs" / "metadata.json"
    verify_metadata(meta_file=str(meta), filepath=str(bundle_schema))
    content = json.loads(meta.read_text())
    pred = content["network_data_format"]["outputs"]["pred"]
    assert pred["num_channels"] == EXPECTED_CLASSES[name] == len(pred["channel_def"])
    assert content["required_packages_version"] and content["optional_packages_version"]


@pytest.mark.parametrize("name", BUNDLES)
def test_bundle_files_present(name):
    root = REPO_ROOT / "bundles" / name
    for f in ["train.json", "evaluate.json", "inference.json", "multi_gpu_train.json", "metadata.json", "logging.conf"]:
        assert (root / "configs" / f).is_file(), f
    for f in ["docs/README.md", "docs/data_license.txt", "LICENSE", "large_files.yml"]:
        assert (root / f).is_file(), f
    readme = (root / "docs" / "README.md").read_text()
    assert "No trained weights are published yet" in readme
    train = json.loads((root / "configs" / "train.json").read_text())
    assert train["num_classes"] == EXPECTED_CLASSES[name]
    assert train["network_def"]["_target_"] == "rep3d_networks.Rep3D"


@pytest.mark.parametrize("config", ["train.json", "evaluate.json", "inference.json", "multi_gpu_train.json"])
@pytest.mark.parametrize("name", BUNDLES[1:])
def test_bundles_differ_only_in_dataset_keys(name, config):
    """The bundles share one recipe: a change to one must be made to all."""
    reference = json.loads((REPO_ROOT / "bundles" / "amos_ct" / "configs" / config).read_text())
    other = json.loads((REPO_ROOT / "bundles" / name / "configs" / config).read_text())
    assert set(reference) == set(other)
    differing = {k for k in reference if reference[k] != other[k]}
    assert differing <= DATASET_KEYS, differing


def check_properties(bundle, data_dir):
    """``ConfigWorkflow.check_properties()`` is [] for train, train+evaluate and infer (it parses the datasets)."""
    configs = bundle / "configs"
    for files, kind in [(["train.json"], "train"), (["train.json", "evaluate.json"], "train"), (["inference.json"], "infer")]:
        workflow = ConfigWorkflow(
            config_file=[str(configs / f) for f in files], meta_file=str(configs / "metadata.json"), workflow_type=kind,
            logging_file=str(configs / "logging.conf"), bundle_root=str(bundle), dataset_dir=str(data_dir),
        )
        workflow.initialize()
        assert workflow.check_properties() == [], (files, kind)


def _train_evaluate_infer(name, source, tmp_path, shared_data=None):
    bundle = copy_bundle(name, tmp_path / "bundles")
    data_dir = make_dataset(name, source, tmp_path / "data", shared_data)
    datalist = prepare_bundle(bundle, data_dir)
    check_properties(bundle, data_dir)

    run_bundle(bundle, ["train.json"], dataset_dir=str(data_dir), **TINY_TRAIN)
    checkpoint = bundle / "models" / "model.pt"
    assert checkpoint.is_file()

    run_bundle(bundle, ["train.json", "evaluate.json"], dataset_dir=str(data_dir), **TINY_TRAIN)
    check_evaluated_test_split(bundle, data_dir, datalist)
    test_cases = json.loads(datalist.read_text())["test"]
    assert (bundle / "eval" / "val_hd95_raw.csv").is_file()

    image = data_dir / test_cases[0]["image"]
    out_dir = tmp_path / "pred"
    run_bundle(bundle, ["inference.json"], dataset_dir=str(data_dir), datalist=[str(image)], output_dir=str(out_dir), **TINY_INFER)
    written = list(out_dir.rglob("*_seg.nii.gz"))
    assert len(written) == 1, written
    check_label_matches_image(written[0], image, num_classes(bundle))


@pytest.mark.parametrize("name", BUNDLES)
def test_train_evaluate_infer_on_phantom(name, tmp_path):
    _train_evaluate_infer(name, "phantom", tmp_path)


@pytest.mark.parametrize("name", BUNDLES)
def test_train_evaluate_infer_on_real_data(name, tmp_path, shared_data):
    _train_evaluate_infer(name, "real", tmp_path, shared_data)


def test_missing_datalist_gives_clear_error(tmp_path):
    bundle = copy_bundle("kits", tmp_path / "bundles")
    with pytest.raises(RuntimeError) as err:  # monai.bundle wraps the error of a config expression
        run_bundle(bundle, ["train.json"], dataset_dir=str(tmp_path), **TINY_TRAIN)
    assert isinstance(err.value.__cause__, FileNotFoundError)
    assert "datalist_fold0.json not found" in str(err.value.__cause__) and "prepare" in str(err.value.__cause__)


def test_inference_command_line_load_pretrain_false(tmp_path):
    """``--load_pretrain false`` as users type it (``fire`` passes the string ``"false"``, which is truthy) skips the
    checkpoint: a bundle without ``models/model.pt`` infers with its initial weights; by default it needs the file."""
    bundle = copy_bundle("msd_pancreas", tmp_path / "bundles")
    image = sorted((make_dataset("msd_pancreas", "phantom", tmp_path / "data") / "imagesTr").glob("*.nii.gz"))[0]
    args = [f"--{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in TINY_INFER.items()]
    args += ["--datalist", repr([str(image)]), "--output_dir", str(tmp_path / "pred")]

    def infer(*extra):
        return subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", *args, *extra],
                              cwd=bundle, capture_output=True, text=True, timeout=600)

    result = infer("--load_pretrain", "false")
    assert result.returncode == 0, result.stderr[-3000:]
    check_label_matches_image(next((tmp_path / "pred").rglob("*_seg.nii.gz")), image, num_classes(bundle))
    result = infer()
    assert result.returncode != 0 and "model.pt" in result.stderr, result.stderr[-3000:]
