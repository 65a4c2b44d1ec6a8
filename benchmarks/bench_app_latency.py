"""Inference latency of the MONAI Label app through the real server, as 3D Slicer sees it (not a test).

Starts ``monailabel start_server`` on 127.0.0.1 for ``apps/rep3d`` with one bundle (default ``amos_ct``) at its
full-size default settings (48-wide Rep3D, 21³ kernels, the bundle's grid and sliding window), random weights
(no trained weights are published; latency does not depend on their values) and the sample CT
``totalseg_ct_abdomen_3mm/example_ct_sm.nii.gz`` as the study, then times ``/infer/<model>`` from the client:
the first call (the network is loaded and folded) and warm calls. Writes a Markdown table with machine info::

    python benchmarks/bench_app_latency.py                        # -> benchmarks/results/app_latency_cpu.md
    python benchmarks/bench_app_latency.py --device cuda          # -> benchmarks/results/app_latency_cuda.md
    python benchmarks/bench_app_latency.py --override 'pixdim=[4,4,4]'   # a variant; the table records it

``--clicks JSON`` times clicks on a DeepEdit model: every call sends them as 3D Slicer's MONAI Label module does
(one key per label the server lists, ``label`` the first clicked one), e.g.
``--model amos_ct_deepedit --clicks '{"liver": [[86, 47, 20]]}'`` (-> ``app_latency_amos_ct_deepedit_cpu.md``).

``--override KEY=JSON`` changes the bundle's ``configs/inference.json`` (a ``#``-separated id) in the scratch copy
(``network_def#...`` keys also in ``train.json``, from which the random weights are made).
"""

import argparse
import datetime
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import torch
from monai.bundle import ConfigParser

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))
from app_helpers import CT, Server, copy_app, save_random_weights, write_overrides  # noqa: E402
from bundle_helpers import copy_bundle  # noqa: E402
from conftest import shared_data_dir  # noqa: E402
from monailabel.client import MONAILabelClient  # noqa: E402


def parse_overrides(pairs):
    """``["a#b=[1,2]", ...]`` → ``{"a#b": [1, 2]}`` (values are JSON, or plain strings)."""
    overrides = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def slicer_request(labels, clicks: dict) -> dict:
    """3D Slicer's request for a ``deepedit`` model: a (possibly empty) click list for every label, and ``label``."""
    return {**{name: clicks.get(name, []) for name in labels}, "label": next(iter(clicks))} if clicks else {}


def sliding_windows(bundle: Path, image: Path):
    """The preprocessed image shape and the number of windows the bundle's ``SlidingWindowInferer`` runs."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    shape = parser.get_parsed_content("preprocessing")({"image": str(image)})["image"].shape[1:]
    roi, overlap = parser["inferer"]["roi_size"], parser["inferer"]["overlap"]
    count = 1
    for size, window in zip(shape, roi):
        interval = max(int(window * (1 - overlap)), 1)
        count *= 1 if size <= window else math.ceil((size - window) / interval) + 1
    return tuple(shape), count, roi, overlap


def machine_info(device: str) -> dict:
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        cpu = names[0] if names else cpu
    info = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch threads (server default)": torch.get_num_threads(),
        "load average at start (1/5/15 min)": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
        "python / torch / monai": (
            f"{platform.python_version()} / {torch.__version__} / {__import__('monai').__version__}"
        ),
        "monailabel": __import__("monailabel").__version__,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run(args) -> str:
    image = shared_data_dir() / CT
    overrides = parse_overrides(args.override)
    clicks = json.loads(args.clicks) if args.clicks else {}
    with tempfile.TemporaryDirectory(prefix="bench_app_") as scratch:
        root = Path(scratch)
        bundle = copy_bundle(args.model, root / "bundles")
        if overrides:
            write_overrides(bundle / "configs" / "inference.json", overrides)
            network = {k: v for k, v in overrides.items() if k.startswith("network_def#")}
            write_overrides(bundle / "configs" / "train.json", network)  # the weights are made from train.json
        save_random_weights(bundle, seed=0)
        shape, windows, roi, overlap = sliding_windows(bundle, image)
        default_shape, default_windows, _, _ = sliding_windows(REPO_ROOT / "bundles" / args.model, image)
        studies = root / "studies"
        studies.mkdir()
        os.symlink(image, studies / "ct.nii.gz")
        info = machine_info(args.device)

        conf = {"models": args.model, "bundles_dir": str(root / "bundles"), "device": args.device}
        server = Server(copy_app(REPO_ROOT, root / "app"), studies, conf, root)
        try:
            started = time.perf_counter()
            server.wait_until_up(args.start_timeout_s)
            start_s = time.perf_counter() - started
            client = MONAILabelClient(server.url, tmpdir=str(root / "client"))
            request = slicer_request(client.info()["labels"], clicks)
            rows = []
            for call in ["first"] + [f"warm {i + 1}" for i in range(args.warm)]:
                begin = time.perf_counter()
                _, params = client.infer(args.model, "ct", request)
                wall = time.perf_counter() - begin
                rows.append((call, wall, params["latencies"]))
                print(f"{call}: {wall:.1f} s {params['latencies']}", flush=True)
        finally:
            server.stop()

    header = nib.load(str(image)).header
    lines = [
        f"# MONAI Label app: inference latency through the server ({args.device})",
        "",
        "Made by `python benchmarks/bench_app_latency.py"
        + "".join(f" --{k} {v}" for k, v in (("model", args.model), ("device", args.device)))
        + "".join(f" --override '{o}'" for o in args.override)
        + (f" --clicks '{args.clicks}'" if args.clicks else "")
        + "`. Wall time of `MONAILabelClient.infer` (HTTP request to the label file received);",
        "the server's own breakdown is from the response's `latencies` (seconds). Random weights.",
        "",
        f"* Model: `{args.model}`, `bundles/{args.model}/configs/inference.json` "
        + (f"with overrides `{json.dumps(overrides)}`" if overrides else "as is (full-size network, default settings)"),
        f"* Image: `{CT}` ({'x'.join(map(str, header.get_data_shape()))} voxels @ "
        f"{'x'.join(f'{z:g}' for z in header.get_zooms())} mm) → {'x'.join(map(str, shape))} after preprocessing",
        f"* Sliding window: roi {roi}, overlap {overlap}: {windows} window(s)",
        f"* Clicks sent with every call (image voxel indices): {json.dumps(clicks) if clicks else 'none (automatic)'}",
        f"* Server start until `/info/` answers: {start_s:.0f} s",
    ]
    if overrides and not any(k.startswith("network_def#") for k in overrides):  # same network, fewer windows
        per_window = min(row[2]["infer"] for row in rows) / windows
        lines.append(
            f"* Estimate for the default settings ({'x'.join(map(str, default_shape))} voxels, "
            f"{default_windows} windows): "
            f"about {default_windows} x {per_window:.0f} s = {default_windows * per_window / 60:.0f} min "
            "of network time per call "
            "(fastest call's infer time per window; the network cost grows linearly with the number of windows)"
        )
    lines += [
        "",
        "| call | client wall (s) | pre | infer | invert | post | write | server total |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for call, wall, lat in rows:
        cells = [lat.get(k, "") for k in ("pre", "infer", "invert", "post", "write", "total")]
        lines.append(f"| {call} | {wall:.1f} | " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "Machine:", ""] + [f"* {k}: {v}" for k, v in info.items()]
    lines.append(f"* load average at end: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="amos_ct")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--warm", type=int, default=2, help="warm calls after the first one")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=JSON")
    parser.add_argument(
        "--clicks", default=None, metavar="JSON", help='DeepEdit clicks, e.g. {"liver": [[86, 47, 20]]}'
    )
    parser.add_argument("--start-timeout-s", type=float, default=300)
    parser.add_argument(
        "--output", default=None, help="default: benchmarks/results/app_latency[_<model> with --clicks]_<device>.md"
    )
    args = parser.parse_args()
    report = run(args)
    name = f"app_latency_{args.model}_{args.device}.md" if args.clicks else f"app_latency_{args.device}.md"
    output = Path(args.output or REPO_ROOT / "benchmarks" / "results" / name)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
