"""LearningRateDoctor: measures how training steps land and says whether the learning rate is
off, and which one to try."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from pytorch_lightning.utilities import rank_zero_warn
from typing_extensions import override

from lightning_convviz.callbacks.fault_records import CONFIRMING_EPOCHS
from lightning_convviz.callbacks.lr_records import summary_markdown
from lightning_convviz.callbacks.step_doctor import StepDoctor
from lightning_convviz.functional.diagnosis import Diagnosis
from lightning_convviz.functional.lr_judgement import (
    Finding,
    Judgement,
    Verdict,
)

__all__ = ["Finding", "LearningRateDoctor", "Verdict"]

#: Findings warned of only once the verdict held at :data:`CONFIRMING_EPOCHS` epoch ends in a
#: row (the early steps of a healthy run can read either).
CONFIRMED_LATER = frozenset({"barely_moves", "overshoot"})


class LearningRateDoctor(StepDoctor):
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
    schedule: its peak) at which the parabola puts alpha near good runs' value.

    The doctor stands on the same diagnosis as :class:`~lightning_convviz.TrainingDoctor`: where
    another fault explains the signals the judgement reads (units dead from the start, labels
    that carry nothing, layers left out of the optimizer, vanishing gradients, inputs on a raw
    scale, ...), the verdict is "cannot tell", there is no suggestion, and the doctor says why
    once (the training doctor names the fault). Each new finding is one rank-zero warning: at
    once for a loss or gradient that blew up or a loss that rose, and for steps that overshoot
    or barely move once the verdict held at two epoch ends in a row (the first steps of a
    healthy run can read either). A markdown summary goes to TensorBoard's text tab every epoch; at
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
          (-1 too low, 0 healthy, 1 too high; not logged while withheld),
          ``lr_doctor/suggested_lr`` (when not healthy) (scalars, every epoch);
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
        fault_rules: The thresholds of the other faults' checks, which decide when the verdict
            is withheld (:class:`~lightning_convviz.functional.FaultRules`).

    Raises:
        ValueError: At construction, for a threshold outside its allowed range.
        MisconfigurationException: In ``setup``, when the Trainer has no logger or
            the model has no convolution.
    """

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

    @property
    def findings(self) -> list[Finding]:
        """Every finding so far, in order, with its latest evidence (warned once each)."""
        return self.records.findings

    @property
    def verdict(self) -> Verdict:
        """The current verdict: "too high", "too low", "healthy so far", or "cannot tell" when
        another fault explains the signals (see :attr:`withheld`)."""
        if self.judgement is None:
            return "healthy so far"
        return "cannot tell" if self.withheld else self.judgement.verdict

    @property
    def withheld(self) -> str | None:
        """Why the learning-rate verdict is withheld (another fault explains its signals; the
        :class:`~lightning_convviz.TrainingDoctor` names it), else ``None``."""
        return self.diagnosis.withheld if self.diagnosis is not None else None

    @property
    def suggested_lr(self) -> float | None:
        """A learning rate to try (for a schedule: its peak) when the verdict is not healthy."""
        if self.judgement is None or self.withheld:
            return None
        return self.judgement.suggested_lr

    def _report(self, judgement: Judgement, diagnosis: Diagnosis, epoch_end: bool) -> None:
        """Warn of each new finding the verdict rests on: at once for a loss or gradient that
        blew up, after the verdict held at two epoch ends in a row for steps that overshoot or
        barely move (early steps of a healthy run can read either); say once why a verdict is
        withheld."""
        withheld = self.withheld
        if epoch_end:
            held = judgement.verdict if judgement.verdict != "healthy so far" else None
            self._streak = (self._streak + 1 if held == self._held else 1) if held else 0
            self._held = held
        if withheld is not None:
            if withheld not in self._said:
                self._said.add(withheld)
                rank_zero_warn(f"LearningRateDoctor: {withheld} (see TrainingDoctor)")
            return
        confirmed = self._streak >= CONFIRMING_EPOCHS
        shown = [f for f in judgement.findings if confirmed or f.key not in CONFIRMED_LATER]
        advice = f"; try about {judgement.suggested_lr:.1g}" if judgement.suggested_lr else ""
        for finding in self.records.new_findings(replace(judgement, findings=tuple(shown))):
            rank_zero_warn(
                f"LearningRateDoctor: learning rate probably {finding.points_to}: "
                f"{finding.evidence}{advice}"
            )

    def active_findings(self) -> list[Finding]:
        """The findings that hold now (the verdict rests on them; none while withheld)."""
        if self.judgement is None or self.withheld:
            return []
        return list(self.judgement.findings)

    def summary(self) -> str:
        """The verdict, its evidence, the suggestion and the latest signals, as markdown."""
        text = summary_markdown(
            self.verdict,
            None if self.withheld else self.judgement,
            self.records.findings,
            self.records.recent_ratios,
            self.epochs[-1].dead if self.epochs else {},
        )
        if self.withheld:
            text = text.replace("- no finding holds now", f"- {self.withheld}", 1)
        return text

    def _epoch_scalars(self, scalars: dict[str, float]) -> dict[str, float]:
        if self.withheld:
            scalars = {k: v for k, v in scalars.items() if k not in {"verdict", "suggested_lr"}}
        return scalars

    def _hyperparameters(self) -> dict[str, float | str]:
        return self.records.hyperparameters(self.verdict, self.suggested_lr)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "verdict_streak": [self._held, self._streak],
            "said": sorted(self._said),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._held, self._streak = state_dict.get("verdict_streak", [None, 0])
        self._said = set(state_dict.get("said", []))
