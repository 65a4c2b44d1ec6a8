"""Files of the ``convergence`` study: ``convergence.json``, ``convergence.md`` (table + statement) and per-dataset
figures.

The statement of which model wins and whether Table 7's order holds is written from the numbers
(:func:`statement`); :func:`fill_docs` puts the Markdown between :data:`DOCS_BEGIN` and :data:`DOCS_END` of a
document (``docs/reproduction.md``) and copies the figures beside it.
"""

import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from rep3d_networks.analysis.convergence import MODELS, REP3D_VARIANTS
from rep3d_networks.analysis.plots import VARIANT_COLOURS
from rep3d_networks.analysis.reports import markdown_table, mean_std, write_json

DOCS_BEGIN = "<!-- convergence-study:begin (written by python -m rep3d_networks.analysis convergence --docs_file) -->"
DOCS_END = "<!-- convergence-study:end -->"
TABLE7_ORDER = ("lrbm", "fixed", "vanilla")  # Table 7: full LRBM > fixed prior > vanilla at 10k/20k/40k/60k iterations
TABLE7_FRACTIONS = (1 / 6, 1 / 3, 2 / 3, 1.0)
COLOURS = {**VARIANT_COLOURS, "uxnet": "tab:green", "segresnet": "tab:purple", "swinunetr": "tab:brown"}


def reach_point(run: Dict, fraction: float = 0.9) -> Tuple[int, float]:
    """``(iteration, training seconds)`` of the first validation with Dice ≥ ``fraction`` × the run's best."""
    best = max(run["dice"])
    index = next(i for i, d in enumerate(run["dice"]) if d >= fraction * best)
    return run["iterations"][index], run["train_seconds"][index]


def dice_at(run: Dict, iteration: int) -> float:
    """The run's Dice at the last validation ≤ ``iteration`` (a run stopped by the plateau rule keeps its last
    value)."""
    values = [d for i, d in zip(run["iterations"], run["dice"]) if i <= iteration]
    return values[-1] if values else float("nan")


def grouped_runs(records: Sequence[Dict]) -> Dict[str, Dict[str, List[Dict]]]:
    """``{dataset: {model: [runs by seed]}}`` in the order of :data:`MODELS`."""
    grouped: Dict[str, Dict[str, List[Dict]]] = {}
    for record in records:
        grouped.setdefault(record["dataset"], {}).setdefault(record["model"], []).append(record)
    return {
        d: {m: sorted(runs[m], key=lambda r: r["seed"]) for m in MODELS if m in runs} for d, runs in grouped.items()
    }


def model_row(name: str, runs: List[Dict]) -> Dict:
    """Per-model numbers over seeds."""
    reach = [reach_point(r) for r in runs]
    return {
        "model": name,
        "parameters": runs[0]["parameters"],
        "seeds": [r["seed"] for r in runs],
        "final": [r["dice"][-1] for r in runs],
        "best": [max(r["dice"]) for r in runs],
        "iterations_to_90": [p[0] for p in reach],
        "seconds_to_90": [p[1] for p in reach],
        "iterations_run": [r["iterations_run"] for r in runs],
        "train_seconds": [r["train_seconds"][-1] for r in runs],
        "stopped_by_plateau": sum(r["stopped_by"] == "plateau" for r in runs),
    }


def summary(records: Sequence[Dict]) -> Dict[str, List[Dict]]:
    return {
        dataset: [model_row(m, runs) for m, runs in models.items()] for dataset, models in grouped_runs(records).items()
    }


def table(rows: List[Dict]) -> str:
    header = [
        "model",
        "parameters",
        "seeds",
        "final Dice",
        "best Dice",
        "iterations to 90 % of best",
        "seconds to 90 % of best",
        "iterations run",
        "train seconds",
        "stopped by plateau",
    ]
    body = [
        [
            r["model"],
            f"{r['parameters']:,}",
            len(r["seeds"]),
            mean_std(r["final"]),
            mean_std(r["best"]),
            mean_std(r["iterations_to_90"], 0),
            mean_std(r["seconds_to_90"], 0),
            mean_std(r["iterations_run"], 0),
            mean_std(r["train_seconds"], 0),
            f"{r['stopped_by_plateau']}/{len(r['seeds'])}",
        ]
        for r in rows
    ]
    return markdown_table(header, body)


def spread(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def table7_check(models: Dict[str, List[Dict]]) -> Optional[str]:
    """Whether LRBM > fixed > vanilla (mean Dice over seeds) at the first validations at or after 1/6, 1/3, 2/3 and all
    of the shortest of their runs (Table 7's 10k/20k/40k/60k of 60k)."""
    if not all(m in models for m in TABLE7_ORDER):
        return None
    horizon = min(r["iterations_run"] for m in TABLE7_ORDER for r in models[m])
    validated = sorted({i for m in TABLE7_ORDER for r in models[m] for i in r["iterations"] if i <= horizon})
    points = sorted({next(i for i in validated if i >= f * horizon - 1e-9) for f in TABLE7_FRACTIONS})
    means = {m: [float(np.nanmean([dice_at(r, p) for r in models[m]])) for p in points] for m in TABLE7_ORDER}
    holds = [means["lrbm"][i] > means["fixed"][i] > means["vanilla"][i] for i in range(len(points))]
    values = "; ".join(
        f"{p} it: " + " / ".join(f"{means[m][i]:.3f}" for m in TABLE7_ORDER) for i, p in enumerate(points)
    )
    verdict = (
        "holds at every point"
        if all(holds)
        else f"holds at {sum(holds)} of {len(points)} points"
        if any(holds)
        else "does not hold at any point"
    )
    return f"Table 7's order (LRBM > fixed prior > vanilla) {verdict} (mean Dice LRBM / fixed / vanilla at {values})."


def mean_curve(runs: List[Dict]) -> Tuple[List[int], List[float]]:
    """The seed mean of ``runs`` at every validated iteration (a stopped run keeps its last value)."""
    grid = sorted({i for r in runs for i in r["iterations"]})
    return grid, [float(np.nanmean([dice_at(r, i) for r in runs])) for i in grid]


def flattening(winner: str, models: Dict[str, List[Dict]], patience: int, min_delta: float) -> Tuple[str, bool]:
    """How many runs the plateau rule stopped, and whether the winner's seed-mean curve flattened: its gain over its
    last ``patience`` validations is at most ``min_delta`` (the plateau rule's own terms). Returns the text and the
    verdict."""
    runs = [r for model_runs in models.values() for r in model_runs]
    stopped = sum(r["stopped_by"] == "plateau" for r in runs)
    cap = max(r["iterations_run"] for r in runs)
    grid, mean = mean_curve(models[winner])
    lines = [f"{stopped} of {len(runs)} runs stopped by the plateau rule, the others at the cap of {cap} iterations."]
    if len(mean) <= patience:
        return " ".join(
            lines + [f"{winner}'s curve has only {len(mean)} validations: too short to tell whether it flattened."]
        ), False
    gain, before = mean[-1] - mean[-1 - patience], grid[-1 - patience]
    if gain > min_delta:
        lines.append(
            f"{winner}'s mean curve still rose by {gain:.3f} over its last {patience} validations "
            f"({mean[-1 - patience]:.3f} at {before} it → {mean[-1]:.3f} at {grid[-1]} it): it has **not flattened**, "
            f"so its Dice values are those at the cap, not at a plateau."
        )
    else:
        lines.append(
            f"{winner}'s mean curve rose by {gain:.3f} ≤ {min_delta} over its last {patience} validations ({before} → "
            f"{grid[-1]} it): it has flattened."
        )
    return " ".join(lines), gain <= min_delta


def statement(dataset: str, rows: List[Dict], models: Dict[str, List[Dict]], patience: int, min_delta: float) -> str:
    """Which model wins (mean best Dice, with a tie when within the seeds' spread), whether its curve flattened
    (:func:`flattening`) and whether Table 7's order holds."""
    ranked = sorted(rows, key=lambda r: np.mean(r["best"]), reverse=True)
    first = ranked[0]
    ties = [
        r["model"]
        for r in ranked[1:]
        if np.mean(first["best"]) - np.mean(r["best"]) <= max(spread(first["best"]), spread(r["best"]))
    ]
    order = " > ".join(f"{r['model']} {np.mean(r['best']):.3f}" for r in ranked)
    lines = [
        f"**{dataset}**: highest mean best Dice: {first['model']} ({mean_std(first['best'])})"
        + (
            f", within one seed standard deviation of {', '.join(ties)}"
            if ties
            else ", ahead of every other model by more than one seed standard deviation"
        )
        + f". Order by mean best Dice: {order}."
    ]
    text, flat = flattening(first["model"], models, patience, min_delta)
    lines.append(text)
    fastest = min(rows, key=lambda r: np.mean(r["seconds_to_90"]))
    lines.append(
        f"Fastest to 90 % of its own best Dice in training seconds: {fastest['model']} "
        f"({mean_std(fastest['seconds_to_90'], 0)} s)"
        + ("." if flat else " — of a best cut by the cap, so this times the early rise, not convergence.")
    )
    rep3d = [r for r in ranked if r["model"] in REP3D_VARIANTS]
    if len(rep3d) > 1:
        lines.append("Rep3D variants by mean best Dice: " + " > ".join(r["model"] for r in rep3d) + ".")
    check = table7_check(models)
    if check:
        lines.append(check)
    return " ".join(lines)


def plot_dataset(dataset: str, models: Dict[str, List[Dict]], path: Path) -> Path:
    """Dice against iterations (left) and against training seconds (right): one thin line per seed, the seed mean
    bold."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, runs in models.items():
        colour = COLOURS.get(name)
        for run in runs:
            axes[0].plot(run["iterations"], run["dice"], color=colour, alpha=0.3, lw=0.8)
            axes[1].plot(run["train_seconds"], run["dice"], color=colour, alpha=0.3, lw=0.8)
        grid, mean = mean_curve(runs)
        axes[0].plot(grid, mean, color=colour, lw=2, label=f"{name} (n={len(runs)})")
        seconds = np.linspace(0, max(r["train_seconds"][-1] for r in runs), 60)
        mean_s = [
            float(np.nanmean([np.interp(s, r["train_seconds"], r["dice"], left=np.nan) for r in runs])) for s in seconds
        ]
        axes[1].plot(seconds, mean_s, color=colour, lw=2, label=name)
    axes[0].set_xlabel("iteration")
    axes[1].set_xlabel("training seconds (validation excluded)")
    for ax in axes:
        ax.set_ylabel("validation Dice (mean over organs)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(
        f"convergence study, {dataset} (thin: seeds; bold: mean, a stopped run keeps its last value)", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def study_markdown(results: Dict, figure_names: Dict[str, str]) -> str:
    """Settings, per-dataset tables, figures and the generated statements."""
    s = results["settings"]
    lines = [
        f"Settings: models {', '.join(s['models'])}; seeds {', '.join(str(x) for x in s['seeds'])}; width "
        f"{s['width']}; patch {'×'.join(str(c) for c in s['roi_size'])}; AdamW lr {s['learning_rate']:g} (the bundle's "
        f"weight decay, DiceCELoss, ReduceLROnPlateau); validation every {s['val_interval']} iterations "
        f"(sliding-window overlap {s['val_overlap']}); plateau rule: stop after {s['patience']} validations without a "
        f"gain > {s['min_delta']} once a validation reached Dice {s['plateau_floor']}, at most {s['max_iterations']} "
        f"iterations. {results['machine']}.",
        "",
    ]
    for dataset, rows in results["summary"].items():
        data = results["data"][dataset]
        lines += [
            f"#### {dataset}",
            "",
            f"Training cases {', '.join(data['training'])}; validation (curves) {', '.join(data['validation'])}. "
            f"Recipe: {data['recipe']}.",
            "",
            table(rows),
            "",
            f"![Dice against iterations and seconds, {dataset}]({figure_names[dataset]})",
            "",
            results["statements"][dataset],
            "",
        ]
    return "\n".join(lines)


def write_study_report(results: Dict, output_dir: Path) -> Dict[str, Path]:
    """``convergence.json``, ``convergence.md`` and ``convergence_<dataset>.png`` under ``output_dir``."""
    grouped = grouped_runs(results["runs"])
    results["summary"] = summary(results["runs"])
    s = results["settings"]
    results["statements"] = {
        d: statement(d, results["summary"][d], grouped[d], s["patience"], s["min_delta"]) for d in grouped
    }
    paths = {f"png_{d}": plot_dataset(d, grouped[d], output_dir / f"convergence_{d}.png") for d in grouped}
    markdown = output_dir / "convergence.md"
    markdown.write_text(
        "# Convergence study\n\n" + study_markdown(results, {d: f"convergence_{d}.png" for d in grouped})
    )
    return {"json": write_json(output_dir / "convergence.json", results), "markdown": markdown, **paths}


def fill_docs(results: Dict, paths: Dict[str, Path], docs_file: Path) -> Path:
    """Replace the block between :data:`DOCS_BEGIN` and :data:`DOCS_END` of ``docs_file``; figures go to ``figures/``.

    Raises:
        ValueError: If ``docs_file`` lacks the markers.
    """
    text = docs_file.read_text()
    if text.count(DOCS_BEGIN) != 1 or text.count(DOCS_END) != 1 or text.index(DOCS_BEGIN) > text.index(DOCS_END):
        raise ValueError(f"{docs_file}: needs one line {DOCS_BEGIN!r} followed by one line {DOCS_END!r}")
    figures = docs_file.parent / "figures"
    figures.mkdir(exist_ok=True)
    names = {}
    for dataset in results["summary"]:
        source = paths[f"png_{dataset}"]
        shutil.copyfile(source, figures / source.name)
        names[dataset] = f"figures/{source.name}"
    head, rest = text.split(DOCS_BEGIN)
    tail = rest.split(DOCS_END)[1]
    docs_file.write_text(f"{head}{DOCS_BEGIN}\n{study_markdown(results, names)}{DOCS_END}{tail}")
    return docs_file


def plan_markdown(plan: Dict, timing_note: str) -> str:
    """The time plan table: runs × iterations × s/it (+ validations) per dataset and model."""
    header = ["dataset", "model", "runs", "iterations (cap)", "s/it", "validations", "s/validation", "hours (cap)"]
    rows = [[d, m, n, it, f"{spi:.3f}", v, f"{spv:.1f}", f"{h:.2f}"] for d, m, n, it, spi, v, spv, h in plan["rows"]]
    hours = plan["hours"]
    return (
        f"{markdown_table(header, rows)}\n\nSum {plan['worker_hours']:.2f} process-hours; with {plan['workers']} "
        f"process(es) in parallel about **{hours:.2f} h ({hours * 60:.0f} min)** if every run reaches the cap "
        f"(runs stopped by the plateau rule take less). {timing_note}\n"
    )
