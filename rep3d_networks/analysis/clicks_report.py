"""The ``clicks`` command's summary, checks and report: mean Dice against clicks, NoC, seconds per click, flags."""

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from rep3d_networks.analysis.clicks import clicks_to_reach
from rep3d_networks.analysis.plots import plot_click_curves
from rep3d_networks.analysis.reports import markdown_table, write_json

REPORTED_CLICKS = (0, 1, 2, 3, 5, 10)
THRESHOLDS = (0.80, 0.85, 0.90)
FLAT_MARGIN = 0.01
"""A click-taking model whose mean Dice rises less than this from 0 to ``max_clicks`` clicks is flagged flat."""
FALL_TOLERANCE = 1e-6
"""A step of the mean curve that drops by more than this (rounding only) is flagged."""
SYSTEMATIC_SE = 2.0
"""A fall of the mean curve larger than this many standard errors of the paired change is called systematic."""


def reported_clicks(max_clicks: int) -> List[int]:
    """The click counts of the tables: :data:`REPORTED_CLICKS` up to ``max_clicks``, and ``max_clicks`` itself."""
    return sorted({k for k in REPORTED_CLICKS if k <= max_clicks} | {max_clicks})


def mean_curve(records: Sequence[dict]) -> List[float]:
    return np.mean([r["dice"] for r in records], axis=0).tolist()


def number_of_clicks(records: Sequence[dict], max_clicks: int) -> Dict[str, dict]:
    """Per threshold: mean clicks to reach it (``max_clicks`` where not reached, as NoC is usually counted) and the
    share of (image, organ) pairs that never reach it."""
    result = {}
    for threshold in THRESHOLDS:
        reached = [clicks_to_reach(r["dice"], threshold) for r in records]
        result[f"{threshold:.2f}"] = {
            "mean": float(np.mean([max_clicks if k is None else k for k in reached])),
            "not_reached": float(np.mean([k is None for k in reached])),
        }
    return result


def seconds(records: Sequence[dict]) -> Dict[str, Optional[float]]:
    """Mean client wall time of the first call (no clicks) and of the calls with clicks, and the server's totals."""
    calls = [c for r in records for c in r["calls"]]

    def mean(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    return {
        "no_clicks_client_s": mean(c["client_s"] for c in calls if c["clicks"] == 0),
        "per_click_client_s": mean(c["client_s"] for c in calls if c["clicks"] > 0),
        "per_click_server_s": mean(c["server_s"] for c in calls if c["clicks"] > 0),
        "calls": len(calls),
    }


def step_changes(dice: Sequence[Sequence[float]]) -> List[dict]:
    """Per added click ``k`` (1..max): the paired change of Dice over the (image, organ) pairs, ``mean`` and its
    standard error ``se`` (0 for a single pair), and how many pairs ``fell``, ``rose`` or stayed (``unchanged``)."""
    steps = np.diff(np.asarray(dice, dtype=float), axis=1)
    result = []
    for k in range(steps.shape[1]):
        change = steps[:, k]
        se = float(change.std(ddof=1) / np.sqrt(len(change))) if len(change) > 1 else 0.0
        result.append(
            {
                "click": k + 1,
                "mean": float(change.mean()),
                "se": se,
                "fell": int(np.sum(change < -FALL_TOLERANCE)),
                "rose": int(np.sum(change > FALL_TOLERANCE)),
                "unchanged": int(np.sum(np.abs(change) <= FALL_TOLERANCE)),
            }
        )
    return result


def curve_checks(dice: Dict[str, Sequence[Sequence[float]]], takes_clicks: Dict[str, bool]) -> Dict[str, dict]:
    """Per model, from its Dice per (image, organ) pair and click: ``flat`` (a click-taking model whose mean curve
    rises less than :data:`FLAT_MARGIN` from no click to the last; ``None`` for models that take no clicks),
    ``falls`` (each step whose mean drops, with its :func:`step_changes` entry and ``systematic``: the drop is more
    than :data:`SYSTEMATIC_SE` standard errors, not a few pairs made worse while others gained) and the messages."""
    checks = {}
    for model, pairs in dice.items():
        curve = np.mean(np.asarray(pairs, dtype=float), axis=0)
        rise = float(curve[-1] - curve[0])
        flat = rise < FLAT_MARGIN if takes_clicks[model] else None
        falls = [
            {
                **step,
                "from": float(curve[step["click"] - 1]),
                "to": float(curve[step["click"]]),
                "systematic": step["mean"] < -SYSTEMATIC_SE * step["se"],
            }
            for step in step_changes(pairs)
            if curve[step["click"]] < curve[step["click"] - 1] - FALL_TOLERANCE
        ]
        messages = []
        if flat:
            messages.append(
                f"{model}: clicks have no effect: mean Dice {curve[0]:.3f} with no click, {curve[-1]:.3f} after "
                f"{len(curve) - 1} (rise {rise:+.3f} < {FLAT_MARGIN})"
            )
        messages += [
            f"{model}: mean Dice falls at click {f['click']}: {f['from']:.3f} -> {f['to']:.3f} ({f['fell']} of "
            f"{len(pairs)} pairs fell, {f['rose']} rose; change {f['mean']:+.4f} ± {f['se']:.4f} SE: "
            + ("a systematic fall)" if f["systematic"] else f"within {SYSTEMATIC_SE:g} SE of no change)")
            for f in falls
        ]
        checks[model] = {"flat": flat, "rise": rise, "falls": falls, "flags": messages}
    return checks


def summarize(results: dict) -> dict:
    """Per model: mean curve over all (image, organ) pairs, per organ, NoC, seconds; then :func:`curve_checks`."""
    max_clicks = results["max_clicks"]
    models = {}
    for model in results["models"]:
        records = [r for r in results["records"] if r["model"] == model]
        if not records:
            continue
        organs = list(dict.fromkeys(r["organ"] for r in records))
        by_organ = {o: [r for r in records if r["organ"] == o] for o in organs}
        models[model] = {
            "pairs": len(records),
            "curve": mean_curve(records),
            "noc": number_of_clicks(records, max_clicks),
            "seconds": seconds(records),
            "organs": {
                o: {"pairs": len(rs), "curve": mean_curve(rs), "noc": number_of_clicks(rs, max_clicks)}
                for o, rs in by_organ.items()
            },
        }
    takes_clicks = {m: results["models"][m]["takes_clicks"] for m in models}
    dice = {m: [r["dice"] for r in results["records"] if r["model"] == m] for m in models}
    for model in models:
        models[model]["steps"] = step_changes(dice[model]) if takes_clicks[model] else None
    return {"models": models, "curve_checks": curve_checks(dice, takes_clicks)}


def number(value: Optional[float], digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def summary_rows(name: str, entry: dict, columns: Sequence[int]) -> List[str]:
    noc = [
        f"{entry['noc'][f'{t:.2f}']['mean']:.1f} ({100 * entry['noc'][f'{t:.2f}']['not_reached']:.0f} %)"
        for t in THRESHOLDS
    ]
    return [name, str(entry["pairs"]), *(f"{entry['curve'][k]:.3f}" for k in columns), *noc]


def step_table(summary: dict) -> str:
    """:func:`step_changes` of the click-taking models as a table, one column per added click."""
    steps = {model: entry["steps"] for model, entry in summary["models"].items() if entry["steps"]}
    if not steps:
        return "(no click-taking model)"
    clicks = [step["click"] for step in next(iter(steps.values()))]
    return markdown_table(
        ["model", *(f"click {k}" for k in clicks)],
        [
            [model, *(f"{s['mean']:+.4f} ± {s['se']:.4f} ({s['fell']}↓ {s['rose']}↑ {s['unchanged']}=)" for s in rows)]
            for model, rows in steps.items()
        ],
    )


def report_markdown(results: dict, summary: dict, figure: str) -> str:
    max_clicks = results["max_clicks"]
    columns = reported_clicks(max_clicks)
    header = ["", "pairs", *(f"Dice @{k}" for k in columns), *(f"NoC@{round(100 * t)} (never)" for t in THRESHOLDS)]
    flags = [m for c in summary["curve_checks"].values() for m in c["flags"]]
    lines = [
        "# Dice against clicks (simulated annotator through the MONAI Label server)",
        "",
        f"Server {results['server_url']}, references {results['references']}, up to {max_clicks} clicks per (image, "
        f"organ); images: {', '.join(sorted({r['image'] for r in results['records']}))}.",
        "",
        "Round 0 is the answer to a request without clicks; each further round adds one click at the voxel deepest "
        "inside the largest connected error region (missed organ → a click on the organ, false organ → a click on "
        "`background`; distance in mm from the image's affine, the image's outside counting as outside the region) and "
        "sends all clicks so far, as 3D Slicer does. Where no error is left the Dice is carried without asking again. "
        "Models that take no clicks (type other than `deepedit`) are asked once per (image, organ), without clicks, "
        "and that Dice is carried: the control. NoC@x: mean clicks to reach Dice x ("
        f"{max_clicks} where never reached); (never): share of pairs that never reach it.",
        "",
        "## Curve checks",
        "",
        *(
            [f"- **FLAG** {m}" for m in flags]
            or ["- no flags: every click-taking model's mean curve rises and never falls"]
        ),
        "",
        "## All organs",
        "",
        markdown_table(
            header,
            [summary_rows(f"{m} ({results['models'][m]['type']})", s, columns) for m, s in summary["models"].items()],
        ),
        "",
        markdown_table(
            ["", "calls", "s without clicks (client)", "s per click (client)", "s per click (server total)"],
            [
                [
                    m,
                    str(t["calls"]),
                    number(t["no_clicks_client_s"]),
                    number(t["per_click_client_s"]),
                    number(t["per_click_server_s"]),
                ]
                for m, t in ((m, s["seconds"]) for m, s in summary["models"].items())
            ],
        ),
        "",
        f"![mean Dice against clicks]({figure})",
        "",
        "## What each added click does",
        "",
        "Paired over the (image, organ) pairs: the mean change of Dice when click k is added, its standard error, and "
        "how many pairs fell, rose or did not change (a click that changes nothing leaves the error, and the next "
        "click, "
        f"where they were). A fall of the mean beyond {SYSTEMATIC_SE:g} SE is systematic; a smaller one is a few pairs "
        "made worse while others gained.",
        "",
        step_table(summary),
    ]
    for model, entry in summary["models"].items():
        lines += [
            "",
            f"## {model}: per organ",
            "",
            markdown_table(header, [summary_rows(o, e, columns) for o, e in entry["organs"].items()]),
        ]
    if results["absent_from_reference"]:
        lines += [
            "",
            "Organs asked for but absent from a reference (not measured there): "
            + "; ".join(f"{pair}: {', '.join(names)}" for pair, names in results["absent_from_reference"].items()),
        ]
    return "\n".join(lines) + "\n"


def write_clicks_report(results: dict, out: Path) -> Tuple[dict, Dict[str, Path]]:
    """Writes clicks.json (settings, every record, the summary), clicks.md and clicks.png into ``out``; returns the
    summary and the paths."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(results)
    figure = plot_click_curves({m: s["curve"] for m, s in summary["models"].items()}, out / "clicks.png")
    (out / "clicks.md").write_text(report_markdown(results, summary, figure.name))
    data = write_json(out / "clicks.json", {**results, "summary": summary})
    return summary, {"markdown": out / "clicks.md", "json": data, "figure": figure}
