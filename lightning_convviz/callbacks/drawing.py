"""One schedule for every drawing, charged one way.

A drawing falls due (an epoch end on a callback's cadence, a validation collection); the
budget says whether it is made now (the first and the last always are) or postponed; a
postponed one is the callback's pending drawing, asked again at the next occasion (a newer due
one replaces it) and made at the end of training at the latest. Made drawings are timed and
charged to the budget (``cost/<callback>``); their rendering and writing go to the drawing
worker where training leaves a core free (:meth:`DrawingSchedule._later`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import torch
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_info

from lightning_convviz.callbacks.budget import Budget, Drawing
from lightning_convviz.callbacks.context import TrainerContext
from lightning_convviz.callbacks.schedule import last_epoch

__all__ = ["DrawingSchedule"]


class DrawingSchedule:
    """The drawing half of :class:`~lightning_convviz.callbacks.base.ConvVizCallback`: when a
    due drawing is made, how it is timed and charged, and where it is rendered."""

    _budget: Budget | None
    _context: TrainerContext | None
    #: Render and write drawings in the drawing worker (decided in ``setup``, rank zero).
    _background: bool
    #: Seconds of this callback's latest drawing (its next one is expected to cost as much).
    last_drawing_seconds: float
    _drawn_at: int | None  # the step of the latest drawing
    #: A due drawing the budget postponed, made at the next occasion or at the end.
    _pending: Callable[[], None] | None

    def _log_scalars(self, trainer: Trainer, metrics: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def _may_draw(self, trainer: Trainer, drawing: Drawing) -> bool:
        """A drawing fell due: whether to make it now. A first or last one is always made; one
        in between when the budget allows it (else it is counted as postponed). The budget
        counts on global rank zero, which draws (no collective depends on this)."""
        budget = self._budget if trainer.is_global_zero else None
        context = self._context
        full = (  # the drawings queued for the worker hold memory: a full queue waits
            drawing == "between"
            and self._background
            and context is not None
            and context.worker.full
        )
        if full and budget is not None:
            budget.postpone(type(self).__name__)
            return False
        return (
            drawing != "between"
            or budget is None
            or budget.affordable(type(self).__name__, self.last_drawing_seconds)
        )

    def _due_drawing(self, trainer: Trainer) -> Drawing:
        """Which drawing one due now is: the last epoch's is the last, else the first when this
        callback has not drawn yet, else one in between."""
        if last_epoch(trainer):
            return "last"
        return "first" if self._drawn_at is None else "between"

    def _note_due(self, trainer: Trainer) -> None:
        """Count a due drawing (global rank zero), for the budget's report at the end."""
        if self._budget is not None and trainer.is_global_zero:
            self._budget.note_due(type(self).__name__)

    def _schedule(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        draw: Callable[[], None],
        *,
        due: bool = True,
    ) -> None:
        """A drawing fell due (``due``) or a postponed one is asked again: made now when the
        budget allows (the first one and the last epoch's always), else kept as the pending one
        (a newer one replaces it), asked again at the next occasion and made at the end of
        training at the latest. ``draw`` renders and writes (global rank zero), or hands its
        work to the drawing worker; what the training loop waits for in it is charged."""
        if due:
            self._note_due(trainer)
        drawing = self._due_drawing(trainer)
        if self._may_draw(trainer, drawing):
            self._pending = None
            self._make_drawing(trainer, pl_module, draw, drawing)
        else:
            self._pending = draw

    def _draw_last(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        draw: Callable[[], None] | None = None,
    ) -> None:
        """The end of training: the pending drawing, else ``draw`` (a new due one) when given;
        always made, as the last one."""
        pending, self._pending = self._pending, None
        chosen = pending or draw
        if chosen is None:
            return
        if pending is None:
            self._note_due(trainer)
        self._make_drawing(trainer, pl_module, chosen, "last")

    def _make_drawing(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        draw: Callable[[], None],
        drawing: Drawing,
    ) -> None:
        """Run ``draw`` on global rank zero, timed and charged, and note the step (on every
        rank)."""
        if trainer.is_global_zero:
            with self._drawing(trainer, pl_module, drawing):
                draw()
        self._drawn_at = trainer.global_step

    @contextlib.contextmanager
    def _drawing(
        self, trainer: Trainer, pl_module: LightningModule, drawing: Drawing
    ) -> Iterator[None]:
        """Time a drawing (the device synchronised at both ends), charge it to the budget as
        the first, one in between or the last, and log its seconds. A drawing expected to take
        more than a second is announced, so that a paused progress bar has a reason on screen."""
        name = type(self).__name__
        if self.last_drawing_seconds > 1.0 and trainer.is_global_zero:
            rank_zero_info(
                f"{name}: drawing at step {trainer.global_step} (about "
                f"{self.last_drawing_seconds:.0f} s; training goes on after it)"
            )
        clock = self._budget.now if self._budget is not None else time.perf_counter
        _synchronize(pl_module)
        start = clock()
        try:
            yield
        finally:
            _synchronize(pl_module)
            self.charge(trainer, clock() - start, drawing)

    def charge(self, trainer: Trainer, seconds: float, drawing: Drawing) -> None:
        """Count a drawing of ``seconds`` against the budget (the first and last counted apart)
        and log its seconds as ``cost/<callback>``, with the shares of the fit so far of the
        drawings in between (``cost/share``) and of the first and last ones
        (``cost/fixed_share``)."""
        name = type(self).__name__
        self.last_drawing_seconds = seconds
        if self._budget is None:
            return
        self._budget.charge(name, seconds, drawing)
        self._log_scalars(
            trainer,
            {
                f"cost/{name}": seconds,
                "cost/share": self._budget.share(),
                "cost/fixed_share": self._budget.fixed_share(),
            },
            trainer.global_step,
        )

    def _report_budget(self) -> None:
        """At the end of a fit, the first callback to stop the shared budget says, one line
        per callback, what it held back."""
        budget = self._budget
        if budget is None or not budget.running:
            return
        lines = budget.report()
        budget.stop()
        for line in lines:
            rank_zero_info(line)

    def _later(
        self,
        trainer: Trainer,
        pl_module: LightningModule | None,
        work: Callable[[], None],
        beside: float = 0.0,
    ) -> None:
        """Render and write a drawing: ``work`` must need nothing of the model (its tensors
        already copied with :func:`to_host`). In the drawing worker when training leaves a core
        free (the loop then waits only for the copies), else now. The seconds the drawing spent
        beside training (the worker's, plus ``beside``: a t-SNE in its own thread) are logged as
        ``cost/<callback>/background`` at the drawing's step."""
        name, step = type(self).__name__, trainer.global_step
        tag = f"cost/{name}/background"
        device = getattr(pl_module, "device", None)
        on_gpu = isinstance(device, torch.device) and device.type == "cuda"
        if not self._background:
            if on_gpu:
                torch.cuda.current_stream(device).synchronize()  # the copies to the host
            work()
            if beside > 0:
                self._log_scalars(trainer, {tag: beside}, step)
            return
        ready = None
        if on_gpu:
            ready = torch.cuda.Event()  # type: ignore[no-untyped-call]
            ready.record()

        def done(seconds: float) -> None:  # beside training: logged, not charged to the share
            self._log_scalars(trainer, {tag: seconds + beside}, step)

        assert self._context is not None  # drawings in the background were chosen in setup
        self._context.worker.submit(name, step, work, ready, done)


def _synchronize(pl_module: LightningModule) -> None:
    """Wait for the device's queued work (CUDA), so that a drawing's time is its own."""
    device = getattr(pl_module, "device", None)
    if isinstance(device, torch.device) and device.type == "cuda":
        torch.cuda.synchronize(device)
