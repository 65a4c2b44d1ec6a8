"""Part 4, folded Rep3D evaluation: one 96³ patch, and whole-volume inference through amos_ct's ``inference.json``.

The patch: ``Rep3D(1, 16, deploy=True)`` forward without gradients, float32 and under autocast (the bundle's
``amp``), cuDNN autotuning on as ``inference.json`` sets it. The volume: the shared abdomen-pelvis CT
(``totalseg_ct_abdomen_3mm/example_ct.nii.gz``) through the bundle's sliding window with random folded weights
(``load_pretrain`` false: the time does not depend on the weights), twice (the first run autotunes cuDNN).
"""

import statistics

import torch
from bundle_helpers import SMALLEST_NETWORK, copy_bundle
from conftest import shared_data_dir
from monai.bundle import ConfigParser

from gpu_parts.bundle_inference import infer_volume
from gpu_parts.common import AMOS_CT, OK, TINY_NET, gib, peak_memory, time_calls
from rep3d_networks import Rep3D

CT = "totalseg_ct_abdomen_3mm/example_ct.nii.gz"
FULL = {"edge": 96, "warmup": 3, "repeats": 10, "net": {}, "bundle": {}}
DRY = {  # the tests' smallest network, a 6 mm grid and 32³ windows; overlap and batch are the config's own
    "edge": 32,
    "warmup": 1,
    "repeats": 2,
    "net": TINY_NET,
    "bundle": {**SMALLEST_NETWORK, "pixdim": [6.0, 6.0, 6.0], "inferer#roi_size": [32, 32, 32], "num_workers": 0},
}


def run(ctx) -> None:
    sizes = DRY if ctx.dry_run else FULL
    for amp in (False, True):
        ctx.run_check(
            f"folded Rep3D, one {sizes['edge']}³ patch, {'AMP' if amp else 'float32'}", lambda: patch(ctx, sizes, amp)
        )
    bundle = copy_bundle("amos_ct", ctx.work_dir / "bundles")
    for attempt in ("first run", "second run"):
        ctx.run_check(
            f"inference.json sliding window on {CT}, {attempt}", lambda: whole_volume(ctx, sizes, bundle, attempt)
        )


def patch(ctx, sizes, amp):
    device, edge = ctx.device, sizes["edge"]
    torch.backends.cudnn.benchmark = True
    parser = ConfigParser()
    parser.read_config(str(AMOS_CT / "configs" / "inference.json"))
    torch.manual_seed(0)
    net = Rep3D(1, parser.get_parsed_content("num_classes"), deploy=True, **sizes["net"]).to(device).eval()
    x = torch.rand(1, 1, edge, edge, edge, device=device)
    with peak_memory(device) as peak, torch.no_grad(), torch.autocast(device.type, dtype=ctx.amp_dtype, enabled=amp):
        times = time_calls(lambda: net(x), device, sizes["warmup"], sizes["repeats"])
    torch.backends.cudnn.benchmark = False
    median = statistics.median(times)
    return f"median {median:.4f} s over {len(times)} after {sizes['warmup']} warm-up; peak {gib(peak['gib'])}", OK


def whole_volume(ctx, sizes, bundle, attempt):
    image = shared_data_dir() / CT
    if not image.is_file():
        raise FileNotFoundError(
            f"{image}: the shared CT is missing (set REP3D_SHARED_DATA; see benchmarks/gpu_prepare.sh)"
        )
    output_dir = ctx.work_dir / "predictions" / attempt.replace(" ", "_")
    return str(infer_volume(ctx, bundle, image, output_dir, sizes["bundle"])), OK
