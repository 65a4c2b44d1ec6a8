"""MONAI's Hausdorff distance handler, in millimetres."""

from typing import Sequence

import torch
from ignite.metrics.metric import reinit__is_reduced
from monai.data import MetaTensor
from monai.handlers import HausdorffDistance


class HausdorffDistanceMM(HausdorffDistance):
    """:class:`monai.handlers.HausdorffDistance` that passes each image's voxel spacing to the metric.

    MONAI's handler calls the metric without ``spacing``, so distances come out in voxels of the resampled grid
    (anisotropic for e.g. 1.5 x 1.5 x 2.0 mm). This one reads the spacing of every reference label from its
    affine (``MetaTensor.pixdim``) and computes each image on its own, so the values are in millimetres. A label
    without an affine (not a ``MetaTensor``) is an error: its distances could only be given in voxels. Arguments
    as :class:`monai.handlers.HausdorffDistance`.
    """

    @reinit__is_reduced
    def update(self, output: Sequence) -> None:
        """Accumulates the distances of one batch; ``output`` is ``(y_pred, y)`` (batch-first or lists).

        Raises:
            ValueError: ``output`` is not a pair, or a label is not a ``MetaTensor``.
        """
        if len(output) != 2:
            raise ValueError(f"output must have length 2, got {len(output)}.")
        for pred, label in zip(*output):
            if not isinstance(label, MetaTensor):
                raise ValueError(
                    f"HausdorffDistanceMM needs each label as a MetaTensor (its affine gives the voxel spacing), "
                    f"got {type(label).__name__}: keep the labels' metadata up to the metric."
                )
            self.metric_fn(torch.as_tensor(pred)[None], torch.as_tensor(label)[None], spacing=label.pixdim.tolist())
