"""LearningRateDoctor: measures how training steps land and says whether the learning rate is
off, and which one to try."""

from __future__ import annotations

import math
from collections import deque
from typing import Any, ClassVar

import torch
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from typing_extensions import override

from lightning_convviz.callbacks.activity_counter import ActivityCounter
from lightning_convviz.callbacks.arguments import check_positive_int
from lightning_convviz.callbacks.base import ConvVizCallback
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
    summary_markdown,
)
from lightning_convviz.functional.activity import add_positive_counts
from lightning_convviz.functional.capture import conv_layers
from lightning_convviz.functional.filters import filter_noise_score
from lightning_convviz.functional.guard import RandomState, random_state
from lightning_convviz.functional.loss_tally import LossTally
from lightning_convviz.functional.lr_judgement import (
    EpochSignals,
    Finding,
    Judgement,
    JudgementRules,
    StepSignals,
    Verdict,
)
from lightning_convviz.functional.sites import CallSites, Site

__all__ = ["Finding", "LearningRateDoctor", "Verdict"]


class LearningRateDoctor(ConvVizCallback):
    """Say whether the learning rate is too high or too low, with the evidence in numbers and a
    learning rate to try, from how the optimizer's steps land while training.

    On a measured step (every ``every_n_steps``; by default the Trainer's ``log_every_n_steps``,
    but at least ``measurements_per_epoch`` times per epoch) the doctor reads:

    * **alpha**, Cockpit's effective relative step size (Schneider, Dangel and Hennig, NeurIPS
      2021): a parabola along the update the optimizer actually made, from the batch's loss
      before the step, the gradient's dot product with the update, and the same batch's loss
      after it. 0: the step landed at the minimum along its direction; 1: it overshot to the
      same height on the other side; -1: it barely moved. It holds for any optimizer, schedule
      and architecture. The loss after the step comes from running ``training_step`` once more
      on the same batch under ``torch.no_grad()``, in training mode, from the random state the
      step started from (the same dropout masks), with BatchNorm buffers, gradients, the random
      state, ``self.log``, torchmetrics states and list attributes of the module (outputs kept
      for an epoch end) put back exactly as they were. Automatic optimization only;
      ``replay_loss=False`` turns it off (then alpha is not measured);
    * the **learning rate** that made the step (the largest param group's; the schedule's peak
      from ``max_lr`` / ``initial_lr``), whether **clipping** shortened it, and whether the
      optimizer **skipped** it (the fp16 GradScaler does so on purpose when gradients overflow);
    * the **update-to-weight ratio** of each conv and linear weight (CS231n: around 1e-3),
      the **gradient norm**, and the **dead filters** of each conv block's activation (from
      the count :class:`~lightning_convviz.ActivationStatsMonitor` reads, one for both);
    * the **loss**: the first NaN or infinity, and each epoch's mean.

    The judgement (:func:`~lightning_convviz.functional.judge_learning_rate`, a pure function
    of these signals) runs at every epoch end: "too high" for a non-finite loss, divergence, a
    loss that rose above where it started (an epoch's, or a first step's own batch's),
    exploding gradients, a recent median alpha above ``alpha_high``, or steps that barely move
    because most of a layer's filters died; "too low" for a recent median alpha below
    ``alpha_low`` while the loss is still above a tenth of its start; else "healthy so far". Steps
    at less than half the schedule's peak learning rate are not judged for size (a warmup is
    small on purpose). When not healthy, :attr:`suggested_lr` is the learning rate (for a
    schedule: its peak) at which the parabola puts alpha near good runs' value. Each new finding
    is one rank-zero warning; a markdown summary goes to TensorBoard's text tab every epoch; at
    the end of fit the learning rate, optimizer, scheduler, verdict and suggestion are logged
    as hyperparameters, so that a sweep reads as one table (TensorBoard's HParams tab, W&B's and
    MLflow's run tables). The doctor never changes training. Its state is kept in
    ``state_dict`` for resume; under DDP the losses are averaged and counts summed over ranks.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> doctor = LearningRateDoctor()
        >>> trainer = Trainer(callbacks=[doctor])  # then: doctor.verdict, doctor.suggested_lr

    Logged tags:
        * ``lr_doctor/alpha``, ``lr_doctor/lr``, ``lr_doctor/grad_norm``,
          ``lr_doctor/update_ratio/<layer>`` (scalars, every measured step), with
          ``lr_doctor/update_ratio_reference``, the healthy 1e-3, as a line beside the ratios;
        * ``lr_doctor/alpha_smoothed``, ``lr_doctor/dead_fraction/<layer>``,
          ``lr_doctor/noise_score/<layer>``, ``lr_doctor/epoch_loss``, ``lr_doctor/verdict``
          (-1 too low, 0 healthy, 1 too high), ``lr_doctor/suggested_lr`` (when not healthy)
          (scalars, every epoch);
        * ``lr_doctor/summary`` (text, every epoch);
        * hyperparameters ``lr_doctor/lr``, ``lr_doctor/optimizer``, ``lr_doctor/scheduler``,
          ``lr_doctor/verdict``, ``lr_doctor/suggested_lr`` (end of fit).

    Args:
        every_n_steps: Measure every this many optimizer steps (``None``: the Trainer's
            ``log_every_n_steps``; in epochs shorter than ``measurements_per_epoch`` times that,
            ``measurements_per_epoch`` evenly spaced steps of each epoch instead).
        measurements_per_epoch: With ``every_n_steps=None``, at least this many measured steps
            per epoch (short epochs of small datasets still give evidence every epoch).
        alpha_high: A recent median alpha above this reads "too high" (the steps overshoot).
        alpha_low: A recent median alpha below this reads "too low" (the steps barely move).
        dead_fraction_high: Fraction of a layer's filters dead that counts as a finding.
        divergence_factor: Epoch mean loss above this times the best epoch's is divergence.
        explosion_factor: A gradient norm above this times the largest of earlier epochs is an
            explosion.
        replay_loss: Measure alpha by running ``training_step`` once more on measured steps.

    Raises:
        ValueError: At construction, for a threshold outside its allowed range.
        MisconfigurationException: In ``setup``, when the Trainer has no logger or
            the model has no convolution.
    """

    whole_model_needed = (
        "measures each weight's step and replays training_step outside the strategy's passes"
    )

    section = "lr_doctor"
    dashboard: ClassVar[dict[str, list[str]]] = {
        "update ratio, every layer (flat line: 1e-3)": [
            "lr_doctor/update_ratio/",
            "lr_doctor/update_ratio_reference",
        ],
        "alpha (0: steps land at the minimum, 1: overshoot, -1: barely move)": [
            "lr_doctor/alpha",
        ],
        "dead fraction (doctor), every layer": ["lr_doctor/dead_fraction/"],
        "filter noise score (doctor), every layer": ["lr_doctor/noise_score/"],
    }
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
    ) -> None:
        super().__init__()
        check_positive_int("every_n_steps", every_n_steps, allow_none=True)
        check_positive_int("measurements_per_epoch", measurements_per_epoch)
        self.rules = checked_rules(
            alpha_high, alpha_low, dead_fraction_high, divergence_factor, explosion_factor
        )
        if not isinstance(replay_loss, bool):
            raise ValueError(f"replay_loss: expected True or False, got {replay_loss!r}")
        self.every_n_steps = every_n_steps
        self.measurements_per_epoch = measurements_per_epoch
        self.replay_loss = replay_loss
        self._weights: dict[str, torch.Tensor] = {}
        self._sites: CallSites | None = None
        self._counter: ActivityCounter | None = None
        self._first_conv: tuple[str, nn.Module] | None = None
        self._every = 1
        self._offset = 0  # the step the measured steps count from (an epoch's first)
        self._counts: dict[Site, tuple[torch.Tensor, int]] = {}
        self._random_state: RandomState | None = None
        self._snapshot: StepSnapshot | None = None
        self._losses = LossTally()
        self._replay_failed = False
        self._batch_step = 0
        #: What the doctor has recorded of the run (kept in ``state_dict`` for resume).
        self.records = DoctorRecords()
        #: The latest judgement (``None`` before the first epoch end).
        self.judgement: Judgement | None = None

    @property
    def steps(self) -> deque[StepSignals]:
        """The measured steps (the latest :data:`~.lr_records.KEPT_STEPS`)."""
        return self.records.steps

    @property
    def epochs(self) -> list[EpochSignals]:
        """One entry per epoch."""
        return self.records.epochs

    @property
    def findings(self) -> list[Finding]:
        """Every finding so far, in order, with its latest evidence (warned once each)."""
        return self.records.findings

    @property
    def verdict(self) -> Verdict:
        """The current verdict: "too high", "too low" or "healthy so far"."""
        return self.judgement.verdict if self.judgement is not None else "healthy so far"

    @property
    def suggested_lr(self) -> float | None:
        """A learning rate to try (for a schedule: its peak) when the verdict is not healthy."""
        return self.judgement.suggested_lr if self.judgement is not None else None

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
        assert self._context is not None
        self._counter = self._context.activity(pl_module)  # the stats monitor's too
        self._sites = self._counter.sites
        if self.replay_loss and not pl_module.automatic_optimization:
            rank_zero_info(
                "LearningRateDoctor: alpha is not measured under manual optimization (the loss "
                "after a step needs Lightning's automatic optimization); the other signals are."
            )

    # -- when to measure -----------------------------------------------------------------------

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

    # -- per step ------------------------------------------------------------------------------

    @override
    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_step = trainer.global_step  # the step this batch belongs to, as self.log
        if not self._measuring(trainer):
            return
        self._random_state = random_state()  # the replay after the step starts from here
        counter = self._counter
        if counter is None:
            return

        def count(site: Site, output: torch.Tensor) -> None:  # batches with a positive value
            counts, _ = counter.counts(site, output)
            add_positive_counts(self._counts, site, (counts > 0).long(), 1)

        self._release_hooks()
        self._read_activity(counter, count)

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
            return
        loss_after = self._replayed_loss(trainer, pl_module, batch, batch_idx)
        values = measure_step(trainer, snapshot, outputs, loss_after)
        clip = getattr(trainer, "gradient_clip_val", None)
        step, ratios = step_signals(self._batch_step, snapshot, values, clip)
        self._record(trainer, step, ratios)

    def _record(self, trainer: Trainer, step: StepSignals, ratios: dict[str, float]) -> None:
        self.records.steps.append(step)
        self.records.add_ratios(ratios)
        scalars = step_metrics(step, ratios)
        self._log_scalars(trainer, {self._tag(k): v for k, v in scalars.items()}, step.step)
        if not (step.skipped or math.isfinite(step.grad_norm)):
            self._judge()  # a permanent finding: say it now, not at the epoch end

    def _replayed_loss(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> torch.Tensor | None:
        """The same batch's loss after the step (see the class docstring); ``None`` when it is
        not measured, and after a replay failed (said once)."""
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
                "LearningRateDoctor: alpha is not measured: replaying training_step after the "
                f"step failed ({type(error).__name__}: {error}); the other signals are."
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
        if self.records.first_nonfinite_loss_step is None:
            self.records.first_nonfinite_loss_step = first_bad
        self.records.epochs.append(EpochSignals(trainer.current_epoch, step, mean_loss, dead))
        judgement = self._judge()
        scalars = epoch_metrics(dead, noise, mean_loss, judgement)
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
        hyperparameters = self.records.hyperparameters(self.verdict, self.suggested_lr)
        params = {self._tag(name): value for name, value in hyperparameters.items()}
        tags = [self._tag("verdict"), self._tag("suggested_lr"), self._tag("alpha_smoothed")]
        tags += [str(key) for key in trainer.callback_metrics]  # the run's own, e.g. accuracy
        writer.hyperparameters(params, list(dict.fromkeys(tags)))

    def _judge(self) -> Judgement:
        """Judge again, keep the findings' latest evidence and warn of each new one."""
        judgement = self.judgement = self.records.judge(self.rules)
        advice = f"; try about {judgement.suggested_lr:.1g}" if judgement.suggested_lr else ""
        for finding in self.records.new_findings(judgement):
            rank_zero_warn(
                f"LearningRateDoctor: learning rate probably {finding.points_to}: "
                f"{finding.evidence}{advice}"
            )
        return judgement

    def active_findings(self) -> list[Finding]:
        """The findings that hold now (the verdict rests on them)."""
        return list(self.judgement.findings) if self.judgement is not None else []

    def summary(self) -> str:
        """The verdict, its evidence, the suggestion and the latest signals, as markdown."""
        return summary_markdown(
            self.verdict,
            self.judgement,
            self.records.findings,
            self.records.recent_ratios,
            self.epochs[-1].dead if self.epochs else {},
        )

    # -- cleanup and state ---------------------------------------------------------------------

    @override
    def state_dict(self) -> dict[str, Any]:
        return self.records.state_dict()

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.records = DoctorRecords.from_state_dict(state_dict)
        self.judgement = self.records.judge(self.rules) if self.epochs else None
