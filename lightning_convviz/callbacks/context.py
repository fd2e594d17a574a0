"""The one object that the lightning_convviz callbacks of a Trainer share during a fit.

A :class:`TrainerContext` is opened by the first callback's ``setup`` of a fit and closed at
teardown or on an exception (whichever callback gets there first; closing twice does nothing).
It owns what used to be looked up by Trainer in three places: the drawings' budget, the
writers of the Trainer's loggers and the drawing worker (with its second lane, for long
computations such as the t-SNE); and the hooks the callbacks share: the count of the default
activation sites that the dead-filter readers read. Nothing else in the package is keyed by
Trainer.

After the fit, :func:`context_of` still answers with the closed context (its budget's accounts
say what was drawn); the next fit's first ``setup`` opens a new one.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

from pytorch_lightning import Trainer
from torch import nn

from lightning_convviz.callbacks.activity_counter import ActivityCounter
from lightning_convviz.callbacks.budget import DEFAULT_SHARE, Budget, DiagnosticsBudget
from lightning_convviz.functional.defaults import ACTIVATION_SITES
from lightning_convviz.functional.sites import CallSites
from lightning_convviz.writing import Writers, writers_for
from lightning_convviz.writing.background import DrawingWorker

__all__ = ["TrainerContext", "close_context", "context_of", "open_context"]


class TrainerContext:
    """The budget, the writers, the drawing worker and the shared hooks of one Trainer's fit.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> context = open_context(Trainer(logger=False))
        >>> context.budget.max_share  # no DiagnosticsBudget among the callbacks: the default
        0.1
        >>> context.close()
        >>> context.closed
        True

    Args:
        trainer: The Trainer; its :class:`DiagnosticsBudget`, if any, sets the budget (else
            a share of :data:`~lightning_convviz.callbacks.budget.DEFAULT_SHARE`).
    """

    def __init__(self, trainer: Trainer) -> None:
        callbacks = getattr(trainer, "callbacks", [])
        knob = next((c for c in callbacks if isinstance(c, DiagnosticsBudget)), None)
        #: The share of the fit the drawings may take, and each callback's account.
        self.budget = (
            Budget(DEFAULT_SHARE)
            if knob is None
            else Budget(knob.max_share, background=knob.background, max_queued=knob.max_queued)
        )
        self.closed = False
        self._writers: tuple[tuple[int, ...], Writers] | None = None
        self._worker: DrawingWorker | None = None
        self._activity: ActivityCounter | None = None

    def writers(self, trainer: Trainer, callbacks: Sequence[str] = ()) -> Writers:
        """The writers of the Trainer's loggers (made again when the loggers change); see
        :func:`~lightning_convviz.writing.writers_for` for the errors and warnings."""
        key = tuple(id(logger) for logger in trainer.loggers)
        if self._writers is None or self._writers[0] != key:
            self._writers = (key, writers_for(trainer, callbacks))
        return self._writers[1]

    def activity(self, model: nn.Module) -> ActivityCounter:
        """The count of ``model``'s default activation sites (every conv block's activation,
        chosen at the first training batch), shared by every callback that reads dead filters
        from them."""
        if self._activity is None or self._activity.sites.model is not model:
            sites = CallSites(model, None, ACTIVATION_SITES, collecting=True)
            self._activity = ActivityCounter(sites)
        return self._activity

    @property
    def worker(self) -> DrawingWorker:
        """The drawing worker (started on first use; again after :meth:`close`, for a drawing
        that arrives after the fit's end, which is then written when it is closed again)."""
        if self._worker is None or not self._worker.alive:
            self._worker = DrawingWorker(self.budget.max_queued)
        return self._worker

    def close(self) -> None:
        """Write every queued drawing, cancel the long computations not started and stop the
        worker's threads (no thread survives the fit); take the shared hooks off."""
        self.closed = True
        if self._activity is not None:
            self._activity.close()
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.close()


_CONTEXTS: weakref.WeakKeyDictionary[Trainer, TrainerContext] = weakref.WeakKeyDictionary()


def open_context(trainer: Trainer) -> TrainerContext:
    """The context of ``trainer``'s current fit: the open one, else a new one (at the first
    callback's ``setup`` of a fit)."""
    context = _CONTEXTS.get(trainer)
    if context is None or context.closed:
        context = _CONTEXTS[trainer] = TrainerContext(trainer)
    return context


def context_of(trainer: Trainer) -> TrainerContext:
    """The context of ``trainer``'s current or latest fit (a new one if it had none)."""
    context = _CONTEXTS.get(trainer)
    return context if context is not None else open_context(trainer)


def close_context(trainer: Trainer) -> None:
    """Close ``trainer``'s context, if it has an open one (teardown, an exception)."""
    context = _CONTEXTS.get(trainer)
    if context is not None and not context.closed:
        context.close()
