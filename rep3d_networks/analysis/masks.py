"""The LRBM masks ``M = P + fθ(P)`` of a model, and numbers that describe them."""

from typing import Dict, List

import numpy as np
import torch
from torch import nn

from rep3d_networks.analysis.kernel_geometry import centre_periphery_ratio, radial_profile, tap_distances
from rep3d_networks.blocks import LRBM, ReparamDepthwiseConv3d


@torch.no_grad()
def lrbm_masks(model: nn.Module) -> List[Dict]:
    """Every LRBM mask of ``model``, in module order.

    Returns:
        ``[{"name": module name, "mask": [K, K, K] float array (mean over channels for a depthwise generator),
        "beta": β, "channels": mask channels G}, ...]``; empty when the model has no LRBM block (or is folded).
    """
    masks = []
    for name, module in model.named_modules():
        if isinstance(module, ReparamDepthwiseConv3d) and isinstance(module.mask, LRBM):
            mask = module.mask().float().cpu().numpy()[:, 0]  # [G, K, K, K]
            masks.append(
                {
                    "name": name,
                    "mask": mask.mean(0),
                    "beta": float(module.mask.prior.beta),
                    "channels": int(mask.shape[0]),
                }
            )
    return masks


def initial_mask(kernel_size: int) -> np.ndarray:
    """``P₀ = 1 / (d + 1)``: the prior with β = 1, i.e. every LRBM mask at initialisation, ``[K, K, K]``."""
    return 1.0 / (tap_distances(kernel_size) + 1.0)


def change_from_init(values: np.ndarray) -> float:
    """``mean |M − P₀| / mean P₀`` of a ``[K, K, K]`` mask: how far it moved from its initial value."""
    initial = initial_mask(values.shape[-1])
    return float(abs(values - initial).mean() / initial.mean())


def mask_statistics(mask: Dict) -> Dict:
    """Centre value, centre/periphery ratio (same regions as ``lr-field``), range, radial profile and
    ``change_from_init = mean |M − P₀| / mean P₀`` (``P₀``: the prior with β = 1, i.e. ``M`` at initialisation) of one
    mask."""
    values = mask["mask"]
    centre = tuple(n // 2 for n in values.shape)
    profile = radial_profile(values)
    return {
        "name": mask["name"],
        "beta": mask["beta"],
        "centre": float(values[centre]),
        "min": float(values.min()),
        "max": float(values.max()),
        "centre_periphery_ratio": centre_periphery_ratio(values),
        "negative_fraction": float((values < 0).mean()),
        "change_from_init": change_from_init(values),
        "radial_mean": profile["mean"],
    }


def prior_statistics(kernel_size: int) -> Dict:
    """The same numbers for the fixed prior ``P = 1 / (d + 1)`` (β = 1), the LRBM mask at initialisation."""
    return mask_statistics({"name": "prior P (beta = 1)", "mask": initial_mask(kernel_size), "beta": 1.0})
