"""One volume through amos_ct's ``inference.json`` in-process, as ``monai.bundle run`` runs it; shared by parts 4 and 7.

Everything the report says about the run (sliding-window roi, overlap) is read from the run's own parser with
``get_parsed_content``: the config holds expressions (``"$min(@...) if ... else @..."``), not numbers.
"""

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Tuple

from bundle_helpers import check_label_matches_image, num_classes, run_bundle

from gpu_parts.common import gib, peak_memory


@dataclass
class VolumeRun:
    """What one ``inference.json`` run took: wall seconds, the network's input grid, windows, peak CUDA GiB."""

    seconds: float
    grid: Tuple[int, ...]
    windows: int
    peak_gib: float

    def __str__(self) -> str:
        return (
            f"{self.seconds:.1f} s for the whole monai.bundle run; grid {self.grid}, {self.windows} windows; "
            f"peak {gib(self.peak_gib)}"
        )


def infer_volume(ctx, bundle: Path, image: Path, output_dir: Path, overrides: dict) -> VolumeRun:
    """Runs ``inference.json`` on ``image`` (random weights: ``load_pretrain`` false) and checks its one label."""
    overrides = dict(overrides, datalist=[str(image)], output_dir=str(output_dir), load_pretrain=False)
    with peak_memory(ctx.device) as peak:
        start = time.perf_counter()
        workflow = run_bundle(bundle, ["inference.json"], **overrides)
        seconds = time.perf_counter() - start
    batch = workflow.parser.get_parsed_content("evaluator").state.batch  # a list of items once MONAI decollated it
    grid = tuple((batch[0] if isinstance(batch, list) else batch)["image"].shape[-3:])
    labels = list(output_dir.rglob("*.nii.gz"))
    if len(labels) != 1:
        raise AssertionError(f"{len(labels)} label files in {output_dir}, expected one")
    check_label_matches_image(labels[0], image, num_classes(bundle))
    return VolumeRun(seconds, grid, window_count(grid, *sliding_window_settings(workflow.parser)), peak["gib"])


def sliding_window_settings(parser) -> Tuple[Sequence[int], float]:
    """The inferer's ``roi_size`` and ``overlap`` as the run evaluated them (config expressions resolved)."""
    return parser.get_parsed_content("inferer#roi_size"), float(parser.get_parsed_content("inferer#overlap"))


def window_count(shape, roi, overlap: float) -> int:
    """Windows of MONAI's ``SlidingWindowInferer`` (scan interval ``roi * (1 - overlap)``, last window flush)."""
    count = 1
    for size, window in zip(shape, roi):
        step = max(int(window * (1 - overlap)), 1)
        count *= 1 if size <= window else math.ceil((size - window) / step) + 1
    return count
