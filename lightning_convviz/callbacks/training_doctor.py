"""TrainingDoctor: says what is wrong with a training run while it trains (the inputs, the
initialisation, the labels, the gradients, frozen layers, overfitting, class balance and the
learning rate), each finding with its evidence and a fix."""

from __future__ import annotations

from typing import Any, ClassVar

from pytorch_lightning.utilities import rank_zero_warn

from lightning_convviz.callbacks.fault_records import CONFIRMING_EPOCHS
from lightning_convviz.callbacks.step_doctor import StepDoctor
from lightning_convviz.functional.diagnosis import Diagnosis
from lightning_convviz.functional.faults import FAULT_KINDS, Fault, FaultRules
from lightning_convviz.functional.lr_judgement import Judgement

__all__ = ["TrainingDoctor"]


class TrainingDoctor(StepDoctor):
    """Find the faults that ruin a training run while it trains, with the evidence in numbers
    and what to change.

    The doctor reads, cheaply and on the model's device (see :class:`LearningRateDoctor` for
    the measured steps):

    * the **first training batches' input channels** (mean and scale);
    * every batch's **class scores against its labels** (the model's output, hooked; the
      ``training_step`` is not changed): the first batch's loss against chance (``ln C``), each
      epoch's training and validation cross-entropy and training accuracy, the label counts;
    * on measured steps, each conv and linear weight's **gradient relative to the weight**,
      each parameter's **change**, each sigmoid or tanh's **share of outputs at its
      asymptotes**, and the learning-rate doctor's signals (alpha, update ratios, gradient
      norm, dead filters);
    * at the start of fit, the trainable parameters **in no optimizer param group**.

    At every epoch end the checks (pure functions in :mod:`lightning_convviz.functional`, see
    :func:`~lightning_convviz.functional.diagnose_run`) give the faults that hold, each a
    :class:`~lightning_convviz.functional.Fault` with ``kind``, ``evidence``, ``advice`` and the
    ``step`` it was first seen. Kinds (stable; filter on them): ``lr_too_high``,
    ``lr_too_low``, ``inputs_not_normalized``, ``init_loss_off``, ``not_learning``,
    ``vanishing_gradients``, ``exploding_gradients``, ``saturated_activations``,
    ``dead_units``, ``frozen_layers``, ``overfitting``, ``class_imbalance``. The learning rate
    is never blamed for another fault: while a fault that explains the signals the learning-rate
    judgement reads holds (dead units from the start, labels that carry nothing, frozen layers,
    ...), there is no learning-rate finding, and the summary says why.

    A finding is warned of once (rank zero) when the doctor stands by it: facts at once (the
    inputs' scale, the first loss, parameters in no param group, label counts, a gradient that
    is not finite), every other kind once it held at two epoch ends in a row. A finding warned
    of that stops holding is withdrawn with a warning that says so. A model without class
    scores (a regression, an output that is not ``N x C``) or batches without integer labels
    turn the checks that need them off, said once.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> doctor = TrainingDoctor()
        >>> trainer = Trainer(callbacks=[doctor])  # then: [f.kind for f in doctor.findings]

    Logged tags:
        * ``doctor/alpha``, ``doctor/lr``, ``doctor/grad_norm``, ``doctor/update_ratio/<layer>``
          (scalars, every measured step), as the learning-rate doctor's;
        * ``doctor/findings`` (how many findings hold), ``doctor/epoch_loss``,
          ``doctor/dead_fraction/<layer>``, ``doctor/noise_score/<layer>``,
          ``doctor/alpha_smoothed`` (scalars, every epoch);
        * ``doctor/summary`` (text, every epoch: each finding with evidence and advice);
        * hyperparameters ``doctor/lr``, ``doctor/optimizer``, ``doctor/scheduler``,
          ``doctor/found`` (the kinds found, or "none") (end of fit).

    Args:
        every_n_steps: Measure every this many optimizer steps (``None``: the Trainer's
            ``log_every_n_steps``, at least ``measurements_per_epoch`` times per epoch).
        measurements_per_epoch: With ``every_n_steps=None``, at least this many measured steps
            per epoch.
        fault_rules: The checks' thresholds (:class:`~lightning_convviz.functional.FaultRules`;
            the defaults were calibrated on ``benchmarks/doctor_grid.py``).
        replay_loss: Measure alpha by running ``training_step`` once more on measured steps.

    Raises:
        ValueError: At construction, for an argument outside its allowed range.
        MisconfigurationException: In ``setup``, when the Trainer has no logger or
            the model has no convolution.
    """

    section = "doctor"
    dashboard: ClassVar[dict[str, list[str]]] = {
        "update ratio, every layer (flat line: 1e-3)": [
            "doctor/update_ratio/",
            "doctor/update_ratio_reference",
        ],
        "findings (training doctor)": ["doctor/findings"],
    }

    def __init__(
        self,
        every_n_steps: int | None = None,
        measurements_per_epoch: int = 2,
        fault_rules: FaultRules | None = None,
        replay_loss: bool = True,
    ) -> None:
        super().__init__(
            every_n_steps,
            measurements_per_epoch,
            replay_loss=replay_loss,
            fault_rules=fault_rules,
        )
        #: Every finding warned of and later withdrawn, as it read when withdrawn.
        self.withdrawn: list[Fault] = []
        self._last_seen: dict[str, Fault] = {}

    @property
    def findings(self) -> list[Fault]:
        """The findings that hold now and that the doctor stands by (warned of), in the order
        of the kinds."""
        return self.fault_records.confirmed(self.diagnosis)

    @property
    def provisional(self) -> list[Fault]:
        """Faults that hold now but are not yet confirmed (held at fewer than two epoch ends)."""
        confirmed = {fault.kind for fault in self.findings}
        faults = self.diagnosis.faults if self.diagnosis is not None else ()
        return [fault for fault in faults if fault.kind not in confirmed]

    def _report(self, judgement: Judgement, diagnosis: Diagnosis, epoch_end: bool) -> None:
        fresh, withdrawn = self.fault_records.confirm(diagnosis, epoch_end=epoch_end)
        for fault in fresh:
            rank_zero_warn(
                f"TrainingDoctor: {fault.kind} (from step {fault.step}): {fault.evidence}. "
                f"Try: {fault.advice}"
            )
        for kind in withdrawn:
            last = self._last_seen.get(kind)
            if last is not None:
                self.withdrawn.append(last)
            rank_zero_warn(f"TrainingDoctor: {kind} no longer holds (warned of earlier)")
        self._last_seen.update({fault.kind: fault for fault in diagnosis.faults})

    def summary(self) -> str:
        """Each finding with its evidence and advice, the provisional ones and the notes, as
        markdown."""
        findings, provisional = self.findings, self.provisional
        count = {0: "no finding", 1: "1 finding"}.get(len(findings), f"{len(findings)} findings")
        lines = [f"**Training doctor: {count}**", ""]
        if findings:
            lines += ["| kind | from step | evidence | try |", "|---|---|---|---|"]
            lines += [
                f"| {f.kind} | {f.step} | {f.evidence} | {f.advice} |"
                for f in sorted(findings, key=lambda f: FAULT_KINDS.index(f.kind))
            ]
        else:
            lines.append("- nothing wrong found so far")
        if provisional:
            lines += ["", f"Provisional (confirmed after {CONFIRMING_EPOCHS} epoch ends):"]
            lines += [f"- {f.kind}: {f.evidence}" for f in provisional]
        notes = self.diagnosis.notes if self.diagnosis is not None else ()
        if notes:
            lines += ["", *[f"- {note}" for note in notes]]
        if self.withdrawn:
            lines += ["", "Withdrawn (warned of, then no longer held):"]
            lines += [f"- {f.kind}: {f.evidence}" for f in self.withdrawn]
        return "\n".join(lines)

    def _epoch_scalars(self, scalars: dict[str, float]) -> dict[str, float]:
        kept = {
            k: v for k, v in scalars.items() if k not in {"verdict", "suggested_lr"}
        }  # the learning rate's verdict is one finding among the others here
        kept["findings"] = float(len(self.findings))
        return kept

    def _hyperparameters(self) -> dict[str, float | str]:
        base = self.records.hyperparameters("healthy so far", None)
        kinds = [fault.kind for fault in self.findings]
        return {
            "lr": base["lr"],
            "optimizer": base["optimizer"],
            "scheduler": base["scheduler"],
            "found": ", ".join(kinds) or "none",
        }

    def _hyperparameter_metrics(self) -> list[str]:
        return ["findings", "alpha_smoothed"]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "withdrawn": [vars(f) for f in self.withdrawn]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.withdrawn = [Fault(**item) for item in state_dict.get("withdrawn", [])]
