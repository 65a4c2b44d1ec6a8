"""The ``--conf device`` option: which device inference and training use unless a request names another."""

from typing import List

import torch
from monailabel.utils.others.generic import device_list


def default_device(conf: dict) -> str:
    """``"cpu"`` or ``"cuda"[:N]`` from ``--conf device``; CUDA when present if the option is not given.

    Raises:
        ValueError: an unknown device, or CUDA asked for on a machine without it.
    """
    device = conf.get("device", "cuda" if torch.cuda.is_available() else "cpu").strip().lower()
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"--conf device must be 'cpu' or 'cuda', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--conf device cuda was given, but PyTorch sees no CUDA device here; use --conf device cpu")
    return device


def device_choices(preferred: str) -> List[str]:
    """Device options shown to the client (3D Slicer lists them; the first one is the default)."""
    return [preferred] + [d for d in device_list() if d != preferred]
