"""The parts of ``benchmarks/gpu_check.py``; each module has ``run(ctx)`` and ``FULL`` / ``DRY`` sizes.

``PARTS`` maps a part's name to its number (issues #13 and #31), its share of the time budget and the least time it
needs on the GPU, in seconds; they run in this order, the most important first. The default budget is the sum of
the shares; the shares are the H200 run's times (2026-12-04) with a margin, about 300 s in all. A part gets its share
of the time left when it starts (``gpu_check.Schedule``), is killed at that limit, and starts no new check after
85 % of it. On the GPU a part whose limit is below its need is skipped, with the reason, and leaves its time to the
parts after it (the dry run's parts need seconds, so there only a spent budget skips one).
"""

from typing import NamedTuple


class Part(NamedTuple):
    """A part's number, its share of the budget and the least limit it starts with on the GPU (seconds)."""

    number: int
    share_s: float
    need_s: float


PARTS = {
    "correctness": Part(1, 40, 15),
    "peers": Part(6, 80, 30),  # Rep3D folded and SwinUNETR first: the goal's two rows
    "clinical_ct": Part(7, 50, 35),  # making the volume and both runs: the goal is about the warm one
    "smoke": Part(5, 85, 20),
    "training": Part(3, 50, 15),
    "evaluation": Part(4, 50, 15),
    "dwconv_speed": Part(2, 35, 10),
}
