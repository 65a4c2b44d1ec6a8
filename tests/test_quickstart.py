"""The README's quickstart command, end to end on a phantom (issue #4)."""

import subprocess
import sys

from PIL import Image


def test_quickstart_runs_end_to_end(tmp_path):
    out = tmp_path / "quickstart"
    result = subprocess.run(
        [sys.executable, "-m", "rep3d_networks.quickstart", "--output_dir", str(out)],
        capture_output=True, text=True, timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    table = (out / "results.md").read_text()
    assert "| spleen |" in table and "mean (no background)" in table
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith("| class") and "nan" not in line:
            value = float(line.rsplit("|", 2)[1].strip().strip("*"))
            assert 0.0 <= value <= 1.0
    with Image.open(out / "overlay.png") as png:
        assert png.size[0] > 100 and png.size[1] > 100
    assert list((out / "predictions").rglob("*_seg.nii.gz"))
    # a second run into the same folder refuses instead of overwriting the user's results
    again = subprocess.run([sys.executable, "-m", "rep3d_networks.quickstart", "--output_dir", str(out)], capture_output=True, text=True)
    assert again.returncode != 0 and "already exists" in again.stderr
