"""The five MONAI bundles, run through ``monai.bundle`` on phantom and real data (issue #4)."""

import json
import shutil
import subprocess
import sys

import pytest
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
from monai.bundle import ConfigWorkflow, verify_metadata
from packaging.version import Version
from stack_helpers import STACKS, pins

from rep3d_networks.bundles import all_bundle_specs, get_bundle_spec, render
from rep3d_networks.bundles.__main__ import main as bundles_main
from rep3d_networks.bundles.recipe import ROI_SIZE, WEIGHT_DECAY

ALL_BUNDLES = list(all_bundle_specs())


@pytest.mark.parametrize("name", BUNDLES)
def test_metadata_verifies_against_official_schema(name, bundle_schema):
    meta = REPO_ROOT / "bundles" / name / "configs" / "metadata.json"
    verify_metadata(meta_file=str(meta), filepath=str(bundle_schema))
    content = json.loads(meta.read_text())
    pred = content["network_data_format"]["outputs"]["pred"]
    assert pred["num_channels"] == get_bundle_spec(name).data.num_classes == len(pred["channel_def"])
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
    assert train["num_classes"] == get_bundle_spec(name).data.num_classes
    assert train["network_def"]["_target_"] == "rep3d_networks.Rep3D"


def test_committed_bundles_match_their_rendering():
    """Every bundle file rendered from the recipe and the dataset specs is committed exactly as rendered."""
    assert render(str(REPO_ROOT / "bundles"), check=True) == []


def test_render_command_finds_and_fixes_a_hand_edit(tmp_path, capsys):
    bundles = tmp_path / "bundles"
    shutil.copytree(
        REPO_ROOT / "bundles", bundles, ignore=shutil.ignore_patterns("models", "eval", "datalist_fold*.json")
    )
    train = bundles / "kits" / "configs" / "train.json"
    train.write_text(train.read_text().replace('"num_classes": 4', '"num_classes": 5'))
    card = bundles / "msd_pancreas" / "docs" / "README.md"
    card.write_text(card.read_text().replace("| 2 | tumor |", "| 2 | cancer |"))
    assert bundles_main(["render", "--bundles_dir", str(bundles), "--check"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "kits/configs/train.json: differs from its rendering",
        "msd_pancreas/docs/README.md: differs from its rendering",
    ]
    assert bundles_main(["render", "--bundles_dir", str(bundles)]) == 0
    assert render(str(bundles), check=True) == []
    assert json.loads(train.read_text())["num_classes"] == 4


@pytest.mark.parametrize("name", ALL_BUNDLES)
def test_metadata_states_the_versions_both_stacks_pin(name):
    """``tested_versions`` are the pins of the two stacks the suite runs on; ``monai_version``, ``pytorch_version``
    and the packages requirements.txt pins are its versions (the lowest: MONAI warns below ``monai_version``)."""
    stacks = [pins(stack) for stack in STACKS]
    meta = json.loads((REPO_ROOT / "bundles" / name / "configs" / "metadata.json").read_text())
    tested = meta["tested_versions"]
    assert {"monai", "torch", "pytorch-ignite", "monailabel"} <= set(tested)
    assert tested == {pkg: sorted({stack[pkg] for stack in stacks}, key=Version) for pkg in tested}
    assert (meta["monai_version"], meta["pytorch_version"]) == (stacks[0]["monai"], stacks[0]["torch"])
    packages = {**meta["required_packages_version"], **meta["optional_packages_version"], **meta["supported_apps"]}
    pinned = [k for k in packages if k in stacks[0]]
    assert {k: packages[k] for k in pinned} == {k: stacks[0][k] for k in pinned}


# What the model zoo's ci/verify_bundle.py requires of the configs (its min mode; the schema is checked above).
ZOO_INFER_KEYS = {"bundle_root", "device", "network_def", "inferer"}
ZOO_TRAIN_KEYS = {"bundle_root", "device", "dataset_dir"}
ZOO_SECTION_KEYS = {
    "train": {"trainer", "dataset", "handlers", "preprocessing", "postprocessing"},
    "validate": {"evaluator", "dataset", "handlers", "preprocessing", "postprocessing", "inferer", "key_metric"},
}


@pytest.mark.parametrize("name", ALL_BUNDLES)
def test_model_zoo_required_files_and_keys(name):
    root = REPO_ROOT / "bundles" / name
    assert (root / "LICENSE").is_file() and (root / "configs" / "inference.json").is_file()
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    assert ZOO_INFER_KEYS <= set(json.loads((root / "configs" / "inference.json").read_text()))
    train = json.loads((root / "configs" / "train.json").read_text())
    assert ZOO_TRAIN_KEYS <= set(train)
    for section, keys in ZOO_SECTION_KEYS.items():
        assert keys <= set(train[section]), (section, keys - set(train[section]))
        assert "data" in train[section]["dataset"]
    assert "max_epochs" in train["train"]["trainer"]
    intervals = [h["interval"] for h in train["train"]["handlers"] if h["_target_"] == "ValidationHandler"]
    assert intervals == ["@val_interval"]


@pytest.mark.parametrize("name", ALL_BUNDLES)
def test_rendered_facts_come_from_the_dataset_spec(name):
    spec = get_bundle_spec(name)
    configs = REPO_ROOT / "bundles" / name / "configs"
    meta = json.loads((configs / "metadata.json").read_text())
    train = json.loads((configs / "train.json").read_text())
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert list(pred["channel_def"].values()) == list(spec.data.class_names)
    assert train["pixdim"] == list(spec.data.pixdim) and train["intensity_range"] == list(spec.data.intensity_range)
    assert meta["network_data_format"]["inputs"]["image"]["modality"] == spec.data.modality
    expected_inputs = 1 + spec.data.num_classes if spec.deepedit else 1
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == expected_inputs
    assert "rep3d-networks" not in meta["required_packages_version"]  # not on PyPI: the zip carries the code


@pytest.mark.parametrize("name", ALL_BUNDLES)
def test_rendered_recipe_facts_have_one_value(name):
    """The window (training patch, inference window, metadata's input shape) and the weight decay are the recipe's."""
    configs = REPO_ROOT / "bundles" / name / "configs"
    train, inference, meta = (
        json.loads((configs / f"{config}.json").read_text()) for config in ("train", "inference", "metadata")
    )
    windows = [train["roi_size"], inference["inferer"]["roi_size"]]
    windows += [shape["spatial_shape"] for shape in meta["network_data_format"]["inputs"].values()]
    assert windows == [list(ROI_SIZE)] * len(windows)
    assert train["optimizer"]["weight_decay"] == WEIGHT_DECAY


def check_properties(bundle, data_dir):
    """``ConfigWorkflow.check_properties()`` is [] for train, train+evaluate and infer (it parses the datasets)."""
    configs = bundle / "configs"
    for files, kind in [
        (["train.json"], "train"),
        (["train.json", "evaluate.json"], "train"),
        (["inference.json"], "infer"),
    ]:
        workflow = ConfigWorkflow(
            config_file=[str(configs / f) for f in files],
            meta_file=str(configs / "metadata.json"),
            workflow_type=kind,
            logging_file=str(configs / "logging.conf"),
            bundle_root=str(bundle),
            dataset_dir=str(data_dir),
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
    run_bundle(
        bundle,
        ["inference.json"],
        dataset_dir=str(data_dir),
        datalist=[str(image)],
        output_dir=str(out_dir),
        **TINY_INFER,
    )
    written = list(out_dir.rglob("*_seg.nii.gz"))
    assert len(written) == 1, written
    check_label_matches_image(written[0], image, num_classes(bundle))


@pytest.mark.parametrize("name", BUNDLES)
def test_train_evaluate_infer_on_phantom(name, tmp_path):
    _train_evaluate_infer(name, "phantom", tmp_path)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.latest_stack) if n == "amos_ct" else n for n in BUNDLES]
)  # amos_ct also runs in `make test-latest`
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
        return subprocess.run(
            [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", *args, *extra],
            cwd=bundle,
            capture_output=True,
            text=True,
            timeout=600,
        )

    result = infer("--load_pretrain", "false")
    assert result.returncode == 0, result.stderr[-3000:]
    check_label_matches_image(next((tmp_path / "pred").rglob("*_seg.nii.gz")), image, num_classes(bundle))
    result = infer()
    assert result.returncode != 0 and "model.pt" in result.stderr, result.stderr[-3000:]


def command_line(overrides: dict) -> list:
    """``overrides`` as ``monai.bundle run`` arguments, as a user types them."""
    return [a for k, v in overrides.items() for a in (f"--{k}", v if isinstance(v, str) else json.dumps(v))]


def finished_runs(tracking_uri: str) -> list:
    """``(params, metrics, artifact names)`` of every finished MLflow run in the store, read with MLflow's client."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs(e.experiment_id)]
    assert all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    return [(r.data.params, r.data.metrics, [a.path for a in client.list_artifacts(r.info.run_id)]) for r in runs]


def test_command_line_progress_bars_and_mlflow_tracking(tmp_path, monkeypatch):
    """``monai.bundle run`` on the command line: ignite's progress bar of training and of evaluation on stderr, and
    ``--tracking mlflow`` logging params and metrics, by default to ``eval/mlflow.db`` (SQLite), and to a ``file://``
    store given with ``--tracking_uri`` (which MLflow 3 refuses unless ``MLFLOW_ALLOW_FILE_STORE=true``)."""
    bundle = copy_bundle("amos_ct", tmp_path / "bundles")
    data_dir = make_dataset("amos_ct", "phantom", tmp_path / "data")
    datalist = prepare_bundle(bundle, data_dir)
    args = command_line({"dataset_dir": str(data_dir), **TINY_TRAIN}) + ["--tracking", "mlflow"]

    def run(configs, *extra):
        result = subprocess.run(
            [sys.executable, "-m", "monai.bundle", "run", "--config_file", configs, *args, *extra],
            cwd=bundle,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stderr

    train_steps = TINY_TRAIN["max_iterations"]
    stderr = run("configs/train.json")
    assert f"Iteration: [{train_steps}/{train_steps}] 100%" in stderr, stderr[-3000:]
    ((params, metrics, artifacts),) = finished_runs(f"sqlite:///{bundle}/eval/mlflow.db")
    assert params["epoch_length"] == str(TINY_TRAIN["val_interval"]) and {"train_loss", "val_mean_dice"} <= set(metrics)
    assert any(a.startswith("config_") and a.endswith(".json") for a in artifacts), artifacts  # the executed config

    store = tmp_path / "mlruns"
    cases = len(json.loads(datalist.read_text())["test"])
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for the evaluation and for this test's client
    stderr = run("['configs/train.json','configs/evaluate.json']", "--tracking_uri", store.as_uri())
    assert f"Iteration: [{cases}/{cases}] 100%" in stderr, stderr[-3000:]
    ((params, metrics, _),) = finished_runs(store.as_uri())
    assert {"val_mean_dice", "val_hd95"} <= set(metrics) and params["epoch_length"] == str(cases)
