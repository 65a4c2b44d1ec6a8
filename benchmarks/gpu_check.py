"""GPU readiness check (issues #13, #31): checks and measures everything a lent GPU must show, in ≤ 7 minutes.

Seven parts (``benchmarks/gpu_parts/``), run most important first, each in its own process with its own time limit,
each check reporting ``ok``, a measurement, or ``failed: <reason>`` without stopping the rest; a part that no longer
fits the budget is reported ``skipped: <reason>`` (``gpu_parts.PARTS``):

1. ``correctness``: ``dwconv3d`` fft vs cuDNN (TF32 off), output and both gradients, float32 and autocast fp16/bf16;
   a Rep3D training step's gradients, fft and direct, against float64; ``fold()``; deploy load on CUDA.
6. ``peers``: sliding-window inference of a 273x273x200 grid (a 512x512x400 CT at 1.5x1.5x2 mm): Rep3D folded
   (default ``conv_method`` and fft) and unfolded, UXNet, SwinUNETR(48), SegResNet, DynUNet; goal: folded Rep3D
   ≤ 0.5x SwinUNETR.
7. ``clinical_ct``: the shared CT resampled to 512x512x400 through amos_ct's ``inference.json``, cold and warm;
   goal: ≤ 3 s warm.
5. ``smoke``: amos_ct ``train.json`` 20 iterations (AMP), ``inference.json``, the MONAI Label app's infer through
   monailabel's client, ``torchrun`` (1 process, nccl) with ``multi_gpu_train.json``.
3. ``training``: 96³ batch-2 AMP training steps of Rep3D lrbm / vanilla, UXNet(k=7), SwinUNETR(48): median s/step,
   peak memory, projected hours for 60,000 steps beside the paper's.
4. ``evaluation``: folded Rep3D on one 96³ patch; the shared CT (3 mm) through amos_ct's ``inference.json``.
2. ``dwconv_speed``: cuDNN vs fft at the four stage shapes of a 96³ input, k = 21 and 7, float32 and AMP, fwd and
   fwd+bwd: the crossover table for the CUDA branch of ``method="auto"``.

Writes one Markdown table (with device, driver, torch and CUDA versions) to ``--output`` and prints it; every part's
own output goes to the ``.log`` beside it. On the GPU machine, after ``benchmarks/gpu_prepare.sh`` here, run
``bash benchmarks/gpu_check.sh`` (README "GPU check")::

    python benchmarks/gpu_check.py                      # CUDA: -> benchmarks/results/gpu_<date>.md
    python benchmarks/gpu_check.py --dry-run            # the same code paths on the CPU, tiny sizes, seconds
    python benchmarks/gpu_check.py --dry-run --parts correctness smoke --jobs 2   # two parts at a time

The dry run uses the CPU with bfloat16 autocast where the GPU run uses float16 AMP (parts 1–4, 6); the bundle runs
of parts 4, 5 and 7 follow the configs, which switch AMP off without CUDA, and ``torchrun`` uses gloo there.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Tuple

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


class Schedule:
    """Gives each part, as it starts, its share (``PARTS``) of the time left until the budget's end, so time a part
    leaves unused goes to the parts after it. On the GPU a part whose limit would be below its need is skipped."""

    def __init__(self, names, budget_s: float, dry_run: bool) -> None:
        self.end = time.time() + budget_s
        self.waiting = list(names)
        self.dry_run = dry_run

    def limit(self, name: str) -> Tuple[float, str]:
        """(seconds the part may run, "") or (0, why it is skipped)."""
        shares = sum(PARTS[n].share_s for n in self.waiting)
        self.waiting.remove(name)
        left = self.end - time.time()
        limit, need = left * PARTS[name].share_s / shares, 0.0 if self.dry_run else PARTS[name].need_s
        if limit <= 0:
            return 0.0, "skipped: the time budget was spent"
        if limit < need:
            return 0.0, f"skipped: {limit:.0f} s of the budget for it ({left:.0f} s left), it needs {need:.0f} s"
        return limit, ""


def launch_part(name: str, schedule: Schedule, dry_run: bool, work_dir: Path) -> list:
    """Runs one part in its own process, killed at its limit; returns its rows plus a row for the whole part.

    The part's output goes to ``work_dir/<name>.log``, its rows to ``work_dir/<name>.jsonl``.
    """
    (limit_s, skipped), rows_file = schedule.limit(name), work_dir / f"{name}.jsonl"
    whole = {"part": f"{PARTS[name].number} {name}", "check": "whole part", "result": "", "seconds": 0.0}
    if skipped:
        (work_dir / f"{name}.log").write_text(f"\n===== part {whole['part']}: {skipped} =====\n")
        return [dict(whole, status=skipped)]
    command = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--rows", str(rows_file)]
    command += ["--deadline", str(time.time() + START_FRACTION * limit_s)] + (["--dry-run"] if dry_run else [])
    # the dry run's tiny operations run fastest, and steadiest on a busy CPU, with one thread per process
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if dry_run else None
    start = time.perf_counter()
    with open(work_dir / f"{name}.log", "w") as log:
        log.write(f"\n===== part {whole['part']} (limit {limit_s:.1f} s) =====\n")
        log.flush()
        status = run_with_limit(command, limit_s, log, env)
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()] if rows_file.exists() else []
    for row in rows:
        row["part"] = whole["part"]
    return rows + [
        dict(whole, result=f"{len(rows)} checks", status=status, seconds=round(time.perf_counter() - start, 1))
    ]


def run_with_limit(command: list, limit_s: float, log, env) -> str:
    """Runs ``command`` in a new process group; at ``limit_s`` the group gets SIGTERM, then SIGKILL. Returns a
    status."""
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO_ROOT, env=env
    )
    try:
        code = process.wait(timeout=limit_s)
        return "ok" if code == 0 else f"failed: the part's process exited with {code}"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=TERMINATE_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        return f"failed: timed out after {limit_s:.1f} s (its limit; see the log)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, few iterations (what CI runs)")
    parser.add_argument(
        "--parts", nargs="+", choices=list(PARTS), default=list(PARTS), help="parts to run (default: all)"
    )
    parser.add_argument(
        "--budget", type=float, default=sum(p.share_s for p in PARTS.values()), help="total seconds for the parts"
    )
    parser.add_argument("--jobs", type=int, default=1, help="parts run at once (dry run only: timings need 1)")
    parser.add_argument(
        "--output",
        default=None,
        help="Markdown report (default: benchmarks/results/gpu_<date>.md; "
        "dry run: gpu_check_dry_run.md in the temp folder); its .log goes beside it",
    )
    parser.add_argument("--part", choices=list(PARTS), help=argparse.SUPPRESS)  # internal: run one part
    parser.add_argument("--rows", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        run_part(args)
        return 0
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("PyTorch sees no CUDA device here: run on the GPU machine, or use --dry-run on the CPU")
    if args.jobs < 1 or (args.jobs > 1 and not args.dry_run):
        parser.error("--jobs must be 1 for the GPU run (parts share the GPU and time it), and at least 1")
    default = (
        Path(tempfile.gettempdir()) / "gpu_check_dry_run.md"
        if args.dry_run
        else (BENCHMARKS / "results" / f"gpu_{datetime.date.today()}.md")
    )
    output = Path(args.output or default)
    output.parent.mkdir(parents=True, exist_ok=True)

    names = [name for name in PARTS if name in args.parts]  # the most important first, whatever the order given
    started, schedule = time.perf_counter(), Schedule(names, args.budget, args.dry_run)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work_dir, ThreadPoolExecutor(args.jobs) as pool:
        runs = [pool.submit(launch_part, name, schedule, args.dry_run, Path(work_dir)) for name in names]
        rows = []
        for name, run in zip(names, runs):
            rows += run.result()
            print(f"part {name}: {rows[-1]['result']} in {rows[-1]['seconds']} s -> {rows[-1]['status']}", flush=True)
        logs = [(Path(work_dir) / f"{name}.log").read_text() for name in names]
    output.with_suffix(".log").write_text("".join(logs))
    command = "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:])
    text = "\n".join(header(args.dry_run, command.strip(), time.perf_counter() - started) + table(rows)) + "\n"
    output.write_text(text)
    print(text + f"\nwrote {output} and {output.with_suffix('.log')}", flush=True)
    return 0 if all(row["status"] == "ok" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
