"""GPU readiness check (issue #13): checks and measures everything a lent GPU must show, in one run of ≤ 8 minutes.

Five parts (``benchmarks/gpu_parts/``), each in its own process with its own time limit, each check reporting
``ok``, a measurement, or ``failed: <reason>`` without stopping the rest:

1. ``correctness``: ``dwconv3d`` fft vs cuDNN (TF32 off), output and both gradients, float32 and autocast fp16/bf16;
   a Rep3D training step with ``conv_method`` fft vs direct; ``fold()``; deploy load on CUDA.
2. ``dwconv_speed``: cuDNN vs fft at the four stage shapes of a 96³ input, k = 21 and 7, float32 and AMP, fwd and
   fwd+bwd: the crossover table for the CUDA branch of ``method="auto"``.
3. ``training``: 96³ batch-2 AMP training steps of Rep3D lrbm / vanilla, UXNet(k=7), SwinUNETR(48): median s/step,
   peak memory, projected hours for 60,000 steps beside the paper's.
4. ``evaluation``: folded Rep3D on one 96³ patch; the shared CT through amos_ct's ``inference.json``.
5. ``smoke``: amos_ct ``train.json`` 20 iterations (AMP), ``inference.json``, the MONAI Label app's infer through
   monailabel's client, ``torchrun`` (1 process, nccl) with ``multi_gpu_train.json``.

Writes one Markdown table (with device, driver, torch and CUDA versions) to ``--output`` and prints it; every part's
own output goes to the ``.log`` beside it. On the GPU machine, after ``benchmarks/gpu_prepare.sh`` here, run
``bash benchmarks/gpu_check.sh`` (README "GPU check")::

    python benchmarks/gpu_check.py                      # CUDA: -> benchmarks/results/gpu_<date>.md
    python benchmarks/gpu_check.py --dry-run            # the same code paths on the CPU, tiny sizes, seconds
    python benchmarks/gpu_check.py --dry-run --parts correctness smoke

The dry run uses the CPU with bfloat16 autocast where the GPU run uses float16 AMP (parts 1–4); the bundle runs of
part 5 follow the configs, which switch AMP off without CUDA, and ``torchrun`` uses gloo there.
Exit status: 0 when every check passed, 1 when any failed or was skipped, 2 on bad usage.
"""

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS.parent
for path in (REPO_ROOT, REPO_ROOT / "tests", BENCHMARKS):  # the package, the tests' bundle/app helpers, bench_*.py
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from gpu_parts import PARTS  # noqa: E402
from gpu_parts.report import header, table  # noqa: E402

START_FRACTION = 0.85  # a part starts no new check after this share of its limit
TERMINATE_GRACE_S = 10


def run_part(args) -> None:
    """Inside the part's own process: runs ``gpu_parts.<name>.run`` on a fresh context."""
    import importlib

    from gpu_parts.common import Context

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(f"{args.part}: terminated at its time limit"))  # runs finally:
    device = torch.device("cpu" if args.dry_run else "cuda")
    with tempfile.TemporaryDirectory(prefix=f"gpu_check_{args.part}_") as work_dir:
        ctx = Context(args.part, device, args.dry_run, args.deadline, Path(args.rows), Path(work_dir))
        importlib.import_module(f"gpu_parts.{args.part}").run(ctx)


def launch_part(name: str, limit_s: float, dry_run: bool, rows_file: Path, log) -> list:
    """Runs one part in a new process group, kills it at ``limit_s``; returns its rows plus a row for the part."""
    number = PARTS[name][0]
    command = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--rows", str(rows_file)]
    command += ["--deadline", str(time.time() + START_FRACTION * limit_s)] + (["--dry-run"] if dry_run else [])
    log.write(f"\n===== part {number} {name} (limit {limit_s:.0f} s) =====\n")
    log.flush()
    start = time.perf_counter()
    # the dry run's tiny operations run fastest, and steadiest on a busy CPU, with one thread per process
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if dry_run else None
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO_ROOT, env=env)
    try:
        status = "ok" if process.wait(timeout=limit_s) == 0 else f"failed: the part's process exited with {process.returncode}"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=TERMINATE_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        status = f"failed: timed out after {limit_s:.0f} s (its limit; see the log)"
    seconds = time.perf_counter() - start
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()] if rows_file.exists() else []
    label = f"{number} {name}"
    for row in rows:
        row["part"] = label
    whole = {"part": label, "check": "whole part", "result": f"{len(rows)} checks", "status": status, "seconds": round(seconds, 1)}
    return rows + [whole]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, few iterations (what CI runs)")
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS), help="parts to run (default: all)")
    parser.add_argument("--budget", type=float, default=sum(s for _, s in PARTS.values()), help="total seconds for the parts")
    parser.add_argument("--output", default=None, help="Markdown report (default: benchmarks/results/gpu_<date>.md; "
                        "dry run: gpu_check_dry_run.md in the temp folder); its .log goes beside it")
    parser.add_argument("--part", choices=list(PARTS), help=argparse.SUPPRESS)  # internal: run one part
    parser.add_argument("--rows", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        run_part(args)
        return 0
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("PyTorch sees no CUDA device here: run on the GPU machine, or use --dry-run on the CPU")
    default = Path(tempfile.gettempdir()) / "gpu_check_dry_run.md" if args.dry_run else (
        BENCHMARKS / "results" / f"gpu_{datetime.date.today()}.md")
    output = Path(args.output or default)
    output.parent.mkdir(parents=True, exist_ok=True)

    started, scale = time.perf_counter(), args.budget / sum(PARTS[name][1] for name in args.parts)
    rows = []
    with open(output.with_suffix(".log"), "w") as log, tempfile.TemporaryDirectory(prefix="gpu_check_rows_") as rows_dir:
        for name in args.parts:
            part_rows = launch_part(name, scale * PARTS[name][1], args.dry_run, Path(rows_dir) / f"{name}.jsonl", log)
            rows += part_rows
            print(f"part {name}: {part_rows[-1]['result']} in {part_rows[-1]['seconds']} s -> {part_rows[-1]['status']}", flush=True)
    command = "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:])
    text = "\n".join(header(args.dry_run, command.strip(), time.perf_counter() - started) + table(rows)) + "\n"
    output.write_text(text)
    print(text + f"\nwrote {output} and {output.with_suffix('.log')}", flush=True)
    return 0 if all(row["status"] == "ok" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
