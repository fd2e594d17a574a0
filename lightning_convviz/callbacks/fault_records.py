"""What the doctors keep of the fault signals (kept in ``state_dict`` for resume), and which
faults the training doctor has confirmed and warned of."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from lightning_convviz.callbacks.fault_signals import EpochTotals
from lightning_convviz.functional.diagnosis import Diagnosis, RunSignals
from lightning_convviz.functional.faults import Fault, FaultKind
from lightning_convviz.functional.layer_faults import first_to_last_ratios
from lightning_convviz.functional.lr_judgement import StepSignals
from lightning_convviz.functional.run_faults import EpochRecord

__all__ = ["CONFIRMED_AT_ONCE", "CONFIRMING_EPOCHS", "KEPT_MEASUREMENTS", "FaultRecords"]

#: Layer measurements kept for the checks (the latest ones).
KEPT_MEASUREMENTS = 1024
#: Faults that are facts once seen (a measured input scale, a first loss, a parameter in no
#: param group, label counts, a non-finite gradient): warned at once.
CONFIRMED_AT_ONCE: frozenset[FaultKind] = frozenset(
    {
        "inputs_not_normalized",
        "init_loss_off",
        "frozen_layers",
        "class_imbalance",
        "exploding_gradients",
    }
)
#: Epoch ends in a row at which any other fault must hold before it is warned of.
CONFIRMING_EPOCHS = 2


@dataclass
class FaultRecords:
    """The fault signals of the run, and the state of the training doctor's warnings."""

    signals: RunSignals = field(default_factory=RunSignals)
    #: Epoch ends in a row at which each kind held.
    streaks: dict[str, int] = field(default_factory=dict)
    #: The kinds warned of and not withdrawn.
    warned: set[str] = field(default_factory=set)
    #: The step at which each kind was first found (the checks read the signals of the run so
    #: far, and some say only the step of the judgement).
    first_seen: dict[str, int] = field(default_factory=dict)

    def dated(self, diagnosis: Diagnosis) -> Diagnosis:
        """``diagnosis`` with each fault's step the first at which its kind was found (kept
        from diagnosis to diagnosis)."""
        faults = []
        for fault in diagnosis.faults:
            first = min(self.first_seen.get(fault.kind, fault.step), fault.step)
            self.first_seen[fault.kind] = first
            faults.append(replace(fault, step=first))
        return replace(diagnosis, faults=tuple(faults))

    # -- recording -----------------------------------------------------------------------------

    def add_step(
        self,
        step: StepSignals,
        values: Sequence[float],
        *,
        weights: Sequence[str],
        parameters: Sequence[str],
        saturating: Sequence[str],
    ) -> None:
        """Keep a measured step's layer values (relative gradient per weight, unchanged flag
        per parameter, saturated share per saturating layer, in that order)."""
        signals = self.signals
        relative = values[: len(weights)]
        flags = values[len(weights) : len(weights) + len(parameters)]
        shares = values[len(weights) + len(parameters) :][: len(saturating)]
        signals.measured_steps.append(step.step)
        signals.relative_gradients.append(dict(zip(weights, relative, strict=True)))
        if not math.isfinite(signals.first_gradient_ratio):
            signals.first_gradient_ratio = first_to_last_ratios(signals.relative_gradients[-1:])[0]
        signals.saturated_shares.append(dict(zip(saturating, shares, strict=True)))
        for kept in (
            signals.measured_steps,
            signals.relative_gradients,
            signals.saturated_shares,
        ):
            del kept[:-KEPT_MEASUREMENTS]
        if step.skipped or not any(flag < 1.0 for flag in flags):
            return  # nothing moved: says nothing of single parameters
        for name, flag in zip(parameters, flags, strict=True):
            if flag >= 1.0:
                signals.unchanged_steps[name] = signals.unchanged_steps.get(name, 0) + 1
            else:
                signals.unchanged_steps.pop(name, None)

    def add_epoch(
        self,
        epoch: int,
        step: int,
        mean_loss: float,
        totals: EpochTotals,
        *,
        classes: int | None,
        dead: Mapping[str, tuple[int, int]] | None,
        first_measured_step: int,
    ) -> None:
        """Keep an epoch's totals (``dead``: the first epoch's dead units, else ``None``)."""
        signals = self.signals
        if totals.input_moments is not None and signals.input_mean is None:
            signals.input_mean, signals.input_std = totals.input_moments
        if totals.first_batch is not None and not math.isfinite(signals.initial_loss):
            signals.initial_loss, signals.initial_score_rms = totals.first_batch
        if classes is not None:
            signals.classes = classes
        train_loss, accuracy, val_loss = mean_loss, math.nan, math.nan
        if totals.train is not None:
            samples, correct, cross_entropy = totals.train[:3]
            train_loss, accuracy = cross_entropy / samples, correct / samples
            signals.label_counts = [round(c) for c in totals.train[4:]]
        val_accuracy = math.nan
        if totals.val is not None:
            val_loss, val_accuracy = totals.val[2] / totals.val[0], totals.val[1] / totals.val[0]
            signals.val_label_counts = [round(c) for c in totals.val[4:]]
        signals.epochs.append(
            EpochRecord(epoch, step, train_loss, val_loss, accuracy, val_accuracy)
        )
        if dead is not None:
            signals.initial_dead = dict(dead)
            signals.initial_dead_step = first_measured_step

    # -- warnings ------------------------------------------------------------------------------

    def confirm(self, diagnosis: Diagnosis, *, epoch_end: bool) -> tuple[list[Fault], list[str]]:
        """The faults to warn of now (confirmed: a fact, or held at :data:`CONFIRMING_EPOCHS`
        epoch ends in a row), and the kinds warned of earlier that no longer hold (to say so).
        Streaks count at epoch ends only."""
        found = {fault.kind: fault for fault in diagnosis.faults}
        if epoch_end:
            self.streaks = {kind: self.streaks.get(kind, 0) + 1 for kind in found}
        fresh = [
            fault
            for kind, fault in found.items()
            if kind not in self.warned
            and (kind in CONFIRMED_AT_ONCE or self.streaks.get(kind, 0) >= CONFIRMING_EPOCHS)
        ]
        self.warned.update(fault.kind for fault in fresh)
        withdrawn = sorted(kind for kind in self.warned if kind not in found) if epoch_end else []
        self.warned.difference_update(withdrawn)
        return fresh, withdrawn

    def confirmed(self, diagnosis: Diagnosis | None) -> list[Fault]:
        """The faults of ``diagnosis`` that have been warned of."""
        faults = diagnosis.faults if diagnosis is not None else ()
        return [fault for fault in faults if fault.kind in self.warned]

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        signals = self.signals
        return {
            **{
                key: value
                for key, value in vars(signals).items()
                if key not in {"epochs", "initial_dead"}
            },
            "epochs": [vars(record) for record in signals.epochs],
            "initial_dead": {k: list(v) for k, v in signals.initial_dead.items()},
            "streaks": dict(self.streaks),
            "warned": sorted(self.warned),
            "first_seen": dict(self.first_seen),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> FaultRecords:
        fields = {
            key: value
            for key, value in state.items()
            if key in RunSignals.__dataclass_fields__ and key not in {"epochs", "initial_dead"}
        }
        signals = RunSignals(
            **fields,
            epochs=[EpochRecord(**record) for record in state.get("epochs", [])],
            initial_dead={
                name: (int(dead), int(units))
                for name, (dead, units) in state.get("initial_dead", {}).items()
            },
        )
        return cls(
            signals,
            dict(state.get("streaks", {})),
            set(state.get("warned", [])),
            dict(state.get("first_seen", {})),
        )
