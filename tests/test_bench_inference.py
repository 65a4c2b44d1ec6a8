"""``benchmarks/bench_inference.py`` end to end on a tiny setting: the bundle and the server path, the floor columns."""

import re
import subprocess
import sys

from bundle_helpers import REPO_ROOT, SMALLEST_NETWORK

TINY = {**SMALLEST_NETWORK, "pixdim": [4, 4, 4], "inferer#roi_size": [32, 32, 16]}


def table_rows(text: str) -> list:
    """The result table's rows as lists of cells (header and rule left out)."""
    lines = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| path")]
    return [[cell.strip().strip("*") for cell in line.strip("|").split("|")] for line in lines]


def test_bench_inference_tiny(tmp_path, shared_data):
    output = tmp_path / "inference.md"
    overrides = [a for k, v in TINY.items() for a in ("--override", f"{k}={v}".replace(" ", ""))]
    command = [
        sys.executable,
        str(REPO_ROOT / "benchmarks" / "bench_inference.py"),
        "--images",
        "synthetic",
        "--settings",
        "fast",
        "--synthetic-shape",
        "64",
        "64",
        "32",
        "--synthetic-spacing",
        "4",
        "--floor-only",
        "example_ct_sm",
        *overrides,
        "--ncdhw",
        "--output",
        str(output),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {tuple(r[:3]): r[3:] for r in table_rows(output.read_text())}
    floor_only = {("floor only", "example_ct_sm", setting) for setting in ("default", "fast")}  # counted, not run
    bundle_rows = {("bundle", "synthetic", "fast"), ("bundle, NCDHW", "synthetic", "fast")}
    assert set(rows) == {*bundle_rows, ("server", "synthetic", "fast"), *floor_only}
    bundle, ncdhw, server = (rows[key] for key in (*sorted(bundle_rows), ("server", "synthetic", "fast")))
    assert int(bundle[0]) == int(ncdhw[0]) == int(server[0]) > 1  # windows: counted in the run and on the image
    for windows, window_s, floor, network_s, seconds, ratio, total, peak in (bundle, ncdhw, server):
        assert abs(float(floor) - int(windows) * float(window_s)) <= 0.1 + 0.01 * float(floor)
        assert re.fullmatch(r"\d+\.\d\d×", ratio) and float(seconds) >= float(network_s) > 0
        assert float(total) > 0 and 0.2 < float(peak) < 5
    default, fast = (rows[key] for key in sorted(floor_only))
    assert default[3] == fast[3] == "not run" and int(default[0]) > int(fast[0])  # overlap 0.5 vs 0.25
    assert "uptime load average at start" in output.read_text()
