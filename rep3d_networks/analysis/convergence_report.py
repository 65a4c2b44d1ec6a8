"""Files of the ``convergence`` command: ``convergence.json``, ``convergence.md`` and ``convergence.png``."""

from pathlib import Path
from typing import Dict

from rep3d_networks.analysis.convergence import NUM_CLASSES, curves, per_run_rows, summary_rows
from rep3d_networks.analysis.plots import plot_convergence
from rep3d_networks.analysis.reports import markdown_table, write_json


def convergence_markdown(results: Dict) -> str:
    """Settings, the Table 7-style summary and the per-run table, with the caveats."""
    s, data = results["settings"], results["data"]
    source = data["source"]
    labels = (
        "TotalSegmentator **model predictions** (not expert labels) mapped to the AMOS classes"
        if source == "totalseg"
        else "synthetic phantom labels"
    )
    crop = "×".join(str(c) for c in s["crop"])
    return "\n".join(
        [
            "# Convergence of Rep3D variants (tiny-scale Table 7)",
            "",
            f"Data: {source} ({data['dataset_dir']}); train slabs {', '.join(data['train_cases'])}, validation slab "
            f"{', '.join(data['val_cases'])} (classes present: {data['val_classes']}); labels are {labels}.",
            f"Model: Rep3D feature_size {s['feature_size']}, hidden {s['hidden_size']}, depths 2-2-2-2, kernel {s['kernel_size']}³, "
            f"{NUM_CLASSES} outputs. Training: AdamW lr {s['learning_rate']:g}, weight decay {s['weight_decay']}, "
            f"DiceCELoss, {s['num_samples']} random {crop} crops per iteration (native 3 mm spacing), {s['iterations']} iterations, "
            f"device {s['device']}. Validation: sliding window ({crop}, overlap 0.25), MONAI DiceMetric without background, "
            "classes absent from the validation label ignored.",
            "",
            "Validation Dice, mean ± std over seeds (all variants of a seed start from the same shared weights and see the "
            "same crops); train time = data loading + forward + backward + optimizer step, validation excluded:",
            "",
            markdown_table(*summary_rows(results)),
            "",
            "Per run:",
            "",
            markdown_table(*per_run_rows(results)),
            "",
            "Tiny scale (one subject, a few hundred iterations on CPU): this shows training dynamics, not accuracy.",
            "",
        ]
    )


def write_convergence_report(results: Dict, output_dir: Path) -> Dict[str, Path]:
    """Write the JSON, Markdown and PNG of a ``convergence`` run; returns their paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    markdown = output_dir / "convergence.md"
    markdown.write_text(convergence_markdown(results))
    title = f"Rep3D variants, {results['data']['source']} data, crop {'×'.join(str(c) for c in results['settings']['crop'])}"
    plot_curves = {v: {k: c[k] for k in ("iterations", "dice", "loss")} for v, c in curves(results).items()}
    return {
        "json": write_json(output_dir / "convergence.json", results),
        "markdown": markdown,
        "png": plot_convergence(plot_curves, output_dir / "convergence.png", title),
    }
