"""Ignite handler that writes the per-class summary table of an evaluation (CSV and Markdown)."""

import logging
from typing import Mapping, Optional, Sequence, Union

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events

from rep3d_networks.evaluation.summary import class_names_from_meta, write_summary

logger = logging.getLogger(__name__)


class MetricsSummary:
    """Writes ``summary.csv`` and ``summary.md``: mean ± std per class (by name) and the mean over classes.

    It reads the per-case, per-class values that MONAI metric handlers leave in ``engine.state.metric_details``
    (the same arrays ``MetricsSaver`` writes to ``<metric>_raw.csv``) when the evaluation epoch completes, and
    calls :func:`rep3d_networks.evaluation.write_summary`. Class names come from the bundle metadata.

    Args:
        output_dir: folder of the two files.
        metrics: metric names (keys of ``metric_details``) -> column titles, e.g.
            ``{"val_mean_dice": "Dice", "val_hd95": "HD95 (mm)"}``; a list uses the names as titles.
        meta: bundle metadata (``"@_meta_"``) for the class names; without it classes are ``class1, ...``.
        include_background: whether the metrics include channel 0 (the metric handlers' option).
        basename: file name without extension.
        save_rank: the rank that writes (others do nothing).

    Example (``validate#handlers`` of ``evaluate.json``)::

        {"_target_": "rep3d_networks.handlers.MetricsSummary", "output_dir": "@output_dir",
         "metrics": {"val_mean_dice": "Dice", "val_hd95": "HD95 (mm)"}, "meta": "@_meta_"}
    """

    def __init__(
        self,
        output_dir: str,
        metrics: Union[Mapping[str, str], Sequence[str]],
        meta: Optional[Mapping] = None,
        include_background: bool = False,
        basename: str = "summary",
        save_rank: int = 0,
    ) -> None:
        self.output_dir = output_dir
        self.labels = dict(metrics) if isinstance(metrics, Mapping) else {m: m for m in metrics}
        self.meta = meta
        self.include_background = include_background
        self.basename = basename
        self.save_rank = save_rank

    def attach(self, engine: Engine) -> None:
        """Runs :meth:`__call__` when ``engine``'s epoch completes."""
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if idist.get_rank() != self.save_rank:
            return
        found = getattr(engine.state, "metric_details", None) or {}
        details = {m: _as_2d(found[m]) for m in self.labels if m in found}
        missing = sorted(set(self.labels) - set(details))
        if missing:
            logger.warning(
                f"MetricsSummary: no per-case details for {missing} (metric handlers need save_details=True)"
            )
        if not details:
            return
        columns = next(iter(details.values())).shape[1]
        names = class_names_from_meta(self.meta, columns, self.include_background)
        csv_path, md_path = write_summary(details, names, self.output_dir, self.labels, self.basename)
        logger.info(f"metrics summary written to {csv_path} and {md_path}:\n{md_path.read_text()}")


def _as_2d(values) -> np.ndarray:
    """``[cases, classes]`` float array from a metric detail tensor (``[cases]`` becomes one class)."""
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    return array.astype(float).reshape(array.shape[0] if array.ndim else 1, -1)
