"""The GPU readiness check (issue #13), run on the CPU through its own command line: ``benchmarks/gpu_check.py``."""

import os
import re
import subprocess
import sys

import pytest
from bundle_helpers import REPO_ROOT
from monai.bundle import ConfigParser
from stack_helpers import pins

SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from gpu_check import Schedule  # noqa: E402
from gpu_parts import PARTS  # noqa: E402
from gpu_parts.bundle_inference import sliding_window_settings, window_count  # noqa: E402

ROW = re.compile(r"^\| (\d \w+) \| (.*?) \| (.*?) \| (.*?) \| [\d.]+ \|$")


def run_check(tmp_path, shared_data, *args, timeout=600):
    env = {**os.environ, "REP3D_SHARED_DATA": str(shared_data)}
    output = tmp_path / "gpu.md"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--output", str(output), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result, output


def table_rows(report):
    """(part, check, result, status) of every row of the report's table."""
    return [m.groups() for m in map(ROW.match, report.read_text().splitlines()) if m]


def test_dry_run_runs_every_part_and_every_check_passes(tmp_path, shared_data):
    result, report = run_check(tmp_path, shared_data, "--dry-run", "--jobs", "2")
    log = report.with_suffix(".log")
    details = (
        f"{result.stdout[-4000:]}\n{result.stderr[-2000:]}\n--- log ---\n"
        f"{log.read_text()[-6000:] if log.exists() else ''}"
    )
    assert result.returncode == 0, details
    rows = table_rows(report)
    wholes = {part: status for part, check, _, status in rows if check == "whole part"}
    assert wholes == {f"{part.number} {name}": "ok" for name, part in PARTS.items()}, details
    order = [part for part, check, *_ in rows if check == "whole part"]
    assert order == [f"{part.number} {name}" for name, part in PARTS.items()], "the most important parts first"
    assert [row for row in rows if row[3] != "ok"] == [], details
    checks = {part: sum(1 for p, *_ in rows if p == part) - 1 for part in wholes}
    assert all(count >= 4 for count in checks.values()), checks  # e.g. smoke: train, infer, app, torchrun
    goals = {check: result for part, check, result, _ in rows if check.startswith("goal:")}
    assert len(goals) == 2 and all(r.startswith(("met: ", "not met: ")) for r in goals.values()), goals
    assert "GPU: none (CPU dry run)" in report.read_text() and "torch " in report.read_text()


def test_a_part_past_its_time_limit_fails_and_the_next_part_is_skipped(tmp_path, shared_data):
    """A 2 s budget: the first part is killed at its share of it, the second finds the budget spent and is skipped
    with the reason; both are reported, and the exit status is 1."""
    parts = ["--parts", "correctness", "dwconv_speed"]
    result, report = run_check(tmp_path, shared_data, "--dry-run", *parts, "--budget", "2", timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    wholes = {part: status for part, check, _, status in table_rows(report) if check == "whole part"}
    assert set(wholes) == {"1 correctness", "2 dwconv_speed"}
    assert wholes["1 correctness"].startswith("failed: timed out after"), wholes
    assert wholes["2 dwconv_speed"].startswith(("failed: timed out after", "skipped: the time budget was spent")), (
        wholes
    )


def test_on_the_gpu_a_part_whose_share_is_below_its_need_is_skipped_and_leaves_its_time_to_the_next():
    names = ["peers", "clinical_ct", "dwconv_speed"]
    need = PARTS["peers"].need_s
    budget = need * sum(PARTS[n].share_s for n in names) / PARTS["peers"].share_s - 1  # peers' share just short
    schedule = Schedule(names, budget, dry_run=False)
    limit, reason = schedule.limit("peers")
    assert limit == 0 and reason.startswith("skipped: ") and f"it needs {need:.0f} s" in reason, reason
    limit, reason = schedule.limit("clinical_ct")  # now shares the whole budget with dwconv_speed alone
    assert reason == "" and limit > PARTS["clinical_ct"].need_s
    assert Schedule(names, budget, dry_run=True).limit("peers")[1] == "", "the dry run skips only at a spent budget"


def test_the_default_budget_fits_the_gpu_machine_and_every_part_its_need():
    """gpu_check.sh's 7 minutes, less the wheels' install and the copy, hold the shares; each share holds its need."""
    assert sum(part.share_s for part in PARTS.values()) <= 420 - 30
    assert all(part.need_s < part.share_s for part in PARTS.values())
    assert "GPU_CHECK_TOTAL_S:-420}" in (REPO_ROOT / "benchmarks" / "gpu_check.sh").read_text()


def test_the_reported_window_count_reads_the_inferers_values_through_the_config_parser():
    """inference.json's overlap is an expression: arithmetic on the raw value crashed the whole-volume rows on the
    H200 (TypeError: int - str), which the dry run did not see while it overrode the overlap with a number."""
    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "bundles" / "amos_ct" / "configs" / "inference.json"))
    assert isinstance(parser["inferer"]["overlap"], str) and parser["inferer"]["overlap"].startswith("$")
    roi, overlap = sliding_window_settings(parser)
    assert (list(roi), overlap) == ([96, 96, 96], 0.5)
    assert window_count((273, 273, 200), roi, overlap) == 5 * 5 * 4  # steps of 48: 0..177 (5), 0..104 (4)
    assert window_count((96, 60, 97), roi, overlap) == 2


def test_without_cuda_the_full_check_refuses_with_a_clear_error(tmp_path, shared_data):
    result, report = run_check(tmp_path, shared_data, timeout=120)
    assert result.returncode == 2 and "no CUDA device" in result.stderr and "--dry-run" in result.stderr
    assert not report.exists()


def test_gpu_wheels_are_pinned_as_the_requirements():
    wheels_file = REPO_ROOT / "benchmarks" / "gpu_wheels.txt"
    requirement_lines = [
        line for line in wheels_file.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    wheels = pins(wheels_file)
    assert len(wheels) == len(requirement_lines), "every wheel line must be name==version"
    requirements = pins(REPO_ROOT / "requirements.txt")
    shared = set(wheels) & set(requirements)
    assert {"monai", "pytorch-ignite"} <= shared
    assert {name: wheels[name] for name in shared} == {name: requirements[name] for name in shared}


@pytest.mark.parametrize("path", [".whl/", ".gpu_data/"])
def test_carried_folders_are_ignored_by_git(path):
    assert path in (REPO_ROOT / ".gitignore").read_text().splitlines()
