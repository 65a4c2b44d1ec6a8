"""bfloat16 CPU training (autocast) vs float32: step time and loss curve, side by side (not a test).

Two copies of one Rep3D (same initial weights) train in one process on the same batches, one step each in turn:
float32, and the same step under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (weights, optimizer state and
loss in float32; the large-kernel FFT convolution computes in float32 inside autocast). The batches come from
``bundles/amos_ct``'s own training pipeline (``train#preprocessing``: crops, intensity shift) on a synthetic phantom,
drawn once with a fixed seed. Interleaving makes machine noise hit both alike. Stops at ``--iterations`` or when the
``--budget_s`` is spent, whichever is first. Writes Markdown::

    python benchmarks/bench_train_precision.py                         # feature 24 at 64³, 10-minute budget
    python benchmarks/bench_train_precision.py --feature_size 8 --size 32 --iterations 100
"""

import argparse
import copy
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
BUNDLE = REPO_ROOT / "bundles" / "amos_ct"


def batches(args, workdir: Path) -> list:
    """``args.iterations`` (image, label) patches from the bundle's training pipeline on a seeded phantom."""
    from monai.bundle import ConfigParser
    from monai.utils import set_determinism

    from rep3d_networks.data.cli import phantom, prepare

    data_dir = phantom("amos_ct", str(workdir / "data"), num_cases=args.cases, size=args.phantom_size, seed=0)
    prepare("amos_ct", data_dir, str(workdir), seed=0)
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser.update(
        {
            "dataset_dir": data_dir,
            "datalist": str(workdir / "datalist_fold0.json"),
            "roi_size": [args.size] * 3,
            "num_samples": 1,
            "num_workers": 0,
            "cache_rate": 1.0,
        }
    )
    set_determinism(seed=0)
    dataset = parser.get_parsed_content("train#dataset")
    out = []
    while len(out) < args.iterations:
        for i in range(len(dataset)):
            item = dataset[i][0]
            out.append((item["image"][None].as_tensor(), item["label"][None].as_tensor()))
    return out[: args.iterations]


def make_step(net, loss_fn, learning_rate: float, bfloat16: bool):
    optimizer = torch.optim.AdamW(net.parameters(), lr=learning_rate)

    def step(image, label) -> float:
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
            logits = net(image)
        loss = loss_fn(logits.float(), label)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feature_size", type=int, default=24)
    parser.add_argument(
        "--hidden_size", type=int, default=None, help="default: 16 x feature_size (the paper's 768 / 48)"
    )
    parser.add_argument("--size", type=int, default=64, help="training patch edge")
    parser.add_argument("--phantom_size", type=int, default=80)
    parser.add_argument("--cases", type=int, default=8, help="phantom cases (the training split is used)")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--budget_s", type=float, default=600.0, help="stop after this many seconds (both runs)")
    parser.add_argument("--learning_rate", type=float, default=1e-2, help="AdamW (the quickstart's rate)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "train_precision_cpu.md")
    args = parser.parse_args()

    from monai.losses import DiceCELoss

    from rep3d_networks import Rep3D
    from rep3d_networks.inferers import cpu_has_bf16

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        data = batches(args, Path(workdir))
    torch.manual_seed(0)
    hidden = args.hidden_size or 16 * args.feature_size
    net = Rep3D(1, 16, feature_size=args.feature_size, hidden_size=hidden).train()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    runs = {
        "float32": make_step(net, loss_fn, args.learning_rate, False),
        "bfloat16": make_step(copy.deepcopy(net), loss_fn, args.learning_rate, True),
    }
    losses = {name: [] for name in runs}
    times = {name: [] for name in runs}
    loop_start = time.perf_counter()
    for image, label in data:
        for name, step in runs.items():
            start = time.perf_counter()
            losses[name].append(step(image, label))
            times[name].append(time.perf_counter() - start)
        done = len(losses["float32"])
        print(
            f"[bench_train_precision] {done}: "
            + ", ".join(f"{n} {losses[n][-1]:.4f} ({times[n][-1]:.1f} s)" for n in runs),
            flush=True,
        )
        if time.perf_counter() - loop_start > args.budget_s:
            break

    n = len(losses["float32"])
    window = max(1, n // 5)
    first_window = {name: statistics.mean(values[:window]) for name, values in losses.items()}
    last_window = {name: statistics.mean(values[-window:]) for name, values in losses.items()}
    step_diffs = [abs(a - b) for a, b in zip(losses["float32"], losses["bfloat16"])]
    # the loss's own iteration-to-iteration variation (different batches) within the last window, float32 run
    noise = statistics.pstdev(losses["float32"][-window:]) if window > 1 else float("nan")
    median_time = {name: statistics.median(values[1:] or values) for name, values in times.items()}
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor(),
    )
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    lines = [
        "# Rep3D training step on the CPU: float32 vs bfloat16 autocast",
        "",
        f"Command: `python benchmarks/bench_train_precision.py {shlex.join(sys.argv[1:])}`",
        "",
        f"Machine: {cpu} (native bfloat16: {'yes' if cpu_has_bf16() else 'no'}); torch {torch.__version__}; "
        f"{args.threads} thread(s); "
        f"{datetime.date.today()}; load average at the end {load} (shared machine: times are perturbed); whole run "
        f"{time.perf_counter() - started:.0f} s.",
        f"`Rep3D(1, 16, feature_size={args.feature_size}, hidden_size={hidden})` (LRBM, training form), "
        f"{args.size}³ patches of "
        f"`bundles/amos_ct`'s training pipeline on a seeded {args.phantom_size}³ phantom, DiceCE loss, "
        f"AdamW lr {args.learning_rate}, "
        f"batch 1; both runs from the same initial weights on the same {n} batches, steps interleaved.",
        "",
        "| | float32 | bfloat16 autocast |",
        "|---|---:|---:|",
        f"| median step time (s, first step left out) | {median_time['float32']:.2f} | {median_time['bfloat16']:.2f} |",
        f"| mean loss, first {window} iteration(s) | {first_window['float32']:.4f} | {first_window['bfloat16']:.4f} |",
        f"| mean loss, last {window} iteration(s) | {last_window['float32']:.4f} | {last_window['bfloat16']:.4f} |",
        "",
        f"- bfloat16 step time: {median_time['float32'] / median_time['bfloat16']:.2f}x faster than float32 (median).",
        f"- Loss difference between the runs at the same iteration: mean {statistics.mean(step_diffs):.4f}, largest "
        f"{max(step_diffs):.4f}; last-window mean difference "
        f"{last_window['bfloat16'] - last_window['float32']:+.4f}, against a "
        f"batch-to-batch standard deviation of the float32 loss of {noise:.4f} in that window.",
        "",
        "Loss per iteration (float32 / bfloat16):",
        "",
        "| iteration | float32 | bfloat16 |",
        "|---:|---:|---:|",
        *[f"| {i + 1} | {a:.4f} | {b:.4f} |" for i, (a, b) in enumerate(zip(losses["float32"], losses["bfloat16"]))],
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.write_text(text)
    print(
        json.dumps(
            {
                "iterations": n,
                "median_step_s": median_time,
                "last_window_loss": last_window,
                "mean_abs_loss_diff": statistics.mean(step_diffs),
                "last_window_std": noise,
            }
        )
    )


if __name__ == "__main__":
    main()
