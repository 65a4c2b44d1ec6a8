"""Part 6, peers: sliding-window inference of a clinical-size CT grid, Rep3D beside the networks it is compared with.

MONAI's ``sliding_window_inference`` over a random ``1x1x273x273x200`` grid (a 512x512x400 CT at 1.5x1.5x2 mm),
roi 96³, sw_batch 4, overlap 0.5, float16 autocast, ``cudnn.benchmark`` on, eval + ``no_grad``; one warm-up on a
144³ input, then two timed runs. Paper-size Rep3D folded (``deploy=True``) with the default ``conv_method`` and with
``"fft"``, Rep3D unfolded, ``UXNet(1, 16)``, MONAI ``SwinUNETR(feature_size=48)``, ``SegResNet(32; 1,2,2,4)`` and an
nnU-Net-like ``DynUNet``, all 16 classes, random weights. Goal: folded Rep3D ≤ 0.5× SwinUNETR's time.
The dry run: the same path on the CPU (bfloat16 autocast) with tiny widths, a 32³ roi and a small grid.
"""

import statistics

import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import DynUNet, SegResNet, SwinUNETR

from gpu_parts.common import OK, TINY_NET, gib, peak_memory, time_calls
from rep3d_networks import Rep3D, UXNet

CLASSES, GOAL = 16, 0.5
REFERENCE, FOLDED = "SwinUNETR(48)", "Rep3D folded, default conv_method"


def dynunet(filters, levels):
    """nnU-Net-like: 3³ kernels, first level at full resolution then stride 2, instance norm, residual blocks."""
    strides = [1] + [2] * (levels - 1)
    return lambda: DynUNet(3, 1, CLASSES, [3] * levels, strides, strides[1:], filters=filters, res_block=True)


def models(dry_run: bool) -> dict:
    """Name -> builder in the order measured: the goal's two first (every later row then has its ratio to
    SwinUNETR), the slowest (unfolded Rep3D, ``conv_method`` auto) last, should the part run out of time."""
    rep3d = TINY_NET if dry_run else {}
    uxnet = {k: v for k, v in TINY_NET.items() if k != "kernel_size"} if dry_run else {}
    # SwinUNETR's smallest width; batch norm, as instance norm needs more than the 1³ bottleneck of a 32³ roi
    swin = dict(feature_size=12, depths=(1, 1, 1, 1), norm_name="batch") if dry_run else dict(feature_size=48)
    segresnet = 8 if dry_run else 32
    return {
        FOLDED: lambda: Rep3D(1, CLASSES, deploy=True, **rep3d),
        REFERENCE: lambda: SwinUNETR(in_channels=1, out_channels=CLASSES, **swin),
        "Rep3D folded, conv_method fft": lambda: Rep3D(1, CLASSES, deploy=True, conv_method="fft", **rep3d),
        "UXNet(1, 16)": lambda: UXNet(1, CLASSES, **uxnet),
        "SegResNet(32; 1,2,2,4)": lambda: SegResNet(
            init_filters=segresnet, out_channels=CLASSES, blocks_down=(1, 2, 2, 4)
        ),
        # six levels would leave the dry run's 32³ roi 1³ at the bottom (instance norm needs more): four there
        "DynUNet (nnU-Net-like)": dynunet([4, 8, 8, 8], 4) if dry_run else dynunet([32, 64, 128, 256, 320, 320], 6),
        "Rep3D unfolded (lrbm)": lambda: Rep3D(1, CLASSES, **rep3d),
    }


FULL = {"grid": (273, 273, 200), "roi": 96, "warmup_edge": 144, "sw_batch": 4, "overlap": 0.5, "runs": 2}
DRY = {"grid": (40, 40, 32), "roi": 32, "warmup_edge": 32, "sw_batch": 4, "overlap": 0.5, "runs": 2}


def run(ctx) -> None:
    sizes = DRY if ctx.dry_run else FULL
    seconds = {}
    torch.backends.cudnn.benchmark = True
    for name, build in models(ctx.dry_run).items():
        ctx.run_check(f"sliding window {sizes['grid']}, {name}", lambda: measure(ctx, sizes, name, build, seconds))
    ctx.run_check(f"goal: {FOLDED} ≤ {GOAL}× {REFERENCE}", lambda: goal(seconds))
    print(peer_table(seconds), flush=True)


def measure(ctx, sizes, name, build, seconds):
    """One warm-up on a ``warmup_edge``³ input, then ``runs`` timed runs over the grid; seconds and peak memory."""
    device, roi = ctx.device, (sizes["roi"],) * 3
    torch.manual_seed(0)
    net = build().to(device).eval()
    params = sum(p.numel() for p in net.parameters())
    grid = torch.rand(1, 1, *sizes["grid"], device=device)
    warmup = torch.rand(1, 1, *(sizes["warmup_edge"],) * 3, device=device)
    outputs = []

    def infer(x):
        output = sliding_window_inference(x, roi, sizes["sw_batch"], net, overlap=sizes["overlap"])
        outputs.append(output.isfinite().all())

    with torch.no_grad(), torch.autocast(device.type, dtype=ctx.amp_dtype), peak_memory(device) as peak:
        infer(warmup)
        times = time_calls(lambda: infer(grid), device, 0, sizes["runs"])
    seconds[name] = (statistics.median(times), params)
    result = f"{' / '.join(f'{t:.2f}' for t in times)} s; {params / 1e6:.1f} M parameters; peak {gib(peak['gib'])}"
    if REFERENCE in seconds and name != REFERENCE:
        result += f"; {seconds[name][0] / seconds[REFERENCE][0]:.2f}× {REFERENCE}"
    return result, OK if all(outputs) else "failed: non-finite output"


def goal(seconds):
    """Met when the folded Rep3D (the bundle's default ``conv_method``) takes at most ``GOAL`` of SwinUNETR's time."""
    missing = [name for name in (FOLDED, REFERENCE) if name not in seconds]
    if missing:
        return "", f"failed: no time for {', '.join(missing)}"
    ratio = seconds[FOLDED][0] / seconds[REFERENCE][0]
    verdict = "met" if ratio <= GOAL else "not met"
    rep3d = [name for name in seconds if name.startswith("Rep3D")]
    others = "; ".join(f"{name} {seconds[name][0] / seconds[REFERENCE][0]:.2f}×" for name in rep3d)
    return f"{verdict}: {ratio:.2f}× ({others})", OK


def peer_table(seconds) -> str:
    """Markdown table of median seconds, parameters and the ratio to SwinUNETR, for the part's log."""
    lines = ["| network | s (median) | parameters | × SwinUNETR |", "|---|---:|---:|---:|"]
    reference = seconds.get(REFERENCE, (float("nan"), 0))[0]
    for name, (median, params) in seconds.items():
        lines.append(f"| {name} | {median:.2f} | {params / 1e6:.1f} M | {median / reference:.2f} |")
    return "\n".join(lines)
