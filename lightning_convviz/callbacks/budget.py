"""The time budget of the diagnostics: what their drawings may cost, as a share of training.

All lightning_convviz callbacks of one Trainer share one :class:`Budget`. Each drawing (a
picture of the probe images, a t-SNE map, a chart, the filters) is timed and charged to it, with
the CPU time of background threads (t-SNE) as it is spent. A drawing that is due while the
drawings so far, with this one's expected cost (its previous one), would take more than
``max_share`` of the fit's time is postponed to the next epoch, not dropped; every callback's
first drawing and a last one at the end of training are always made, so that a time-lapse has a
start and an end. Per-step statistics (``ActivationStatsMonitor``, ``LearningRateDoctor``) are
not drawings and are not held back: they cost a share of each step, small where steps are long
(2.6 % on a ResNet-18 at 64 px), up to 8 % of the digits demo's 35 ms CPU steps.

The budget is a decision of global rank zero, which makes the drawings; the collectives of the
callbacks that gather data from every rank follow their fixed schedule, so no rank waits.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

from pytorch_lightning import Callback, LightningModule, Trainer

__all__ = ["Budget", "DiagnosticsBudget", "budget_for"]

#: The share of the fit's time the drawings may take when no DiagnosticsBudget says otherwise.
DEFAULT_SHARE = 0.10


class Budget:
    """Seconds spent on drawings, per callback, against the fit's elapsed time.

    Example:
        >>> budget = Budget(max_share=0.1, clock=iter([0.0, 10.0, 10.0]).__next__)
        >>> budget.start()
        >>> budget.charge("SaliencyMonitor", 0.5)
        >>> budget.affordable(0.4), budget.affordable(0.6)  # 10 s so far: 1 s for drawings
        (True, False)

    Args:
        max_share: Most of the fit's time the drawings may take; ``None``: no limit.
        clock: Seconds since some fixed point (default :func:`time.perf_counter`).
    """

    def __init__(self, max_share: float | None = DEFAULT_SHARE, clock: Any = None) -> None:
        self.max_share = max_share
        self._clock = clock or time.perf_counter
        self._started: float | None = None
        #: Seconds charged per callback since the fit started.
        self.spent: dict[str, float] = {}
        #: How many drawings each callback postponed.
        self.postponed: dict[str, int] = {}

    def start(self) -> None:
        """Start the clock (at the fit's setup); what was charged before is forgotten."""
        self._started = self._clock()
        self.spent, self.postponed = {}, {}

    def ensure_started(self) -> None:
        """Start the clock unless a callback of this fit already did."""
        if self._started is None:
            self.start()

    def stop(self) -> None:
        """The fit is over: the next one starts a new clock."""
        self._started = None

    def elapsed(self) -> float:
        """Seconds since :meth:`start` (0 before it)."""
        return 0.0 if self._started is None else max(self._clock() - self._started, 0.0)

    def charge(self, owner: str, seconds: float) -> None:
        """Count ``seconds`` of drawing work against ``owner``."""
        self.spent[owner] = self.spent.get(owner, 0.0) + max(seconds, 0.0)

    def total(self) -> float:
        """Seconds spent on drawings by every callback."""
        return sum(self.spent.values())

    def share(self) -> float:
        """The drawings' share of the fit's time so far."""
        elapsed = self.elapsed()
        return self.total() / elapsed if elapsed > 0 else 0.0

    def affordable(self, estimate: float) -> bool:
        """Whether a drawing expected to take ``estimate`` seconds keeps the drawings within
        ``max_share`` of the fit's time (counting its own seconds in both)."""
        if self.max_share is None:
            return True
        elapsed = self.elapsed()
        return self.total() + estimate <= self.max_share * (elapsed + estimate)

    def note_postponed(self, owner: str) -> None:
        self.postponed[owner] = self.postponed.get(owner, 0) + 1


_BUDGETS: weakref.WeakKeyDictionary[Trainer, Budget] = weakref.WeakKeyDictionary()


def budget_for(trainer: Trainer) -> Budget:
    """The budget shared by the lightning_convviz callbacks of ``trainer`` (made on first use,
    with the share of the Trainer's :class:`DiagnosticsBudget` or :data:`DEFAULT_SHARE`)."""
    budget = _BUDGETS.get(trainer)
    if budget is None:
        knob = next((c for c in trainer.callbacks if isinstance(c, DiagnosticsBudget)), None)  # type: ignore[attr-defined]
        budget = Budget(DEFAULT_SHARE if knob is None else knob.max_share)
        _BUDGETS[trainer] = budget
    return budget


class DiagnosticsBudget(Callback):
    """The one knob of the diagnostics' cost: the most of the fit's time their drawings take.

    Add it beside the other callbacks; without it the share is 10 %. Every lightning_convviz
    callback of the Trainer shares it (see :mod:`lightning_convviz.callbacks.budget`): a due
    drawing that would go over is postponed to a later epoch, the first and the last drawing of
    each callback are always made, and each drawing's seconds are logged as
    ``cost/<callback>`` with the suite's share so far as ``cost/share``.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> from lightning_convviz import DiagnosticsBudget, SaliencyMonitor
        >>> trainer = Trainer(callbacks=[SaliencyMonitor(), DiagnosticsBudget(max_share=0.05)])

    Args:
        max_share: Most of the fit's time the drawings may take, in (0, 1]; ``None`` for no
            limit (every drawing when it is due).

    Raises:
        ValueError: At construction, for a share outside (0, 1].
    """

    def __init__(self, max_share: float | None = DEFAULT_SHARE) -> None:
        if max_share is not None and (
            isinstance(max_share, bool)
            or not isinstance(max_share, (int, float))
            or not 0 < max_share <= 1
        ):
            raise ValueError(f"max_share: expected None or a number in (0, 1], got {max_share!r}")
        self.max_share = None if max_share is None else float(max_share)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        budget_for(trainer).max_share = self.max_share
