"""Part 2, ``dwconv3d`` speed: cuDNN (``method="direct"``) vs FFT at the four Rep3D stage shapes of a 96³ input.

For k = 21 and k = 7, float32 and AMP, forward (no grad, as validation) and forward+backward (as training): the
crossover table from which the CUDA branch of ``method="auto"`` is to be set. Under AMP the input is in the autocast
dtype and ``dwconv3d`` computes in float32 inside; "direct fp16" is plain ``F.conv3d(groups=C)`` under autocast for
comparison (what a half-precision depthwise convolution would cost). "direct" is ``F.conv3d``: cuDNN on CUDA, oneDNN
on the CPU dry run. TF32 is left at PyTorch's defaults.
"""

import torch
import torch.nn.functional as F
from bench_dwconv import STAGES, _fwd_bwd

from gpu_parts.common import OK, time_adaptive
from rep3d_networks.ops import _choose_method, dwconv3d

FULL = {"stages": STAGES, "batch": 2, "kernels": (21, 7), "repeats": 5}
DRY = {"stages": [(4, 8), (8, 4)], "batch": 1, "kernels": (7, 3), "repeats": 1}
MODES = ("fwd", "fwd+bwd")


def run(ctx) -> None:
    sizes = DRY if ctx.dry_run else FULL
    winners = {}
    for amp in (False, True):  # float32 first: the "auto" rule needs it most, should the part run out of time
        for kernel in sizes["kernels"]:
            for mode in MODES:
                for channels, edge in sizes["stages"]:
                    check = (
                        f"{channels}x{edge}³ batch {sizes['batch']}, k={kernel}, {'AMP' if amp else 'float32'}, {mode}"
                    )
                    ctx.run_check(check, lambda: measure(ctx, sizes, (channels, edge, kernel), amp, mode, winners))
    for (kernel, amp, mode), stage_winners in winners.items():
        summary = ", ".join(f"{edge}³: {winner}" for edge, winner in stage_winners)
        ctx.record(f"faster method, k={kernel}, {'AMP' if amp else 'float32'}, {mode}", summary)


def measure(ctx, sizes, shape, amp, mode, winners):
    channels, edge, kernel = shape
    device, dtype = ctx.device, ctx.amp_dtype if amp else torch.float32
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(sizes["batch"], channels, edge, edge, edge, generator=gen).to(device, dtype)
    w = (torch.randn(channels, 1, kernel, kernel, kernel, generator=gen) / kernel**1.5).to(device)
    grad_out = torch.randn(x.shape, generator=gen).to(device, dtype)
    convs = {method: (lambda a, b, m=method: dwconv3d(a, b, method=m)) for method in ("direct", "fft")}
    if amp:
        convs["direct fp16"] = lambda a, b: F.conv3d(a, b, padding=kernel // 2, groups=channels)
    seconds = {}
    with torch.autocast(device.type, dtype=dtype, enabled=amp):
        for name, conv in convs.items():
            if mode == "fwd":
                with torch.no_grad():
                    seconds[name] = time_adaptive(lambda: conv(x, w), device, sizes["repeats"])
            else:
                seconds[name] = time_adaptive(lambda: _fwd_bwd(conv, x, w, grad_out), device, sizes["repeats"])
    used = min(kernel, 2 * edge - 1)
    auto = _choose_method(tuple(x.shape), (used,) * 3, device.type, mode != "fwd")
    winner = "fft" if seconds["fft"] < seconds["direct"] else "direct"
    winners.setdefault((kernel, amp, mode), []).append((edge, winner))
    cells = [f"{name} {1e3 * value:.2f} ms" for name, value in seconds.items()]
    cells += [f"direct/fft {seconds['direct'] / seconds['fft']:.2f}x", f"auto now: {auto}"]
    return ", ".join(cells), OK
