"""The GPU readiness check (issue #13), run on the CPU through its own command line: ``benchmarks/gpu_check.py``."""

import os
import re
import subprocess
import sys

import pytest

from bundle_helpers import REPO_ROOT
from stack_helpers import pins

SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from gpu_parts import PARTS  # noqa: E402

ROW = re.compile(r"^\| (\d \w+) \| (.*?) \| (.*?) \| (.*?) \| [\d.]+ \|$")


def run_check(tmp_path, shared_data, *args, timeout=600):
    env = {**os.environ, "REP3D_SHARED_DATA": str(shared_data)}
    output = tmp_path / "gpu.md"
    result = subprocess.run([sys.executable, str(SCRIPT), "--output", str(output), *args],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    return result, output


def table_rows(report):
    """(part, check, result, status) of every row of the report's table."""
    return [m.groups() for m in map(ROW.match, report.read_text().splitlines()) if m]


def test_dry_run_runs_every_part_and_every_check_passes(tmp_path, shared_data):
    result, report = run_check(tmp_path, shared_data, "--dry-run", "--jobs", "2")
    log = report.with_suffix(".log")
    details = f"{result.stdout[-4000:]}\n{result.stderr[-2000:]}\n--- log ---\n{log.read_text()[-6000:] if log.exists() else ''}"
    assert result.returncode == 0, details
    rows = table_rows(report)
    wholes = {part: status for part, check, _, status in rows if check == "whole part"}
    assert wholes == {f"{number} {name}": "ok" for name, (number, _) in PARTS.items()}, details
    assert [row for row in rows if row[3] != "ok"] == [], details
    checks = {part: sum(1 for p, *_ in rows if p == part) - 1 for part in wholes}
    assert all(count >= 4 for count in checks.values()), checks  # e.g. smoke: train, infer, app, torchrun
    assert "GPU: none (CPU dry run)" in report.read_text() and "torch " in report.read_text()


def test_a_part_past_its_time_limit_fails_and_the_next_part_still_runs(tmp_path, shared_data):
    """A 2 s budget: the first part is killed at its share of it, the second gets what is left (if anything), both are
    reported, and the exit status is 1."""
    parts = ["--parts", "correctness", "dwconv_speed"]
    result, report = run_check(tmp_path, shared_data, "--dry-run", *parts, "--budget", "2", timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    wholes = {part: status for part, check, _, status in table_rows(report) if check == "whole part"}
    assert set(wholes) == {"1 correctness", "2 dwconv_speed"}
    assert wholes["1 correctness"].startswith("failed: timed out after"), wholes
    assert wholes["2 dwconv_speed"].startswith(("failed: timed out after", "failed: not started")), wholes


def test_without_cuda_the_full_check_refuses_with_a_clear_error(tmp_path, shared_data):
    result, report = run_check(tmp_path, shared_data, timeout=120)
    assert result.returncode == 2 and "no CUDA device" in result.stderr and "--dry-run" in result.stderr
    assert not report.exists()


def test_gpu_wheels_are_pinned_as_the_requirements():
    wheels_file = REPO_ROOT / "benchmarks" / "gpu_wheels.txt"
    requirement_lines = [l for l in wheels_file.read_text().splitlines() if l.strip() and not l.startswith("#")]
    wheels = pins(wheels_file)
    assert len(wheels) == len(requirement_lines), "every wheel line must be name==version"
    requirements = pins(REPO_ROOT / "requirements.txt")
    shared = set(wheels) & set(requirements)
    assert {"monai", "pytorch-ignite"} <= shared
    assert {name: wheels[name] for name in shared} == {name: requirements[name] for name in shared}


@pytest.mark.parametrize("path", [".whl/", ".gpu_data/"])
def test_carried_folders_are_ignored_by_git(path):
    assert path in (REPO_ROOT / ".gitignore").read_text().splitlines()
