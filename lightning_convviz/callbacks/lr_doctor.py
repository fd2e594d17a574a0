"""LearningRateDoctor: measures how training steps land and says whether the learning rate is
off, and which one to try."""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Any, ClassVar

import torch
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from typing_extensions import override

from lightning_convviz.callbacks.arguments import check_number, check_positive_int
from lightning_convviz.callbacks.base import ConvVizCallback
from lightning_convviz.callbacks.lr_records import (
    HEALTHY_UPDATE_RATIO,
    KEPT_STEPS,
    RECENT_RATIOS,
    VERDICT_VALUE,
    StepSnapshot,
    loss_of,
    summary_markdown,
)
from lightning_convviz.functional.activity import accumulate_positive_counts
from lightning_convviz.functional.capture import conv_layers
from lightning_convviz.functional.defaults import ACTIVATION_SITES
from lightning_convviz.functional.filters import filter_noise_score
from lightning_convviz.functional.guard import (
    RandomState,
    preserved_state,
    random_state,
    replayed_random_state,
    silent_replay,
)
from lightning_convviz.functional.loss_tally import LossTally
from lightning_convviz.functional.lr_judgement import (
    EpochSignals,
    Finding,
    Judgement,
    JudgementRules,
    StepSignals,
    Verdict,
    cockpit_alpha,
    judge_learning_rate,
)
from lightning_convviz.functional.sites import CallSites, Site
from lightning_convviz.functional.step_update import update_statistics

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
      the **gradient norm**, and the **dead filters** of each conv block's activation (counted
      as :class:`~lightning_convviz.ActivationStatsMonitor` counts them);
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
        check_number("alpha_high", alpha_high, above=-1.0)
        check_number("alpha_low", alpha_low)
        check_number("dead_fraction_high", dead_fraction_high, above=0.0, at_most=1.0)
        check_number("divergence_factor", divergence_factor, above=1.0)
        check_number("explosion_factor", explosion_factor, above=1.0)
        if not alpha_low < alpha_high:
            raise ValueError(
                f"alpha_low: expected less than alpha_high ({alpha_high}), got {alpha_low!r}"
            )
        if not isinstance(replay_loss, bool):
            raise ValueError(f"replay_loss: expected True or False, got {replay_loss!r}")
        self.every_n_steps = every_n_steps
        self.measurements_per_epoch = measurements_per_epoch
        self.rules = JudgementRules(
            alpha_high=float(alpha_high),
            alpha_low=float(alpha_low),
            dead_fraction_high=float(dead_fraction_high),
            divergence_factor=float(divergence_factor),
            explosion_factor=float(explosion_factor),
        )
        self.replay_loss = replay_loss
        self._weights: dict[str, torch.Tensor] = {}
        self._sites: CallSites | None = None
        self._first_conv: tuple[str, nn.Module] | None = None
        self._every = 1
        self._offset = 0  # the step the measured steps count from (an epoch's first)
        self._counts: dict[Site, tuple[torch.Tensor, int]] = {}
        self._random_state: RandomState | None = None
        self._snapshot: StepSnapshot | None = None
        self._losses = LossTally()
        self._replay_failed = False
        self._batch_step = 0
        self._peak_lr: float | None = None
        self._optimizer_name = ""
        self._scheduler_name: str | None = None
        #: The measured steps (the latest :data:`KEPT_STEPS`) and one entry per epoch.
        self.steps: deque[StepSignals] = deque(maxlen=KEPT_STEPS)
        self.epochs: list[EpochSignals] = []
        self._first_nonfinite_loss_step: int | None = None
        self._recent_ratios: dict[str, list[float]] = {}
        self._warned: set[str] = set()
        #: Every finding so far, in order, with its latest evidence (warned once each).
        self.findings: list[Finding] = []
        #: The latest judgement (``None`` before the first epoch end).
        self.judgement: Judgement | None = None

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
        self._sites = CallSites(pl_module, None, ACTIVATION_SITES, collecting=True)
        if self.replay_loss and not pl_module.automatic_optimization:
            rank_zero_info(
                "LearningRateDoctor: alpha is not measured under manual optimization (the loss "
                "after a step needs Lightning's automatic optimization); the other signals are."
            )

    # -- when to measure -----------------------------------------------------------------------

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._every, self._offset = self.every_n_steps or 1, 0
        if self.every_n_steps is not None:
            return
        every = int(getattr(trainer, "log_every_n_steps", 50))
        batches = trainer.num_training_batches
        if isinstance(batches, int) or math.isfinite(batches):
            steps = int(batches) // max(int(trainer.accumulate_grad_batches), 1)
            if steps < every * self.measurements_per_epoch:
                # short epochs: measurements_per_epoch evenly spaced steps of each epoch
                every = max(1, math.ceil(steps / self.measurements_per_epoch))
                self._offset = trainer.global_step
        self._every = max(1, every)

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
        if self._sites is None:
            return
        sites = self._sites

        def count(site: Site, output: torch.Tensor) -> None:
            if output.ndim >= 2:
                output = output.detach().movedim(sites.channel_dim(site), 1)
                accumulate_positive_counts(self._counts, site, output, presence_only=True)

        self._release_hooks()
        self._hook(sites, count)

    @override
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: Any
    ) -> None:
        if not self._measuring(trainer):
            return
        params: list[torch.Tensor] = [
            p for p in pl_module.parameters() if p.requires_grad and p.grad is not None
        ]
        if not params:
            return
        groups = getattr(optimizer, "param_groups", [])
        largest: dict[str, Any] = max(
            groups, key=lambda g: sum(p.numel() for p in g["params"]), default={}
        )
        lr = float(largest.get("lr", math.nan))
        peak = max(float(largest.get(key) or 0.0) for key in ("max_lr", "initial_lr", "lr"))
        self._peak_lr = max(self._peak_lr or 0.0, peak) or None
        self._optimizer_name = type(optimizer).__name__
        configs = getattr(trainer, "lr_scheduler_configs", [])
        self._scheduler_name = type(configs[0].scheduler).__name__ if configs else None
        index = {id(p): i for i, p in enumerate(params)}
        self._snapshot = StepSnapshot(
            params=params,
            before=[p.detach().clone() for p in params],
            grads=[p.grad.detach().clone() for p in params],  # type: ignore[union-attr]
            lr=lr,
            weights={n: index[id(w)] for n, w in self._weights.items() if id(w) in index},
        )

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._release_hooks()
        if self._enabled and self._sites is not None:
            self._sites_found(self._sites, without="the dead-filter signal is not measured")
        if self._enabled:
            self._track_loss(trainer, outputs)
        snapshot, self._snapshot = self._snapshot, None
        # decided by the schedule alone, so that every rank votes at the same steps
        stepped = trainer.global_step > self._batch_step and self._due(self._batch_step)
        if not stepped or not self._ranks_agree(trainer) or snapshot is None:
            return
        values = self._measure(trainer, pl_module, snapshot, outputs, batch, batch_idx)
        self._record(trainer, snapshot, values)

    def _measure(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        snapshot: StepSnapshot,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> list[float]:
        """Every number of the step on the device, averaged over ranks, in one host copy:
        loss before, loss after, slope, gradient norm, clipped norm, update norm, then one
        update ratio per weight."""
        slope, grad_norm, moved, ratios = update_statistics(
            snapshot.grads,
            snapshot.before,
            [p.detach() for p in snapshot.params],
            list(snapshot.weights.values()),
        )
        now = [p.grad for p in snapshot.params]
        clipped = getattr(trainer, "gradient_clip_val", None) and all(g is not None for g in now)
        clipped_norm = (
            torch.stack([g.detach().float().norm() for g in now if g is not None]).norm()
            if clipped
            else grad_norm
        )
        nan = torch.full((), math.nan, device=slope.device)
        loss_before = loss_of(outputs)
        scale = float(max(int(getattr(trainer, "accumulate_grad_batches", 1)), 1))
        loss_before = nan if loss_before is None else loss_before.detach().float() * scale
        loss_after = self._replayed_loss(trainer, pl_module, batch, batch_idx)
        loss_after = nan if loss_after is None else loss_after
        stacked = torch.stack(
            [
                value.to(slope.device, torch.float64)
                for value in (loss_before, loss_after, slope, grad_norm, clipped_norm, moved)
            ]
            + [ratio.to(slope.device, torch.float64) for ratio in ratios]
        )
        if trainer.world_size > 1:
            stacked = trainer.strategy.reduce(stacked, reduce_op="mean")
        values: list[float] = stacked.tolist()  # the one host copy of this measured step
        return values

    def _record(self, trainer: Trainer, snapshot: StepSnapshot, values: list[float]) -> None:
        loss_before, loss_after, slope, grad_norm, clipped_norm, moved = values[:6]
        ratios = dict(zip(snapshot.weights, values[6:], strict=True))
        skipped = moved == 0.0
        clip = getattr(trainer, "gradient_clip_val", None)
        clipped = bool(clip) and clipped_norm < grad_norm * (1 - 1e-6)
        alpha = None if skipped else cockpit_alpha(loss_before, loss_after, slope)
        finite_ratios = [r for r in ratios.values() if math.isfinite(r)]
        step = StepSignals(
            step=self._batch_step,
            lr=snapshot.lr,
            alpha=alpha,
            update_ratio=statistics.median(finite_ratios) if finite_ratios else math.nan,
            grad_norm=grad_norm,
            skipped=skipped,
            clipped=clipped,
            loss=loss_before,
            loss_after=loss_after,
            slope=slope,
        )
        self.steps.append(step)
        for name, ratio in ratios.items():
            recent = self._recent_ratios.setdefault(name, [])
            recent.append(ratio)
            del recent[:-RECENT_RATIOS]
        metrics = {self._tag("update_ratio", name): ratio for name, ratio in ratios.items()}
        metrics[self._tag("update_ratio_reference")] = HEALTHY_UPDATE_RATIO
        metrics[self._tag("grad_norm")] = grad_norm
        metrics[self._tag("lr")] = snapshot.lr
        if alpha is not None:
            metrics[self._tag("alpha")] = alpha
        self._log_scalars(trainer, metrics, self._batch_step)
        if not (skipped or math.isfinite(grad_norm)):
            self._judge()  # a permanent finding: say it now, not at the epoch end

    def _replayed_loss(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> torch.Tensor | None:
        """The same batch's loss after the step: ``training_step`` once more, changing
        nothing (see the class docstring)."""
        if (
            not self.replay_loss
            or self._replay_failed
            or not pl_module.automatic_optimization
            or self._random_state is None
        ):
            return None
        precision = trainer.strategy.precision_plugin
        try:
            with (
                preserved_state(pl_module, eval_mode=False, buffers=True),
                replayed_random_state(self._random_state),
                silent_replay(pl_module),
                precision.train_step_context(),
                torch.no_grad(),
            ):
                output = pl_module.training_step(batch, batch_idx)
        except Exception as error:
            self._replay_failed = True
            rank_zero_warn(
                "LearningRateDoctor: alpha is not measured: replaying training_step after the "
                f"step failed ({type(error).__name__}: {error}); the other signals are."
            )
            return None
        loss = loss_of(output)
        return None if loss is None else loss.detach().float()

    def _track_loss(self, trainer: Trainer, outputs: Any) -> None:
        loss = loss_of(outputs)
        if loss is not None:
            self._losses.add(loss, self._batch_step)

    # -- per epoch -----------------------------------------------------------------------------

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._ranks_agree(trainer):
            return
        step = trainer.global_step
        metrics: dict[str, float] = {}
        dead: dict[str, tuple[int, int]] = {}
        sites = self._sites
        measured = [] if sites is None else [s for s in sites.order if s in self._counts]
        if measured:  # call order: the same on every rank; one collective, one host copy
            assert sites is not None
            counts = [self._counts[site][0].flatten().long() for site in measured]
            totals = trainer.strategy.reduce(torch.cat(counts), reduce_op="sum")
            parts = totals.split([len(c) for c in counts])
            zeros: list[int] = torch.stack([(part == 0).sum() for part in parts]).tolist()
            for site, part, dead_channels in zip(measured, parts, zeros, strict=True):
                name = sites.name(site)
                dead[name] = (dead_channels, int(part.numel()))
                metrics[self._tag("dead_fraction", name)] = dead_channels / max(part.numel(), 1)
        self._counts = {}
        if self._first_conv is not None:
            name, module = self._first_conv
            score = float(filter_noise_score(module.weight))  # type: ignore[arg-type]
            if math.isfinite(score):
                metrics[self._tag("noise_score", name)] = score
        mean_loss = self._epoch_loss(trainer)
        if math.isfinite(mean_loss):
            metrics[self._tag("epoch_loss")] = mean_loss
        self.epochs.append(EpochSignals(trainer.current_epoch, step, mean_loss, dead))
        judgement = self._judge()
        metrics[self._tag("verdict")] = VERDICT_VALUE[judgement.verdict]
        if judgement.alpha is not None:
            metrics[self._tag("alpha_smoothed")] = judgement.alpha
        if judgement.suggested_lr is not None:
            metrics[self._tag("suggested_lr")] = judgement.suggested_lr
        self._log_scalars(trainer, metrics, step)
        writer = self._writer(trainer)
        if writer is not None:
            writer.text(self._tag("summary"), self.summary(), step)

    def _epoch_loss(self, trainer: Trainer) -> float:
        """The epoch's mean finite loss over every rank, and the first step whose loss was not
        finite (one collective; under DDP the mean of the steps of the ranks that saw one)."""
        total, count, bad_step = self._losses.totals(trainer.strategy.root_device)
        self._losses = LossTally()
        sums = torch.stack([total, count, (bad_step >= 0).double(), bad_step.clamp_min(0)])
        if trainer.world_size > 1:
            sums = trainer.strategy.reduce(sums, reduce_op="sum")
        loss_sum, finite, ranks_bad, bad_steps = sums.tolist()
        if ranks_bad and self._first_nonfinite_loss_step is None:
            self._first_nonfinite_loss_step = round(bad_steps / ranks_bad)
        return loss_sum / finite if finite else math.nan

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._release_hooks()
        writer = self._writer(trainer)
        if not self._enabled or writer is None or not self.steps:
            return
        lr = self._peak_lr if self._peak_lr is not None else self.steps[-1].lr
        suggested = self.suggested_lr
        params: dict[str, float | str] = {
            self._tag("lr"): lr,
            self._tag("optimizer"): self._optimizer_name,
            self._tag("scheduler"): self._scheduler_name or "none",
            self._tag("verdict"): self.verdict,
            self._tag("suggested_lr"): suggested if suggested is not None else math.nan,
        }
        tags = [self._tag("verdict"), self._tag("suggested_lr"), self._tag("alpha_smoothed")]
        tags += [str(key) for key in trainer.callback_metrics]  # the run's own, e.g. accuracy
        writer.hyperparameters(params, list(dict.fromkeys(tags)))

    def _judgement(self) -> Judgement:
        """The judgement of the signals recorded so far (pure: warns nothing)."""
        return judge_learning_rate(
            list(self.steps),
            self.epochs,
            first_nonfinite_loss_step=self._first_nonfinite_loss_step,
            peak_lr=self._peak_lr,
            scheduler=self._scheduler_name,
            rules=self.rules,
        )

    def _judge(self) -> Judgement:
        """Judge again, keep the findings' latest evidence and warn of each new one."""
        judgement = self.judgement = self._judgement()
        for finding in judgement.findings:
            known = next((i for i, f in enumerate(self.findings) if f.key == finding.key), None)
            if known is None:
                self.findings.append(finding)
            else:
                self.findings[known] = finding  # keep the evidence current
            if finding.key not in self._warned:
                self._warned.add(finding.key)
                advice = (
                    f"; try about {judgement.suggested_lr:.1g}" if judgement.suggested_lr else ""
                )
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
            self.findings,
            self._recent_ratios,
            self.epochs[-1].dead if self.epochs else {},
        )

    # -- cleanup and state ---------------------------------------------------------------------

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": [vars(step) for step in self.steps],
            "epochs": [vars(epoch) for epoch in self.epochs],
            "first_nonfinite_loss_step": self._first_nonfinite_loss_step,
            "peak_lr": self._peak_lr,
            "scheduler": self._scheduler_name,
            "recent_ratios": self._recent_ratios,
            "findings": [vars(finding) for finding in self.findings],
            "warned": sorted(self._warned),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.steps = deque(
            (StepSignals(**step) for step in state_dict.get("steps", [])), maxlen=KEPT_STEPS
        )
        self.epochs = [
            EpochSignals(**{**epoch, "dead": {k: tuple(v) for k, v in epoch["dead"].items()}})
            for epoch in state_dict.get("epochs", [])
        ]
        self._first_nonfinite_loss_step = state_dict.get("first_nonfinite_loss_step")
        self._peak_lr = state_dict.get("peak_lr")
        self._recent_ratios = dict(state_dict.get("recent_ratios", {}))
        self.findings = [Finding(**item) for item in state_dict.get("findings", [])]
        self._warned = set(state_dict.get("warned", []))
        self._scheduler_name = state_dict.get("scheduler")
        self.judgement = self._judgement() if self.epochs else None
