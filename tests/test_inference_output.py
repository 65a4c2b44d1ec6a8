"""The bundles' inference output stage (``InvertToLabelsd``) and input checks (voxel spacing, voxel budget)."""

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_helpers import REPO_ROOT, SMALLEST_NETWORK, check_label_matches_image, copy_bundle
from monai.bundle import ConfigParser
from monai.inferers import SlidingWindowInferer
from monai.transforms import Activationsd, AsDiscreted, Compose, Invertd
from torch.profiler import ProfilerActivity, profile

from rep3d_networks.data.specs import get_dataset_spec
from rep3d_networks.transforms import VolumeError, volume_error_message

CT = "totalseg_ct_abdomen_3mm/example_ct_sm.nii.gz"
# The output stage of the bundles before InvertToLabelsd: every probability channel inverted, then argmax.
PREVIOUS_OUTPUT_STAGE = [
    lambda pre: Activationsd(keys="pred", softmax=True),
    lambda pre: Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False, to_tensor=True),
    lambda pre: AsDiscreted(keys="pred", argmax=True),
]


def bundle_parser(name: str, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "bundles" / name / "configs" / "inference.json"))
    # float32: the output stage is under test, the same on every CPU (``auto`` is bfloat16 where the CPU has it)
    parser.update(
        {
            **SMALLEST_NETWORK,
            "device": "$torch.device('cpu')",
            "output_dir": "unused",
            "precision": "float32",
            **overrides,
        }
    )
    return parser


def predicted(parser: ConfigParser, image: str) -> dict:
    """The bundle's preprocessing and sliding window (seeded random network) on ``image``."""
    torch.manual_seed(0)
    data = parser.get_parsed_content("preprocessing")({"image": image})
    with torch.no_grad():
        data["pred"] = parser.get_parsed_content("inferer")(
            data["image"][None], parser.get_parsed_content("network").eval()
        )[0]
    return data


def output_stage(parser: ConfigParser):
    """The bundle's postprocessing without its SaveImaged transforms."""
    transforms = parser.get_parsed_content("postprocessing").transforms
    return Compose([t for t in transforms if type(t).__name__ != "SaveImaged"])


@pytest.mark.parametrize("interp, max_differing", [("bilinear", 0.001), ("nearest", None)])
def test_labels_equal_the_previous_output_stage(shared_data, interp, max_differing):
    parser = bundle_parser("amos_ct", label_interp=interp, **{"inferer#roi_size": [64, 64, 48], "inferer#overlap": 0.0})
    data = predicted(parser, str(shared_data / CT))
    pre = parser.get_parsed_content("preprocessing")
    previous = Compose([make(pre) for make in PREVIOUS_OUTPUT_STAGE])(dict(data))["pred"]
    labels = output_stage(parser)(dict(data))["pred"]
    assert labels.dtype == torch.uint8 and labels.shape == previous.shape == (1, 122, 101, 30)
    np.testing.assert_allclose(labels.affine, previous.affine, atol=1e-6)
    differing = float((labels.float() != previous).float().mean())
    if max_differing is not None:  # bilinear: the same labels, up to ties
        assert differing <= max_differing
    else:  # nearest neighbour of the label map: different along boundaries, same label set
        assert differing < 0.5 and set(torch.unique(labels).tolist()) <= set(torch.unique(previous).tolist()) | {0}


def peak_allocated_bytes(run, trace: Path) -> int:
    """The most bytes torch's CPU allocator held at once while ``run()`` ran, above what it held before: every
    allocation and free recorded by the profiler (its Chrome trace, in order), summed."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        run()
    profiler.export_chrome_trace(str(trace))
    events = [e["args"] for e in json.loads(trace.read_text())["traceEvents"] if e.get("name") == "[memory]"]
    return max(itertools.accumulate((e["Bytes"] for e in sorted(events, key=lambda e: e["Ev Idx"])), initial=0))


def test_output_stage_never_holds_every_class_channel_on_the_input_grid(shared_data, tmp_path):
    """Peak memory of the output stage, counted from torch's allocations: less than one float32 copy of the 16 class
    probabilities on the input grid (64 bytes per input voxel), which the previous all-channel inverse needs (measured
    here too: the count sees it). A 6 mm network grid (8 times fewer voxels than the 3 mm CT), so that the input grid
    dominates, as for a clinical CT on the bundle's 1.5 mm grid."""
    image = str(shared_data / CT)
    window = {"pixdim": [6.0, 6.0, 6.0], "inferer#roi_size": [64, 64, 48], "inferer#overlap": 0.0}
    peaks, labels = {}, {}
    for interp in ("bilinear", "nearest"):  # Invertd inverts the preprocessing objects that made the prediction
        parser = bundle_parser("amos_ct", label_interp=interp, **window)
        data = predicted(parser, image)
        stage = output_stage(parser)
        peaks[interp] = peak_allocated_bytes(lambda: labels.update(stage(dict(data))), tmp_path / "trace.json")
    previous = Compose([make(parser.get_parsed_content("preprocessing")) for make in PREVIOUS_OUTPUT_STAGE])
    peaks["previous"] = peak_allocated_bytes(lambda: previous(dict(data)), tmp_path / "trace.json")
    classes, voxels = data["pred"].shape[0], labels["pred"].numel()
    assert classes == get_dataset_spec("amos_ct").num_classes
    assert voxels == 122 * 101 * 30 > 8 * data["pred"][0].numel()
    per_voxel = {stage: round(peak / voxels, 1) for stage, peak in peaks.items()}
    all_channels = classes * 4  # bytes per input voxel of the float32 probabilities of every class
    assert per_voxel["previous"] > all_channels, per_voxel
    assert per_voxel["bilinear"] < all_channels and per_voxel["nearest"] < all_channels, per_voxel


def test_probabilities_only_when_asked(tmp_path, shared_data):
    image = str(shared_data / CT)
    overrides = {"inferer#roi_size": [64, 64, 48], "inferer#overlap": 0.0, "datalist": [image]}
    parser = bundle_parser("amos_ct", **overrides)
    assert "probabilities" not in output_stage(parser)(predicted(parser, image))
    parser = bundle_parser("amos_ct", save_probabilities=True, **overrides)
    out = output_stage(parser)(predicted(parser, image))
    assert out["probabilities"].shape == (16, 122, 101, 30) and out["pred"].shape == (1, 122, 101, 30)
    torch.testing.assert_close(out["probabilities"].sum(0), torch.ones(122, 101, 30), atol=1e-4, rtol=0)


def write_ct(path: Path, shape, spacing) -> Path:
    nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), np.diag([*spacing, 1.0])), str(path))
    return path


@pytest.mark.parametrize("spacing", [(1e-9, 1e-9, 1e-9), (0.8, 0.8, 80.0), (0.005, 1.0, 1.0)])
def test_implausible_spacing_refused_naming_the_file(tmp_path, spacing):
    path = write_ct(tmp_path / "bad_header.nii.gz", (8, 8, 8), spacing)
    with pytest.raises(RuntimeError) as raised:  # Compose wraps the transform's error
        bundle_parser("amos_ct").get_parsed_content("preprocessing")({"image": str(path)})
    assert re.match(
        rf"{re.escape(str(path))}: has voxel spacing .* outside the plausible 0\.01\.\.50 mm",
        volume_error_message(raised.value),
    )


def test_voxel_budget_refuses_before_reading_the_data(tmp_path):
    path = write_ct(tmp_path / "huge.nii.gz", (40, 40, 40), (1.0, 1.0, 1.0))
    load = bundle_parser("amos_ct", max_voxels=1000).get_parsed_content("preprocessing").transforms[0]
    path.write_bytes(path.read_bytes()[:200])  # header only (352 bytes uncompressed): reading the data would fail
    with pytest.raises(
        VolumeError, match=r"huge\.nii\.gz: has 40x40x40 = 64,000 voxels, more than the limit of 1,000 voxels"
    ):
        load({"image": str(path)})


def test_inference_command_line_writes_labels_and_refuses_budget(tmp_path, shared_data):
    """``python -m monai.bundle run`` as users run it: uint8 labels on the input grid; over budget a clear error."""
    bundle = copy_bundle("amos_ct", tmp_path)
    image = shared_data / CT
    args = [
        "--config_file",
        "configs/inference.json",
        "--load_pretrain",
        "false",
        "--datalist",
        f"['{image}']",
        "--output_dir",
        str(tmp_path / "out"),
        "--num_workers",
        "0",
        "--inferer#roi_size",
        "[64,64,48]",
        "--inferer#overlap",
        "0.0",
        *[a for k, v in SMALLEST_NETWORK.items() for a in (f"--{k}", str(v))],
    ]
    run = [sys.executable, "-m", "monai.bundle", "run", *args]
    subprocess.run(run, cwd=bundle, check=True, capture_output=True, text=True, timeout=300)
    label = check_label_matches_image(tmp_path / "out" / "example_ct_sm_seg.nii.gz", image, 16)
    assert nib.load(str(tmp_path / "out" / "example_ct_sm_seg.nii.gz")).get_data_dtype() == np.uint8, label
    refused = subprocess.run([*run, "--max_voxels", "100000"], cwd=bundle, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0
    assert (
        f"{image}: has 122x101x30 = 369,660 voxels, more than the limit of 100,000 voxels"
        in refused.stdout + refused.stderr
    )


def windows_run(parser: ConfigParser, image: str, overlap: float) -> int:
    """Forward passes MONAI's sliding window makes over the preprocessed ``image`` at ``overlap``, with the bundle's
    window and ``sw_batch_size`` (a network that only counts its calls)."""
    calls = []
    inferer = parser.get_parsed_content("inferer")
    data = parser.get_parsed_content("preprocessing")({"image": image})
    SlidingWindowInferer(inferer.roi_size, inferer.sw_batch_size, overlap)(
        data["image"][None], lambda x: calls.append(1) or x
    )
    return len(calls)


@pytest.mark.parametrize(
    "options, overlap",
    [
        ({}, 0.5),
        ({"fast": "true"}, 0.25),  # as fire passes ``--fast true``
        ({"fast": True, "displayable_configs#sw_overlap": 0.0}, 0.0),  # fast never raises a lower overlap
        ({"displayable_configs#fast": True}, 0.25),  # as MONAI Label sets a request's options
    ],
)
def test_fast_preset_sets_the_sliding_window_overlap(options, overlap):
    assert bundle_parser("amos_ct", **options).get_parsed_content("inferer").overlap == overlap


def test_fast_preset_on_the_command_line(tmp_path, shared_data):
    """``monai.bundle run inference.json --fast true``: the sliding window runs as many windows as MONAI's sliding
    window at overlap 0.25 (its progress bar on stderr), fewer than the default 0.5, and writes the labels."""
    bundle = copy_bundle("amos_ct", tmp_path)
    image = str(shared_data / CT)
    window = {"inferer#roi_size": [48, 48, 32], "pixdim": [3.0, 3.0, 3.0], "displayable_configs#sw_batch_size": 1}
    args = [
        "--config_file",
        "configs/inference.json",
        "--load_pretrain",
        "false",
        "--datalist",
        f"['{image}']",
        "--output_dir",
        str(tmp_path / "out"),
        "--num_workers",
        "0",
        "--fast",
        "true",
        *[a for k, v in {**SMALLEST_NETWORK, **window}.items() for a in (f"--{k}", str(v))],
    ]
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", *args], cwd=bundle, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    check_label_matches_image(tmp_path / "out" / "example_ct_sm_seg.nii.gz", shared_data / CT, 16)
    progress = re.findall(r"\| (\d+)/(\d+) \[", result.stderr)
    parser = bundle_parser("amos_ct", **window)
    fast = windows_run(parser, image, 0.25)
    assert progress and progress[-1] == (str(fast), str(fast)), result.stderr[-3000:]
    assert fast < windows_run(parser, image, 0.5)
