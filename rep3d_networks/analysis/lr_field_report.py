"""Files of the ``lr-field`` command: ``lr_field.json``, ``lr_field.md`` and ``lr_field_radial.png``."""

from pathlib import Path
from typing import Dict

from rep3d_networks.analysis.lr_field import summary_rows
from rep3d_networks.analysis.plots import plot_radial_profiles
from rep3d_networks.analysis.reports import markdown_table, write_json


def lr_field_markdown(results: Dict) -> str:
    """The ratio table with its definitions."""
    config = results["config"]
    steps = config["record_at"]
    header = ["optimizer", "variant", "lr (large / small)"] + [f"ratio @ step {s}" for s in steps] + ["predicted @ step 1", "remaining error"]
    return "\n".join(
        [
            f"# lr-field: centre vs periphery update of a depthwise {config['kernel_size']}³ kernel",
            "",
            f"One depthwise layer ({config['channels']} channels), valid padding, MSE to a seeded target kernel "
            f"(`target={config['target']}`), i.i.d. N(0, 1) inputs {config['input_size']}³ × batch {config['batch_size']}, "
            f"{config['steps']} steps, seed {config['seed']}; AdamW weight decay {config['weight_decay']}, SGD momentum {config['sgd_momentum']}.",
            "",
            "ratio = mean |ΔW_eff| over taps at distance ≤ 1 from the centre (7 taps) / mean over taps at distance ≥ 7, "
            "with ΔW_eff = W_eff(step) − W_eff(0), averaged over channels. predicted: what eq. 11 (CSLA) and "
            "∂L/∂W = M ⊙ ∂L/∂W_eff (fixed prior, LRBM at init) give for the first step. remaining error = "
            "mean |W_eff − W*| / its initial value (1: not moved toward the target, 0: reached it).",
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
    return {
        "json": write_json(output_dir / "lr_field.json", results),
        "markdown": markdown,
        "radial_profile_png": plot_radial_profiles(results, output_dir / "lr_field_radial.png"),
    }
