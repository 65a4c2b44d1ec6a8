"""Whole-volume CPU inference through the bundle and through the MONAI Label server, beside its compute floor (not a
test).

Images: the shared CTs ``example_ct_sm`` (122×101×30 at 3 mm) and ``example_ct`` (122×101×112), and a synthetic
clinical-size CT (default 512×512×400 at 0.8 mm, the ellipsoid "body" of ``bench_output_stage.py``). Settings:
``default`` (overlap 0.5) and ``fast`` (the bundles' fast preset, ``--fast true``). Paths:

* ``bundle``: ``inference.json`` run as ``python -m monai.bundle run`` runs it (``monai.bundle.create_workflow``, run,
  finalize: load, preprocess, sliding window, output stage, write the label), one fresh process per measurement;
* ``server``: the MONAI Label app started as the tests start it, one ``/infer`` request per measurement from
  ``MONAILabelClient`` (as 3D Slicer sends it, ``{"fast": ...}``), peak memory from the server's ``VmHWM`` (reset
  before each request).

The network is ``amos_ct``'s (full size: width 48, 21³ kernels, folded) with random weights (``--weights`` for a
checkpoint; time does not depend on the values). The compute floor is the number of windows the sliding window runs
(counted: every forward's batch) times the forward time of one window, measured in the same process (bundle) or in
this process right after the requests (server). ``ratio`` = seconds / floor::

    nice -n 10 python benchmarks/bench_inference.py                      # -> benchmarks/results/inference_cpu.md
    python benchmarks/bench_inference.py --images example_ct_sm --paths bundle --settings fast
    python benchmarks/bench_inference.py --images example_ct_sm --paths bundle --settings default --ncdhw
    python benchmarks/bench_inference.py --override network_def#feature_size=8 --synthetic-shape 96 96 48
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from app_helpers import Server, copy_app, save_random_weights, write_overrides  # noqa: E402
from bench_app_latency import parse_overrides  # noqa: E402
from bench_output_stage import machine_lines, synthetic_ct  # noqa: E402
from bundle_helpers import copy_bundle  # noqa: E402
from conftest import shared_data_dir  # noqa: E402

MODEL = "amos_ct"
SHARED = {
    "example_ct_sm": "totalseg_ct_abdomen_3mm/example_ct_sm.nii.gz",
    "example_ct": "totalseg_ct_abdomen_3mm/example_ct.nii.gz",
}
IMAGES = [*SHARED, "synthetic"]
SETTINGS = {"default": False, "fast": True}


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


class WindowCounter:
    """Forward hooks on a network: windows it was given (batch sizes summed), calls and seconds spent in it."""

    def __init__(self, network) -> None:
        self.windows, self.seconds, self.begin = 0, 0.0, 0.0
        network.register_forward_pre_hook(self.before)
        network.register_forward_hook(self.after)

    def before(self, _module, inputs) -> None:
        self.windows += inputs[0].shape[0]
        self.begin = time.perf_counter()

    def after(self, _module, _inputs, _output) -> None:
        self.seconds += time.perf_counter() - self.begin


def one_window_s(network, in_channels: int, inferer, repeats: int = 1) -> float:
    """Seconds per window of the fastest of ``repeats`` calls of the bundle's ``inferer`` on ``sw_batch_size`` windows
    of its ``roi_size`` (one window each: the network at the inferer's precision and layout), no gradients."""
    import torch

    x = torch.zeros(inferer.sw_batch_size, in_channels, *inferer.roi_size)
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            begin = time.perf_counter()
            inferer(x, network)
            times.append(time.perf_counter() - begin)
    return min(times) / inferer.sw_batch_size


def measure_bundle(bundle: str, image: str, fast: bool, output_dir: str) -> dict:
    """One ``monai.bundle run`` of ``inference.json`` in this process, then one window's forward time."""
    from monai.bundle import create_workflow

    configs = Path(bundle) / "configs"
    begin = time.perf_counter()
    workflow = create_workflow(
        config_file=str(configs / "inference.json"),
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        bundle_root=bundle,
        datalist=[image],
        output_dir=output_dir,
        fast=fast,
        num_workers=0,
    )
    network = workflow.parser.get_parsed_content("network")
    counter = WindowCounter(network)
    workflow.run()
    workflow.finalize()
    seconds = time.perf_counter() - begin
    peak = peak_rss_gb()
    inferer = workflow.parser.get_parsed_content("inferer")
    windows, network_s = counter.windows, counter.seconds
    measure_begin = time.perf_counter()
    window_s = one_window_s(network, workflow.parser.get_parsed_content("network_def#in_channels"), inferer)
    return {
        "seconds": seconds,
        "peak_gb": peak,
        "windows": windows,
        "network_s": network_s,
        "window_s": window_s,
        "measure_s": time.perf_counter() - measure_begin,
        "roi": list(inferer.roi_size),
        "overlap": inferer.overlap,
        "written": len(list(Path(output_dir).rglob("*_seg.*"))),
    }


def run_bundle_child(bundle: Path, image: Path, fast: bool, scratch: Path) -> dict:
    """``measure_bundle`` in a fresh process (``--measure``); its JSON result plus the process's wall seconds."""
    output_dir = scratch / f"pred_{image.stem}_{fast}"
    command = [sys.executable, __file__, "--measure", str(bundle), str(image), str(fast), str(output_dir)]
    begin = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    wall = time.perf_counter() - begin
    shutil.rmtree(output_dir, ignore_errors=True)
    if done.returncode != 0:
        return {"error": " ".join(done.stderr.strip().splitlines()[-2:])[:300]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "process_s": wall - result["measure_s"]}  # the floor's own measurement left out


def group_pids(pgid: int):
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.getpgid(int(entry.name)) == pgid:
                pids.append(int(entry.name))
        except (ProcessLookupError, PermissionError):
            pass
    return pids


def reset_peaks(pids) -> None:
    """Resets each process's peak RSS (``VmHWM``) to its current RSS (``clear_refs`` 5, Linux)."""
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            pass


def peak_gb(pids) -> float:
    """The largest ``VmHWM`` of ``pids`` (GB): the inference runs in one of the server's processes."""
    peaks = [0]
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        peaks += [int(line.split()[1]) * 1024 / 1e9 for line in lines if line.startswith("VmHWM:")]
    return max(peaks)


def count_windows(bundle: Path, image: Path, fast: bool) -> int:
    """Windows the bundle's sliding window runs on ``image`` (its preprocessing, a network that only counts)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.update({"bundle_root": str(bundle), "fast": fast, "inferer#progress": False})
    data = parser.get_parsed_content("preprocessing")({"image": str(image)})
    seen = []
    parser.get_parsed_content("inferer")(data["image"][None], lambda x: seen.append(x.shape[0]) or x)
    return sum(seen)


def parent_window_s(bundle: Path) -> float:
    """One window's forward time (at the bundle's ``sw_batch_size``) of the bundle's network, in this process."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.update({"bundle_root": str(bundle), "device": "$torch.device('cpu')"})
    network = parser.get_parsed_content("network").eval()
    inferer = parser.get_parsed_content("inferer")
    return one_window_s(network, parser["network_def"]["in_channels"], inferer)


def floor_rows(bundle: Path, images: dict, settings, window_s: float) -> list:
    """Windows counted on each image and the floor they imply (``window_s`` each); nothing is run."""
    return [
        (
            "floor only",
            name,
            setting,
            {"windows": count_windows(bundle, image, SETTINGS[setting]), "window_s": window_s},
        )
        for name, image in images.items()
        for setting in settings
    ]


def server_rows(bundle_dir: Path, images: dict, settings, scratch: Path, start_timeout_s: float) -> list:
    """One ``/infer`` request per image and setting through the app's server (windows and window time added later)."""
    from monailabel.client import MONAILabelClient

    studies = scratch / "studies"
    studies.mkdir()
    for name, path in images.items():
        os.symlink(path, studies / (name + "".join(Path(path).suffixes)))
    conf = {"models": MODEL, "bundles_dir": str(bundle_dir), "device": "cpu"}
    server = Server(copy_app(REPO_ROOT, scratch / "app"), studies, conf, scratch)
    rows = []
    try:
        server.wait_until_up(start_timeout_s)
        client = MONAILabelClient(server.url, tmpdir=str(scratch / "client"))
        for name in images:
            for setting in settings:
                pids = group_pids(server.process.pid)
                reset_peaks(pids)
                begin = time.perf_counter()
                try:
                    _, params = client.infer(MODEL, name, {"fast": SETTINGS[setting]})
                    row = {
                        "seconds": time.perf_counter() - begin,
                        "peak_gb": peak_gb(pids),
                        "server_s": params["latencies"].get("total"),
                        "network_s": params["latencies"].get("infer"),
                    }
                except Exception as error:  # a refused or failed request is a result too
                    row = {"error": f"{type(error).__name__}: {error}"[:300]}
                rows.append(("server", name, setting, row))
                print(rows[-1], flush=True)
    finally:
        server.stop()
    for _, name, setting, row in rows:
        if "error" not in row:
            row["windows"] = count_windows(bundle_dir / MODEL, images[name], SETTINGS[setting])
    return rows


def table(rows, images: dict, overrides: dict, command: str, load_start: str) -> str:
    import nibabel as nib

    lines = [
        "# Whole-volume inference: seconds, peak memory and the compute floor (cpu)",
        "",
        f"Made by `{command}`. `{MODEL}` inference.json "
        + (f"with overrides `{json.dumps(overrides)}`" if overrides else "as rendered (full-size network, 96³ windows)")
        + ", random weights. `default`: overlap 0.5; `fast`: `--fast true` (overlap 0.25). `bundle`: `monai.bundle` "
        "workflow in a fresh process (`seconds`: create, run, finalize: loading the network, preprocessing, sliding "
        "window, output stage, writing; `process` adds Python's and MONAI's imports), `num_workers` 0; `server`: "
        "`MONAILabelClient.infer` wall time (the server's own total beside it). `floor` = windows × one window's "
        "forward through the bundle's inferer (its precision and layout) at its batch size (`bundle`: measured in the "
        "same process after the run; `bundle, NCDHW`: the network in NCDHW (`--ncdhw`); `server` and "
        "`floor only`: the fastest `bundle` row of this run, else measured in this process, or `--window-s`). "
        "`network` = seconds "
        "inside the network during the run (server: its `infer` latency, the whole sliding window). "
        "`floor only`: windows "
        "counted on the preprocessed image, not run (a lower bound of any run's time). "
        "The machine is shared: times are perturbed (load below), memory is not.",
        "",
        "Images: "
        + "; ".join(
            f"`{n}` {'x'.join(map(str, nib.load(str(p)).shape))} at "
            f"{'x'.join(f'{z:g}' for z in nib.load(str(p)).header.get_zooms())} mm"
            for n, p in images.items()
        ),
        "",
        "| path | image | setting | windows | one window (s) | floor (s) | network (s) | seconds | ratio to floor "
        "| process / server total (s) | peak memory (GB) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for path, name, setting, r in rows:
        if "error" in r:
            lines.append(f"| {path} | {name} | {setting} | failed: {r['error']} | | | | | | | |")
            continue
        floor = r["windows"] * r["window_s"]
        if "seconds" not in r:
            lines.append(
                f"| {path} | {name} | {setting} | {r['windows']} | {r['window_s']:.2f} | {floor:.1f} "
                "| not run | | | | |"
            )
            continue
        other = r.get("process_s", r.get("server_s"))
        lines.append(
            f"| {path} | {name} | {setting} | {r['windows']} | {r['window_s']:.2f} | {floor:.1f} | "
            f"{r['network_s']:.1f} | {r['seconds']:.1f} | **{r['seconds'] / floor:.2f}×** | "
            f"{other if other is None else f'{float(other):.1f}'} | {r['peak_gb']:.2f} |"
        )
    lines += machine_lines(f"* uptime load average at start: {load_start}")
    return "\n".join(lines) + "\n"


def run(args) -> str:
    load_start = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    overrides = parse_overrides(args.override)
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as folder:
        scratch = Path(folder)
        bundle = copy_bundle(MODEL, scratch / "bundles")
        if overrides:
            write_overrides(bundle / "configs" / "inference.json", overrides)
            write_overrides(
                bundle / "configs" / "train.json", {k: v for k, v in overrides.items() if k.startswith("network_def#")}
            )
        if args.weights:
            (bundle / "models").mkdir(exist_ok=True)
            shutil.copy(args.weights, bundle / "models" / "model.pt")
        else:
            save_random_weights(bundle, seed=0)
        wanted = set(args.images) | set(args.floor_only) | set(args.server_images or [])
        images = {name: shared_data_dir() / SHARED[name] for name in SHARED if name in wanted}
        if "synthetic" in wanted:
            images["synthetic"] = synthetic_ct(
                scratch / "synthetic_ct.nii", tuple(args.synthetic_shape), args.synthetic_spacing
            )
        bundles = {"bundle": bundle}
        if args.ncdhw:  # the same bundle and weights with the network in NCDHW (before issue 29), rows side by side
            bundles["bundle, NCDHW"] = shutil.copytree(bundle, scratch / "ncdhw" / MODEL)
            write_overrides(
                bundles["bundle, NCDHW"] / "configs" / "inference.json", {"inferer#cpu_channels_last": False}
            )
        rows = []
        if "bundle" in args.paths:
            for name, image in ((n, images[n]) for n in args.images):
                for setting in args.settings:
                    for path, copy in reversed(bundles.items()):
                        rows.append((path, name, setting, run_bundle_child(copy, image, SETTINGS[setting], scratch)))
                        print(rows[-1], flush=True)
        if "server" in args.paths:
            served = {n: images[n] for n in (args.images if args.server_images is None else args.server_images)}
            (scratch / "server").mkdir()
            rows += server_rows(
                scratch / "bundles",
                served,
                args.server_settings or args.settings,
                scratch / "server",
                args.start_timeout_s,
            )
        floor_only = {n: images[n] for n in args.floor_only}
        if any(path == "server" for path, *_ in rows) or floor_only:
            measured = [r["window_s"] for path, *_, r in rows if path == "bundle" and "window_s" in r]  # not NCDHW
            window_s = args.window_s or (min(measured) if measured else parent_window_s(bundle))
            for path, _, _, row in rows:
                if path == "server" and "error" not in row:
                    row["window_s"] = window_s
            rows += floor_rows(bundle, floor_only, list(SETTINGS), window_s)  # counting is cheap: both settings
        command = "python benchmarks/bench_inference.py " + " ".join(sys.argv[1:])
        return table(rows, images, overrides, command.strip(), load_start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", nargs="+", default=IMAGES, choices=IMAGES)
    parser.add_argument(
        "--server-images", nargs="*", choices=IMAGES, help="images sent to the server (default: --images)"
    )
    parser.add_argument(
        "--floor-only",
        nargs="*",
        default=[],
        choices=IMAGES,
        help="images whose windows are only counted (floor = windows x one window, nothing run)",
    )
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument(
        "--server-settings", nargs="+", choices=list(SETTINGS), help="settings sent to the server (default: --settings)"
    )
    parser.add_argument("--paths", nargs="*", default=["bundle", "server"], choices=["bundle", "server"])
    parser.add_argument("--synthetic-shape", type=int, nargs=3, default=[512, 512, 400])
    parser.add_argument("--synthetic-spacing", type=float, default=0.8)
    parser.add_argument("--override", action="append", default=[], metavar="KEY=JSON", help="inference.json id=value")
    parser.add_argument(
        "--window-s",
        type=float,
        help="one window's seconds for the server and floor-only rows "
        "(default: the fastest of this run's bundle rows, else measured here)",
    )
    parser.add_argument(
        "--ncdhw",
        action="store_true",
        help="bundle rows also with the network in NCDHW (inferer#cpu_channels_last false), each before its default",
    )
    parser.add_argument("--weights", help="a training checkpoint for models/model.pt (default: random weights)")
    parser.add_argument("--start-timeout-s", type=float, default=300)
    parser.add_argument("--output", default=str(REPO_ROOT / "benchmarks" / "results" / "inference_cpu.md"))
    parser.add_argument("--measure", nargs=4, metavar=("BUNDLE", "IMAGE", "FAST", "OUTPUT_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        bundle, image, fast, output_dir = args.measure
        print(json.dumps(measure_bundle(bundle, image, fast == "True", output_dir)))
        return
    report = run(args)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
