"""What every lightning_convviz callback shares: argument checks, logger lookup, rank-zero writing.

Rules kept here so that no callback can break them:

* The callbacks work with ``pytorch_lightning`` and with ``lightning.pytorch`` (the Trainer
  only calls their hooks; loggers are recognised from either namespace).
* Only ``fit`` is observed; ``validate``, ``test`` and ``predict`` leave the callbacks idle.
* ``fast_dev_run`` (whose logger is a dummy) leaves them idle too, without an error.
* Everything logged goes to every logger of the Trainer through one writing layer
  (:mod:`lightning_convviz.writing`: TensorBoard, Weights & Biases, MLflow, CSV and any logger
  with a folder), only from global rank zero. No collective is called from one rank alone.
* A diagnostic that fails during training (any exception but a configuration error) is
  reported once as a warning and switches its callback off; the user's training goes on.
  Under DDP a callback with collectives switches off on every rank together: before its
  collectives each rank says whether it is still on (:meth:`ConvVizCallback._ranks_agree`), so
  that no rank is left waiting in a collective that a failed rank will not join.
"""

from __future__ import annotations

import contextlib
import functools
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from typing_extensions import override

from lightning_convviz.callbacks.budget import Budget, Drawing, budget_for
from lightning_convviz.callbacks.class_names import class_names_of
from lightning_convviz.callbacks.failures import GUARDED_HOOKS, NotApplicable, guarded
from lightning_convviz.callbacks.schedule import last_epoch
from lightning_convviz.callbacks.sharding import sharded_parameters
from lightning_convviz.functional.capture import LayerSpec, conv_layers, resolve_layers
from lightning_convviz.functional.guard import in_diagnostic
from lightning_convviz.functional.sites import CallSites, SiteRule
from lightning_convviz.writing import Writers, writers_for
from lightning_convviz.writing.background import DEFAULT_MAX_QUEUED, close_worker, worker_for

__all__ = ["ConvVizCallback", "EpochDrawingCallback"]


class ConvVizCallback(Callback):
    """Base class: idle outside ``fit`` and under ``fast_dev_run``; writes to every logger.

    Subclasses set ``section`` (the tag prefix that groups their output), ``dashboard`` (their
    multi-line charts in TensorBoard's custom-scalars tab: title to tag regexes) and implement
    :meth:`_setup_model` to resolve their layers, raising ``MisconfigurationException`` for a model
    they cannot serve. Their training-time hooks (:data:`GUARDED_HOOKS`) are wrapped: an exception
    inside one is reported once as a warning, the callback releases its hooks and stays off for the
    rest of the run, and training goes on.
    """

    section: str = "convviz"
    #: Multi-line charts of this callback's scalars: title to regexes of their tags.
    dashboard: ClassVar[dict[str, list[str]]] = {}
    _forward_failure: BaseException | None = None
    #: The hooks that call collectives under DDP; each calls :meth:`_ranks_agree` first.
    _collective_hooks: tuple[str, ...] = ()
    _enabled: bool = False
    _agreeing: bool = False
    #: What this callback does that needs whole weights on global rank zero (it reads weights,
    #: or runs the model on images of its own), in words after its name; ``None`` when it only
    #: hooks the passes that training and validation make. Under a strategy that shards the
    #: parameters (:func:`~lightning_convviz.callbacks.sharding.sharded_parameters`) such a
    #: callback says so at ``setup`` and stays off.
    whole_model_needed: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in GUARDED_HOOKS:
            if name in cls.__dict__:
                setattr(cls, name, guarded(name, cls.__dict__[name]))

    def _safe(self, callback: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a forward-hook callback: an exception inside it is kept, not raised into the
        user's forward pass, and switches the callback off at its next training hook. Forward
        passes made by diagnostics (of any callback) are not collected."""

        @functools.wraps(callback)
        def run(*args: Any, **kwargs: Any) -> Any:
            if self._forward_failure is not None or not self._enabled or in_diagnostic():
                return None  # off, or a forward pass made by a diagnostic (not training's)
            try:
                return callback(*args, **kwargs)
            except Exception as error:
                self._forward_failure = error
                return None

        return run

    def _ranks_agree(self, trainer: Trainer) -> bool:
        """Whether this callback is still on, on every rank.

        A collective hook calls this on every rank, at a point that every rank reaches whatever
        happened on it (decided by the schedule alone), before its first collective. A rank
        whose diagnostic failed earlier answers no; then the callback switches off on every
        rank, instead of leaving the others waiting in a collective that the failed rank would
        not join. One tiny all-reduce under DDP (at a logging step); nothing in one process.
        """
        if not self._agreeing:
            return self._enabled
        on = torch.tensor(int(self._enabled), device=trainer.strategy.root_device)
        if int(trainer.strategy.reduce(on, reduce_op="sum")) == trainer.world_size:
            return True
        self._agreeing = False
        if self._enabled:
            self._enabled = False
            warnings.warn(
                f"{type(self).__name__} failed on another rank and is off on every rank for the "
                "rest of this run; training goes on.",
                RuntimeWarning,
                stacklevel=2,
            )
            with contextlib.suppress(Exception):
                self._release_hooks()
        return False

    def _not_applicable(self, pl_module: Any, reason: NotApplicable) -> None:
        """Switch off, with one clear message, for a model this callback has nothing to show
        of (the same decision on every rank: it comes from the model's structure)."""
        if not self._enabled:
            return
        self._enabled = False
        model = type(pl_module).__name__ if pl_module is not None else "the model"
        rank_zero_warn(
            f"{type(self).__name__} does not apply to {model}: {reason} It is off for this run; "
            "training goes on."
        )
        with contextlib.suppress(Exception):
            self._release_hooks()

    def _switch_off(
        self, trainer: Trainer, pl_module: Any, hook: str, error: BaseException
    ) -> None:
        self._enabled = False
        warnings.warn(
            f"{type(self).__name__} failed in {hook} on rank {trainer.global_rank} and is off "
            f"for the rest of this run; training goes on. {type(error).__name__}: {error}",
            RuntimeWarning,
            stacklevel=2,
        )
        with contextlib.suppress(Exception):  # best effort while already failing
            self._release_hooks()

    # -- hooks on the model ----------------------------------------------------------------------

    def _release_hooks(self) -> None:
        """Remove every hook this callback holds on the model (subclasses that place hooks)."""

    @override
    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        self._release_hooks()
        close_worker(trainer)  # what was drawn reaches the loggers before they close

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._release_hooks()
        close_worker(trainer)  # no thread survives fit
        if stage == "fit":
            self._report_budget()

    def __init__(self) -> None:
        self._enabled = False
        self._writers: Writers | None = None
        self._budget: Budget | None = None
        #: Seconds of this callback's latest drawing (its next one is expected to cost as much).
        self.last_drawing_seconds = 0.0
        self._drawn_at: int | None = None  # the step of the latest drawing
        self._postponed_drawing: Callable[[], None] | None = None  # a collector's
        #: Which drawing is being made (for one that charges itself).
        self._drawing_made: Drawing = "between"
        #: Render and write drawings in the drawing worker (decided in ``setup``, rank zero).
        self._background = False
        #: The classes' names when the data says them (see :func:`class_names_of`).
        self._class_names: list[str] | None = None

    # -- setup ---------------------------------------------------------------------------------

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._enabled = self._agreeing = False
        if stage != "fit":
            return
        if getattr(trainer, "fast_dev_run", False):
            rank_zero_info(f"{type(self).__name__}: idle under fast_dev_run (no real logger).")
            return
        sharding = sharded_parameters(trainer)
        if sharding is not None and self.whole_model_needed is not None:
            rank_zero_warn(
                f"{type(self).__name__} is off for this run: under {sharding} each rank holds a "
                f"part of every weight, and {type(self).__name__} {self.whole_model_needed}. "
                "Training goes on; ActivationStatsMonitor, EmbeddingMonitor and "
                "AttributePerformanceMonitor, which read the passes the strategy makes, work."
            )
            return
        self._writers = self._open_writers(trainer)
        self._budget = budget_for(trainer)
        self._budget.ensure_started()
        self._background = trainer.is_global_zero and self._budget.background(trainer)
        self._class_names = class_names_of(trainer)
        self._setup_model(trainer, pl_module)
        self._enabled = True
        self._agreeing = trainer.world_size > 1 and bool(self._collective_hooks)

    def _setup_model(self, trainer: Trainer, pl_module: LightningModule) -> None:
        raise NotImplementedError

    def _class_name(self, index: int) -> str:
        """How captions and legends name class ``index``: its name when the data says it."""
        names = self._class_names
        return names[index] if names is not None and 0 <= index < len(names) else str(index)

    def _resolve(
        self,
        pl_module: LightningModule,
        layers: LayerSpec | list[LayerSpec] | None,
        default: dict[str, nn.Module] | None = None,
    ) -> dict[str, nn.Module]:
        """Resolve ``layers`` (or take ``default`` for ``None``) on the model; a clear setup
        error when nothing can be served."""
        name = type(self).__name__
        try:
            selected = default if layers is None else resolve_layers(pl_module, layers)
        except (ValueError, TypeError) as error:
            raise MisconfigurationException(f"{name}: {error}") from None
        if not selected:
            raise MisconfigurationException(
                f"{name}: {type(pl_module).__name__} has no convolution layer to monitor. "
                "lightning_convviz watches ConvNets; pass layers=[...] to pick modules by name."
            )
        return selected

    def _call_sites(
        self,
        pl_module: LightningModule,
        layers: LayerSpec | list[LayerSpec] | None,
        rule: SiteRule,
        collecting: bool = True,
    ) -> CallSites:
        """The call sites to watch: ``layers`` resolved now, or, for ``None``, the ``rule``'s
        choice from the first forward pass (a model without convolutions fails here).
        ``collecting`` sites watch training or validation passes (not diagnostics')."""
        if layers is None:
            self._resolve(pl_module, None, conv_layers(pl_module))  # "no convolution" error
            return CallSites(pl_module, None, rule, collecting)
        return CallSites(pl_module, self._resolve(pl_module, layers), None, collecting)

    def _sites_found(self, sites: CallSites, without: str | None = None) -> None:
        """After a forward pass: fail clearly on a selected call that does not exist, and say
        once which sites a default rule chose; when it chose none, the callback does not apply
        (:class:`NotApplicable`), or, if it can do ``without`` them, an info message says what
        is missing."""
        name = type(self).__name__
        missing = sites.unmatched()
        if missing:
            raise MisconfigurationException(
                f"{name}: layers: no such call: {'; '.join(missing)}. Number the calls from 1."
            )
        if sites.rule is None or sites.chosen is None or sites.announced:
            return
        sites.announced = True
        if not sites.chosen:
            calls = f"the forward pass calls no layer for {sites.rule.description}"
            if without is None:
                raise NotApplicable(f"{calls} (pass layers=[...] to pick modules by name).")
            rank_zero_info(f"{name}: {calls}; {without}.")
            return
        names = [sites.name(site) for site in sites.chosen]
        shown = ", ".join(names[:12]) + (
            f", ... ({len(names) - 12} more)" if len(names) > 12 else ""
        )
        rank_zero_info(f"{name}: watching {sites.rule.description}: {shown}")

    # -- the budget ----------------------------------------------------------------------------

    def _may_draw(self, trainer: Trainer, drawing: Drawing) -> bool:
        """A drawing fell due: whether to make it now. A first or last one is always made; one
        in between when the budget allows it (else it is counted as postponed). The budget
        counts on global rank zero, which draws (no collective depends on this)."""
        budget = self._budget if trainer.is_global_zero else None
        full = (  # the drawings queued for the worker hold memory: a full queue waits
            drawing == "between"
            and budget is not None
            and self._background
            and worker_for(trainer, budget.max_queued).full
        )
        if full:
            assert budget is not None
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

    def _draw_collected(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        draw: Callable[[], None],
        timed: bool = True,
    ) -> None:
        """On global rank zero, a validation collector's drawing of what it just gathered: now
        if the budget allows (the first one and the last epoch's always), else kept and made at
        the next collection that the budget allows (a newer one replaces it) or at the end of
        training. ``draw`` writes at the step it was collected at; ``timed=False`` for work
        that charges itself (a background job; :attr:`_drawing_made` says which drawing)."""
        if not trainer.is_global_zero:
            return
        self._note_due(trainer)
        drawing = self._due_drawing(trainer)
        if self._may_draw(trainer, drawing):
            self._postponed_drawing = None
            self._make_drawing(trainer, pl_module, draw, timed, drawing)
        else:
            self._postponed_drawing = draw

    def _draw_pending(
        self, trainer: Trainer, pl_module: LightningModule, timed: bool = True
    ) -> None:
        """Make a postponed collector drawing (at the end of training: the last one)."""
        draw, self._postponed_drawing = self._postponed_drawing, None
        if draw is not None:
            self._make_drawing(trainer, pl_module, draw, timed, "last")

    def _make_drawing(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        draw: Callable[[], None],
        timed: bool,
        drawing: Drawing,
    ) -> None:
        """Run ``draw``, timed and charged unless it charges itself, and note the step."""
        self._drawing_made = drawing
        if timed:
            with self._drawing(trainer, pl_module, drawing):
                draw()
        else:
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

    # -- writing -------------------------------------------------------------------------------

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

        budget = self._budget
        max_queued = budget.max_queued if budget is not None else DEFAULT_MAX_QUEUED
        worker_for(trainer, max_queued).submit(name, step, work, ready, done)

    def _open_writers(self, trainer: Trainer) -> Writers:
        """The Trainer's writers; on global rank zero the dashboard of every lightning_convviz
        callback of the Trainer is written with them, once."""
        ours = [c for c in trainer.callbacks if isinstance(c, ConvVizCallback)]  # type: ignore[attr-defined]
        writers = writers_for(trainer, [type(callback).__name__ for callback in ours])
        if trainer.is_global_zero:
            charts = {"cost of each drawing (s)": ["cost/[A-Z]"]}
            for callback in ours:
                charts.update(callback.dashboard)
            writers.layout_once(charts)
        return writers

    def _writer(self, trainer: Trainer) -> Writers | None:
        """The writers on global rank zero, ``None`` elsewhere."""
        if not trainer.is_global_zero:
            return None
        return self._writers

    def _log_scalars(self, trainer: Trainer, metrics: dict[str, float], step: int) -> None:
        """Send scalars to every logger of the Trainer, from global rank zero only."""
        writers = self._writer(trainer)
        if writers is not None and metrics:
            writers.scalars(metrics, step)

    def _tag(self, *parts: str) -> str:
        return "/".join((self.section, *parts))


class EpochDrawingCallback(ConvVizCallback):
    """A callback that draws at the start of training (its subclass's ``on_train_start`` calls
    :meth:`_draw_first`), every ``every_n_epochs`` epochs as the budget allows (a due drawing it
    does not allow is postponed to the next epoch end) and once more at the end of training, so
    that the time-lapse ends where training does. Subclasses set ``every_n_epochs`` and
    implement :meth:`_draw`."""

    every_n_epochs: int = 1
    #: A due drawing was postponed by the budget (it is due again at the next epoch end).
    _postponed: bool = False

    def _draw_first(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The drawing at the start of training (always made)."""
        self._note_due(trainer)
        self._draw_now(trainer, pl_module, "first")

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        on_cadence = (trainer.current_epoch + 1) % self.every_n_epochs == 0
        if not self._enabled or not (on_cadence or self._postponed):
            return
        if on_cadence:
            self._note_due(trainer)
        # the first one, and the last epoch's (the end of the time-lapse), are always made
        drawing = self._due_drawing(trainer)
        if self._may_draw(trainer, drawing):
            self._draw_now(trainer, pl_module, drawing)
        else:
            self._postponed = True

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._enabled and self._drawn_at != trainer.global_step:
            if not self._postponed:  # else it is the postponed due drawing, made now
                self._note_due(trainer)
            self._draw_now(trainer, pl_module, "last")

    def _draw_now(self, trainer: Trainer, pl_module: LightningModule, drawing: Drawing) -> None:
        """Draw now on global rank zero, timed and charged to the budget."""
        if trainer.is_global_zero:
            with self._drawing(trainer, pl_module, drawing):
                self._draw(trainer, pl_module)
        self._postponed = False
        self._drawn_at = trainer.global_step

    def _draw(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Make and write the pictures (global rank zero)."""
        raise NotImplementedError


def _synchronize(pl_module: LightningModule) -> None:
    """Wait for the device's queued work (CUDA), so that a drawing's time is its own."""
    device = getattr(pl_module, "device", None)
    if isinstance(device, torch.device) and device.type == "cuda":
        torch.cuda.synchronize(device)
