"""The report of annotation sessions (``session`` and ``session_study`` commands): held-out Dice against submitted
labels per strategy (mean ± sd over seeds), the server's answers during training, per-organ Dice, flags."""

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from rep3d_networks.analysis.plots import plot_session_curves
from rep3d_networks.analysis.reports import markdown_table, write_json
from rep3d_networks.analysis.session import CONTROL


def curve(session: dict) -> Tuple[List[int], List[float]]:
    """(labels a labelling session has submitted by the round, mean held-out Dice) of every round, round 0 first.
    The control (:data:`CONTROL`) submits none: its points are the same rounds."""
    per_round = session["settings"]["labels_per_round"]
    return [r["round"] * per_round for r in session["rounds"]], [r["dice"]["mean"] for r in session["rounds"]]


def seed_name(session: dict) -> str:
    return "-" if session.get("seed") is None else str(session["seed"])


def sd(values: Sequence[float]) -> Optional[float]:
    """Sample standard deviation (``None`` for fewer than two values)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def median(values: Sequence[float]) -> Optional[float]:
    return float(np.median(values)) if len(values) else None


def server_during_training(sessions: Sequence[dict]) -> List[dict]:
    """Per round (1..): training seconds (client wall, mean and sd over sessions), ``/infer`` probes asked and
    answered while the training ran, their median seconds, and the median seconds of the Dice measurement's
    ``/infer`` calls after it (no training running) for comparison."""
    rows = []
    for index in range(1, len(sessions[0]["rounds"])):
        rounds = [s["rounds"][index] for s in sessions]
        probes = [p for r in rounds for p in r["train"]["probes"]]
        train_s = [r["train"]["client_s"] for r in rounds]
        rows.append(
            {
                "round": index,
                "labels": rounds[0]["labels"],
                "train_s": float(np.mean(train_s)),
                "train_s_sd": sd(train_s),
                "asked": len(probes),
                "answered": sum(p["answered"] for p in probes),
                "median_s": median([p["seconds"] for p in probes if p["answered"]]),
                "idle_median_s": median([s for r in rounds for s in r["dice"]["infer_s"]]),
            }
        )
    return rows


def summarize_strategy(sessions: Sequence[dict]) -> dict:
    """Mean ± sd over the sessions (seeds) of one strategy, per number of submitted labels and per organ.

    Raises:
        ValueError: sessions of the strategy that submitted different numbers of labels per round.
    """
    labels = curve(sessions[0])[0]
    if any(curve(s)[0] != labels for s in sessions):
        raise ValueError(
            f"sessions of strategy {sessions[0]['settings']['strategy']!r} differ in their rounds; "
            "a summary needs the same rounds and labels per round"
        )
    dice = np.array([curve(s)[1] for s in sessions])
    organs = list(sessions[0]["organs"])
    by_organ = {}
    for organ in organs:
        start = [s["rounds"][0]["dice"]["organs"][organ] for s in sessions if organ in s["rounds"][0]["dice"]["organs"]]
        end = [s["rounds"][-1]["dice"]["organs"][organ] for s in sessions if organ in s["rounds"][-1]["dice"]["organs"]]
        if start and end:
            by_organ[organ] = {"start": float(np.mean(start)), "end": float(np.mean(end))}
    return {
        "seeds": [s.get("seed") for s in sessions],
        "labels": labels,
        "mean": dice.mean(axis=0).tolist(),
        "sd": [sd(column) for column in dice.T.tolist()],
        "rise": float(dice[:, -1].mean() - dice[:, 0].mean()),
        "organs": by_organ,
        "server": server_during_training(sessions),
    }


def flags(sessions: Sequence[dict], strategies: Dict[str, dict]) -> List[str]:
    """Messages for: a strategy's mean Dice or a session's Dice that does not rise from 0 labels to the last round;
    a strategy whose mean rise is no larger than the control's (:data:`CONTROL`, which is not expected to rise);
    ``/infer`` calls that failed while a training ran; a training during which no ``/infer`` was answered."""
    messages = []
    control = strategies.get(CONTROL)
    for strategy, entry in strategies.items():
        if strategy == CONTROL:
            continue
        if entry["rise"] <= 0:
            messages.append(
                f"{strategy}: mean Dice does not rise from 0 labels ({entry['mean'][0]:.3f}) to "
                f"{entry['labels'][-1]} labels ({entry['mean'][-1]:.3f})"
            )
        if control is not None and entry["rise"] <= control["rise"]:
            messages.append(
                f"{strategy}: its mean rise ({entry['rise']:+.3f}) is no larger than the control's, the same "
                f"fine-tuning without labels ({control['rise']:+.3f}): the labels do not explain it"
            )
    for session in sessions:
        name = f"{session['settings']['strategy']} seed {seed_name(session)}"
        labels, dice = curve(session)
        if session["settings"]["strategy"] != CONTROL and dice[-1] <= dice[0]:
            messages.append(
                f"{name}: Dice does not rise from 0 labels ({dice[0]:.3f}) to {labels[-1]} labels ({dice[-1]:.3f})"
            )
        for record in session["rounds"][1:]:
            probes = record["train"]["probes"]
            failed = [p for p in probes if not p["answered"]]
            if failed:
                messages.append(
                    f"{name}, round {record['round']}: {len(failed)} of {len(probes)} /infer calls failed during "
                    f"training (first: {failed[0]['error']})"
                )
            if len(failed) == len(probes):
                messages.append(f"{name}, round {record['round']}: no /infer answered while the training ran")
    return messages


def summarize(sessions: Sequence[dict]) -> dict:
    """Per strategy (in the order met) :func:`summarize_strategy`, then :func:`flags`."""
    names = list(dict.fromkeys(s["settings"]["strategy"] for s in sessions))
    strategies = {n: summarize_strategy([s for s in sessions if s["settings"]["strategy"] == n]) for n in names}
    return {"strategies": strategies, "flags": flags(sessions, strategies)}


def dice_cell(mean: float, sd_value: Optional[float]) -> str:
    return f"{mean:.3f}" if sd_value is None else f"{mean:.3f} ± {sd_value:.3f}"


def seconds(value: Optional[float], sd_value: Optional[float] = None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}" if sd_value is None else f"{value:.1f} ± {sd_value:.1f}"


def report_markdown(sessions: Sequence[dict], summary: dict, figure: str, title: str, preamble: Sequence[str]) -> str:
    """The report: settings and method, checks, Dice against labels, the server during training, organs, sessions."""
    first = sessions[0]
    settings = first["settings"]
    strategies = summary["strategies"]
    labels = next(iter(strategies.values()))["labels"]
    all_flags = summary["flags"]
    organs = list(dict.fromkeys(o for entry in strategies.values() for o in entry["organs"]))
    lines = [
        f"# {title}",
        "",
        *preamble,
        f"Model `{settings['model']}`; {settings['rounds']} rounds of {settings['labels_per_round']} labels, each "
        f"followed by a fine-tuning of {settings['train_iterations']} iterations from the current weights on every "
        f"final label of the datastore; held-out images: {', '.join(first['heldout'])}; labelled before the session: "
        f"{len(first['initially_labelled'])} image(s).",
        "",
        "Round 0 is the served model before any label is submitted. Each round asks `/activelearning/<strategy>` for "
        "the next image and submits its reference label (`final`), as many times as labels per round, then runs "
        "`/train/<model>` (`pretrained` true, `val_split` 0: the one validation at the end, on the training images, "
        "writes the served model) "
        f"and, while it runs, asks `/infer/<model>` for a held-out image every {first['probe_pause_s']:.0f} s after "
        f"the last "
        "answer; once it is done the served model's Dice per organ is measured on every held-out image (uploaded with "
        "the request: held-out images are not in the datastore). Dice: MONAI's `compute_dice` per organ present in the "
        "reference; the mean is over all (image, organ) pairs; ± is the sample standard deviation over seeds.",
        *(
            [
                "",
                f"The strategy `{CONTROL}` is the control: the same rounds of fine-tuning with no label submitted (its "
                f"column "
                '"k labels" is the round after which the others have k labels), so that what the labels add can be '
                "told from "
                "what the further training adds.",
            ]
            if CONTROL in strategies
            else []
        ),
        "",
        "## Checks",
        "",
        *(
            [f"- **FLAG** {m}" for m in all_flags]
            or [
                "- no flags: every labelling strategy's mean Dice and every labelling session's Dice rise from 0 "
                "labels to the last round (and more than the control's, if run), and the server answered every "
                "`/infer` during training"
            ]
        ),
        "",
        "## Held-out Dice against submitted labels",
        "",
        markdown_table(
            ["strategy", "seeds", *(f"{k} labels" for k in labels)],
            [
                [name, ", ".join(seed_name({"seed": s}) for s in e["seeds"]), *map(dice_cell, e["mean"], e["sd"])]
                for name, e in strategies.items()
            ],
        ),
        "",
        f"![held-out Dice against submitted labels]({figure})",
        "",
        "## The server while it trains",
        "",
        markdown_table(
            [
                "strategy",
                "round",
                "labels",
                "training s (client)",
                "/infer answered during training",
                "median s per /infer during training",
                "median s per /infer after training",
            ],
            [
                [
                    name,
                    str(r["round"]),
                    str(r["labels"]),
                    seconds(r["train_s"], r["train_s_sd"]),
                    f"{r['answered']} / {r['asked']}",
                    seconds(r["median_s"]),
                    seconds(r["idle_median_s"]),
                ]
                for name, e in strategies.items()
                for r in e["server"]
            ],
        ),
        "",
        f"## Per organ: Dice with 0 labels and with {labels[-1]} (mean over seeds)",
        "",
        markdown_table(
            ["organ", *(f"{name}: {k} labels" for name in strategies for k in (0, labels[-1]))],
            [
                [
                    organ,
                    *(
                        f"{strategies[name]['organs'][organ][key]:.3f}"
                        if organ in strategies[name]["organs"]
                        else "n/a"
                        for name in strategies
                        for key in ("start", "end")
                    ),
                ]
                for organ in organs
            ],
        ),
        "",
        "## Sessions",
        "",
        markdown_table(
            ["strategy", "seed", "images submitted, in order", "Dice per round"],
            [
                [
                    s["settings"]["strategy"],
                    seed_name(s),
                    ", ".join(x["image"] for r in s["rounds"] for x in r["submitted"]) or "-",
                    " ".join(f"{d:.3f}" for d in curve(s)[1]),
                ]
                for s in sessions
            ],
        ),
    ]
    return "\n".join(lines) + "\n"


def write_session_report(
    sessions: Sequence[dict],
    out: Path,
    name: str,
    title: str,
    preamble: Sequence[str] = (),
    extra: Optional[dict] = None,
) -> Tuple[dict, Dict[str, Path]]:
    """Writes ``<name>.json`` (``extra``, every session, the summary), ``<name>.md`` and ``<name>.png`` into ``out``;
    returns the summary and the paths."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(sessions)
    figure = plot_session_curves(summary["strategies"], out / f"{name}.png", CONTROL)
    (out / f"{name}.md").write_text(report_markdown(sessions, summary, figure.name, title, preamble))
    data = write_json(out / f"{name}.json", {**(extra or {}), "sessions": list(sessions), "summary": summary})
    return summary, {"markdown": out / f"{name}.md", "json": data, "figure": figure}
