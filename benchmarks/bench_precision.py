"""Accuracy cost of an inference setting: per-organ Dice of two settings on labelled cases (not a test).

Runs a trained bundle's ``configs/inference.json`` (preprocessing, sliding window, output stage without
``SaveImaged``: the labels the bundle writes, on each input's grid) on the cases of a datalist twice and compares both
with the reference labels: per-organ Dice of each, the Dice change per organ, and the fraction of voxels whose label
changes. ``--compare precision`` (default) runs ``precision`` float32 and bfloat16 (``rep3d_networks.inferers``),
``--compare fast`` the bundle's default and its ``fast`` preset (sliding-window overlap at most 0.25), ``--compare
layout`` the network in NCDHW and channels-last on a CPU (``inferer#cpu_channels_last``), both at the bundle's own
precision. Organs absent from a case's reference are left out of that case's Dice (as MONAI's
``DiceMetric(ignore_empty=True)``). Writes Markdown::

    # the quickstart's phantom model (its inference.json lacks the training overrides: give them)
    python benchmarks/bench_precision.py --bundle quickstart_output/bundle \\
        --dataset_dir quickstart_output/data/amos22 --set network_def#feature_size=8 --set network_def#hidden_size=32 \\
        --set "inferer#roi_size=[32,32,32]"
    # the small real-CT model (its inference.json already holds the overrides), on every slab: two settings of one
    # model are compared (the Dice levels of the training slabs themselves are optimistic)
    python benchmarks/bench_precision.py --bundle real_ct_output/bundles/amos_ct \\
        --dataset_dir real_ct_output/data/amos22 --splits training,validation,test
    # the fast preset instead of bfloat16
    python benchmarks/bench_precision.py --compare fast --bundle real_ct_output/bundles/amos_ct ...

``--datalist`` defaults to the bundle's ``configs/datalist_fold0.json`` and ``--splits`` to ``test``. A bundle whose
``inference.json`` predates the ``precision`` option (its inferer a plain ``SlidingWindowInferer``) works too: the
inferer is swapped for ``PrecisionSlidingWindowInferer`` with the same settings.
"""

import argparse
import copy
import datetime
import hashlib
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

COMPARISONS = {  # the two settings of each comparison: (name, inference.json overrides), the reference first
    "precision": (("float32", {"inferer#precision": "float32"}), ("bfloat16", {"inferer#precision": "bfloat16"})),
    "fast": (("default", {"fast": False}), ("fast", {"fast": True})),
    "layout": (
        ("NCDHW", {"inferer#cpu_channels_last": False}),
        ("channels-last", {"inferer#cpu_channels_last": True}),
    ),
}
INFERER = "rep3d_networks.inferers.PrecisionSlidingWindowInferer"
DICE_LIMIT = 0.005  # issues 18 and 29: bfloat16 / channels-last stay only if no organ's Dice changes by more
GUARDED = {"bfloat16": "issue 18", "channels-last": "issue 29"}  # the settings the limit is checked for


def parse_override(text: str):
    """``KEY=VALUE`` with VALUE read as JSON when it parses (numbers, lists, true/false), else as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set expects KEY=VALUE (e.g. network_def#feature_size=8), got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def cpu_flags() -> Dict[str, bool]:
    """The CPU's bfloat16-related flags from ``/proc/cpuinfo`` (empty where there is none)."""
    path = Path("/proc/cpuinfo")
    flags = set(path.read_text().split()) if path.is_file() else set()
    return {flag: flag in flags for flag in ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16")}


def machine_info(threads: int) -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor(),
    )
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in cpu_flags().items())
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (
        f"{cpu} ({flags}); torch {torch.__version__}; {threads} thread(s); {datetime.date.today()}; "
        f"load average at start {load}"
    )


def load_parser(bundle: Path, overrides: Dict[str, object]):
    """The bundle's ``inference.json`` on the CPU with ``overrides``, its inferer a
    ``PrecisionSlidingWindowInferer``."""
    from monai.bundle import ConfigParser

    config = bundle / "configs" / "inference.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config} not found: --bundle must be a bundle folder (with configs/inference.json)")
    parser = ConfigParser()
    parser.read_config(str(config))
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    parser.update(
        {
            "bundle_root": str(bundle),
            "device": "$torch.device('cpu')",
            "output_dir": "unused",
            "inferer#progress": False,
            **overrides,
        }
    )
    if parser["inferer"]["_target_"] in ("SlidingWindowInferer", "monai.inferers.SlidingWindowInferer"):
        parser["inferer#_target_"] = INFERER  # a bundle rendered before the precision option
    if parser["inferer"]["_target_"] != INFERER:
        raise ValueError(f"{config}: inferer is {parser['inferer']['_target_']}, expected a sliding-window inferer")
    return parser


def load_network(parser, checkpoint: Path) -> torch.nn.Module:
    """The bundle's (folded) network with ``checkpoint`` loaded strictly, as the bundle's ``CheckpointLoader`` does."""
    if not checkpoint.is_file():
        raise FileNotFoundError(
            f"{checkpoint} not found: the bundle has no trained weights (train it, or give --checkpoint)"
        )
    state = torch.load(str(checkpoint), map_location="cpu")
    network = parser.get_parsed_content("network_def", instantiate=True)
    network.load_state_dict(state.get("model", state) if isinstance(state, dict) else state, strict=True)
    return network.eval()


def class_names(bundle: Path) -> List[str]:
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    channels = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
    return [channels[str(c)] for c in range(len(channels))]


def dice_per_class(pred: np.ndarray, reference: np.ndarray, num_classes: int) -> np.ndarray:
    """Dice of classes 1..num_classes-1; NaN where the reference lacks the class."""
    dice = np.full(num_classes - 1, np.nan)
    for c in range(1, num_classes):
        p, g = pred == c, reference == c
        if g.any():
            dice[c - 1] = 2.0 * np.logical_and(p, g).sum() / (p.sum() + g.sum())
    return dice


def label_stage(parser):
    """The bundle's output stage without ``SaveImaged``: ``(preprocessed data, network output) -> labels`` on the
    input's grid."""
    from monai.transforms import Compose

    stage = Compose(
        [t for t in parser.get_parsed_content("postprocessing").transforms if type(t).__name__ != "SaveImaged"]
    )

    def labels(data: dict, pred: torch.Tensor) -> np.ndarray:
        out = stage({**copy.deepcopy({k: v for k, v in data.items() if k != "pred"}), "pred": pred})
        return np.asarray(out["pred"])[0].astype(np.int64)

    return labels


def reference_labels(path: str, shape: tuple) -> np.ndarray:
    """The reference label file as int64.

    Raises:
        ValueError: If its shape is not the prediction's ``shape``.
    """
    from monai.transforms import LoadImage

    reference = np.asarray(LoadImage(image_only=True)(path)).astype(np.int64)
    if reference.shape != shape:
        raise ValueError(f"{path}: shape {reference.shape} differs from the prediction's {shape}")
    return reference


def run_cases(parser, network, cases: List[dict], num_classes: int, settings) -> dict:
    """Per case: Dice of each of the two ``settings`` (see :data:`COMPARISONS`), changed voxels, inference seconds."""
    preprocessing = parser.get_parsed_content("preprocessing")
    to_labels = label_stage(parser)
    inferers = {}
    for name, overrides in settings:
        parser.update(overrides)
        inferers[name] = parser.get_parsed_content("inferer", instantiate=True, lazy=False)
    names = [name for name, _ in settings]
    results = {
        "dice": {p: [] for p in names},
        "seconds": {p: 0.0 for p in names},
        "changed": 0,
        "voxels": 0,
        "changed_foreground": 0,
        "foreground": 0,
    }
    for case in cases:
        data = preprocessing({"image": case["image"]})
        labels = {}
        for name in names:
            start = time.perf_counter()
            with torch.no_grad():
                pred = inferers[name](data["image"][None], network)[0]
            results["seconds"][name] += time.perf_counter() - start
            labels[name] = to_labels(data, pred)
        reference = reference_labels(case["label"], labels[names[0]].shape)  # both settings label the same grid
        for name in names:
            results["dice"][name].append(dice_per_class(labels[name], reference, num_classes))
        changed = labels[names[0]] != labels[names[1]]
        foreground = (labels[names[0]] > 0) | (labels[names[1]] > 0)
        results["changed"] += int(changed.sum())
        results["voxels"] += changed.size
        results["changed_foreground"] += int((changed & foreground).sum())
        results["foreground"] += int(foreground.sum())
        print(
            f"[bench_precision] {Path(case['image']).name}: {int(changed.sum())} of {changed.size} voxels change label",
            flush=True,
        )
    return results


def report(results: dict, organs: List[str], header: List[str], settings) -> tuple:
    """Markdown lines and the JSON summary; ``settings`` as in :func:`run_cases` (the reference first)."""
    first, second = (name for name, _ in settings)
    dice = {p: np.stack(results["dice"][p]) for p in (first, second)}  # [cases, organs]
    change = dice[second] - dice[first]
    lines = header + [
        "",
        f"| organ | cases | Dice {first} | Dice {second} | Dice change (mean) | largest change in a case |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    worst = (None, 0.0)
    for i, name in enumerate(organs[1:]):
        present = ~np.isnan(dice[first][:, i])
        if not present.any():
            lines.append(f"| {name} | 0 | | | | |")
            continue
        mean_change = float(change[present, i].mean())
        largest = float(change[present, i][np.argmax(np.abs(change[present, i]))])
        if abs(mean_change) >= abs(worst[1]):
            worst = (name, mean_change)
        lines.append(
            f"| {name} | {int(present.sum())} | {np.nanmean(dice[first][:, i]):.4f} | "
            f"{np.nanmean(dice[second][:, i]):.4f} | {mean_change:+.4f} | {largest:+.4f} |"
        )
    means = {p: float(np.nanmean(np.nanmean(dice[p], axis=0))) for p in (first, second)}
    lines.append(
        f"| mean of the organs | | {means[first]:.4f} | {means[second]:.4f} | {means[second] - means[first]:+.4f} | |"
    )
    changed = results["changed"] / results["voxels"]
    changed_fg = results["changed_foreground"] / max(1, results["foreground"])
    seconds = results["seconds"]
    lines += [
        "",
        f"- Voxels whose label changes between {first} and {second}: {results['changed']:,} of {results['voxels']:,} "
        f"({100 * changed:.4f} %); of the voxels that either setting labels as an organ: {100 * changed_fg:.4f} %.",
        f"- Largest per-organ Dice change (mean over the cases): {worst[1]:+.4f} ({worst[0]}).",
        f"- Network + sliding window, all cases ({first} first, machine shared): {first} {seconds[first]:.1f} s, "
        f"{second} {seconds[second]:.1f} s ({seconds[first] / seconds[second]:.2f}x).",
    ]
    summary = {
        "max_abs_dice_change": abs(worst[1]),
        "worst_organ": worst[0],
        "changed_voxel_fraction": changed,
        "changed_foreground_fraction": changed_fg,
        "mean_dice": means,
        "seconds": seconds,
    }
    if second in GUARDED:
        summary["criterion_met"] = met = abs(worst[1]) <= DICE_LIMIT
        lines.insert(
            -1,
            f"- Criterion of {GUARDED[second]}, |change| <= {DICE_LIMIT} for every organ: "
            f"{'met' if met else 'NOT met'}.",
        )
    return lines, summary


def case_arguments(description: str) -> argparse.ArgumentParser:
    """The command-line arguments that name a trained bundle, its labelled cases and the inference overrides."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, type=Path, help="trained bundle folder (configs/, models/model.pt)")
    parser.add_argument("--dataset_dir", required=True, type=Path, help="root the datalist's paths are relative to")
    parser.add_argument("--datalist", type=Path, help="default: <bundle>/configs/datalist_fold0.json")
    parser.add_argument("--splits", default="test", help="comma-separated datalist splits (default: test)")
    parser.add_argument("--checkpoint", type=Path, help="default: <bundle>/models/model.pt")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        type=parse_override,
        default=[],
        metavar="KEY=VALUE",
        help="inference.json override, repeatable (e.g. network_def#feature_size=8)",
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    return parser


def main() -> None:
    parser = case_arguments(__doc__)
    parser.add_argument(
        "--compare",
        choices=sorted(COMPARISONS),
        default="precision",
        help="precision: float32 vs bfloat16; fast: the default sliding window vs the fast preset; layout: NCDHW vs "
        "channels-last",
    )
    parser.add_argument("--title", help="name in the heading (default: the bundle path)")
    parser.add_argument(
        "--output", type=Path, help="Markdown file (default: benchmarks/results/<compare>_<bundle folder>.md)"
    )
    args = parser.parse_args()

    from rep3d_networks.data.loading import load_datalist

    torch.set_num_threads(args.threads)
    bundle = args.bundle.resolve()
    datalist = args.datalist or bundle / "configs" / "datalist_fold0.json"
    checkpoint = args.checkpoint or bundle / "models" / "model.pt"
    overrides = dict(args.overrides)
    config = load_parser(bundle, overrides)  # errors (bundle, datalist, weights) before any inference
    cases = [
        case
        for split in args.splits.split(",")
        for case in load_datalist(str(datalist), split.strip(), str(args.dataset_dir))
    ]
    network = load_network(config, checkpoint)
    organs = class_names(bundle)
    settings = COMPARISONS[args.compare]
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:12]
    header = [
        f"# Inference {args.compare}: {settings[0][0]} vs {settings[1][0]} ({args.title or bundle})",
        "",
        f"Command: `python benchmarks/bench_precision.py {shlex.join(sys.argv[1:])}`",
        "",
        f"Checkpoint {checkpoint} (SHA-256 {digest}...); {len(cases)} case(s), splits {args.splits} of {datalist}; "
        f"overrides {overrides or 'none'}; the two settings: {dict(settings)}, otherwise the bundle's"
        f"{'' if args.compare == 'precision' else ' (precision ' + str(config.get('precision', 'float32')) + ')'}. "
        f"Machine: {machine_info(args.threads)}.",
        "Labels are the bundle's output stage on each input's grid, compared with the reference label; "
        "Dice per organ is "
        "the mean over the cases whose reference contains it.",
    ]
    started = time.perf_counter()
    results = run_cases(config, network, cases, len(organs), settings)
    lines, summary = report(results, organs, header, settings)
    lines.append(f"- Whole measurement {time.perf_counter() - started:.0f} s.")
    text = "\n".join(lines) + "\n"
    print(text)
    output = args.output or REPO_ROOT / "benchmarks" / "results" / f"{args.compare}_{bundle.name}.md"
    output.write_text(text)
    print(json.dumps(summary))
    print(f"[bench_precision] written {output}")


if __name__ == "__main__":
    main()
