"""Whole-model benchmark: Rep3D (LRBM, folded) vs MONAI SwinUNETR, training step native vs fast conv (not a test).

Prints, from one run with every configuration measured side by side, and writes ``benchmarks/results/model_<device>.md``:

* eval forward of one ``size³`` patch (no grad): folded Rep3D vs ``SwinUNETR(feature_size=48)``;
* one training step (forward, backward, AdamW) of Rep3D-LRBM with ``conv_method="direct"`` (native ``F.conv3d``)
  vs ``"auto"`` (``rep3d_networks.ops``), at ``train_size³``;
* the LRBM step overhead vs ``reparam="vanilla"`` (both with the fast conv);
* peak memory of each configuration (CUDA: ``max_memory_allocated``; CPU: peak RSS of a fresh process).

Each configuration runs in its own process so that peak memory is its own.  On CPU a native training step at 96³
takes many minutes (PyTorch's depthwise 21³ backward), so ``--train_size`` defaults to 48 there; say which size
when quoting figures::

    python benchmarks/bench_model.py                         # CPU, eval at 96³, training at 48³
    python benchmarks/bench_model.py --device cuda --train_size 96
"""

import argparse
import datetime
import json
import os
import platform
import resource
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


def measure(task: dict) -> dict:
    """Runs in a fresh process: times ``repeats`` eval forwards or training steps, returns min time and peak memory."""
    torch.set_num_threads(task["threads"])
    device = torch.device(task["device"])
    torch.manual_seed(0)
    net = build(task["model"], task["out_channels"], task["feature_size"]).to(device)
    x = torch.randn(1, 1, *[task["size"]] * 3, device=device)
    if task["train"]:
        net.train()
        target = torch.randint(0, task["out_channels"], (1, 1, *[task["size"]] * 3), device=device)
        loss_fn = torch.nn.CrossEntropyLoss()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

        def step():
            opt.zero_grad()
            loss_fn(net(x), target[:, 0]).backward()
            opt.step()
    else:
        net.eval()

        def step():
            with torch.no_grad():
                net(x)

    times = []
    for _ in range(task["warmup"] + task["repeats"]):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"seconds": min(times[task["warmup"] :]), "peak_gib": peak}


def run_isolated(task: dict) -> dict:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(measure, task).result()


def machine_info(device: str) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if device == "cuda" else ""
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{cpu}{gpu}; torch {torch.__version__}; {datetime.date.today()}; load average at start {load}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=96, help="eval patch edge")
    parser.add_argument("--train_size", type=int, default=None, help="training patch edge (default 48 on CPU, 96 on CUDA)")
    parser.add_argument("--feature_size", type=int, default=48)
    parser.add_argument("--out_channels", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    train_size = args.train_size or (96 if args.device == "cuda" else 48)
    common = dict(device=args.device, feature_size=args.feature_size, out_channels=args.out_channels, threads=args.threads, repeats=args.repeats, warmup=1)

    rows = []
    for model in ["rep3d_folded", "swinunetr"]:
        rows.append(("eval forward", model, args.size, run_isolated(dict(common, model=model, size=args.size, train=False))))
    for model in ["rep3d_lrbm_direct", "rep3d_lrbm_auto", "rep3d_vanilla_auto"]:
        rows.append(("training step", model, train_size, run_isolated(dict(common, model=model, size=train_size, train=True))))
    seconds = {(kind, model): r["seconds"] for kind, model, _, r in rows}

    lines = [
        f"# Rep3D model benchmark ({args.device})",
        "",
        f"Machine: {machine_info(args.device)}; {args.threads} thread(s); feature size {args.feature_size}, {args.out_channels} classes, batch 1.",
        "Minimum over repeats after one warm-up; each configuration in its own process. Peak memory: "
        + ("CUDA max allocated." if args.device == "cuda" else "peak RSS of the process (includes the Python/torch runtime)."),
        "",
        "| measurement | model | patch | time (s) | peak memory (GiB) |",
        "|---|---|---|---:|---:|",
    ]
    lines += [f"| {kind} | {model} | {size}³ | {r['seconds']:.3f} | {r['peak_gib']:.2f} |" for kind, model, size, r in rows]
    eval_ratio = seconds[("eval forward", "swinunetr")] / seconds[("eval forward", "rep3d_folded")]
    train_ratio = seconds[("training step", "rep3d_lrbm_direct")] / seconds[("training step", "rep3d_lrbm_auto")]
    overhead = seconds[("training step", "rep3d_lrbm_auto")] / seconds[("training step", "rep3d_vanilla_auto")] - 1
    lines += [
        "",
        f"- Folded Rep3D eval forward vs SwinUNETR: SwinUNETR takes {eval_ratio:.2f}x the Rep3D time (goal: > 1).",
        f"- Training step, native F.conv3d vs rep3d_networks.ops: {train_ratio:.1f}x faster (goal: >= 10x).",
        f"- LRBM training-step overhead vs vanilla: {100 * overhead:+.1f}% (goal: <= 3%).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    output = Path(args.output or Path(__file__).parent / "results" / f"model_{args.device}.md")
    output.write_text(text)
    print(json.dumps({"eval_ratio": eval_ratio, "train_ratio": train_ratio, "lrbm_overhead": overhead}))


if __name__ == "__main__":
    main()
