"""StepDoctor: what the learning-rate doctor and the training doctor share: when they measure,
what they read of each step, each batch and each epoch, and the diagnosis of the run so far.

The two doctors differ only in what they report (:class:`~.lr_doctor.LearningRateDoctor` the
learning rate, :class:`~.training_doctor.TrainingDoctor` every fault), so that both stand on one
judgement: neither gives a learning-rate verdict where another fault explains its signals.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from typing import Any

import torch
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from typing_extensions import override

from lightning_convviz.callbacks.activity_counter import ActivityCounter
from lightning_convviz.callbacks.arguments import check_positive_int
from lightning_convviz.callbacks.base import ConvVizCallback
from lightning_convviz.callbacks.batches import inputs_from_batch
from lightning_convviz.callbacks.fault_records import FaultRecords
from lightning_convviz.callbacks.fault_signals import EpochTotals, FaultSignalReader
from lightning_convviz.callbacks.lr_measurement import (
    dead_filters,
    epoch_mean_loss,
    measure_step,
    measuring_interval,
    optimizer_facts,
    replayed_loss,
    snapshot_step,
    step_signals,
)
from lightning_convviz.callbacks.lr_records import (
    DoctorRecords,
    StepSnapshot,
    checked_rules,
    epoch_metrics,
    loss_of,
    step_metrics,
)
from lightning_convviz.functional.activity import add_positive_counts
from lightning_convviz.functional.capture import conv_layers
from lightning_convviz.functional.diagnosis import Diagnosis, diagnose_run
from lightning_convviz.functional.faults import FaultRules
from lightning_convviz.functional.filters import filter_noise_score
from lightning_convviz.functional.guard import RandomState, random_state
from lightning_convviz.functional.loss_tally import LossTally
from lightning_convviz.functional.lr_judgement import (
    EpochSignals,
    Judgement,
    JudgementRules,
    StepSignals,
)
from lightning_convviz.functional.run_signals import (
    parameters_outside_optimizers,
    saturating_layers,
)
from lightning_convviz.functional.sites import CallSites, Site

__all__ = ["StepDoctor"]


class StepDoctor(ConvVizCallback):
    """The measuring half of the doctors (see :class:`~.lr_doctor.LearningRateDoctor` for the
    learning-rate signals, :class:`~.training_doctor.TrainingDoctor` for the faults'); its
    subclasses say what the diagnosis means for their reader (:meth:`_report`,
    :meth:`summary`)."""

    whole_model_needed = (
        "measures each weight's step and replays training_step outside the strategy's passes"
    )
    _collective_hooks = ("on_train_batch_end", "on_train_epoch_end")

    def __init__(
        self,
        every_n_steps: int | None = None,
        measurements_per_epoch: int = 2,
        alpha_high: float = JudgementRules.alpha_high,
        alpha_low: float = JudgementRules.alpha_low,
        dead_fraction_high: float = JudgementRules.dead_fraction_high,
        divergence_factor: float = JudgementRules.divergence_factor,
        explosion_factor: float = JudgementRules.explosion_factor,
        replay_loss: bool = True,
        fault_rules: FaultRules | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("every_n_steps", every_n_steps, allow_none=True)
        check_positive_int("measurements_per_epoch", measurements_per_epoch)
        self.rules = checked_rules(
            alpha_high, alpha_low, dead_fraction_high, divergence_factor, explosion_factor
        )
        if not isinstance(replay_loss, bool):
            raise ValueError(f"replay_loss: expected True or False, got {replay_loss!r}")
        if fault_rules is not None and not isinstance(fault_rules, FaultRules):
            raise ValueError(f"fault_rules: expected a FaultRules or None, got {fault_rules!r}")
        #: The fault checks' thresholds.
        self.fault_rules = fault_rules or FaultRules()
        self.every_n_steps = every_n_steps
        self.measurements_per_epoch = measurements_per_epoch
        self.replay_loss = replay_loss
        self._weights: dict[str, torch.Tensor] = {}
        self._parameter_names: dict[int, str] = {}
        self._sites: CallSites | None = None
        self._counter: ActivityCounter | None = None
        self._model_calls: CallSites | None = None
        self._saturating: CallSites | None = None
        self._first_conv: tuple[str, nn.Module] | None = None
        self._every = 1
        self._offset = 0  # the step the measured steps count from (an epoch's first)
        self._counts: dict[Site, tuple[torch.Tensor, int]] = {}
        self._random_state: RandomState | None = None
        self._snapshot: StepSnapshot | None = None
        self._losses = LossTally()
        self._replay_failed = False
        self._batch_step = 0
        self._reader = FaultSignalReader()
        #: What the doctor has recorded of the learning rate (kept in ``state_dict``).
        self.records = DoctorRecords()
        #: What the doctor has recorded for the fault checks (kept in ``state_dict``).
        self.fault_records = FaultRecords()
        #: The latest learning-rate judgement (``None`` before the first epoch end).
        self.judgement: Judgement | None = None
        #: The latest diagnosis (``None`` before the first epoch end).
        self.diagnosis: Diagnosis | None = None
        # the learning-rate verdict at the latest epoch end (not healthy), epoch ends in a row
        # at which it held, and the notes said once (for the learning-rate doctor's warnings)
        self._held: str | None = None
        self._streak = 0
        self._said: set[str] = set()

    @property
    def steps(self) -> deque[StepSignals]:
        """The measured steps (the latest :data:`~.lr_records.KEPT_STEPS`)."""
        return self.records.steps

    @property
    def epochs(self) -> list[EpochSignals]:
        """One entry per epoch."""
        return self.records.epochs

    def _setup_model(self, trainer: Trainer, pl_module: LightningModule) -> None:
        convs = conv_layers(pl_module)
        if not convs:
            self._resolve(pl_module, None, {})  # raises the common "no convolution" error
        self._first_conv = next(iter(convs.items()))
        self._weights = {
            name: module.weight
            for name, module in pl_module.named_modules()
            if isinstance(module, (nn.Conv2d, nn.Linear)) and module.weight.requires_grad
        }
        self._parameter_names = {id(p): name for name, p in pl_module.named_parameters()}
        assert self._context is not None
        self._counter = self._context.activity(pl_module)  # the stats monitor's too
        self._sites = self._counter.sites
        self._model_calls = CallSites(
            pl_module, {"": pl_module}, collecting=True, learn_layouts=False
        )
        saturating = saturating_layers(pl_module)
        self._saturating = (
            CallSites(pl_module, saturating, collecting=True, learn_layouts=False)
            if saturating
            else None
        )
        self._reader = FaultSignalReader()
        self._reader.watch_saturation(saturating)
        self.fault_records.signals.class_names = self._class_names
        if self.replay_loss and not pl_module.automatic_optimization:
            rank_zero_info(
                f"{type(self).__name__}: alpha is not measured under manual optimization (the "
                "loss after a step needs Lightning's automatic optimization); the other "
                "signals are."
            )

    # -- when to measure -----------------------------------------------------------------------

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._enabled:
            return
        signals = self.fault_records.signals
        signals.outside_optimizer = parameters_outside_optimizers(pl_module, trainer.optimizers)
        self._reader.start_run(first_step=trainer.global_step == 0)

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._every, self._offset = measuring_interval(
            trainer, self.every_n_steps, self.measurements_per_epoch
        )

    def _due(self, step: int) -> bool:
        """Whether optimizer step ``step`` is measured (the same on every rank)."""
        return (step - self._offset) % self._every == 0

    def _measuring(self, trainer: Trainer) -> bool:
        return self._enabled and self._due(trainer.global_step)

    # -- per batch -----------------------------------------------------------------------------

    @override
    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_step = trainer.global_step  # the step this batch belongs to, as self.log
        self._release_hooks()
        if not self._enabled:
            return
        self._watch_model_output()
        if self._reader.reading_inputs:
            with contextlib.suppress(ValueError):  # no image batch: no input check
                self._reader.read_inputs(inputs_from_batch(batch))
        if not self._measuring(trainer):
            return
        self._random_state = random_state()  # the replay after the step starts from here
        if self._saturating is not None:
            self._hook(self._saturating, self._reader.keep_saturation)
        counter = self._counter
        if counter is None:
            return

        def count(site: Site, output: torch.Tensor) -> None:  # batches with a positive value
            counts, _ = counter.counts(site, output)
            add_positive_counts(self._counts, site, (counts > 0).long(), 1)

        self._read_activity(counter, count)

    def _watch_model_output(self) -> None:
        if self._model_calls is not None:
            self._hook(self._model_calls, self._reader.keep_scores)

    @override
    def on_validation_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._release_hooks()
        if self._enabled and not trainer.sanity_checking and dataloader_idx == 0:
            self._watch_model_output()

    @override
    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._release_hooks()
        if self._enabled and not trainer.sanity_checking and dataloader_idx == 0:
            self._reader.read_batch(batch, training=False)
        self._reader.forget_scores()

    @override
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: Any
    ) -> None:
        if not self._measuring(trainer):
            return
        facts = optimizer_facts(trainer, optimizer)
        self.records.note_optimizer(facts.peak_lr, facts.optimizer, facts.scheduler)
        self._snapshot = snapshot_step(pl_module, facts.lr, self._weights)

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._enabled:
            self._reader.read_batch(batch, training=True)
        self._release_hooks()
        if self._enabled and self._sites is not None:
            self._sites_found(self._sites, without="the dead-filter signal is not measured")
        loss = loss_of(outputs)
        if self._enabled and loss is not None:
            self._losses.add(loss, self._batch_step)
        snapshot, self._snapshot = self._snapshot, None
        # decided by the schedule alone, so that every rank votes at the same steps
        stepped = trainer.global_step > self._batch_step and self._due(self._batch_step)
        if not stepped or not self._ranks_agree(trainer) or snapshot is None:
            self._reader.clear_step()
            return
        loss_after = self._replayed_loss(trainer, pl_module, batch, batch_idx)
        layer_tensors = self._reader.step_tensors(snapshot)
        saturating = self._reader.saturation_names
        self._reader.clear_step()
        values = measure_step(trainer, snapshot, outputs, loss_after, layer_tensors)
        clip = getattr(trainer, "gradient_clip_val", None)
        step, ratios = step_signals(self._batch_step, snapshot, values, clip)
        layer_values = values[6 + len(snapshot.weights) :]
        self.fault_records.add_step(
            step,
            layer_values,
            weights=list(snapshot.weights),
            parameters=[self._parameter_names.get(id(p), "?") for p in snapshot.params],
            saturating=saturating,
        )
        self._record(trainer, step, ratios)

    def _record(self, trainer: Trainer, step: StepSignals, ratios: dict[str, float]) -> None:
        self.records.steps.append(step)
        self.records.add_ratios(ratios)
        scalars = step_metrics(step, ratios)
        self._log_scalars(trainer, {self._tag(k): v for k, v in scalars.items()}, step.step)
        if not (step.skipped or math.isfinite(step.grad_norm)):
            # a permanent finding: say it now, not at the epoch end
            self._judge(step.step, epoch_end=False)

    def _replayed_loss(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> torch.Tensor | None:
        """The same batch's loss after the step (see the learning-rate doctor's docstring);
        ``None`` when it is not measured, and after a replay failed (said once)."""
        if (
            not self.replay_loss
            or self._replay_failed
            or not pl_module.automatic_optimization
            or self._random_state is None
        ):
            return None
        try:
            return replayed_loss(trainer, pl_module, batch, batch_idx, self._random_state)
        except Exception as error:
            self._replay_failed = True
            rank_zero_warn(
                f"{type(self).__name__}: alpha is not measured: replaying training_step after "
                f"the step failed ({type(error).__name__}: {error}); the other signals are."
            )
            return None

    # -- per epoch -----------------------------------------------------------------------------

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._ranks_agree(trainer):
            return
        step = trainer.global_step
        dead = dead_filters(trainer, self._sites, self._counts)
        self._counts = {}
        noise = None
        if self._first_conv is not None:  # read now: a parametrization makes a new weight
            name, conv = self._first_conv
            noise = (name, float(filter_noise_score(conv.weight)))  # type: ignore[arg-type]
        mean_loss, first_bad = epoch_mean_loss(trainer, self._losses)
        self._losses = LossTally()
        totals: EpochTotals = self._reader.epoch_totals(trainer, pl_module.device)
        if self.records.first_nonfinite_loss_step is None:
            self.records.first_nonfinite_loss_step = first_bad
        first_epoch = not self.records.epochs
        self.records.epochs.append(EpochSignals(trainer.current_epoch, step, mean_loss, dead))
        self.fault_records.add_epoch(
            trainer.current_epoch,
            step,
            mean_loss,
            totals,
            classes=self._reader.classes,
            dead=dead if first_epoch else None,
            first_measured_step=self.records.steps[0].step if self.records.steps else step,
        )
        if first_epoch and self._reader.classes is None:
            rank_zero_info(
                f"{type(self).__name__}: no class scores with integer labels in the batches "
                "(the model's output is not N x C, or the batches carry no labels): the checks "
                "of the loss at the start, of learning, overfitting and class balance are off."
            )
        judgement = self._judge(step, epoch_end=True)
        scalars = self._epoch_scalars(epoch_metrics(dead, noise, mean_loss, judgement))
        metrics = {self._tag(name): value for name, value in scalars.items()}
        self._log_scalars(trainer, metrics, step)
        writer = self._writer(trainer)
        if writer is not None:
            writer.text(self._tag("summary"), self.summary(), step)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._release_hooks()
        writer = self._writer(trainer)
        if not self._enabled or writer is None or not self.steps:
            return
        params = {self._tag(name): value for name, value in self._hyperparameters().items()}
        tags = [self._tag(name) for name in self._hyperparameter_metrics()]
        tags += [str(key) for key in trainer.callback_metrics]  # the run's own, e.g. accuracy
        writer.hyperparameters(params, list(dict.fromkeys(tags)))

    def _judge(self, step: int, *, epoch_end: bool) -> Judgement:
        """Judge again: the learning rate, then every fault; report what changed."""
        judgement = self._diagnose(step)
        assert self.diagnosis is not None
        self._report(judgement, self.diagnosis, epoch_end)
        return judgement

    def _diagnose(self, step: int) -> Judgement:
        """The learning-rate judgement and the diagnosis of the signals so far (kept in
        :attr:`judgement` and :attr:`diagnosis`, each fault dated from its first finding)."""
        judgement = self.judgement = self.records.judge(self.rules)
        latest_dead = self.epochs[-1].dead if self.epochs else {}
        self.diagnosis = self.fault_records.dated(
            diagnose_run(
                self.fault_records.signals,
                list(self.steps),
                judgement,
                latest_dead,
                step=step,
                rules=self.fault_rules,
            )
        )
        return judgement

    # -- what the subclasses say ---------------------------------------------------------------

    def _report(self, judgement: Judgement, diagnosis: Diagnosis, epoch_end: bool) -> None:
        """Warn of what the latest judgement and diagnosis changed (rank zero); ``epoch_end``:
        judged at an epoch's end (else at a step whose gradient was not finite)."""
        raise NotImplementedError

    def summary(self) -> str:
        """The doctor's report as markdown."""
        raise NotImplementedError

    def _epoch_scalars(self, scalars: dict[str, float]) -> dict[str, float]:
        """The scalars to log at an epoch end, by name without the section, from the
        learning-rate doctor's (:func:`~.lr_records.epoch_metrics`)."""
        return scalars

    def _hyperparameters(self) -> dict[str, float | str]:
        """The run's hyperparameters and the doctor's conclusions, by name without section."""
        raise NotImplementedError

    def _hyperparameter_metrics(self) -> list[str]:
        """The logged scalars the HParams table shows beside the hyperparameters."""
        return ["verdict", "suggested_lr", "alpha_smoothed"]

    # -- state ---------------------------------------------------------------------------------

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**self.records.state_dict(), "faults": self.fault_records.state_dict()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.records = DoctorRecords.from_state_dict(state_dict)
        self.fault_records = FaultRecords.from_state_dict(state_dict.get("faults", {}))
        if self.epochs:
            self._diagnose(self.epochs[-1].step)
