"""The dtype the Rep3D network actually computes in, and a launcher that records it in a server process.

:func:`recorded_layer_dtypes` hooks every module of the process and records the output dtype of each ``Conv3d``,
``ConvTranspose3d`` and ``Linear`` (the layers autocast runs in its dtype) called inside a ``Rep3D`` forward; the
folding of a training checkpoint (which convolves kernels in float32 outside any forward) is left out.

Run as a script, it runs another script (the app's ``start_server.py``) in this process with the CPU capability probe
patched and those dtypes recorded, for tests of ``precision=auto`` through the server, which runs in its own process:
``rep3d_networks.inferers.cpu_has_bf16`` (the one probe :func:`~rep3d_networks.inferers.autocast_dtype` asks)
answers what the JSON file ``answer`` holds at each call, so that a test switches the branch between requests, and
each dtype is appended to the text file ``record``, one per line::

    python precision_probe.py <answer> <record> <script.py> <its arguments...>
"""

import json
import os
import runpy
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

from rep3d_networks import Rep3D, inferers

LAYERS = (torch.nn.Conv3d, torch.nn.ConvTranspose3d, torch.nn.Linear)


@contextmanager
def recorded_layer_dtypes(record: Callable[[torch.dtype], None]) -> Iterator[None]:
    """Calls ``record(dtype)`` for the output of every :data:`LAYERS` module run inside a ``Rep3D`` forward while in
    the block."""
    depth = [0]

    def enter(module, args):
        depth[0] += isinstance(module, Rep3D)

    def leave(module, args, output):
        depth[0] -= isinstance(module, Rep3D)
        if depth[0] and isinstance(module, LAYERS):
            record(output.dtype)

    handles = [register_module_forward_pre_hook(enter), register_module_forward_hook(leave)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def main() -> None:
    answer, record = Path(sys.argv[1]), Path(sys.argv[2])
    inferers.cpu_has_bf16 = lambda: bool(json.loads(answer.read_text()))

    def write(dtype: torch.dtype) -> None:
        with open(record, "a") as dtypes:
            dtypes.write(f"{dtype}\n")

    script = sys.argv[3]
    sys.argv = sys.argv[3:]
    sys.path[0] = os.path.dirname(os.path.abspath(script))  # as ``python script.py`` sets it
    with recorded_layer_dtypes(write):
        runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
