"""The five parts of ``benchmarks/gpu_check.py``; each module has ``run(ctx)`` and ``FULL`` / ``DRY`` sizes.

``PARTS`` maps a part's name to its number in issue #13 and its share of the time budget in seconds (the default
budget is their sum). A part gets its share of the time left when it starts (``gpu_check.Schedule``), is killed at
that limit, and starts no new check after 85 % of it.
"""

PARTS = {
    "correctness": (1, 40),
    "dwconv_speed": (2, 80),
    "training": (3, 120),
    "evaluation": (4, 50),
    "smoke": (5, 140),
}
