"""The README's quickstart command, end to end on a phantom (issue #4)."""

import subprocess
import sys

from PIL import Image


def test_quickstart_runs_end_to_end(tmp_path):
    out = tmp_path / "quickstart"
    result = subprocess.run(
        # the README command with fewer training iterations (30 by default) to keep CI short
        [sys.executable, "-m", "rep3d_networks.quickstart", "--output_dir", str(out), "--iterations", "10"],
        capture_output=True, text=True, timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    table = (out / "results.md").read_text()
    assert "| spleen |" in table and "| mean (classes without background) |" in table
    dice = [float(line.split("|")[2].split("±")[0]) for line in table.splitlines() if "±" in line]
    assert len(dice) == 16 and all(0.0 <= d <= 1.0 for d in dice)  # 15 organs + the mean
    with Image.open(out / "overlay.png") as png:
        assert png.size[0] > 100 and png.size[1] > 100
    assert list((out / "predictions").rglob("*_seg.nii.gz"))
    # a second run into the same folder refuses instead of overwriting the user's results
    again = subprocess.run([sys.executable, "-m", "rep3d_networks.quickstart", "--output_dir", str(out)], capture_output=True, text=True)
    assert again.returncode != 0 and "already exists" in again.stderr
