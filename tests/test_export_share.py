"""Export and share the bundles (issue #6): TorchScript and ONNX of the folded network, reproducible zip, download,
load."""

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from app_helpers import write_overrides
from bundle_helpers import (
    BUNDLES,
    TINY_INFER,
    TINY_TRAIN,
    check_evaluated_test_split,
    check_label_matches_image,
    copy_bundle,
    make_dataset,
    num_classes,
    run_blocked,
    run_bundle,
)
from monai.bundle import ConfigParser, ckpt_export, download, load

from rep3d_networks import Rep3D
from rep3d_networks.data.cli import prepare
from rep3d_networks.evaluation import write_summary
from rep3d_networks.package import main as package_main
from rep3d_networks.package import package

TINY = {"feature_size": 8, "hidden_size": 32}
OVERRIDE = {f"network_def#{k}": v for k, v in TINY.items()}

# Runs in a fresh interpreter: only torch may be imported to run the exported files.
TORCH_ONLY = """
import sys, torch
results = {}
for ts, x, y in zip(*[iter(sys.argv[1:])] * 3):
    module = torch.jit.load(ts)
    with torch.no_grad():
        out = module(torch.load(x))
    expected = torch.load(y)
    results[ts] = float((out - expected).abs().max() / expected.abs().max())
extra = sorted(m for m in sys.modules if m.split(".")[0] in ("monai", "rep3d_networks", "ignite", "nibabel"))
print(repr((results, extra)))
"""


def tiny_checkpoint(bundle: Path, seed: int = 0) -> Path:
    """A random training-form (unfolded) checkpoint of the tiny network at ``models/model.pt``."""
    torch.manual_seed(seed)
    net = Rep3D(1, num_classes(bundle), **TINY)
    for module in net.modules():  # non-trivial BatchNorm statistics, so that folding and eval mode matter
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = bundle / "models" / "model.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


def eager_folded_output(bundle: Path, x: torch.Tensor) -> torch.Tensor:
    """Output of the bundle's inference ``network_def`` (folded, ``deploy: true``) loaded from ``models/model.pt``."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.update(OVERRIDE)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(bundle / "models" / "model.pt"), strict=True)
    assert all(m.folded for m in net.modules() if hasattr(m, "folded"))
    with torch.no_grad():
        return net.eval()(x)


def export_command(bundle: Path):
    configs = bundle / "configs"
    return dict(
        net_id="network_def",
        filepath=str(bundle / "models" / "model.ts"),
        ckpt_file=str(bundle / "models" / "model.pt"),
        meta_file=str(configs / "metadata.json"),
        config_file=str(configs / "inference.json"),
    )


def test_ckpt_export_gives_folded_torchscript_that_runs_with_torch_only(tmp_path):
    x = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / "x.pt")
    argv = []
    for name in BUNDLES:
        bundle = copy_bundle(name, tmp_path / "bundles")
        tiny_checkpoint(bundle)
        command = export_command(bundle)
        if name == "amos_ct":  # the README's command line, as users run it
            args = [command.pop("net_id")] + [a for k, v in {**command, **OVERRIDE}.items() for a in (f"--{k}", str(v))]
            command["net_id"] = args[0]
            result = subprocess.run(
                [sys.executable, "-m", "monai.bundle", "ckpt_export", *args],
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert result.returncode == 0, result.stderr[-3000:]
        else:
            ckpt_export(**command, **OVERRIDE)
        torch.save(eager_folded_output(bundle, x), tmp_path / f"{name}_y.pt")
        argv += [command["filepath"], str(tmp_path / "x.pt"), str(tmp_path / f"{name}_y.pt")]
        extra = json.loads(zipfile.ZipFile(command["filepath"]).read("model/extra/metadata.json"))
        assert extra["version"] == "0.1.0"

    result = subprocess.run([sys.executable, "-c", TORCH_ONLY, *argv], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    errors, imported = eval(result.stdout.strip().splitlines()[-1])
    assert imported == [], imported
    assert len(errors) == len(BUNDLES) and all(e <= 1e-5 for e in errors.values()), errors


# The bundle README's ONNX command (legacy TorchScript-based exporter: the dynamo exporter cannot express the
# "divisible by 16" input sizes as shape constraints); dynamic batch and spatial axes.
ONNX_AXES = {0: "batch", 2: "x", 3: "y", 4: "z"}
ONNX_CONVERTER = {
    "dynamo": False,
    "verify": True,
    "use_ort": True,
    "atol": 1e-4,
    "input_names": ["image"],
    "output_names": ["pred"],
    "dynamic_axes": {"image": ONNX_AXES, "pred": ONNX_AXES},
}


def test_onnx_export_of_the_folded_network_runs_in_onnxruntime(tmp_path):
    """``monai.bundle onnx_export`` as the README runs it: a plain large-kernel CNN that onnxruntime runs at other
    sizes and batch sizes than the export's, equal to the eager folded network (≤ 1e-5 relative)."""
    bundle = copy_bundle("amos_ct", tmp_path / "bundles")
    tiny_checkpoint(bundle)
    command = export_command(bundle)
    command["filepath"] = str(bundle / "models" / "model.onnx")
    args = [command.pop("net_id")] + [a for k, v in {**command, **OVERRIDE}.items() for a in (f"--{k}", str(v))]
    args += ["--use_trace", "True", "--input_shape", "[1, 1, 32, 32, 32]", "--converter_kwargs", repr(ONNX_CONVERTER)]
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "onnx_export", *args], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]

    model = onnx.load(command["filepath"])
    onnx.checker.check_model(model)
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    conv_weights = [node.input[1] for node in model.graph.node if node.op_type == "Conv"]
    assert all(w in shapes for w in conv_weights)  # every kernel is a stored tensor: no mask computed at run time
    large = sorted(shapes[w] for w in conv_weights if shapes[w][2:] == (21, 21, 21))
    assert large == [(c, 1, 21, 21, 21) for c in (8, 8, 16, 16, 32, 32, 64, 64)]  # one folded kernel per block
    session = onnxruntime.InferenceSession(command["filepath"], providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(2)
    for shape in [(1, 1, 32, 32, 32), (2, 1, 48, 32, 64)]:
        x = torch.randn(*shape, generator=generator)
        (out,) = session.run(None, {"image": x.numpy()})
        expected = eager_folded_output(bundle, x).numpy()
        assert out.shape == expected.shape
        assert np.abs(out - expected).max() / np.abs(expected).max() <= 1e-5


def listing(path: Path):
    with zipfile.ZipFile(path) as archive:
        return [(i.filename, i.date_time, i.external_attr >> 16) for i in archive.infolist()]


def test_package_is_reproducible_and_round_trips_through_monai_download(tmp_path, capsys):
    bundle = copy_bundle("amos_ct", tmp_path / "bundles")
    weights = tiny_checkpoint(bundle)
    ckpt_export(**export_command(bundle), **OVERRIDE)
    (bundle / "configs" / "datalist_fold0.json").write_text('{"training": []}')
    (bundle / "eval").mkdir()
    (bundle / "eval" / "metrics.csv").write_text("x")

    first = package(str(bundle), str(tmp_path / "dist" / "amos_ct_v0.1.0.zip"))
    (bundle / "LICENSE").touch()  # a newer modification time must not change the bytes
    second = package(str(bundle), str(tmp_path / "again.zip"), weights=str(weights))
    digest = hashlib.sha256(first.read_bytes()).hexdigest()
    assert hashlib.sha256(second.read_bytes()).hexdigest() == digest
    entries = listing(first)
    names = [e[0] for e in entries]
    assert names == sorted(names) and all(n.startswith("amos_ct/") for n in names)
    assert {
        "amos_ct/configs/inference.json",
        "amos_ct/models/model.pt",
        "amos_ct/models/model.ts",
        "amos_ct/LICENSE",
        "amos_ct/large_files.yml",
        "amos_ct/docs/README.md",
    } <= set(names)
    assert not any(n.startswith("amos_ct/configs/datalist") or "/eval/" in n for n in names)
    assert "amos_ct/rep3d_networks/nets/rep3d.py" in names  # the code the configs import
    assert {e[1] for e in entries} == {(1980, 1, 1, 0, 0, 0)} and {e[2] for e in entries} == {0o100644}

    assert package_main([str(bundle), "--output", str(first)]) == 1
    assert "exists: pass --overwrite" in capsys.readouterr().err
    assert package_main([str(bundle), "--output", str(first), "--overwrite"]) == 0
    assert f"sha256 {digest}" in capsys.readouterr().out

    new_dir = tmp_path / "downloaded"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "download",
            "--name",
            "amos_ct",
            "--url",
            first.resolve().as_uri(),
            "--bundle_dir",
            str(new_dir),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    downloaded = new_dir / "amos_ct"
    assert (downloaded / "models" / "model.pt").read_bytes() == weights.read_bytes()

    data_dir = make_dataset("amos_ct", "phantom", tmp_path / "data")
    image = sorted((data_dir / "imagesTr").glob("*.nii.gz"))[0]
    run_bundle(
        downloaded,
        ["inference.json"],
        dataset_dir=str(data_dir),
        datalist=[str(image)],
        output_dir=str(tmp_path / "pred"),
        **TINY_INFER,
    )
    written = list((tmp_path / "pred").rglob("*_seg.nii.gz"))
    assert len(written) == 1
    check_label_matches_image(written[0], image, 16)

    # monai.bundle.load finds the bundle in bundle_dir, so nothing is downloaded (works offline)
    x = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(2))
    expected = eager_folded_output(downloaded, x)
    trained = load(name="amos_ct", bundle_dir=str(new_dir), source="github", net_override=TINY)
    inference = load(
        name="amos_ct", bundle_dir=str(new_dir), workflow_type="inference", net_override={**TINY, "deploy": False}
    )
    scripted, meta, _ = load(name="amos_ct", bundle_dir=str(new_dir), load_ts_module=True, model_file="models/model.ts")
    assert meta["version"] == "0.1.0"
    with torch.no_grad():
        for net in (trained.fold(), inference.fold(), scripted):
            y = net.eval()(x)
            assert (y - expected).abs().max() <= 1e-5 * expected.abs().max()


# What a MONAI Label app does with a bundle folder (monailabel's own BundleInferTask, no code of this repository).
SERVE_WITH_MONAI_LABEL = """
import sys
from monailabel.tasks.infer.bundle import BundleInferTask

task = BundleInferTask(sys.argv[1], {}, load_strict=True)
assert task.valid, "MONAI Label did not accept the bundle"
label, _ = task({"image": sys.argv[2], "device": "cpu"})
print("LABEL", label)
"""


@pytest.mark.latest_stack
def test_downloaded_zip_runs_where_the_package_cannot_be_imported(tmp_path):
    """The zip carries the code its configs import: downloaded and run by MONAI (CLI and MONAI Label's bundle task)
    in a process that cannot import this repository's package; without the vendored code the same run fails."""
    bundle = copy_bundle("amos_ct", tmp_path / "bundles")
    tiny_checkpoint(bundle)
    archive = package(str(bundle), str(tmp_path / "dist" / "amos_ct_v0.1.0.zip"))
    result = run_blocked(
        tmp_path,
        "monai.bundle",
        "download",
        "--name",
        "amos_ct",
        "--url",
        archive.resolve().as_uri(),
        "--bundle_dir",
        str(tmp_path / "downloaded"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    downloaded = tmp_path / "downloaded" / "amos_ct"
    write_overrides(downloaded / "configs" / "inference.json", TINY_INFER)
    image = sorted((make_dataset("amos_ct", "phantom", tmp_path / "data") / "imagesTr").glob("*.nii.gz"))[0]
    infer = [
        "run",
        "--config_file",
        "configs/inference.json",
        "--datalist",
        repr([str(image)]),
        "--output_dir",
        str(tmp_path / "pred"),
    ]

    result = run_blocked(downloaded, "monai.bundle", *infer, cwd=downloaded)
    assert result.returncode == 0, result.stderr[-3000:]
    check_label_matches_image(next((tmp_path / "pred").rglob("*_seg.nii.gz")), image, 16)
    (tmp_path / "serve.py").write_text(SERVE_WITH_MONAI_LABEL)
    result = run_blocked(downloaded, str(tmp_path / "serve.py"), str(downloaded), str(image), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    check_label_matches_image(Path(result.stdout.split("LABEL ")[-1].strip()), image, 16)

    shutil.rmtree(downloaded / "rep3d_networks")  # the blocker really blocks: without the vendored code, no run
    result = run_blocked(downloaded, "monai.bundle", *infer, cwd=downloaded)
    missing = ("No module named 'rep3d_networks'", "Cannot locate class or function path: 'rep3d_networks.")
    assert result.returncode != 0 and any(m in result.stderr for m in missing), result.stderr[-3000:]


# bundle, the config files run in turn from its downloaded zip, whether the last one evaluates the test split
ZIP_RUNS = [
    ("amos_ct", ["configs/train.json", "['configs/train.json','configs/evaluate.json']"], True),
    ("amos_ct_deepedit", ["configs/train.json"], False),  # no evaluate.json: train.json validates with simulated clicks
]


@pytest.mark.parametrize("name, config_files, evaluates", ZIP_RUNS)
def test_downloaded_zip_trains_and_evaluates_where_the_package_cannot_be_imported(
    tmp_path, name, config_files, evaluates
):
    """``train.json`` (then ``evaluate.json``) of a zip made by ``package`` and unpacked by ``monai.bundle download``,
    run by ``monai.bundle run`` (tiny network, 2 iterations, phantom) in processes that cannot import this repository's
    package: training writes ``models/model.pt``, which the bundle's network loads strictly; the evaluation scores
    exactly the test split."""
    archive = package(str(copy_bundle(name, tmp_path / "bundles")), str(tmp_path / "dist" / f"{name}_v0.1.0.zip"))
    download(name=name, url=archive.resolve().as_uri(), bundle_dir=str(tmp_path / "downloaded"))
    downloaded = tmp_path / "downloaded" / name
    assert not (downloaded / "models" / "model.pt").exists()  # the zip has no weights: training writes them
    data_dir = make_dataset("amos_ct", "phantom", tmp_path / "data")
    datalist = Path(prepare("amos_ct", str(data_dir), str(downloaded / "configs"))[0])
    overrides = {**TINY_TRAIN, "dataset_dir": str(data_dir)}
    args = [a for k, v in overrides.items() for a in (f"--{k}", v if isinstance(v, str) else json.dumps(v))]
    for config_file in config_files:
        result = run_blocked(downloaded, "monai.bundle", "run", "--config_file", config_file, *args, cwd=downloaded)
        assert result.returncode == 0, result.stderr[-3000:]
    parser = ConfigParser()
    parser.read_config(str(downloaded / "configs" / "train.json"))
    parser.update(TINY_TRAIN)
    parser.get_parsed_content("network_def").load_state_dict(
        torch.load(downloaded / "models" / "model.pt"), strict=True
    )
    if evaluates:
        check_evaluated_test_split(downloaded, data_dir, datalist)


def test_published_weights_are_fetched_and_their_hash_checked(tmp_path, capsys):
    """``package --weights --weights_url``: the zip lists the weights in ``large_files.yml`` (url, SHA-256) and their
    evaluation in ``eval_metrics``; MONAI fetches them after the download and refuses a file with another hash."""
    bundle = copy_bundle("amos_ct", tmp_path / "bundles")
    weights = tmp_path / "published" / "model.pt"
    weights.parent.mkdir()
    shutil.move(tiny_checkpoint(bundle), weights)
    archive = tmp_path / "dist" / "amos_ct_v0.1.0.zip"
    command = [str(bundle), "--weights", str(weights), "--weights_url", weights.as_uri(), "--output", str(archive)]
    assert package_main(command) == 1
    assert "eval/summary.csv not found: evaluate the weights first" in capsys.readouterr().err

    dice, hd95 = np.array([[0.5, 0.7], [0.6, 0.8]]), np.array([[3.0, 5.0], [4.0, 6.0]])
    write_summary({"val_mean_dice": dice, "val_hd95": hd95}, ["spleen", "right kidney"], str(bundle / "eval"))
    assert package_main(command) == 0
    with zipfile.ZipFile(archive) as zipped:
        assert "amos_ct/models/model.pt" not in zipped.namelist()  # published at the URL, not zipped
        meta = json.loads(zipped.read("amos_ct/configs/metadata.json"))
    assert meta["eval_metrics"] == {"val_mean_dice": 0.65, "val_hd95": 4.5}

    downloaded = tmp_path / "downloaded" / "amos_ct"
    monai_bundle = [sys.executable, "-m", "monai.bundle"]
    result = subprocess.run(
        [
            *monai_bundle,
            "download",
            "--name",
            "amos_ct",
            "--url",
            archive.as_uri(),
            "--bundle_dir",
            str(downloaded.parent),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    fetch = [*monai_bundle, "download_large_files", "--bundle_path", str(downloaded)]
    result = subprocess.run(fetch, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (downloaded / "models" / "model.pt").read_bytes() == weights.read_bytes()

    (downloaded / "models" / "model.pt").unlink()
    weights.write_bytes(weights.read_bytes()[:-1] + b"x")  # the published file is not the one that was packaged
    result = subprocess.run(fetch, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and "sha256 check of downloaded file failed" in result.stderr, result.stderr[-3000:]
