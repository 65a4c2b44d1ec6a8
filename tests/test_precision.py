"""Inference precision (``rep3d_networks.inferers``): the choice per device, the inferer, the bundles'
``--precision`` option through ``python -m monai.bundle run``, and ``auto`` on CPUs with and without bfloat16 through
a bundle run and an app request (the dtype the network's layers ran in)."""

import importlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from app_helpers import check_label, serve_app
from bundle_helpers import SMALLEST_NETWORK, bundle_workflow, check_label_matches_image, copy_bundle, run_bundle
from precision_probe import recorded_layer_dtypes

from rep3d_networks import Rep3D, dwconv3d, inferers
from rep3d_networks.inferers import PrecisionSlidingWindowInferer, autocast_dtype, cpu_has_bf16

CT = "totalseg_ct_abdomen_3mm/example_ct_sm.nii.gz"
AUTOCAST_CASES = [  # (precision, device, CPU with bfloat16) -> autocast dtype (None: float32)
    ("float32", "cpu", True, None),
    ("float32", "cuda", False, None),
    ("bfloat16", "cpu", True, torch.bfloat16),
    ("bfloat16", "cpu", False, torch.bfloat16),  # asked for explicitly: emulated where the CPU lacks it
    ("bfloat16", "cuda", False, torch.bfloat16),
    ("auto", "cpu", True, torch.bfloat16),
    ("auto", "cpu", False, None),
    ("auto", "cuda", False, torch.float16),  # MONAI's amp=True, as the bundles did before
    ("auto", "mps", True, None),
]
AUTO_CASES = [(True, torch.bfloat16), (False, torch.float32)]  # CPU with bfloat16 -> dtype the network runs in
PROBE = Path(__file__).with_name("precision_probe.py")


@pytest.mark.parametrize(
    "name",
    [
        "PRECISIONS",
        "PrecisionSlidingWindowInferer",
        "autocast_dtype",
        "autocast_network",
        "check_precision",
        "cpu_has_bf16",
    ],
)
def test_old_module_path_gives_the_moved_object(name):
    """``rep3d_networks.precision``, the inferer's old home, re-exports it with a ``DeprecationWarning``."""
    with pytest.warns(DeprecationWarning, match="moved to rep3d_networks.inferers"):
        old = importlib.reload(importlib.import_module("rep3d_networks.precision"))
    assert getattr(old, name) is getattr(inferers, name)


@pytest.mark.parametrize("precision,device,has_bf16,expected", AUTOCAST_CASES)
def test_autocast_dtype(monkeypatch, precision, device, has_bf16, expected):
    monkeypatch.setattr(inferers, "cpu_has_bf16", lambda: has_bf16)
    assert autocast_dtype(precision, device) == expected


@pytest.mark.parametrize("bad", ["float16", "bf16", "", None, ["auto"]])
def test_unknown_precision_is_refused(bad):
    with pytest.raises(ValueError, match=r"precision must be one of auto, float32, bfloat16; got"):
        PrecisionSlidingWindowInferer(roi_size=[16, 16, 16], precision=bad)


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="needs Linux /proc/cpuinfo")
def test_cpu_has_bf16_follows_the_cpu_flags():
    flags = set(Path("/proc/cpuinfo").read_text().split())
    assert cpu_has_bf16() == bool(flags & {"avx512_bf16", "amx_bf16", "amx_tile"})


@pytest.mark.parametrize("method", ["fft", "direct"])
def test_dwconv_computes_bfloat16_inputs_in_float32(method):
    """Under autocast the large-kernel convolution takes the bfloat16 map of the previous layer, computes in float32
    and returns bfloat16: the result is the float32 one, rounded once."""
    torch.manual_seed(0)
    x = torch.randn(1, 4, 16, 16, 16).bfloat16()
    w = torch.randn(4, 1, 9, 9, 9)
    reference = dwconv3d(x.float(), w, method=method)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = dwconv3d(x, w, method=method)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, reference.bfloat16(), rtol=0, atol=0)


def test_inferer_output_is_float32_and_close_to_float32():
    """The network runs in bfloat16 (its outputs differ from float32 by bfloat16 rounding), the window blending in
    float32; ``float32`` is exactly the plain sliding window."""
    torch.manual_seed(0)
    net = Rep3D(1, 3, feature_size=4, depths=[1, 1, 1, 1], kernel_size=3, hidden_size=32, deploy=True).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    outputs = {}
    with torch.no_grad():
        for precision in ("float32", "bfloat16"):
            inferer = PrecisionSlidingWindowInferer(
                roi_size=[32, 32, 16], sw_batch_size=1, overlap=0.5, precision=precision
            )
            outputs[precision] = inferer(x, net)
        plain = inferers.SlidingWindowInferer(roi_size=[32, 32, 16], sw_batch_size=1, overlap=0.5)(x, net)
    assert outputs["bfloat16"].dtype == torch.float32
    torch.testing.assert_close(outputs["float32"], plain, rtol=0, atol=0)
    difference = (outputs["bfloat16"] - outputs["float32"]).abs().max() / outputs["float32"].abs().max()
    assert 0 < difference < 0.05


def test_precision_through_monai_bundle_run(tmp_path, shared_data):
    """``python -m monai.bundle run ... --precision bfloat16`` as users type it: uint8 labels on the input grid as
    with float32 (run in-process the same way), nearly the same labels (a random tiny network: many near ties); an
    unknown precision fails before any image is read."""
    bundle = copy_bundle("amos_ct", tmp_path)
    torch.manual_seed(0)
    (bundle / "models").mkdir()
    torch.save(
        Rep3D(1, 16, feature_size=4, depths=[1, 1, 1, 1], kernel_size=3, hidden_size=32).state_dict(),
        bundle / "models" / "model.pt",
    )
    image = shared_data / CT
    overrides = {
        **SMALLEST_NETWORK,
        "datalist": [str(image)],
        "num_workers": 0,
        "pixdim": [6.0, 6.0, 6.0],
        "inferer#roi_size": [32, 32, 16],
        "inferer#overlap": 0.0,
    }
    args = [a for k, v in overrides.items() for a in (f"--{k}", v if isinstance(v, str) else json.dumps(v))]
    run = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        "configs/inference.json",
        *args,
        "--output_dir",
        str(tmp_path / "bfloat16"),
        "--precision",
        "bfloat16",
    ]
    result = subprocess.run(run, cwd=bundle, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "precision bfloat16 on cpu: torch.bfloat16 autocast" in result.stdout + result.stderr
    run_bundle(bundle, ["inference.json"], output_dir=str(tmp_path / "float32"), precision="float32", **overrides)

    labels = {}
    for precision in ("float32", "bfloat16"):
        written = tmp_path / precision / "example_ct_sm_seg.nii.gz"
        check_label_matches_image(written, image, 16)
        assert nib.load(str(written)).get_data_dtype() == np.uint8
        labels[precision] = np.asarray(nib.load(str(written)).dataobj)
    assert (labels["bfloat16"] == labels["float32"]).mean() > 0.95

    with pytest.raises(RuntimeError) as refused:  # monai.bundle wraps the error of a config component
        run_bundle(bundle, ["inference.json"], output_dir=str(tmp_path / "float16"), precision="float16", **overrides)
    assert "precision must be one of auto, float32, bfloat16; got 'float16'" in str(refused.value.__cause__)
    assert not (tmp_path / "float16").exists()


@pytest.mark.parametrize("has_bf16, dtype", AUTO_CASES)
def test_auto_precision_through_a_bundle_run(monkeypatch, tmp_path, shared_data, has_bf16, dtype):
    """The bundle's default ``precision: auto``, run in-process as ``monai.bundle run`` runs it, with the CPU probe
    patched at its source: the network's layers compute in bfloat16 on a CPU with it, in float32 on one without
    (:func:`precision_probe.recorded_layer_dtypes`)."""
    monkeypatch.setattr(inferers, "cpu_has_bf16", lambda: has_bf16)
    bundle = copy_bundle("amos_ct", tmp_path)
    (bundle / "models").mkdir()
    torch.save(
        Rep3D(1, 16, feature_size=4, depths=[1, 1, 1, 1], kernel_size=3, hidden_size=32).state_dict(),
        bundle / "models" / "model.pt",
    )
    image = shared_data / CT
    overrides = {
        **SMALLEST_NETWORK,
        "datalist": [str(image)],
        "num_workers": 0,
        "pixdim": [6.0, 6.0, 6.0],
        "inferer#roi_size": [32, 32, 16],
        "inferer#overlap": 0.0,
        "output_dir": str(tmp_path / "out"),
    }
    workflow = bundle_workflow(bundle, ["inference.json"], **overrides)
    assert workflow.parser.get_parsed_content("inferer").precision == "auto"
    dtypes = []
    with recorded_layer_dtypes(dtypes.append):
        workflow.run()
    workflow.finalize()
    assert dtypes and set(dtypes) == {dtype}, Counter(dtypes)
    check_label_matches_image(tmp_path / "out" / "example_ct_sm_seg.nii.gz", image, 16)


def test_auto_precision_through_an_app_request(tmp_path, shared_data, repo_root):
    """``/infer`` with ``precision: auto`` on the app's server, in its own process as README.md starts it, through
    :mod:`precision_probe` (the CPU probe patched in the server process, the layers' output dtypes recorded there): the
    network computes in bfloat16 while the probe says the CPU has it, in float32 after it says it has not."""
    answer, record = tmp_path / "cpu_has_bf16.json", tmp_path / "dtypes.txt"
    answer.write_text("true")
    launcher = [str(PROBE), str(answer), str(record)]
    with serve_app(tmp_path, repo_root, shared_data / CT, {"amos_ct": True}, launcher=launcher) as (
        _,
        client,
        _,
        studies,
    ):
        for has_bf16, dtype in AUTO_CASES:
            answer.write_text(json.dumps(has_bf16))
            record.write_text("")
            check_label(client.infer("amos_ct", "ct_sm", {"precision": "auto"})[0], studies / "ct_sm.nii.gz", 16)
            dtypes = record.read_text().split()
            assert dtypes and set(dtypes) == {str(dtype)}, Counter(dtypes)


class _NaNUnderAutocast(torch.nn.Module):
    """A 1³ convolution whose output is NaN where autocast is on: the intermittent fault of the served DynUNet."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 3, 1)

    def forward(self, x):
        out = self.conv(x)
        return out * float("nan") if torch.is_autocast_enabled("cpu") else out


def test_non_finite_autocast_output_is_computed_again_in_float32(caplog):
    """Finite inputs, non-finite bfloat16 output: the window batch is computed again without autocast (a warning
    says so) and the answer is the float32 one; non-finite inputs are passed through, not computed twice."""
    torch.manual_seed(0)
    net = _NaNUnderAutocast().eval()
    x = torch.randn(1, 1, 12, 10, 8)
    settings = dict(roi_size=[8, 8, 8], sw_batch_size=2, overlap=0.25)
    with torch.no_grad(), caplog.at_level("WARNING", logger="rep3d_networks.inferers"):
        reference = PrecisionSlidingWindowInferer(precision="float32", **settings)(x, net)
        out = PrecisionSlidingWindowInferer(precision="bfloat16", **settings)(x, net)
        assert any("computed again in float32" in r.getMessage() for r in caplog.records)
        caplog.clear()
        x.fill_(float("nan"))
        PrecisionSlidingWindowInferer(precision="bfloat16", **settings)(x, net)
        assert not any("computed again" in r.getMessage() for r in caplog.records)
    torch.testing.assert_close(out, reference)
