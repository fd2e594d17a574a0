"""The time budget of the diagnostics: what their drawings may cost, as a share of training.

All lightning_convviz callbacks of one Trainer share one :class:`Budget`. Each drawing (a
picture of the probe images, a t-SNE map, a chart, the filters) is timed and charged to it.

* **The first and the last drawing of each callback are a fixed cost**: the user asked for them
  by adding the callback, so they are always made, so that every time-lapse has a start and an
  end. They are counted apart (``cost/fixed_share``) and take nothing from the share.
* **The drawings in between live on the share** (``cost/share``): they stay within
  ``max_share`` of the fit's time. A due one that would go over is postponed, not dropped. The
  fit's time counts the last drawing still to come of each callback (certain, at its expected
  seconds), so that the share holds over the whole fit and the frames in between are not held
  back for the time those last drawings add at the end.
* **Cheap first, and nobody starves.** The callbacks queue for the share by their next drawing's
  expected seconds (its previous drawing's) over the due drawings it stands for (those since
  its latest drawing). A due drawing is made when the drawings in between so far, this one and
  the next drawing of every callback ahead of it fit in ``max_share`` of the fit's time. So a
  0.05 s drawing is not held back by a 2.5 s one, and the dear one moves up with each frame it
  misses: the cheap drawings are made (nearly) every time they are due, the dear ones spaced
  out.

At the end of the fit one console line per callback that was held back says how many of its due
drawings were made and about which ``DiagnosticsBudget(max_share=...)`` would have made them all.
Per-step statistics (``ActivationStatsMonitor``, ``LearningRateDoctor``) are not drawings and
are not held back: they cost a share of each step, small where steps are long (2.6 % on a
ResNet-18 at 64 px), up to 8 % of the digits demo's 35 ms CPU steps.

The budget is a decision of global rank zero, which makes the drawings; the collectives of the
callbacks that gather data from every rank follow their fixed schedule, so no rank waits.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

from pytorch_lightning import Callback, Trainer
from pytorch_lightning.utilities import rank_zero_info

from lightning_convviz.functional.arguments import check_int
from lightning_convviz.writing.background import DEFAULT_MAX_QUEUED, background_choice

__all__ = ["Account", "Budget", "DiagnosticsBudget", "Drawing"]

#: The share of the fit's time the drawings may take when no DiagnosticsBudget says otherwise.
DEFAULT_SHARE = 0.10

#: Which drawing of a callback's fit: its first, one in between, or its last (also when it is
#: the first too). The first and the last are the fixed cost; those in between, the share's.
Drawing = Literal["first", "between", "last"]


@dataclass
class Account:
    """What one callback's drawings cost and how many were made, in one fit."""

    #: Seconds of the drawings in between (those the share holds).
    spent: float = 0.0
    #: Seconds of the first and last drawings (the fixed cost).
    fixed: float = 0.0
    #: The latest drawing's seconds: what the next one is expected to cost.
    expected: float = 0.0
    #: Drawings in between made.
    made_between: int = 0
    #: First and last drawings made.
    made_fixed: int = 0
    #: Drawings that fell due (what an unlimited budget would have made).
    due: int = 0
    #: How often a due drawing did not fit and waited.
    postponed: int = 0
    #: The largest share that one of those would have needed at its moment.
    peak_required: float = 0.0
    #: Drawings that fell due since the latest drawing (more than one: some were held back).
    due_since_drawing: int = 0
    #: The last drawing of the fit is made.
    finished: bool = False

    @property
    def priority(self) -> float:
        """The place in the queue for the share (lower first): the expected seconds of the next
        drawing over the number of due drawings it stands for (those since the latest drawing).
        Cheap drawings come first, and a dear one moves up with each due drawing it misses, so
        that it is spaced out, never starved. (A postponed drawing asked again before its next
        due one does not move up: only missed frames of its time-lapse count.)"""
        return self.expected / max(self.due_since_drawing, 1)

    @property
    def made(self) -> int:
        return self.made_between + self.made_fixed

    @property
    def held_back(self) -> int:
        """Due drawings that the budget postponed and that were never made (a newer drawing or
        the last one replaced them)."""
        return max(min(self.due - self.made, self.postponed), 0)

    @property
    def mean_between(self) -> float:
        """Seconds of one drawing in between (the expected cost before there is one)."""
        return self.spent / self.made_between if self.made_between else self.expected


class Budget:
    """Seconds spent on drawings, per callback, against the fit's elapsed time.

    Example:
        >>> budget = Budget(max_share=0.1, clock=iter([0.0, 10.0, 10.0, 10.0]).__next__)
        >>> budget.start()
        >>> budget.charge("FilterMonitor", 0.2)  # a drawing in between: 0.2 s of the share
        >>> budget.charge("InversionMonitor", 2.0, "first")  # a first drawing: apart
        >>> budget.fit_seconds()  # 10 s so far, and both callbacks' last drawings to come
        12.2
        >>> budget.affordable("SaliencyMonitor", 0.5)  # (0.2 + 0.5 + 0.2) / 12.7 <= 0.1
        True
        >>> budget.affordable("InversionMonitor", 1.0)  # FilterMonitor's next 0.2 s comes first
        False

    Args:
        max_share: Most of the fit's time the drawings in between may take; ``None``: no limit.
        clock: Seconds since some fixed point (default :func:`time.perf_counter`).
    """

    def __init__(
        self,
        max_share: float | None = DEFAULT_SHARE,
        clock: Any = None,
        background: bool | None = None,
        max_queued: int = DEFAULT_MAX_QUEUED,
    ) -> None:
        self.max_share = max_share
        self._clock = clock or time.perf_counter
        self._started: float | None = None
        #: Each callback's account, by class name.
        self.accounts: dict[str, Account] = {}
        #: ``DiagnosticsBudget(background=...)``: ``None`` decides from the free cores.
        self.wanted_background = background
        #: Most drawings waiting for the drawing worker (their memory is held meanwhile).
        self.max_queued = max_queued
        self._background: bool | None = None

    def background(self, trainer: Trainer) -> bool:
        """Whether this fit's drawings are rendered and written in the drawing worker (decided
        once per fit, said once in the log; see :func:`~lightning_convviz.writing.background.
        background_choice`)."""
        if self._background is None:
            self._background, why = background_choice(trainer, self.wanted_background)
            where = "in a background thread" if self._background else "on the training thread"
            rank_zero_info(f"lightning_convviz: drawings are rendered and written {where}: {why}")
        return self._background

    def start(self) -> None:
        """Start the clock (at the fit's setup); what was charged before is forgotten."""
        self._started = self._clock()
        self.accounts = {}

    def ensure_started(self) -> None:
        """Start the clock unless a callback of this fit already did."""
        if self._started is None:
            self.start()

    @property
    def running(self) -> bool:
        """Whether a fit's clock runs (between :meth:`start` and :meth:`stop`)."""
        return self._started is not None

    def stop(self) -> None:
        """The fit is over: the next one starts a new clock."""
        self._started = None
        self._background = None

    def postpone(self, owner: str) -> None:
        """Count a due drawing of ``owner`` as postponed for a reason of its own (a full
        drawing worker)."""
        self.account(owner).postponed += 1

    def now(self) -> float:
        """The budget's clock: the seconds its drawings and the fit are measured in."""
        return float(self._clock())

    def elapsed(self) -> float:
        """Seconds since :meth:`start` (0 before it)."""
        return 0.0 if self._started is None else max(self._clock() - self._started, 0.0)

    def account(self, owner: str) -> Account:
        """``owner``'s account (opened on first use)."""
        return self.accounts.setdefault(owner, Account())

    def charge(self, owner: str, seconds: float, drawing: Drawing = "between") -> None:
        """Count ``owner``'s ``drawing`` that took ``seconds``: against the share (one in
        between), or apart (its first or last). Its seconds are what ``owner``'s next drawing
        is expected to cost."""
        account, seconds = self.account(owner), max(seconds, 0.0)
        if drawing == "between":
            account.spent += seconds
            account.made_between += 1
        else:
            account.fixed += seconds
            account.made_fixed += 1
            account.finished = drawing == "last"
        account.expected = seconds
        account.due_since_drawing = 0

    def total(self) -> float:
        """Seconds spent on the drawings in between, by every callback."""
        return sum(account.spent for account in self.accounts.values())

    def fit_seconds(self) -> float:
        """The fit's seconds so far, with the last drawing still to come of each callback that
        has drawn (certain: it is always made) counted at its expected seconds."""
        coming = sum(a.expected for a in self.accounts.values() if a.made and not a.finished)
        return self.elapsed() + coming

    def share(self) -> float:
        """The drawings in between: their share of the fit's time (:meth:`fit_seconds`), the
        share the budget holds; at the end of the fit, their share of its whole time."""
        fit = self.fit_seconds()
        return self.total() / fit if fit > 0 else 0.0

    def fixed_share(self) -> float:
        """The first and last drawings: their share of the fit's time so far."""
        elapsed = self.elapsed()
        fixed = sum(account.fixed for account in self.accounts.values())
        return fixed / elapsed if elapsed > 0 else 0.0

    def required_share(self, owner: str, estimate: float) -> float:
        """The smallest ``max_share`` that would allow a drawing of ``owner`` expected to take
        ``estimate`` seconds now: the drawings in between so far, this one and the next drawing
        of every other callback ahead of it in the queue (:meth:`Account.priority`), over the
        fit's time with this one."""
        priority = estimate / max(self.account(owner).due_since_drawing, 1)
        ahead = sum(
            account.expected
            for other, account in self.accounts.items()
            if other != owner and account.priority < priority
        )
        fit = self.fit_seconds() + estimate
        return (self.total() + estimate + ahead) / fit if fit > 0 else math.inf

    def affordable(self, owner: str, estimate: float) -> bool:
        """Whether a drawing of ``owner`` expected to take ``estimate`` seconds keeps the
        drawings in between within ``max_share`` of the fit's time (counting its own seconds in
        both), beside the next drawing of every callback ahead of it in the queue; one that
        does not is counted as postponed."""
        if self.max_share is None:
            return True
        required = self.required_share(owner, estimate)
        if required <= self.max_share:
            return True
        account = self.account(owner)
        account.postponed += 1
        account.peak_required = max(account.peak_required, required)
        return False

    def note_due(self, owner: str) -> None:
        """A drawing of ``owner`` fell due (made or not)."""
        account = self.account(owner)
        account.due += 1
        account.due_since_drawing += 1

    def share_for_all(self, owner: str) -> float:
        """About the ``max_share`` that would have made every due drawing of ``owner``, from the
        measured costs. Made every time, a drawing of ``c`` seconds stays at the head of the
        queue until another callback's of ``c_j > c`` seconds has missed about ``c_j / c``
        frames, so each callback would spend about ``min(c_j, c)`` seconds per due frame in
        between: those seconds, over the fit without its frames in between plus them (or the
        largest share that one of ``owner``'s postponed drawings needed at its moment, if
        larger)."""
        cost = self.account(owner).mean_between
        wanted = sum(
            max(account.due - account.made_fixed, 0) * min(account.mean_between, cost)
            for account in self.accounts.values()
        )
        fit = self.elapsed() - self.total() + wanted
        overall = wanted / fit if fit > 0 else 0.0
        return max(overall, self.account(owner).peak_required)

    def report(self) -> list[str]:
        """One line per callback that the budget held back: its drawings made and due, and the
        share that would about have made them all (:meth:`share_for_all`)."""
        lines: list[str] = []
        if self.max_share is None:
            return lines
        for owner, account in sorted(self.accounts.items()):
            if account.held_back == 0:
                continue
            needed = min(math.ceil(self.share_for_all(owner) * 100) / 100, 1.0)
            lines.append(
                f"{owner}: made {account.made} of its {account.due} due drawings, "
                f"{account.held_back} held back by the budget (max_share={self.max_share:g}); "
                f"about DiagnosticsBudget(max_share={needed:g}) would have made them all"
            )
        return lines


class DiagnosticsBudget(Callback):
    """The one knob of the diagnostics' cost: the most of the fit's time their drawings take.

    Add it beside the other callbacks; without it the share is 10 %. Every lightning_convviz
    callback of the Trainer shares it (see :mod:`lightning_convviz.callbacks.budget`): the
    first and the last drawing of each callback are always made and counted apart, the drawings
    in between stay within the share (cheap first; a due drawing that would go over is
    postponed to a later epoch), and each drawing's seconds are logged as ``cost/<callback>``,
    with the shares of the fit so far as ``cost/share`` (in between) and ``cost/fixed_share``
    (first and last).

    Example:
        >>> from pytorch_lightning import Trainer
        >>> from lightning_convviz import DiagnosticsBudget, SaliencyMonitor
        >>> trainer = Trainer(callbacks=[SaliencyMonitor(), DiagnosticsBudget(max_share=0.05)])

    The part of a drawing that does not need the model (rendering, colour maps, charts,
    encoding, every logger's write) runs in one background thread when training leaves a core
    free (beside a GPU, or with more CPU cores than PyTorch's threads); then the training loop
    waits only for the model's part, ``cost/<callback>`` is that wait (what the share holds)
    and ``cost/<callback>/background`` the thread's seconds. At most ``max_queued`` drawings
    wait for the thread; a due drawing in between finds it full and is postponed. Everything
    queued is written at the end of training, at teardown, on an exception and at exit.

    Args:
        max_share: Most of the fit's time the drawings between each callback's first and last
            may take, in (0, 1]; ``None`` for no limit (every drawing when it is due).
        background: Render and write in a background thread: ``None`` (when training leaves a
            core free, said in the log), ``True`` or ``False``.
        max_queued: Most drawings waiting for the background thread (a positive int).

    Raises:
        ValueError: At construction, for a share outside (0, 1], a ``background`` that is not
            None/True/False or a ``max_queued`` that is not a positive int.
    """

    def __init__(
        self,
        max_share: float | None = DEFAULT_SHARE,
        background: bool | None = None,
        max_queued: int = DEFAULT_MAX_QUEUED,
    ) -> None:
        if max_share is not None and (
            isinstance(max_share, bool)
            or not isinstance(max_share, (int, float))
            or not 0 < max_share <= 1
        ):
            raise ValueError(f"max_share: expected None or a number in (0, 1], got {max_share!r}")
        if background not in (None, True, False):
            raise ValueError(f"background: expected None, True or False, got {background!r}")
        check_int("max_queued", max_queued)
        self.max_share = None if max_share is None else float(max_share)
        self.background = background
        self.max_queued = max_queued
