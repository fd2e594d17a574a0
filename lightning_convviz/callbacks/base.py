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
import warnings
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from typing_extensions import override

from lightning_convviz.callbacks.activity_counter import ActivityCounter, CountReader
from lightning_convviz.callbacks.budget import Budget
from lightning_convviz.callbacks.class_names import class_names_of
from lightning_convviz.callbacks.context import TrainerContext, close_context, open_context
from lightning_convviz.callbacks.drawing import DrawingSchedule
from lightning_convviz.callbacks.failures import GUARDED_HOOKS, NotApplicable, guarded
from lightning_convviz.callbacks.sharding import sharded_parameters
from lightning_convviz.functional.capture import LayerSpec, conv_layers, resolve_layers
from lightning_convviz.functional.guard import eager_forward, in_diagnostic
from lightning_convviz.functional.sites import CallSites, SiteCallback, SiteRule
from lightning_convviz.writing import Writers

__all__ = ["ConvVizCallback", "EpochDrawingCallback"]


class ConvVizCallback(DrawingSchedule, Callback):
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

    def _hook(
        self,
        sites: CallSites,
        callback: SiteCallback,
        read: Literal["output", "input"] = "output",
        eager: nn.Module | None = None,
    ) -> None:
        """Watch ``sites`` with ``callback`` (guarded by :meth:`_safe`) until
        :meth:`_release_hooks`, the one place where this callback's hooks come off (also on an
        exception, at teardown and when the callback switches off). With ``eager``, that
        model's forward runs eagerly meanwhile, so that a compiled model's hooks run."""
        if eager is not None:
            self._hooks.enter_context(eager_forward(eager))
        self._hooks.enter_context(sites.attached(self._safe(callback), read=read))
        self._hooked = True

    def _read_activity(self, counter: ActivityCounter, reader: CountReader) -> None:
        """Read ``counter``'s watched calls with ``reader`` (guarded by :meth:`_safe`) until
        :meth:`_release_hooks`; its hooks are shared with the other readers."""
        self._hooks.enter_context(counter.reading(self, self._safe(reader)))
        self._hooked = True

    def _release_hooks(self) -> None:
        """Remove every hook this callback holds on the model."""
        self._hooked = False
        self._hooks.close()

    @override
    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        self._release_hooks()
        close_context(trainer)  # what was drawn reaches the loggers before they close

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._release_hooks()
        close_context(trainer)  # no thread survives fit
        if stage == "fit":
            self._report_budget()

    def __init__(self) -> None:
        self._enabled = False
        self._hooks = contextlib.ExitStack()  # every hook on the model, released as one
        self._hooked = False
        self._announced: CallSites | None = None  # the sites whose choice this one has said
        self._writers: Writers | None = None
        #: What the callbacks of the Trainer share during a fit (opened in ``setup``).
        self._context: TrainerContext | None = None
        self._budget: Budget | None = None
        #: Seconds of this callback's latest drawing (its next one is expected to cost as much).
        self.last_drawing_seconds = 0.0
        self._drawn_at: int | None = None  # the step of the latest drawing
        self._pending: Callable[[], None] | None = None  # a postponed drawing
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
                "Training goes on; ActivationStatsMonitor, EmbeddingMonitor, ConfusionMonitor and "
                "AttributePerformanceMonitor, which read the passes the strategy makes, work."
            )
            return
        self._context = open_context(trainer)
        self._writers = self._open_writers(trainer, self._context)
        self._budget = self._context.budget
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
        if sites.rule is None or sites.chosen is None or self._announced is sites:
            return
        self._announced = sites  # once per callback (sites may be shared)
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

    # -- writing -------------------------------------------------------------------------------

    def _open_writers(self, trainer: Trainer, context: TrainerContext) -> Writers:
        """The Trainer's writers; on global rank zero the dashboard of every lightning_convviz
        callback of the Trainer is written with them, once."""
        ours = [c for c in trainer.callbacks if isinstance(c, ConvVizCallback)]  # type: ignore[attr-defined]
        writers = context.writers(trainer, [type(callback).__name__ for callback in ours])
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
    does not allow is asked again at the next epoch end) and once more at the end of training,
    so that the time-lapse ends where training does. Subclasses set ``every_n_epochs`` and
    implement :meth:`_draw`."""

    every_n_epochs: int = 1

    def _drawer(self, trainer: Trainer, pl_module: LightningModule) -> Callable[[], None]:
        """This callback's drawing of the model as it is when the drawing is made."""
        return lambda: self._draw(trainer, pl_module)

    def _draw_first(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The drawing at the start of training (always made)."""
        self._pending = None
        self._note_due(trainer)
        self._make_drawing(trainer, pl_module, self._drawer(trainer, pl_module), "first")

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._enabled:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._schedule(trainer, pl_module, self._drawer(trainer, pl_module))
        elif self._pending is not None:  # postponed: asked again, not due again
            self._schedule(trainer, pl_module, self._pending, due=False)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._enabled and self._drawn_at != trainer.global_step:
            self._draw_last(trainer, pl_module, self._drawer(trainer, pl_module))

    def _draw(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Make and write the pictures (global rank zero)."""
        raise NotImplementedError
