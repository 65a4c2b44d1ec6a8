"""Files of the ``erf`` command: ``erf.json``, ``erf.md``, ``erf.npy``, ``erf_planes.png`` and ``lrbm_masks.png``."""

from pathlib import Path
from typing import Dict, List

import numpy as np

from rep3d_networks.analysis.masks import mask_statistics, prior_statistics
from rep3d_networks.analysis.plots import plot_erf_planes, plot_mask_montage
from rep3d_networks.analysis.reports import markdown_table, write_json


def erf_markdown(description: Dict, summary: Dict, mask_stats: List[Dict]) -> str:
    """ERF mass table and LRBM mask table."""
    radii = list(summary["mass_within"])
    erf_rows = [[str(r), f"{summary['mass_within'][r]:.3f}", f"{summary['uniform_within'][r]:.4f}"] for r in radii]
    mask_rows = [
        [
            s["name"],
            f"{s['beta']:.3f}",
            f"{s['centre']:.3f}",
            f"{s['min']:.3f}",
            f"{s['max']:.3f}",
            f"{s['centre_periphery_ratio']:.2f}",
            f"{s['negative_fraction']:.2f}",
            f"{s['change_from_init']:.3f}",
        ]
        for s in mask_stats
    ]
    lines = [
        "# Effective receptive field",
        "",
        "Model: " + ", ".join(f"{k}={v}" for k, v in description["model"].items()),
        "",
        f"Weights: {description['weights']}. Inputs: {description['inputs']}. Output: {description['output']}.",
        "",
        markdown_table(["radius r (voxels)", "ERF mass at distance ≤ r", "flat map (volume fraction)"], erf_rows),
        "",
        f"r50 = {summary['r50']}, r90 = {summary['r90']} voxels (smallest radius holding 50 % / 90 % of the mass); "
        f"peak / mean = {summary['peak_to_mean']:.1f}; centre voxel share = {summary['centre_share']:.4f}.",
        "",
    ]
    if mask_rows:
        header = [
            "mask",
            "β",
            "M at centre",
            "min M",
            "max M",
            "centre / periphery",
            "fraction M < 0",
            "mean abs(M − P₀) / mean P₀",
        ]
        lines += ["## LRBM masks M (mean over channels)", "", markdown_table(header, mask_rows), ""]
    return "\n".join(lines)


def write_erf_report(
    erf: np.ndarray, summary: Dict, masks: List[Dict], description: Dict, output_dir: Path
) -> Dict[str, Path]:
    """Write the ERF map, its planes, the mask montage (when there are LRBM masks) and the summaries; returns the
    paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    mask_stats = [mask_statistics(m) for m in masks]
    if masks:
        mask_stats.append(prior_statistics(masks[0]["mask"].shape[-1]))
    np.save(output_dir / "erf.npy", erf.astype(np.float32))
    markdown = output_dir / "erf.md"
    markdown.write_text(erf_markdown(description, summary, mask_stats))
    title = f"ERF, {description['label']}"
    paths = {
        "erf_npy": output_dir / "erf.npy",
        "erf_planes_png": plot_erf_planes(erf, output_dir / "erf_planes.png", title),
        "json": write_json(output_dir / "erf.json", dict(description, summary=summary, masks=mask_stats)),
        "markdown": markdown,
    }
    if masks:
        paths["lrbm_masks_png"] = plot_mask_montage(masks, output_dir / "lrbm_masks.png")
    return paths
