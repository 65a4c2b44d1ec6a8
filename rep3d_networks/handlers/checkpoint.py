"""Checkpoint handlers: checkpoints that are never seen half-written, and resuming an interrupted training run.

MONAI's ``CheckpointSaver`` writes with ignite's ``DiskSaver(atomic=False)`` and, for a fixed file name such as
``models/model.pt``, deletes the previous file before writing the new one: a reader (MONAI Label reloading the
weights, an evaluation) can find no file or a truncated one, and a crash mid-write loses the checkpoint.
:class:`AtomicCheckpointSaver` uses ignite's atomic mode instead (write a temporary file in the same folder,
then ``os.replace`` it over the target) and keeps the previous file until it is replaced.

A training engine cannot be listed in the ``save_dict`` of its own handlers in a bundle config (the reference
would be circular), so both handlers here take ``engine_key``: the engine they are attached to is added under
that key (e.g. ``"trainer"``: iteration and epoch).
"""

import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

from ignite.engine import Engine
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointLoader, CheckpointSaver

logger = logging.getLogger(__name__)

TRUE = {"true", "yes", "1", "latest"}
FALSE = {"false", "no", "0", "none", ""}
BEST_METRIC_KEYS = ("best_metric", "best_metric_epoch")  # MONAI Workflow state


def nan_ranks_last(score_function: Callable[[Engine], float]) -> Callable[[Engine], float]:
    """``score_function`` with NaN mapped to -inf.

    A validation set without foreground gives a NaN mean Dice. ignite compares new scores with ``>``, which is
    False against NaN: a first NaN score would be kept as the best for ever and no later model saved.
    """

    def score(engine: Engine) -> float:
        value = score_function(engine)
        try:
            return -math.inf if math.isnan(value) else value
        except TypeError:  # not a number: left to ignite
            return value

    return score


class AtomicDiskSaver(DiskSaver):
    """ignite ``DiskSaver`` in atomic mode, with an optional fixed file name that is replaced, never removed.

    Args:
        dirname: target folder (created if needed).
        filename: fixed file name for every save, or None for ignite's names.
    """

    def __init__(self, dirname: Union[str, Path], filename: Optional[str] = None) -> None:
        super().__init__(dirname=dirname, atomic=True, require_empty=False)
        self.filename = filename

    def __call__(self, checkpoint, filename: str, metadata=None) -> None:
        super().__call__(checkpoint, self.filename or filename, metadata)

    def remove(self, filename: str) -> None:
        if self.filename is None:  # a fixed name is replaced atomically by the next save
            super().remove(filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI ``CheckpointSaver`` whose files are written atomically (see the module docstring).

    Same arguments as :class:`monai.handlers.CheckpointSaver`, plus:

    Args:
        engine_key: if set, the engine this handler is attached to is saved too, under this key.

    A NaN key metric (no foreground in the validation set) ranks below every real value.
    ``state_dict()`` / ``load_state_dict()`` hold the best-metric record of ``save_key_metric`` (so a resumed run
    replaces ``model.pt`` only with a better model than the one saved before the interruption) and the
    ``best_metric`` / ``best_metric_epoch`` of the engine it is attached to (the evaluator's "best value ... at
    epoch" in the log, which MONAI does not save: without them a resumed run reports its first validation as
    a new best).
    """

    def __init__(self, *args: Any, engine_key: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.engine_key = engine_key
        self._engine: Optional[Engine] = None
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                handler = checkpoint.save_handler
                checkpoint.save_handler = AtomicDiskSaver(handler.dirname, handler.filename)
        if self._key_metric_checkpoint is not None:
            self._key_metric_checkpoint.score_function = nan_ranks_last(self._key_metric_checkpoint.score_function)

    def attach(self, engine: Engine) -> None:
        if self.engine_key:
            self.save_dict[self.engine_key] = engine  # the ignite Checkpoints share this dict
        self._engine = engine
        super().attach(engine)

    def state_dict(self) -> Dict[str, Any]:
        """The key-metric record (ignite ``Checkpoint.state_dict``) and the attached engine's best metric and its
        epoch; empty without ``save_key_metric``."""
        if self._key_metric_checkpoint is None:
            return {}
        state = dict(self._key_metric_checkpoint.state_dict())
        engine_state = self._engine.state if self._engine is not None else None
        if hasattr(engine_state, "best_metric"):  # plain numbers: loadable with torch.load(weights_only=True)
            state["best_metric"] = float(engine_state.best_metric)
            state["best_metric_epoch"] = int(engine_state.best_metric_epoch)
        return state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restores what :meth:`state_dict` returned (a checkpoint without the best metric restores the record)."""
        if not state_dict:
            return
        super().load_state_dict({k: v for k, v in state_dict.items() if k not in BEST_METRIC_KEYS})
        if self._engine is not None:
            for key in BEST_METRIC_KEYS:
                if key in state_dict:
                    setattr(self._engine.state, key, state_dict[key])


class ResumeCheckpointLoader(CheckpointLoader):
    """MONAI ``CheckpointLoader`` that can also restore the engine it is attached to (``engine_key``): resuming.

    ``train.json`` lists it in ``train#handlers`` (every rank loads), not by class name.

    Args:
        engine_key: if set, the engine this handler is attached to is restored from this key of the checkpoint.
        args, kwargs: as :class:`monai.handlers.CheckpointLoader`.
    """

    def __init__(self, *args: Any, engine_key: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.engine_key = engine_key

    def attach(self, engine: Engine) -> None:
        if self.engine_key:
            self.load_dict[self.engine_key] = engine
        super().attach(engine)

    def __call__(self, engine: Engine) -> None:
        super().__call__(engine)
        logger.info(f"Resumed from {self.load_path} at iteration {engine.state.iteration}, epoch {engine.state.epoch}")


def checkpoint_iteration(path: Path) -> int:
    """The iteration in an ignite checkpoint name (``..._iteration=120.pt``), -1 if there is none."""
    match = re.search(r"iteration=(\d+)", path.name)
    return int(match.group(1)) if match else -1


def resume_checkpoint(resume_dir: str, resume: Union[bool, str, None]) -> Optional[str]:
    """The checkpoint a training run resumes from, for the bundles' ``resume`` key.

    Args:
        resume_dir: folder of the resume checkpoints (``models/resume``).
        resume: false (default: start afresh) or true / ``"latest"`` (the checkpoint with the highest iteration in
            ``resume_dir``), or the path of a checkpoint file. ``--resume true`` on the command line arrives as
            the string ``"true"``, which is accepted.

    Returns:
        The checkpoint path, or None to start afresh.

    Raises:
        FileNotFoundError: resuming was asked for but there is no checkpoint.
        ValueError: ``resume`` is neither a flag nor a path.
    """
    text = str(resume).strip().lower() if resume is not None else ""
    if resume is False or text in FALSE:
        return None
    if resume is not True and text not in TRUE:
        if not os.path.isfile(str(resume)):
            raise ValueError(f"resume={resume!r} is neither true/false nor a checkpoint file")
        return str(resume)
    candidates = sorted(Path(resume_dir).glob("*.pt"), key=lambda p: (checkpoint_iteration(p), p.stat().st_mtime))
    if not candidates:
        raise FileNotFoundError(
            f"resume={resume!r} but there is no checkpoint in {resume_dir} (a training run writes one every "
            "`checkpoint_interval` iterations): start without --resume"
        )
    return str(candidates[-1])
