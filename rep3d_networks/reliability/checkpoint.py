"""Moved to :mod:`rep3d_networks.handlers.checkpoint`; this module re-exports its names for old imports."""

import warnings

from rep3d_networks.handlers.checkpoint import (  # noqa: F401
    BEST_METRIC_KEYS,
    FALSE,
    TRUE,
    AtomicCheckpointSaver,
    AtomicDiskSaver,
    ResumeCheckpointLoader,
    checkpoint_iteration,
    nan_ranks_last,
    resume_checkpoint,
)

warnings.warn(
    "rep3d_networks.reliability.checkpoint moved to rep3d_networks.handlers.checkpoint",
    DeprecationWarning,
    stacklevel=2,
)
