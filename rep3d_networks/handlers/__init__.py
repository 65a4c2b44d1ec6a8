"""Ignite handlers of the bundles and the MONAI Label app.

* :class:`AtomicCheckpointSaver`, :class:`ResumeCheckpointLoader`, :func:`resume_checkpoint`: checkpoints written
  atomically, and the bundles' ``--resume`` option;
* :class:`MetricsSummary`, :class:`HausdorffDistanceMM`: evaluation summary, HD95 in millimetres;
* :class:`TrainingCurves`: the training curves as a PNG; :class:`TrainingStats`: progress for MONAI Label's ``/info``.
"""

from rep3d_networks.handlers.checkpoint import (
    AtomicCheckpointSaver,
    AtomicDiskSaver,
    ResumeCheckpointLoader,
    resume_checkpoint,
)
from rep3d_networks.handlers.hausdorff import HausdorffDistanceMM
from rep3d_networks.handlers.metrics_summary import MetricsSummary
from rep3d_networks.handlers.training_curves import TrainingCurves
from rep3d_networks.handlers.training_stats import TrainingStats

__all__ = [
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "HausdorffDistanceMM",
    "MetricsSummary",
    "ResumeCheckpointLoader",
    "TrainingCurves",
    "TrainingStats",
    "resume_checkpoint",
]
