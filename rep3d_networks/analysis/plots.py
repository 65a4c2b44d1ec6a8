"""The figures of the analysis commands (matplotlib, Agg backend, small PNGs)."""

from pathlib import Path
from typing import Dict, List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from rep3d_networks.analysis.kernel_geometry import CENTRE_MAX_DISTANCE, PERIPHERY_MIN_DISTANCE, radial_profile
from rep3d_networks.analysis.lr_field import run_label
from rep3d_networks.analysis.masks import initial_mask

PLANE_NAMES = ("axis 0 (z) = centre", "axis 1 (y) = centre", "axis 2 (x) = centre")
VARIANT_COLOURS = {"vanilla": "tab:gray", "csla": "tab:orange", "fixed": "tab:blue", "lrbm": "tab:red"}
NORM_STYLES = {"channel": "-", "tap": "--", "none": ":"}
NORM_COLOURS = {"channel": "tab:red", "tap": "tab:purple", "none": "tab:brown"}


def save(fig, path: Path, dpi: int = 90) -> Path:
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def central_planes(volume: np.ndarray) -> List[np.ndarray]:
    """The three orthogonal planes through the voxel ``size // 2`` of a 3D array."""
    cz, cy, cx = (n // 2 for n in volume.shape)
    return [volume[cz, :, :], volume[:, cy, :], volume[:, :, cx]]


def plot_radial_profiles(results: Dict, path: Path) -> Path:
    """``lr-field``: mean ``|ΔW_eff|`` vs tap distance, one curve per variant; one column per optimizer, one row per
    recorded step after the first (an early step and the last)."""
    optimizers = list(dict.fromkeys(run["optimizer"] for run in results["runs"]))
    steps = results["config"]["record_at"][1:] or results["config"]["record_at"]
    fig, axes = plt.subplots(
        len(steps), len(optimizers), figsize=(5.2 * len(optimizers), 3.4 * len(steps)), squeeze=False
    )
    for row, step in zip(axes, steps):
        for ax, optimizer in zip(row, optimizers):
            for run in (r for r in results["runs"] if r["optimizer"] == optimizer):
                profile = run["profile"][step]
                style = NORM_STYLES.get(run.get("generator_norm_affine"), "-")
                ax.semilogy(
                    profile["radius"],
                    profile["mean"],
                    style,
                    marker="o",
                    ms=3,
                    label=run_label(run),
                    color=VARIANT_COLOURS.get(run["variant"]),
                )
            ax.axvspan(-0.5, CENTRE_MAX_DISTANCE + 0.5, color="green", alpha=0.08, label="centre (d ≤ 1)")
            ax.axvspan(
                PERIPHERY_MIN_DISTANCE - 0.5,
                max(profile["radius"]) + 0.5,
                color="purple",
                alpha=0.06,
                label="periphery (d ≥ 7)",
            )
            ax.set_title(f"{optimizer}: |ΔW_eff| after {step} steps", fontsize=10)
            ax.set_xlabel("distance from kernel centre (taps)")
            ax.set_ylabel("mean |ΔW_eff|")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7, loc="upper right", framealpha=0.9)
    fig.tight_layout()
    return save(fig, path)


def plot_mask_drift(results: Dict, path: Path) -> Path:
    """``lr-field``: LRBM mask drift ``mean |M − P₀| / mean P₀`` vs step (left) and the radial profile of the final
    ``M`` against ``P₀`` (right), one curve per generator norm option and optimizer."""
    runs = [run for run in results["runs"] if "mask_drift" in run]
    fig, (drift_ax, profile_ax) = plt.subplots(1, 2, figsize=(10.5, 3.8))
    for run in runs:
        norm = run["generator_norm_affine"]
        style = dict(
            color=NORM_COLOURS.get(norm),
            ls="-" if run["optimizer"] == "adamw" else "--",
            label=f"{norm}, {run['optimizer']}",
        )
        drift_ax.semilogy(np.arange(1, len(run["mask_drift"]) + 1), np.maximum(run["mask_drift"], 1e-12), **style)
        profile_ax.plot(run["mask_profile"]["radius"], run["mask_profile"]["mean"], marker="o", ms=2, **style)
    prior = radial_profile(initial_mask(results["config"]["kernel_size"]))
    profile_ax.plot(prior["radius"], prior["mean"], color="black", lw=1, label="P₀ = 1 / (d + 1)")
    drift_ax.set_xlabel("step")
    drift_ax.set_ylabel("mean |M − P₀| / mean P₀")
    drift_ax.set_title("LRBM mask drift from its initial value", fontsize=10)
    profile_ax.set_xlabel("distance from kernel centre (taps)")
    profile_ax.set_ylabel("mean M in the shell")
    profile_ax.set_title(f"mask after {results['config']['steps']} steps", fontsize=10)
    for ax in (drift_ax, profile_ax):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, framealpha=0.9)
    fig.tight_layout()
    return save(fig, path)


def plot_erf_planes(erf: np.ndarray, path: Path, title: str) -> Path:
    """``erf``: three orthogonal planes through the centre, ``log10(ERF / max)`` (as Fig. 3, which shows 2D maps)."""
    scaled = np.log10(np.maximum(erf / max(float(erf.max()), 1e-30), 1e-4))
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
    for ax, plane, name in zip(axes, central_planes(scaled), PLANE_NAMES):
        image = ax.imshow(plane, cmap="magma", vmin=-4, vmax=0, origin="lower", interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=axes, shrink=0.8, label="log10(ERF / max)")
    fig.suptitle(title, fontsize=10)
    return save(fig, path)


def plot_mask_montage(masks: List[Dict], path: Path) -> Path:
    """``erf``: every LRBM mask ``M`` (channel mean for depthwise generators), one column per block, one row per central
    plane."""
    if not masks:
        raise ValueError("no masks to plot")
    fig, axes = plt.subplots(3, len(masks), figsize=(1.6 * len(masks) + 1.2, 5.0), squeeze=False)
    low = min(float(m["mask"].min()) for m in masks)
    high = max(float(m["mask"].max()) for m in masks)
    for column, mask in enumerate(masks):
        for row, (plane, name) in enumerate(zip(central_planes(mask["mask"]), PLANE_NAMES)):
            ax = axes[row, column]
            image = ax.imshow(plane, cmap="viridis", vmin=low, vmax=high, origin="lower", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if column == 0:
                ax.set_ylabel(name.replace(" = centre", ""), fontsize=7)
        short = mask["name"].replace("encoder.", "").replace(".conv", "")
        axes[0, column].set_title(f"{short}\nβ={mask['beta']:.2f}", fontsize=7)
    fig.colorbar(image, ax=axes, shrink=0.8, label="M (central planes)")
    return save(fig, path)


def plot_click_curves(curves: Dict[str, List[float]], path: Path) -> Path:
    """``clicks``: mean Dice against the number of clicks (0 = the answer without clicks), one line per model."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for model, curve in curves.items():
        ax.plot(np.arange(len(curve)), curve, marker="o", ms=3, label=model)
    ax.set_xlabel("clicks")
    ax.set_ylabel("mean Dice")
    ax.set_ylim(0.0, 1.0)
    ax.set_xticks(np.arange(max(len(c) for c in curves.values())) if curves else [])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, framealpha=0.9)
    ax.set_title("Simulated annotator: mean Dice against clicks", fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def plot_session_curves(strategies: Dict[str, Dict], path: Path, control: str) -> Path:
    """``session``: mean held-out Dice against submitted labels, one line per strategy (± sd over seeds as bars);
    the ``control`` strategy (no labels, the same rounds of fine-tuning) dashed and grey."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, entry in strategies.items():
        spread = [0.0 if s is None else s for s in entry["sd"]]
        seeds = len(entry["seeds"])
        label = f"{name} ({seeds} seed{'s' if seeds > 1 else ''})"
        if name == control:
            style = dict(ls="--", color="tab:gray", label=f"{label}: no labels, same fine-tuning")
        else:
            style = dict(label=label)
        ax.errorbar(entry["labels"], entry["mean"], yerr=spread, marker="o", ms=3, capsize=3, **style)
    labels = sorted({k for entry in strategies.values() for k in entry["labels"]})
    ax.set_xticks(labels)
    ax.set_xlabel("labels submitted (control: rounds of fine-tuning)" if control in strategies else "labels submitted")
    ax.set_ylabel("mean held-out Dice")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, framealpha=0.9)
    ax.set_title("Annotation session: Dice against submitted labels", fontsize=10)
    fig.tight_layout()
    return save(fig, path)
