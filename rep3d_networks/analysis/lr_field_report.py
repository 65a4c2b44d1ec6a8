"""Files of the ``lr-field`` command: ``lr_field.json``, ``lr_field.md``, ``lr_field_radial.png`` and, with LRBM runs,
``lr_field_mask_drift.png``."""

from pathlib import Path
from typing import Dict

from rep3d_networks.analysis.lr_field import summary_rows
from rep3d_networks.analysis.plots import plot_mask_drift, plot_radial_profiles
from rep3d_networks.analysis.reports import markdown_table, write_json


def lr_field_markdown(results: Dict) -> str:
    """The ratio table with its definitions."""
    config = results["config"]
    steps = config["record_at"]
    header = ["optimizer", "variant", "lr (large / small)"] + [f"ratio @ step {s}" for s in steps]
    header += [
        "predicted @ step 1",
        "remaining error",
        f"mask drift @ step {steps[-1]}",
        f"generator offset @ step {steps[-1]}",
    ]
    return "\n".join(
        [
            f"# lr-field: centre vs periphery update of a depthwise {config['kernel_size']}³ kernel",
            "",
            f"One depthwise layer ({config['channels']} channels), valid padding, MSE to a seeded target kernel "
            f"(`target={config['target']}`), i.i.d. N(0, 1) inputs {config['input_size']}³ × batch "
            f"{config['batch_size']}, {config['steps']} steps, seed {config['seed']}; AdamW weight decay "
            f"{config['weight_decay']}, SGD momentum {config['sgd_momentum']}.",
            "",
            "ratio = mean |ΔW_eff| over taps at distance ≤ 1 from the centre (7 taps) / mean over taps at distance ≥ "
            "7, with ΔW_eff = W_eff(step) − W_eff(0), averaged over channels. predicted: what eq. 11 (CSLA) and "
            "∂L/∂W = M ⊙ ∂L/∂W_eff (fixed prior, LRBM at init) give for the first step. remaining error = "
            "mean |W_eff − W*| / its initial value (1: not moved toward the target, 0: reached it). LRBM (one run per "
            "generator norm option, in brackets): mask drift = mean |M − P₀| / mean P₀ (P₀: the mask at step 0, the "
            "prior with β = 1), generator offset = mean |fθ(P)| / mean P (the part of M the generator adds to the "
            "current prior).",
            "",
            markdown_table(header, summary_rows(results)),
            "",
        ]
    )


def write_lr_field_report(results: Dict, output_dir: Path) -> Dict[str, Path]:
    """Write the JSON, Markdown and PNG of an ``lr-field`` run; returns their paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    markdown = output_dir / "lr_field.md"
    markdown.write_text(lr_field_markdown(results))
    paths = {
        "json": write_json(output_dir / "lr_field.json", results),
        "markdown": markdown,
        "radial_profile_png": plot_radial_profiles(results, output_dir / "lr_field_radial.png"),
    }
    if any("mask_drift" in run for run in results["runs"]):
        paths["mask_drift_png"] = plot_mask_drift(results, output_dir / "lr_field_mask_drift.png")
    return paths
