"""The GPU check's report: the machine and versions, then one Markdown table of every part's rows."""

import datetime
import platform
import subprocess
from importlib import metadata
from typing import List

import torch

PACKAGES = ("numpy", "monai", "pytorch-ignite", "monailabel", "nibabel", "fastapi", "pydicom")


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def gpu_description() -> str:
    """Name, driver and memory from ``nvidia-smi`` (no CUDA context is created in the calling process)."""
    if not torch.cuda.is_available():
        return "none (CPU dry run)"
    try:
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        answer = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout
        name, driver, memory = answer.splitlines()[0].split(", ")
        return f"{name}, driver {driver}, {memory}"
    except (OSError, ValueError, IndexError, subprocess.SubprocessError) as error:
        return f"{torch.cuda.device_count()} CUDA device(s) (nvidia-smi failed: {error})"


def header(dry_run: bool, command: str, seconds: float) -> List[str]:
    title = "GPU check, CPU dry run (tiny sizes: checks the code paths, measures nothing)" if dry_run else "GPU check"
    with open("/proc/cpuinfo") as info:
        cpu = next(
            (line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), platform.processor()
        )
    return [
        f"# {title}",
        "",
        f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; command: `{command}`; "
        f"whole run {seconds:.0f} s",
        f"- GPU: {gpu_description()}",
        f"- CPU: {cpu}; python {platform.python_version()}",
        f"- torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}",
        "- " + ", ".join(f"{p} {version(p)}" for p in PACKAGES),
        "",
    ]


def table(rows: List[dict]) -> List[str]:
    lines = ["| part | check | result | status | s |", "|---|---|---|---|---:|"]
    for row in rows:
        cells = [row["part"], row["check"], row["result"], row["status"], row["seconds"]]
        lines.append("| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in cells) + " |")
    return lines
