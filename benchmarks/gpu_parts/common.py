"""What every part of the GPU check shares: the run context, the row records, timing and precision helpers."""

import json
import statistics
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Tuple

import torch
from bundle_helpers import SMALLEST_NETWORK

OK = "ok"
REPO_ROOT = Path(__file__).resolve().parents[2]
AMOS_CT = REPO_ROOT / "bundles" / "amos_ct"
# The dry run's Rep3D / UX-Net: the tests' smallest bundle network (4 wide, one block per stage, 3³ kernels).
TINY_NET = {key.split("#")[1]: value for key, value in SMALLEST_NETWORK.items()}


@dataclass
class Context:
    """One part's run: its device, whether it is the CPU dry run, its wall-clock deadline and where rows go.

    Args:
        part: the part's name (a key of ``gpu_parts.PARTS``).
        device: ``cuda`` for the real check, ``cpu`` for the dry run.
        dry_run: tiny sizes and few iterations.
        deadline: ``time.time()`` after which checks that have not started are skipped.
        rows_file: JSON-lines file the rows are appended to (rows survive the part being killed).
        work_dir: scratch folder of the part.
    """

    part: str
    device: torch.device
    dry_run: bool
    deadline: float
    rows_file: Path
    work_dir: Path

    def record(self, check: str, result: str, status: str = OK, seconds: float = 0.0) -> None:
        row = {"part": self.part, "check": check, "result": result, "status": status, "seconds": round(seconds, 1)}
        with open(self.rows_file, "a") as rows:
            rows.write(json.dumps(row) + "\n")
        print(f"[{self.part}] {check}: {result} -> {status}", flush=True)

    def run_check(self, check: str, function: Callable[[], Tuple[str, str]]) -> None:
        """Runs ``function() -> (result, status)`` and records it; an exception becomes ``failed: <reason>``.

        A check that would start after the deadline is recorded as ``skipped: part time budget spent``.
        """
        if time.time() > self.deadline:
            self.record(check, "", "skipped: part time budget spent")
            return
        start = time.perf_counter()
        try:
            result, status = function()
        except Exception as error:  # a part reports every failure and goes on with its next check
            traceback.print_exc()
            result, status = "", f"failed: {type(error).__name__}: {first_line(str(error))}"
        finally:
            release_memory(self.device)
        self.record(check, result, status, time.perf_counter() - start)

    @property
    def amp_dtype(self) -> torch.dtype:
        """The autocast dtype: float16 on CUDA (as MONAI's ``amp=True``), bfloat16 on the CPU dry run."""
        return torch.float16 if self.device.type == "cuda" else torch.bfloat16


def first_line(text: str, limit: int = 200) -> str:
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def within(value: float, limit: float, what: str) -> str:
    return OK if value <= limit else f"failed: {what} {value:.1e} > {limit:.0e}"


def worst(statuses: List[str]) -> str:
    return next((s for s in statuses if s != OK), OK)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def time_calls(function: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> List[float]:
    """Wall seconds of ``repeats`` synchronized calls after ``warmup`` untimed ones."""
    times = []
    for index in range(warmup + repeats):
        synchronize(device)
        start = time.perf_counter()
        function()
        synchronize(device)
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return times


def time_adaptive(function: Callable[[], object], device: torch.device, repeats: int, slow_s: float = 1.0) -> float:
    """Median seconds of one call: a first (warm-up) call, then ``repeats`` timed ones, or the first call's
    time alone when it took longer than ``slow_s`` (a slow call is timed once so the part stays in budget)."""
    first = time_calls(function, device, 0, 1)[0]
    if first > slow_s:
        return first
    return statistics.median(time_calls(function, device, 0, repeats))


@contextmanager
def peak_memory(device: torch.device):
    """Yields a dict whose ``"gib"`` is the peak CUDA memory allocated inside the block (None on the CPU)."""
    found = {"gib": None}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    yield found
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        found["gib"] = torch.cuda.max_memory_allocated(device) / 2**30


def gib(value) -> str:
    return "n/a on CPU" if value is None else f"{value:.2f} GiB"


@contextmanager
def exact_float32():
    """TF32 off for cuDNN convolutions and matrix products (the float32 reference), restored afterwards."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=False, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
