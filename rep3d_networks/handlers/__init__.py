"""Ignite handlers used by the bundles: evaluation summary, HD95 in millimetres, training curves."""

from rep3d_networks.handlers.hausdorff import HausdorffDistanceMM
from rep3d_networks.handlers.metrics_summary import MetricsSummary
from rep3d_networks.handlers.training_curves import TrainingCurves

__all__ = ["HausdorffDistanceMM", "MetricsSummary", "TrainingCurves"]
