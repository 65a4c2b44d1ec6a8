"""Whole-model benchmark: Rep3D (LRBM, folded) vs MONAI SwinUNETR, training step native vs fast conv (not a test).

Prints, from one run with every configuration measured side by side, and writes
``benchmarks/results/model_<device>.md``:

* eval forward of one ``size³`` patch (no grad): folded Rep3D vs ``SwinUNETR(feature_size=48)``, split into encoder
  (Rep3D's large-kernel stages / SwinUNETR's ``swinViT``) and the rest (the UNETR-style convolutional decoder);
* one training step (forward, backward, AdamW) of Rep3D-LRBM with ``conv_method="direct"`` (native ``F.conv3d``)
  vs ``"auto"`` (``rep3d_networks.ops``), at ``train_size³`` (96³ by default, as the paper trains);
* the LRBM step overhead vs ``reparam="vanilla"`` (both with the fast conv), from steps of the two models interleaved
  in one process (median of the per-pair ratios: machine noise hits both alike), and the mask's own cost;
* peak memory of each configuration (CUDA: ``max_memory_allocated``; CPU: peak RSS of a fresh process).

Each configuration runs in its own process so that peak memory is its own. On CPU one native training step at 96³
takes several minutes (PyTorch's depthwise 21³ backward), so it is timed once, without warm-up (at that length the
first-call overhead is noise)::

    python benchmarks/bench_model.py                         # CPU: eval and training at 96³ (~25 min on 2 cores)
    python benchmarks/bench_model.py --train_size 48         # quicker, smaller training patch
    python benchmarks/bench_model.py --device cuda
    python benchmarks/bench_model.py --precision --repeats 2  # CPU inference: float32 / bfloat16 / TorchScript / ONNX
    python benchmarks/bench_model.py --layout --train_size 64 --rounds 3  # CPU: today's path vs channels-last
"""

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build(name: str, out_channels: int, feature_size: int):
    from monai.networks.nets import SwinUNETR

    from rep3d_networks import Rep3D

    if name == "swinunetr":
        return SwinUNETR(in_channels=1, out_channels=out_channels, feature_size=feature_size)
    if name == "rep3d_folded":
        return Rep3D(1, out_channels, feature_size=feature_size, deploy=True)
    reparam, method = name.split("_")[1:]  # rep3d_<reparam>_<method>
    return Rep3D(1, out_channels, feature_size=feature_size, reparam=reparam, conv_method=method)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def training_step(net: torch.nn.Module, x: torch.Tensor, target: torch.Tensor):
    """One forward/backward/AdamW step of ``net`` as a closure."""
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    net.train()

    def step():
        opt.zero_grad()
        loss_fn(net(x), target[:, 0]).backward()
        opt.step()

    return step


def encoder_of(net: torch.nn.Module) -> torch.nn.Module:
    return net.swinViT if hasattr(net, "swinViT") else net.encoder


def measure(task: dict) -> dict:
    """Runs in a fresh process: times ``repeats`` eval forwards or training steps, returns min time and peak memory.

    Eval forwards also return the encoder's share of the fastest forward (forward hooks on the encoder module).
    """
    torch.set_num_threads(task["threads"])
    device = torch.device(task["device"])
    torch.manual_seed(0)
    net = build(task["model"], task["out_channels"], task["feature_size"]).to(device)
    x = torch.randn(1, 1, *[task["size"]] * 3, device=device)
    encoder_seconds = []
    if task["train"]:
        target = torch.randint(0, task["out_channels"], (1, 1, *[task["size"]] * 3), device=device)
        step = training_step(net, x, target)
    else:
        net.eval()
        encoder = encoder_of(net)

        def encoder_started(*_):
            synchronize(device)
            encoder_seconds.append(-time.perf_counter())

        def encoder_finished(*_):
            synchronize(device)
            encoder_seconds[-1] += time.perf_counter()

        encoder.register_forward_pre_hook(encoder_started)
        encoder.register_forward_hook(encoder_finished)

        def step():
            with torch.no_grad():
                net(x)

    times = []
    for _ in range(task["warmup"] + task["repeats"]):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    peak = (
        torch.cuda.max_memory_allocated() / 2**30
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    )
    fastest = task["warmup"] + min(range(task["repeats"]), key=lambda i: times[task["warmup"] + i])
    return {
        "seconds": times[fastest],
        "peak_gib": peak,
        "encoder_seconds": encoder_seconds[fastest] if encoder_seconds else None,
    }


def measure_lrbm_overhead(task: dict) -> dict:
    """Runs in a fresh process: interleaved training steps of Rep3D vanilla and LRBM (same input, fast conv).

    Returns the median of the per-pair time ratios, the median step times, and the cost of computing every block's
    mask ``M`` forward and backward on its own (the only work LRBM adds besides ``W ⊙ M``).
    """
    from rep3d_networks.blocks.lrbm import LRBM

    torch.set_num_threads(task["threads"])
    device = torch.device(task["device"])
    torch.manual_seed(0)
    x = torch.randn(1, 1, *[task["size"]] * 3, device=device)
    target = torch.randint(0, task["out_channels"], (1, 1, *[task["size"]] * 3), device=device)
    nets = {
        name: build(name, task["out_channels"], task["feature_size"]).to(device)
        for name in ("rep3d_vanilla_auto", "rep3d_lrbm_auto")
    }
    steps = {name: training_step(net, x, target) for name, net in nets.items()}
    times = {name: [] for name in nets}
    for i in range(task["warmup"] + task["repeats"]):
        for name, step in steps.items():
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            if i >= task["warmup"]:
                times[name].append(time.perf_counter() - start)
    masks = [m for m in nets["rep3d_lrbm_auto"].modules() if isinstance(m, LRBM)]
    mask_times = []
    for _ in range(10):
        synchronize(device)
        start = time.perf_counter()
        sum(m().sum() for m in masks).backward()
        synchronize(device)
        mask_times.append(time.perf_counter() - start)
    ratios = [b / a for a, b in zip(times["rep3d_vanilla_auto"], times["rep3d_lrbm_auto"])]
    return {
        "overhead": statistics.median(ratios) - 1,
        "vanilla_seconds": statistics.median(times["rep3d_vanilla_auto"]),
        "lrbm_seconds": statistics.median(times["rep3d_lrbm_auto"]),
        "mask_seconds": statistics.median(mask_times),
        "blocks": len(masks),
        "pairs": len(ratios),
    }


PRECISION_MODES = ("float32", "bfloat16", "torchscript", "onnx")
"""``--precision`` runs: eager float32, eager under bfloat16 autocast, TorchScript and ONNX (onnxruntime) of the folded
Rep3D; float32 first, its output is the reference of the others."""


def folded_runner(mode: str, net: torch.nn.Module, x: torch.Tensor, workdir: Path):
    """A no-argument callable running the folded ``net`` on ``x`` as ``mode`` says, returning float32 logits."""
    if mode == "onnx":  # the bundles' ONNX export: MONAI's converter, traced, TorchScript-based exporter
        import onnxruntime
        from monai.networks.utils import convert_to_onnx

        path = workdir / "model.onnx"
        axes = {0: "batch", 2: "x", 3: "y", 4: "z"}
        convert_to_onnx(
            net,
            [x],
            input_names=["image"],
            output_names=["pred"],
            dynamic_axes={"image": axes, "pred": axes},
            filename=str(path),
            use_trace=True,
            dynamo=False,
        )
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda: torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
    if mode == "torchscript":  # as `monai.bundle ckpt_export` scripts it
        net = torch.jit.script(net)
    autocast = mode == "bfloat16"

    def run():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return net(x).float()

    return run


def measure_precision(task: dict) -> dict:
    """Runs in a fresh process: min time of ``repeats`` folded-Rep3D forwards in ``task["mode"]`` after ``warmup``,
    peak RSS, and (except for float32, which writes the reference) the agreement with the float32 output."""
    import tempfile

    torch.set_num_threads(task["threads"])
    torch.manual_seed(0)
    net = build("rep3d_folded", task["out_channels"], task["feature_size"]).eval()
    x = torch.randn(1, 1, *[task["size"]] * 3, generator=torch.Generator().manual_seed(1))
    with tempfile.TemporaryDirectory() as workdir:
        run = folded_runner(task["mode"], net, x, Path(workdir))
        times = []
        for _ in range(task["warmup"] + task["repeats"]):
            start = time.perf_counter()
            out = run()
            times.append(time.perf_counter() - start)
    result = {
        "seconds": min(times[task["warmup"] :]),
        "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    if task["mode"] == "float32":
        torch.save(out, task["reference"])
    else:
        reference = torch.load(task["reference"])
        result["argmax_agreement"] = float((out.argmax(1) == reference.argmax(1)).float().mean())
        result["max_rel_diff"] = float((out - reference).abs().max() / reference.abs().max())
    return result


def cpu_flags() -> str:
    flags = set(open("/proc/cpuinfo").read().split()) if os.path.isfile("/proc/cpuinfo") else set()
    return ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16"))


def precision_main(args) -> None:
    """``--precision``: float32 vs bfloat16 vs TorchScript vs ONNX of the folded Rep3D, one patch, side by side."""
    import importlib.util
    import tempfile

    from rep3d_networks.inferers import cpu_has_bf16

    modes = [m for m in PRECISION_MODES if m != "onnx" or importlib.util.find_spec("onnxruntime")]
    started = time.perf_counter()
    rows = {}
    with tempfile.TemporaryDirectory() as workdir:
        for mode in modes:
            task = dict(
                mode=mode,
                size=args.size,
                feature_size=args.feature_size,
                out_channels=args.out_channels,
                threads=args.threads,
                repeats=args.repeats,
                warmup=1,
                reference=str(Path(workdir) / "reference.pt"),
            )
            rows[mode] = run_isolated(task, measure_precision)
            print(f"[bench_model] {mode}: {rows[mode]}", flush=True)
    base = rows["float32"]["seconds"]
    names = {
        "float32": "eager float32",
        "bfloat16": "eager, bfloat16 autocast",
        "torchscript": "TorchScript (float32)",
        "onnx": "ONNX in onnxruntime (float32, CPUExecutionProvider)",
    }
    lines = [
        "# Folded Rep3D inference: float32 vs bfloat16 vs TorchScript vs ONNX (cpu)",
        "",
        f"Command: `python benchmarks/bench_model.py --precision --repeats {args.repeats} --threads {args.threads}`",
        "",
        f"Machine: {machine_info('cpu')}; CPU flags: {cpu_flags()}; bfloat16 `auto` would pick: "
        f"{'bfloat16' if cpu_has_bf16() else 'float32'}; {args.threads} thread(s); "
        f"whole run {time.perf_counter() - started:.0f} s.",
        f"Folded `Rep3D(1, {args.out_channels}, feature_size={args.feature_size})` (random weights, seed 0), "
        f"one {args.size}³ patch, "
        f"batch 1, no grad; minimum over {args.repeats} runs after one warm-up, each configuration in its own process "
        "(peak memory: peak RSS of the process). "
        "Agreement: with the eager float32 output (random weights: many near ties).",
        "",
        "| run | time (s) | vs eager float32 | argmax agreement | max relative logit difference | peak memory (GiB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for mode, r in rows.items():
        agreement = f"{100 * r['argmax_agreement']:.2f} %" if "argmax_agreement" in r else "reference"
        diff = f"{r['max_rel_diff']:.1e}" if "max_rel_diff" in r else ""
        lines.append(
            f"| {names[mode]} | {r['seconds']:.2f} | {r['seconds'] / base:.2f}x | {agreement} | {diff} "
            f"| {r['peak_gib']:.2f} |"
        )
    if "onnx" not in rows:
        lines += ["", "onnxruntime is not installed: no ONNX row."]
    text = "\n".join(lines) + "\n"
    print(text)
    output = Path(args.output or Path(__file__).parent / "results" / "model_precision_cpu.md")
    output.write_text(text)
    print(json.dumps({mode: r["seconds"] for mode, r in rows.items()}))


def run_isolated(task: dict, function=measure) -> dict:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, task).result()


def machine_info(device: str) -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor(),
    )
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if device == "cuda" else ""
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{cpu}{gpu}; torch {torch.__version__}; {datetime.date.today()}; load average at start {load}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=96, help="eval patch edge")
    parser.add_argument("--train_size", type=int, default=96, help="training patch edge")
    parser.add_argument("--feature_size", type=int, default=48)
    parser.add_argument("--out_channels", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--overhead_pairs", type=int, default=5, help="interleaved vanilla/LRBM step pairs")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", default=None)
    parser.add_argument(
        "--precision",
        action="store_true",
        help="only the folded network's eval forward: float32 vs bfloat16 vs TorchScript vs ONNX (CPU)",
    )
    parser.add_argument(
        "--layout",
        action="store_true",
        help="only the folded network's eval forward on a CPU: today's code path vs channels-last (model_layout.py)",
    )
    parser.add_argument("--baseline_ref", default="206f9ad", help="--layout: git revision of today's code path")
    parser.add_argument("--compile", action="store_true", help="--layout: add a torch.compile row")
    parser.add_argument("--rounds", type=int, default=2, help="--layout: rounds of all rows, the fastest kept")
    parser.add_argument("--pairs", type=int, default=5, help="--layout: alternated NCDHW / channels-last forwards")
    args = parser.parse_args()
    if args.precision:
        return precision_main(args)
    if args.layout:
        from model_layout import layout_main

        text = layout_main(args, run_isolated, machine_info, cpu_flags)
        print(text)
        Path(args.output or Path(__file__).parent / "results" / "model_layout_cpu.md").write_text(text)
        return None
    common = dict(
        device=args.device,
        feature_size=args.feature_size,
        out_channels=args.out_channels,
        threads=args.threads,
        repeats=args.repeats,
        warmup=1,
    )
    # a native CPU step at 96³ takes minutes: once, no warm-up
    native = dict(repeats=1, warmup=0) if args.device == "cpu" else {}
    started = time.perf_counter()

    rows = []
    for model in ["rep3d_folded", "swinunetr"]:
        rows.append(
            ("eval forward", model, args.size, run_isolated(dict(common, model=model, size=args.size, train=False)))
        )
    for model in ["rep3d_lrbm_direct", "rep3d_lrbm_auto"]:
        task = dict(
            common, model=model, size=args.train_size, train=True, **(native if model.endswith("direct") else {})
        )
        rows.append(("training step", model, args.train_size, run_isolated(task)))
    lrbm = run_isolated(dict(common, size=args.train_size, repeats=args.overhead_pairs), measure_lrbm_overhead)
    seconds = {(kind, model): r["seconds"] for kind, model, _, r in rows}

    lines = [
        f"# Rep3D model benchmark ({args.device})",
        "",
        f"Machine: {machine_info(args.device)}; {args.threads} thread(s); feature size {args.feature_size}, "
        f"{args.out_channels} classes, batch 1; "
        f"whole run {time.perf_counter() - started:.0f} s.",
        f"Minimum over {args.repeats} repeats after one warm-up"
        + (" (native training step: a single run, no warm-up)" if native else "")
        + "; each configuration in its own process. Peak memory: "
        + (
            "CUDA max allocated."
            if args.device == "cuda"
            else "peak RSS of the process (includes the Python/torch runtime)."
        ),
        "",
        "| measurement | model | patch | time (s) | encoder (s) | rest: decoder (s) | peak memory (GiB) |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for kind, model, size, r in rows:
        split = (
            f"{r['encoder_seconds']:.3f} | {r['seconds'] - r['encoder_seconds']:.3f}"
            if r["encoder_seconds"] is not None
            else "| "
        )
        lines.append(f"| {kind} | {model} | {size}³ | {r['seconds']:.3f} | {split.strip()} | {r['peak_gib']:.2f} |")
    eval_ratio = seconds[("eval forward", "swinunetr")] / seconds[("eval forward", "rep3d_folded")]
    encoder_ratio = rows[1][3]["encoder_seconds"] / rows[0][3]["encoder_seconds"]
    train_ratio = seconds[("training step", "rep3d_lrbm_direct")] / seconds[("training step", "rep3d_lrbm_auto")]
    lines += [
        "",
        f"LRBM vs vanilla ({lrbm['pairs']} interleaved training steps each, {args.train_size}³, fast conv): "
        "median step "
        f"{lrbm['vanilla_seconds']:.3f} s vanilla, {lrbm['lrbm_seconds']:.3f} s LRBM; the {lrbm['blocks']} masks alone "
        f"(forward + backward) take {lrbm['mask_seconds']:.4f} s.",
        "",
        f"- Folded Rep3D eval forward vs SwinUNETR: SwinUNETR takes {eval_ratio:.2f}x the Rep3D time (goal: > 1); "
        f"encoders alone: SwinUNETR's swinViT takes {encoder_ratio:.2f}x Rep3D's large-kernel encoder.",
        f"- Training step, native F.conv3d vs rep3d_networks.ops: {train_ratio:.1f}x faster (goal: >= 10x).",
        f"- LRBM training-step overhead vs vanilla: {100 * lrbm['overhead']:+.1f}% "
        "(median of paired ratios; goal: <= 3%); "
        f"mask computation alone: {100 * lrbm['mask_seconds'] / lrbm['vanilla_seconds']:.1f}% of a vanilla step.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    output = Path(args.output or Path(__file__).parent / "results" / f"model_{args.device}.md")
    output.write_text(text)
    print(
        json.dumps(
            {
                "eval_ratio": eval_ratio,
                "encoder_ratio": encoder_ratio,
                "train_ratio": train_ratio,
                "lrbm_overhead": lrbm["overhead"],
            }
        )
    )


if __name__ == "__main__":
    main()
