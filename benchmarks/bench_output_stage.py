"""Peak memory and time of the bundles' inference output stage, previous vs current (not a test).

A synthetic CT (an int16 ellipsoid "body" in air, default 512×512×400 at 0.8 mm: the clinical size of issue 16) goes
through ``amos_ct``'s ``inference.json`` preprocessing and sliding window with the smallest Rep3D (width 4, 3³
kernels, random weights, one 96³ window per position without overlap: the network is not what is measured), then
through one output stage, each in its own process under ``/usr/bin/time -v``:

* ``previous``: ``Activationsd(softmax) → Invertd(all 16 probability channels, bilinear) → AsDiscreted(argmax)``,
  the bundles' post-processing before ``InvertToLabelsd``;
* ``current``: the bundle's ``postprocessing`` as rendered today (``InvertToLabelsd``), without ``SaveImaged``.

``SaveImaged`` is left out of both (writing the uint8 label is the same for both). Writes a Markdown table::

    python benchmarks/bench_output_stage.py                                  # -> benchmarks/results/output_stage_cpu.md
    python benchmarks/bench_output_stage.py --shape 512 512 80 --stages previous current
    python benchmarks/bench_output_stage.py --measure current --image ct.nii  # one measurement, JSON on stdout
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))
from bundle_helpers import SMALLEST_NETWORK  # noqa: E402

from rep3d_networks.bundles.recipe import ROI_SIZE  # noqa: E402

INFERENCE = REPO_ROOT / "bundles" / "amos_ct" / "configs" / "inference.json"
WINDOWS = {"inferer#roi_size": list(ROI_SIZE), "inferer#overlap": 0.0, "inferer#sw_batch_size": 1}


def synthetic_ct(path: Path, shape, spacing: float) -> Path:
    """An int16 CT: air (-1000 HU) around an ellipsoid of soft tissue (40 HU) with a denser core (300 HU)."""
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    radius = axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 / 0.6 + axes[2][None, None, :] ** 2 * 0.1
    volume = np.full(shape, -1000, np.int16)
    volume[radius < 0.8] = 40
    volume[radius < 0.1] = 300
    nib.save(nib.Nifti1Image(volume, np.diag([spacing, spacing, spacing, 1.0])), str(path))
    return path


def rss_gb() -> float:
    """This process's peak resident set size so far (GB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def measure(stage: str, image: str) -> dict:
    """Preprocessing and sliding window, then ``stage``'s output stage; times and peak RSS of each part."""
    import torch
    from monai.bundle import ConfigParser
    from monai.transforms import Activationsd, AsDiscreted, Compose, Invertd

    torch.manual_seed(0)
    parser = ConfigParser()
    parser.read_config(str(INFERENCE))
    parser.update({**SMALLEST_NETWORK, **WINDOWS, "device": "$torch.device('cpu')", "output_dir": "unused"})
    start = time.perf_counter()
    preprocessing = parser.get_parsed_content("preprocessing")
    data = preprocessing({"image": image})
    with torch.no_grad():
        data["pred"] = parser.get_parsed_content("inferer")(
            data["image"][None], parser.get_parsed_content("network").eval()
        )[0]
    network_grid = tuple(data["pred"].shape)
    before = {"inference_s": time.perf_counter() - start, "peak_rss_before_output_gb": rss_gb()}
    if stage == "previous":
        output = Compose(
            [
                Activationsd(keys="pred", softmax=True),
                Invertd(keys="pred", transform=preprocessing, orig_keys="image", nearest_interp=False, to_tensor=True),
                AsDiscreted(keys="pred", argmax=True),
            ]
        )
    else:
        transforms = parser.get_parsed_content("postprocessing").transforms
        output = Compose([t for t in transforms if type(t).__name__ != "SaveImaged"])
    start = time.perf_counter()
    labels = output(data)["pred"]
    return {
        **before,
        "output_s": time.perf_counter() - start,
        "peak_rss_gb": rss_gb(),
        "network_grid": network_grid,
        "labels": [str(labels.dtype), *labels.shape],
    }


def run_child(stage: str, image: Path) -> dict:
    """``measure`` in a fresh process under ``/usr/bin/time -v``; adds its maximum resident set size."""
    command = ["/usr/bin/time", "-v", sys.executable, __file__, "--measure", stage, "--image", str(image)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-30:]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    result["time_v_max_rss_gb"] = int(match.group(1)) / 1e6 if match else None
    return result


def table(rows, shape, spacing, command) -> str:
    lines = [
        "# Inference output stage: peak memory, previous vs current (cpu)",
        "",
        f"Made by `{command}`. Synthetic CT {'x'.join(map(str, shape))} voxels at {spacing} mm, "
        "`amos_ct` preprocessing "
        "(1.5x1.5x2 mm), smallest Rep3D with random weights, 96³ windows without overlap; "
        "each stage in its own process.",
        "`peak before output` is the process's peak RSS after loading, preprocessing and the sliding window "
        "(the same for "
        "both stages); `peak` includes the output stage (`/usr/bin/time -v` maximum resident set size). The machine is "
        "shared with other jobs: times are perturbed, memory is not.",
        "",
        "| stage | network grid | inference (s) | output stage (s) | peak before output (GB) | peak (GB) | labels |",
        "|---|---|---|---|---|---|---|",
    ]
    for stage, r in rows:
        if "error" in r:
            lines.append(f"| {stage} | failed: {' '.join(r['error'][-2:])[:200]} | | | | | |")
            continue
        lines.append(
            f"| {stage} | {'x'.join(map(str, r['network_grid'][1:]))} ({r['network_grid'][0]} classes) | "
            f"{r['inference_s']:.0f} | {r['output_s']:.1f} | {r['peak_rss_before_output_gb']:.2f} | "
            f"{r['time_v_max_rss_gb']:.2f} | {r['labels'][0]} {'x'.join(map(str, r['labels'][1:]))} |"
        )
    return "\n".join(lines + machine_lines()) + "\n"


def machine_lines(*extra: str) -> list:
    """The "Machine:" block of a benchmark table: date, platform, usable cores, ``extra`` lines, load at the end."""
    load = os.getloadavg()
    return [
        "",
        "Machine:",
        "",
        f"* date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"* platform: {platform.platform()}",
        f"* cores usable: {len(os.sched_getaffinity(0))}",
        *extra,
        f"* load average at end (1/5/15 min): {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 512, 400])
    parser.add_argument("--spacing", type=float, default=0.8)
    parser.add_argument("--stages", nargs="+", default=["previous", "current"], choices=["previous", "current"])
    parser.add_argument("--output", default=str(REPO_ROOT / "benchmarks" / "results" / "output_stage_cpu.md"))
    parser.add_argument("--measure", choices=["previous", "current"], help="one measurement in this process")
    parser.add_argument("--image", help="with --measure: the CT")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.image)))
        return
    with tempfile.TemporaryDirectory() as folder:
        image = synthetic_ct(Path(folder) / "synthetic_ct.nii", tuple(args.shape), args.spacing)
        rows = [(stage, run_child(stage, image)) for stage in args.stages]
    command = "python benchmarks/bench_output_stage.py " + " ".join(sys.argv[1:])
    text = table(rows, args.shape, args.spacing, command.strip())
    Path(args.output).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
