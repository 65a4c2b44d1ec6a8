"""Benchmark ``rep3d_networks.ops.dwconv3d`` against native ``F.conv3d(groups=C)`` (not a test).

Default: the Rep3D stage shapes of a 96^3 input at feature size 48 (48ch x 48^3, 96ch x 24^3,
192ch x 12^3, 384ch x 6^3), k=21, batch 1; writes a Markdown table with machine info::

    python benchmarks/bench_dwconv.py                       # -> benchmarks/results/dwconv_cpu.md
    python benchmarks/bench_dwconv.py --device cuda         # -> benchmarks/results/dwconv_cuda.md
    python benchmarks/bench_dwconv.py --crossover           # direct vs fft grid used for method="auto"

Native backward with a 21^3 kernel takes minutes at full width, so a stage is measured with
``C' = min(C, channels_cap * 48^3 / (D*H*W))`` channels (default 8: 48ch x 48^3 runs with 8ch and
96ch x 24^3 with 64ch, the smaller maps at full width); both methods cost linearly in C, and the
table says which C was measured.  On a shared machine, ``--threads 1`` gives steadier timings.
"""

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rep3d_networks.ops import _choose_method, dwconv3d

STAGES = [(48, 48), (96, 24), (192, 12), (384, 6)]  # (channels, spatial size) for a 96^3 input, feature size 48


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, repeats, warmup=1, min_total_s=1.0):
    """(minimum wall time, last result) over at least ``repeats`` runs, more (up to 100) for fast calls until
    ``min_total_s`` is spent; the minimum is the least noisy statistic on a shared machine."""
    for _ in range(warmup):
        fn()
    _sync(device)
    best, result, total, runs = float("inf"), None, 0.0, 0
    while runs < repeats or (total < min_total_s and runs < 100):
        start = time.perf_counter()
        result = fn()
        _sync(device)
        elapsed = time.perf_counter() - start
        best, total, runs = min(best, elapsed), total + elapsed, runs + 1
    return best, result


def _fwd_bwd(conv, x, w, grad_out):
    x, w = x.detach().requires_grad_(True), w.detach().requires_grad_(True)
    out = conv(x, w)
    gx, gw = torch.autograd.grad(out, (x, w), grad_out)
    return out.detach(), gx, gw


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _machine_info(device):
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    lines = [
        f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- CPU: {cpu}, {os.cpu_count()} logical cores visible, torch threads: {torch.get_num_threads()}",
        f"- torch {torch.__version__}, python {platform.python_version()}",
    ]
    if device.type == "cuda":
        lines.append(f"- GPU: {torch.cuda.get_device_name(device)}, cuDNN {torch.backends.cudnn.version()}")
    if hasattr(os, "getloadavg"):
        lines.append(f"- load average at start (1/5/15 min): {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return lines


def bench_stages(args, device):
    header = (
        "| stage (C x D^3) | C measured | kernel used by ours | auto picks (fwd / fwd+bwd) | native fwd [s] "
        "| native fwd+bwd [s] | ours fwd [s] | ours fwd+bwd [s] | fwd speed-up | fwd+bwd speed-up "
        "| method='direct' fwd / fwd+bwd [s] | rel err out | rel err grad x | rel err grad w |"
    )
    rows = [header, "|" + "---|" * (header.count("|") - 1)]
    gen = torch.Generator().manual_seed(0)
    for channels, n in STAGES:
        c = max(1, min(channels, args.channels_cap * 48**3 // n**3))
        x = torch.randn(args.batch, c, n, n, n, generator=gen).to(device)
        w = (torch.randn(c, 1, args.k, args.k, args.k, generator=gen) / args.k**1.5).to(device)
        grad_out = torch.randn(x.shape, generator=gen).to(device)
        native = lambda x, w: F.conv3d(x, w, padding=args.k // 2, groups=x.shape[1])  # noqa: E731
        ours = lambda x, w: dwconv3d(x, w, method="auto")  # noqa: E731
        direct = lambda x, w: dwconv3d(x, w, method="direct")  # noqa: E731
        used_k = min(args.k, 2 * n - 1)
        picks = [_choose_method(tuple(x.shape), (used_k,) * 3, device.type, grad) for grad in (False, True)]

        with torch.no_grad():
            t_nat_f, _ = _time(lambda: native(x, w), device, args.repeats)
            t_our_f, _ = _time(lambda: ours(x, w), device, args.repeats)
        slow = n >= 24  # native backward takes seconds to minutes here: a single timed run, no warm-up
        t_nat_fb, ref = _time(
            lambda: _fwd_bwd(native, x, w, grad_out), device, *((1, 0) if slow else (args.repeats, 1))
        )
        t_our_fb, got = _time(lambda: _fwd_bwd(ours, x, w, grad_out), device, args.repeats)
        errs = [_rel(g, r) for g, r in zip(got, ref)]
        direct_cell = "= native (no crop)"
        if used_k < args.k:  # cropping changes method="direct" too
            with torch.no_grad():
                t_dir_f, _ = _time(lambda: direct(x, w), device, args.repeats)
            t_dir_fb, _ = _time(lambda: _fwd_bwd(direct, x, w, grad_out), device, args.repeats)
            direct_cell = f"{t_dir_f:.4f} / {t_dir_fb:.4f}"
        rows.append(
            f"| {channels} x {n}^3 | {c} | {used_k}^3 | {picks[0]} / {picks[1]} | {t_nat_f:.4f} | {t_nat_fb:.3f} "
            f"| {t_our_f:.4f} | {t_our_fb:.4f} | {t_nat_f / t_our_f:.1f}x | {t_nat_fb / t_our_fb:.1f}x "
            f"| {direct_cell} | {errs[0]:.1e} | {errs[1]:.1e} | {errs[2]:.1e} |"
        )
        print(rows[-1], flush=True)
    return rows


def bench_crossover(args, device):
    """Direct vs FFT (both with kernel cropping) over map size n and kernel k, forward and fwd+bwd."""
    rows = [
        f"| n^3 \\ k (C={args.crossover_channels}) | mode | " + " | ".join(f"k={k}" for k in args.crossover_k) + " |",
        "|---|---|" + "---|" * len(args.crossover_k),
    ]
    gen = torch.Generator().manual_seed(0)
    for n in args.crossover_n:
        for mode in args.crossover_modes:
            cells, fft_won = [], 0
            for k in args.crossover_k:
                if k > 2 * n - 1:  # cropping makes it the same as k = 2n - 1
                    cells.append("(crop)")
                    continue
                x = torch.randn(1, args.crossover_channels, n, n, n, generator=gen).to(device)
                w = torch.randn(args.crossover_channels, 1, k, k, k, generator=gen).to(device)
                times = {}
                for method in ("direct", "fft"):
                    if method == "direct" and fft_won >= 2:  # direct only gets worse with k: skip
                        continue
                    conv = lambda x, w: dwconv3d(x, w, method=method)  # noqa: E731
                    if mode == "fwd":
                        with torch.no_grad():
                            times[method] = _time(lambda: conv(x, w), device, args.repeats)[0]
                    else:
                        times[method] = _time(lambda: _fwd_bwd(conv, x, w, torch.ones_like(x)), device, args.repeats)[0]
                if "direct" in times:
                    ratio = times["direct"] / times["fft"]
                    fft_won = fft_won + 1 if ratio > 2 else 0
                    cells.append(f"{times['direct'] * 1e3:.1f}/{times['fft'] * 1e3:.1f} ms ({ratio:.2f})")
                else:
                    cells.append(f"-/{times['fft'] * 1e3:.1f} ms (fft)")
            rows.append(f"| {n}^3 | {mode} | " + " | ".join(cells) + " |")
            print(rows[-1], flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--output", default=None, help="Markdown file (default benchmarks/results/dwconv_<device>.md)")
    parser.add_argument("--k", type=int, default=21)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument(
        "--channels_cap", type=int, default=8, help="max channels measured at 48^3 (scaled by 48^3/n^3)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--crossover", action="store_true", help="print the direct-vs-fft grid instead")
    parser.add_argument("--crossover_n", type=int, nargs="+", default=[6, 12, 24, 48])
    parser.add_argument("--crossover_k", type=int, nargs="+", default=[3, 5, 7, 9, 11, 15, 21])
    parser.add_argument("--crossover_channels", type=int, default=8)
    parser.add_argument("--crossover_modes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    info = _machine_info(device)
    print("\n".join(info), flush=True)
    start = time.perf_counter()
    if args.crossover:
        print("cells: direct/fft time (direct/fft ratio; > 1 means fft is faster)")
        bench_crossover(args, device)
        return
    rows = bench_stages(args, device)
    total = time.perf_counter() - start
    text = "\n".join(
        [
            f"# dwconv3d vs native F.conv3d(groups=C), {args.device}, k={args.k}, batch {args.batch}",
            "",
            *info,
            f"- command: `python benchmarks/bench_dwconv.py {' '.join(sys.argv[1:])}`; whole run {total:.0f} s",
            "",
            *rows,
            "",
            "Times are the minimum over >= 3 runs (up to 100 for calls under ~0.3 s; native fwd+bwd at n >= 24:",
            "a single run). 'C measured' < C means",
            f"the stage was run with fewer channels (--channels_cap {args.channels_cap}) because native backward",
            "would take minutes; both methods cost linearly in C, so speed-ups carry over. "
            "Ours = dwconv3d(method='auto')",
            "(kernel cropped to at most 2n-1 taps per axis, then FFT or direct). Relative errors are",
            "||ours - native|| / ||native|| in float32 (fwd+bwd = forward plus gradients for x and w). The machine",
            "is shared with other jobs (see load average), so timings are noisy; 'auto picks' is the method used.",
            *(
                [
                    f"torch threads were pinned to {args.threads} (--threads): on a busy machine, idle-waiting for a",
                    "descheduled worker thread costs more than the parallel speed-up, "
                    "and min-of-runs timings get steadier.",
                ]
                if args.threads
                else []
            ),
        ]
    )
    out = Path(args.output or Path(__file__).resolve().parent / "results" / f"dwconv_{args.device}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
