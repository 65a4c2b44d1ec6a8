"""Ignite handler that saves the training curves (loss, validation Dice per class) as a PNG."""

import logging
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import from_engine

from rep3d_networks.evaluation.summary import class_names_from_meta

logger = logging.getLogger(__name__)


class TrainingCurves:
    """Records the training loss and the validation metric per class, and plots them to ``<output_dir>/<filename>``.

    Attach it to the trainer (``train#handlers``). The loss is read at every iteration; the validation values
    after every validation run of ``evaluator`` (per class from ``engine.state.metric_details[metric]``, the mean
    from ``engine.state.metrics[metric]``). The PNG is rewritten after each validation and when training ends
    (TensorBoard logs are unaffected). Plotting uses matplotlib's object API with the Agg canvas (no pyplot
    state); any failure to record or plot is logged as a warning and never stops training.

    Args:
        output_dir: folder of the PNG.
        evaluator: the validation engine (``"@validate#evaluator"``), or None for the loss only.
        metric: key metric name of the evaluator.
        meta: bundle metadata (``"@_meta_"``) for the class names.
        include_background: whether the metric includes channel 0.
        loss_transform: trainer output -> loss.
        filename: PNG file name.
        save_rank: the rank that records and writes (others do nothing).
    """

    def __init__(
        self,
        output_dir: str,
        evaluator: Optional[Engine] = None,
        metric: str = "val_mean_dice",
        meta: Optional[Mapping] = None,
        include_background: bool = False,
        loss_transform: Callable = from_engine(["loss"], first=True),
        filename: str = "training_curves.png",
        save_rank: int = 0,
    ) -> None:
        self.path = Path(output_dir) / filename
        self.evaluator = evaluator
        self.metric = metric
        self.meta = meta
        self.include_background = include_background
        self.loss_transform = loss_transform
        self.save_rank = save_rank
        self.losses: List[Tuple[int, float]] = []
        self.validations: List[Tuple[int, float, np.ndarray]] = []
        self._trainer: Optional[Engine] = None

    def attach(self, engine: Engine) -> None:
        """Attaches to the trainer ``engine`` (and to ``evaluator``'s epoch end)."""
        if idist.get_rank() != self.save_rank:
            return
        self._trainer = engine
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._guard(self.record_loss))
        engine.add_event_handler(Events.COMPLETED, self._guard(self.save))
        if self.evaluator is not None:
            self.evaluator.add_event_handler(Events.EPOCH_COMPLETED, self._guard(self.record_validation))

    def _guard(self, method: Callable) -> Callable:
        def run(engine: Engine) -> None:
            try:
                method(engine)
            except Exception as error:  # curves are a side output: never stop training because of them
                logger.warning(f"TrainingCurves: {method.__name__} failed ({type(error).__name__}: {error})")

        return run

    def record_loss(self, engine: Engine) -> None:
        """Appends ``(iteration, loss)``."""
        loss = self.loss_transform(engine.state.output)
        loss = loss[0] if isinstance(loss, (list, tuple)) else loss
        self.losses.append((engine.state.iteration, float(torch.as_tensor(loss).detach().float().mean())))

    def record_validation(self, evaluator: Engine) -> None:
        """Appends ``(trainer iteration, mean, per-class means)`` and rewrites the PNG."""
        iteration = self._trainer.state.iteration if self._trainer is not None else len(self.validations)
        mean = float(evaluator.state.metrics.get(self.metric, float("nan")))
        details = (getattr(evaluator.state, "metric_details", None) or {}).get(self.metric)
        per_class = np.zeros(0)
        if details is not None:
            values = torch.as_tensor(details).detach().float().cpu().numpy()
            values = values.reshape(values.shape[0], -1)
            with np.errstate(all="ignore"):
                per_class = np.nanmean(np.where(np.isfinite(values), values, np.nan), axis=0)
        self.validations.append((iteration, mean, per_class))
        self.save(evaluator)

    def save(self, _engine: Optional[Engine] = None) -> None:
        """Writes the PNG (loss on the left, validation metric per class on the right)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(12, 4.5), dpi=100)
        FigureCanvasAgg(figure)
        loss_axes, val_axes = figure.subplots(1, 2)
        if self.losses:
            iterations, losses = np.array(self.losses).T
            loss_axes.plot(iterations, losses, lw=0.8, color="tab:blue")
        loss_axes.set(title="training loss", xlabel="iteration", ylabel="loss")
        self._plot_validation(val_axes)
        figure.tight_layout()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(self.path)

    def _plot_validation(self, axes) -> None:
        axes.set(title=f"validation ({self.metric})", xlabel="iteration", ylabel=self.metric)
        if not self.validations:
            return
        iterations = [v[0] for v in self.validations]
        columns = max(len(v[2]) for v in self.validations)
        names = class_names_from_meta(self.meta, columns, self.include_background)
        curves: Dict[str, List[float]] = {name: [] for name in names}
        for _, _, per_class in self.validations:
            for i, name in enumerate(names):
                curves[name].append(float(per_class[i]) if i < len(per_class) else float("nan"))
        for name, values in curves.items():
            axes.plot(iterations, values, marker=".", lw=0.8, label=name)
        axes.plot(iterations, [v[1] for v in self.validations], color="black", lw=2, marker="o", label="mean")
        axes.legend(fontsize="x-small", ncol=2 if columns > 8 else 1, loc="best")
