"""Effective receptive field (ERF) of a segmentation network: ``E[|∂ y_centre / ∂ x|]`` over inputs.

As in RepLKNet / 3D UX-Net (and the paper's Fig. 3): the gradient of the output at the centre voxel
(summed over output channels, or one class) with respect to the input volume, in absolute value,
averaged over several inputs. The model runs in ``eval`` mode, so BatchNorm uses its running statistics
and does not couple voxels; MONAI's InstanceNorm in the decoder still normalizes with per-volume
statistics, which spreads a small amount of gradient over the whole input.
"""

from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence

import nibabel as nib
import numpy as np
import torch
from torch import nn

from rep3d_networks.analysis.kernel_geometry import distance_from_centre

CT_VOLUME = "totalseg_ct_abdomen_3mm/example_ct.nii.gz"
CT_WINDOW = (-175.0, 250.0)  # HU window of the AMOS CT bundle (A.2)
SUMMARY_RADII = (2, 4, 8, 16)


def random_inputs(size: int, count: int, seed: int) -> Iterator[torch.Tensor]:
    """``count`` seeded ``U(0, 1)`` volumes ``[1, 1, size, size, size]`` (the intensity range after CT windowing)."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        yield torch.rand((1, 1, size, size, size), generator=generator)


def ct_inputs(shared_data: str, size: int, count: int, seed: int) -> Iterator[torch.Tensor]:
    """``count`` seeded random ``size³`` crops of the real abdominal CT in ``shared_data`` (3 mm, windowed to [0, 1]).

    Raises:
        FileNotFoundError: if the CT volume is missing.
    """
    path = Path(shared_data) / CT_VOLUME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (see {Path(shared_data) / 'README.md'})")
    volume = np.asarray(nib.as_closest_canonical(nib.load(str(path))).dataobj, dtype=np.float32)
    low, high = CT_WINDOW
    volume = (np.clip(volume, low, high) - low) / (high - low)
    pad = [(0, max(0, size - n)) for n in volume.shape]
    volume = np.pad(volume, pad)
    rng = np.random.default_rng(seed)
    for _ in range(count):
        start = [int(rng.integers(0, n - size + 1)) for n in volume.shape]
        crop = volume[start[0] : start[0] + size, start[1] : start[1] + size, start[2] : start[2] + size]
        yield torch.from_numpy(np.ascontiguousarray(crop))[None, None]


def effective_receptive_field(
    model: nn.Module, inputs: Iterator[torch.Tensor], class_index: Optional[int] = None, device: str = "cpu"
) -> np.ndarray:
    """Mean over ``inputs`` of ``|∂ out[centre] / ∂ x|``, shape of one input's spatial size.

    Args:
        model: a segmentation network ``[1, C_in, D, H, W] → [1, classes, D, H, W]``; put in eval mode here.
        inputs: volumes ``[1, C_in, D, H, W]``.
        class_index: the output channel to differentiate; None sums all output channels.
        device: where to run.

    Returns:
        ``[D, H, W]`` float64 (summed over input channels).
    """
    model = model.to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    total, count = None, 0
    for x in inputs:
        x = x.to(device).requires_grad_(True)
        out = model(x)
        centre = out[(0, slice(None)) + tuple(n // 2 for n in out.shape[2:])]  # [classes]
        selected = centre.sum() if class_index is None else centre[class_index]
        (grad,) = torch.autograd.grad(selected, x)
        grad = grad.abs()[0].sum(0).double().cpu().numpy()
        total = grad if total is None else total + grad
        count += 1
    if count == 0:
        raise ValueError("no inputs given")
    return total / count


def erf_summary(erf: np.ndarray, radii: Sequence[int] = SUMMARY_RADII) -> Dict:
    """How concentrated the ERF is around the centre.

    Returns:
        ``{"mass_within": {r: fraction of the ERF mass at distance <= r}, "uniform_within": {r: the same for a
        flat map (the volume fraction)}, "r50", "r90": smallest integer radii ``r`` with 50 % / 90 % of the mass at
        ``d <= r``, "peak_to_mean": max / mean, "centre_share": the centre voxel's share}``.
    """
    distance = distance_from_centre(erf.shape)
    mass = erf / erf.sum()
    shells = np.ceil(distance - 1e-9).astype(int).ravel()  # shell r holds r - 1 < d <= r
    cumulative = np.cumsum(np.bincount(shells, weights=mass.ravel()))
    return {
        "mass_within": {int(r): float(mass[distance <= r].sum()) for r in radii},
        "uniform_within": {int(r): float((distance <= r).mean()) for r in radii},
        "r50": int(np.searchsorted(cumulative, 0.5)),
        "r90": int(np.searchsorted(cumulative, 0.9)),
        "peak_to_mean": float(erf.max() / erf.mean()),
        "centre_share": float(mass[tuple(n // 2 for n in erf.shape)]),
    }
