"""``bench_model.py --layout``: folded Rep3D inference on a CPU, today's code path vs channels-last, side by side.

Each row is one 96³ patch (paper size by default) through the folded Rep3D in its own process (minimum of
``--repeats`` after a warm-up), all rows in one run:

* ``<ref>`` rows run the package as it was at a git revision (``--baseline_ref``, extracted with ``git archive``):
  today's code path, NCDHW, float32 and bfloat16 autocast;
* the other rows run this working tree: NCDHW and channels-last (:func:`rep3d_networks.nets.layout
  .channels_last_inference`, what the bundles' inferer does on a CPU), float32 and bfloat16, and with ``--compile``
  ``torch.compile`` on top of bfloat16 channels-last;
* after them, a paired measurement in one process of this tree, NCDHW and channels-last forwards alternated
  (``--pairs``), robust to the drift of a shared machine's speed.

After the rows, a training step, today's path vs this tree (the layout work must not slow it).

Work: the forward's FLOPs counted by forward hooks (2 per multiply-add): dense convolutions and transposed
convolutions as their MACs, the large-kernel depthwise layers as the taps that land inside the input (what direct
summation would do; the FFT does other work). Peak: the best of ``torch.mm`` on 2048² matrices in that dtype, a
practical FMA peak of the machine with these libraries. Agreement: argmax and maximum relative logit difference
against the reference row (today's float32).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROWS = (
    # (name, package, dtype, channels_last, compiled)
    ("today, float32", "baseline", "float32", False, False),
    ("today, bfloat16", "baseline", "bfloat16", False, False),
    ("new, float32", "tree", "float32", False, False),
    ("new, float32, channels-last", "tree", "float32", True, False),
    ("new, bfloat16", "tree", "bfloat16", False, False),
    ("new, bfloat16, channels-last", "tree", "bfloat16", True, False),
    ("new, bfloat16, channels-last, torch.compile", "tree", "bfloat16", True, True),
)
TRAINING_ROWS = (("today, training step", "baseline"), ("new, training step", "tree"))
"""One training step (forward, backward, AdamW) of the unfolded LRBM Rep3D, float32 NCDHW as training runs: the
layout work must not slow it."""


def count_flops(net: torch.nn.Module, x: torch.Tensor) -> float:
    """FLOPs of one forward of ``net`` on ``x`` (module docstring), from forward hooks on every convolution."""
    from rep3d_networks.blocks.lrbm import ReparamDepthwiseConv3d

    total = [0.0]

    def dense(module, inputs, output):  # weight[0]: the multiply-adds of one output (one input) voxel per channel
        voxels = inputs[0] if isinstance(module, torch.nn.ConvTranspose3d) else output
        total[0] += 2.0 * voxels.numel() * module.weight[0].numel()

    def depthwise(module, inputs, output):
        inside = 1
        for n in inputs[0].shape[2:]:
            k = min(module.kernel_size, 2 * n - 1)  # cropped as rep3d_networks.ops does
            p = k // 2
            inside *= sum(min(n, o + k - p) - max(0, o - p) for o in range(n))
        total[0] += 2.0 * inputs[0].shape[0] * inputs[0].shape[1] * inside

    reparam = [m for m in net.modules() if isinstance(m, ReparamDepthwiseConv3d)]
    inside = {id(sub) for m in reparam for sub in m.modules()}
    handles = [m.register_forward_hook(depthwise) for m in reparam]
    for module in net.modules():
        if isinstance(module, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)) and id(module) not in inside:
            handles.append(module.register_forward_hook(dense))
    with torch.no_grad():
        net(x)
    for handle in handles:
        handle.remove()
    return total[0]


def gemm_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of ``torch.mm`` on ``size``² matrices of ``dtype``."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def measure_layout(task: dict) -> dict:
    """Runs in a fresh process: one row of :data:`ROWS` (module docstring)."""
    if task["package_root"]:
        sys.path.insert(0, task["package_root"])
    import contextlib

    from rep3d_networks import Rep3D

    torch.set_num_threads(task["threads"])
    torch.manual_seed(0)
    net = Rep3D(1, task["out_channels"], feature_size=task["feature_size"], deploy=True).eval()
    x = torch.randn(1, 1, *[task["size"]] * 3, generator=torch.Generator().manual_seed(1))
    layout = contextlib.nullcontext(net)
    if task["channels_last"]:
        from rep3d_networks.nets.layout import channels_last_inference

        layout = channels_last_inference(net)
    bf16 = task["dtype"] == "bfloat16"
    with layout, torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        run = torch.compile(net) if task["compiled"] else net
        times = []
        for _ in range(task["warmup"] + task["repeats"]):
            start = time.perf_counter()
            out = run(x).float()
            times.append(time.perf_counter() - start)
    result = {"seconds": min(times[task["warmup"] :]), "first_seconds": times[0]}
    if task["reference"] is None:
        return dict(result, output=out)
    reference = torch.load(task["reference"])
    result["argmax_agreement"] = float((out.argmax(1) == reference.argmax(1)).float().mean())
    result["max_rel_diff"] = float((out - reference).abs().max() / reference.abs().max())
    return result


def measure_layout_pairs(task: dict) -> dict:
    """Runs in a fresh process (this tree): per dtype, ``pairs`` forwards in NCDHW and channels-last alternated, each
    after one warm-up of both; returns the median of the per-pair time ratios channels-last / NCDHW (a drift of the
    machine's speed hits both forwards of a pair alike) and the median times."""
    from rep3d_networks import Rep3D
    from rep3d_networks.nets.layout import channels_last_inference

    torch.set_num_threads(task["threads"])
    torch.manual_seed(0)
    net = Rep3D(1, task["out_channels"], feature_size=task["feature_size"], deploy=True).eval()
    x = torch.randn(1, 1, *[task["size"]] * 3)

    def forward(channels_last: bool, bf16: bool) -> float:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            start = time.perf_counter()
            if channels_last:
                with channels_last_inference(net):  # entered per call, as the inferer does
                    net(x)
            else:
                net(x)
            return time.perf_counter() - start

    result = {}
    for dtype in ("float32", "bfloat16"):
        bf16 = dtype == "bfloat16"
        forward(False, bf16), forward(True, bf16)
        times = [(forward(False, bf16), forward(True, bf16)) for _ in range(task["pairs"])]
        result[dtype] = {
            "ratio": statistics.median(cl / nc for nc, cl in times),
            "ncdhw": statistics.median(nc for nc, _ in times),
            "channels_last": statistics.median(cl for _, cl in times),
        }
    return result


def measure_training_step(task: dict) -> dict:
    """Runs in a fresh process: one row of :data:`TRAINING_ROWS`, minimum of ``repeats`` steps after a warm-up."""
    if task["package_root"]:
        sys.path.insert(0, task["package_root"])
    from rep3d_networks import Rep3D

    torch.set_num_threads(task["threads"])
    torch.manual_seed(0)
    net = Rep3D(1, task["out_channels"], feature_size=task["feature_size"]).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(1, 1, *[task["size"]] * 3)
    target = torch.randint(0, task["out_channels"], (1, *[task["size"]] * 3))
    times = []
    for _ in range(1 + task["repeats"]):
        start = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), target).backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return {"seconds": min(times[1:])}


def baseline_package(ref: str, workdir: Path) -> str:
    """``rep3d_networks`` as it was at git revision ``ref``, extracted under ``workdir``; returns the root to import."""
    repo = Path(__file__).resolve().parents[1]
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", ref, "rep3d_networks"], check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(workdir)], input=archive.stdout, check=True)
    return str(workdir)


def layout_main(args, run_isolated, machine_info, cpu_flags) -> str:
    """Runs :data:`ROWS` (``--compile`` adds the compiled row), prints and returns the Markdown report."""
    from rep3d_networks import Rep3D

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    x = torch.randn(1, 1, *[args.size] * 3)
    flops = count_flops(Rep3D(1, args.out_channels, feature_size=args.feature_size, deploy=True).eval(), x)
    peaks = {name: gemm_peak(dtype) for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16))}
    rows = {}
    with tempfile.TemporaryDirectory() as workdir:
        root = baseline_package(args.baseline_ref, Path(workdir))
        reference = str(Path(workdir) / "reference.pt")
        network = dict(
            feature_size=args.feature_size, out_channels=args.out_channels, threads=args.threads
        )  # every process's network and threads
        # rounds: every row once per round, the fastest round kept (the machine's speed drifts by minutes; each row
        # gets several chances at a quiet moment, in the same order)
        for round_index in range(args.rounds):
            for name, package, dtype, channels_last, compiled in ROWS:
                if compiled and (not args.compile or round_index > 0):  # compiling takes a minute: one round
                    continue
                task = dict(
                    package_root=root if package == "baseline" else None,
                    dtype=dtype,
                    channels_last=channels_last,
                    compiled=compiled,
                    size=args.size,
                    repeats=args.repeats,
                    **network,
                    warmup=1,
                    reference=None if name == ROWS[0][0] else reference,
                )
                result = run_isolated(task, measure_layout)
                if "output" in result:
                    torch.save(result.pop("output"), reference)
                print(f"[bench_model --layout] round {round_index + 1}, {name}: {result}", flush=True)
                if name not in rows or result["seconds"] < rows[name]["seconds"]:
                    rows[name] = dict(result, first_seconds=rows.get(name, result)["first_seconds"])
        training = {
            name: run_isolated(
                dict(
                    package_root=root if package == "baseline" else None,
                    size=args.train_size,
                    repeats=args.repeats,
                    **network,
                ),
                measure_training_step,
            )["seconds"]
            for name, package in TRAINING_ROWS
        }
        print(f"[bench_model --layout] training steps: {training}", flush=True)
        pairs = run_isolated(dict(size=args.size, pairs=args.pairs, **network), measure_layout_pairs)
        print(f"[bench_model --layout] paired: {pairs}", flush=True)
    today = {dtype: rows[f"today, {dtype}"]["seconds"] for dtype in ("float32", "bfloat16")}
    lines = [
        f"# Folded Rep3D inference on a CPU: today's code path ({args.baseline_ref}) vs channels-last",
        "",
        f"Command: `python benchmarks/bench_model.py --layout --repeats {args.repeats} --threads {args.threads}"
        f"{' --compile' if args.compile else ''} --train_size {args.train_size} --rounds {args.rounds} "
        f"--baseline_ref {args.baseline_ref}`",
        "",
        f"Machine: {machine_info('cpu')}; CPU flags: {cpu_flags()}; {args.threads} thread(s); "
        f"whole run {time.perf_counter() - started:.0f} s.",
        f"Folded `Rep3D(1, {args.out_channels}, feature_size={args.feature_size})` (random weights, seed 0), one "
        f"{args.size}³ patch, batch 1, no grad; minimum over {args.repeats} runs after one warm-up, each row in its "
        f"own process, {args.rounds} round(s) of all rows (the fastest kept; first call: round 1; compiled: 1 round). "
        f"Forward: {flops / 1e9:.0f} GFLOP (module docstring of benchmarks/model_layout.py); "
        f"torch.mm peak: {peaks['float32']:.0f} GFLOP/s float32, {peaks['bfloat16']:.0f} GFLOP/s bfloat16.",
        "",
        "| run | time (s) | vs today, same dtype | GFLOP/s | of the mm peak | argmax agreement | max rel. diff | "
        "first call (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        dtype = "bfloat16" if "bfloat16" in name else "float32"
        agreement = f"{100 * r['argmax_agreement']:.2f} %" if "argmax_agreement" in r else "reference"
        diff = f"{r['max_rel_diff']:.1e}" if "max_rel_diff" in r else ""
        rate = flops / r["seconds"] / 1e9
        lines.append(
            f"| {name} | {r['seconds']:.2f} | {r['seconds'] / today[dtype]:.3f}x | {rate:.0f} | "
            f"{100 * rate / peaks[dtype]:.0f} % | {agreement} | {diff} | {r['first_seconds']:.1f} |"
        )
    before, after = (training[name] for name, _ in TRAINING_ROWS)
    lines += [
        "",
        f"Training step (unfolded LRBM Rep3D, float32, NCDHW, {args.train_size}³, forward + backward + AdamW, minimum "
        f"of {args.repeats} after a warm-up, each in its own process): today {before:.2f} s, new {after:.2f} s "
        f"({after / before:.3f}x).",
        "",
        f"Layout alone, paired (this tree, one process, {args.pairs} pairs of forwards NCDHW then channels-last per "
        "dtype, the layout entered per forward as the inferer does; median of the per-pair ratios): "
        + "; ".join(
            f"{dtype} {p['channels_last']:.2f} s vs {p['ncdhw']:.2f} s, **{p['ratio']:.3f}x**"
            for dtype, p in pairs.items()
        )
        + ".",
    ]
    return "\n".join(lines) + "\n"
