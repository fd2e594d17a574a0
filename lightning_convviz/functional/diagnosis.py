"""The training doctor's diagnosis: every check run on a run's recorded signals, the
learning-rate verdict placed among the faults. Pure Python on recorded numbers, like the checks
(:mod:`~lightning_convviz.functional.faults`), so that a recorded run can be diagnosed again.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from lightning_convviz.functional.faults import (
    WITHHELD,
    Fault,
    FaultRules,
    learning_rate_fault,
)
from lightning_convviz.functional.layer_faults import (
    check_dead_units,
    check_exploding_gradients,
    check_frozen_parameters,
    check_saturation,
    check_vanishing_gradients,
    gradients_flowed_at_first,
)
from lightning_convviz.functional.lr_judgement import Judgement, StepSignals
from lightning_convviz.functional.run_faults import (
    EpochRecord,
    check_class_imbalance,
    check_initial_loss,
    check_inputs,
    check_not_learning,
    check_overfitting,
)

__all__ = ["STOPS_LEARNING", "Diagnosis", "RunSignals", "diagnose_run"]

#: Faults that by themselves can keep the loss at chance (a skewed training set: at the loss of
#: predicting its frequencies): beside one of them, a loss that does not fall, or a validation
#: accuracy at chance, is its consequence, not a fault of its own.
STOPS_LEARNING = frozenset(
    {
        "inputs_not_normalized",
        "init_loss_off",
        "vanishing_gradients",
        "saturated_activations",
        "dead_units",
        "frozen_layers",
        "class_imbalance",
    }
)


@dataclass
class RunSignals:
    """What the training doctor records of a run beside the learning-rate signals (host
    numbers; NaN, ``None`` or empty where not measured).

    Attributes:
        input_mean: Each input channel's mean over the first training batches.
        input_std: Each input channel's standard deviation over the same batches.
        initial_loss: The cross-entropy of the first training batch's class scores.
        initial_score_rms: The root mean square of those class scores.
        classes: How many class scores the model gives (``None``: no class scores seen).
        label_counts: How many training labels of each class the latest epoch saw (an epoch
            brings the training set once: counting it again would not make a small set
            larger).
        val_label_counts: How many validation labels of each class one validation pass saw.
        class_names: The classes' names, where the data module has them.
        epochs: One record per finished epoch (losses from the class scores where there are).
        measured_steps: The steps at which the layer signals below were measured.
        relative_gradients: At each measured step, each weight's gradient norm over its norm
            (layers in the model's order).
        saturated_shares: At each measured step, each saturating activation's share of outputs
            at its asymptotes.
        initial_dead: Per layer, ``(dead units, units)`` over the first epoch's measured steps.
        initial_dead_step: The first step of those measurements.
        first_gradient_ratio: The first layer's relative gradient over the last layer's at the
            first measured step where it could be read (kept when older measurements are
            dropped; NaN until then).
        outside_optimizer: Trainable parameters in no optimizer param group.
        unchanged_steps: Per parameter, measured steps in a row that left it unchanged while it
            had a gradient and others moved.
    """

    input_mean: list[float] | None = None
    input_std: list[float] | None = None
    initial_loss: float = math.nan
    initial_score_rms: float = math.nan
    classes: int | None = None
    label_counts: list[int] = field(default_factory=list)
    val_label_counts: list[int] = field(default_factory=list)
    class_names: list[str] | None = None
    epochs: list[EpochRecord] = field(default_factory=list)
    measured_steps: list[int] = field(default_factory=list)
    relative_gradients: list[dict[str, float]] = field(default_factory=list)
    saturated_shares: list[dict[str, float]] = field(default_factory=list)
    initial_dead: dict[str, tuple[int, int]] = field(default_factory=dict)
    initial_dead_step: int = 0
    first_gradient_ratio: float = math.nan
    outside_optimizer: list[str] = field(default_factory=list)
    unchanged_steps: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Diagnosis:
    """The faults that hold now.

    Attributes:
        faults: Each fault found, in the order of :data:`~.faults.FAULT_KINDS` (the
            learning-rate verdict first when it stands).
        notes: Why something was not judged (a withheld learning-rate verdict, checks that
            have no signal).
    """

    faults: tuple[Fault, ...]
    notes: tuple[str, ...] = ()

    @property
    def kinds(self) -> list[str]:
        """The kinds found, in order."""
        return [fault.kind for fault in self.faults]

    @property
    def withheld(self) -> str | None:
        """Why the learning-rate verdict is withheld (another fault explains its signals),
        else ``None``."""
        return next((note for note in self.notes if note.startswith(WITHHELD)), None)


def diagnose_run(
    signals: RunSignals,
    steps: Sequence[StepSignals],
    judgement: Judgement,
    latest_dead: dict[str, tuple[int, int]],
    *,
    step: int,
    rules: FaultRules | None = None,
) -> Diagnosis:
    """Every check on the recorded signals, and the learning-rate verdict unless another fault
    explains the signals it reads (:func:`~.faults.learning_rate_fault`).

    Example:
        >>> from lightning_convviz.functional.lr_judgement import Judgement
        >>> healthy = Judgement("healthy so far", (), None, 0.1)
        >>> raw = RunSignals(input_mean=[120.0], input_std=[60.0])
        >>> diagnose_run(raw, [], healthy, {}, step=10).kinds
        ['inputs_not_normalized']

    Args:
        signals: The run's recorded signals.
        steps: The learning-rate doctor's measured steps (gradient norms, skipped steps).
        judgement: The learning-rate judgement of the run so far.
        latest_dead: Per layer, ``(dead units, units)`` at the latest epoch end.
        step: The step of the diagnosis.
        rules: Thresholds (the defaults when ``None``).

    Returns:
        The faults that hold now and the notes.
    """
    rules = rules or FaultRules()
    notes: list[str] = []
    faults: list[Fault] = []
    if signals.input_mean is not None and signals.input_std is not None:
        faults += check_inputs(signals.input_mean, signals.input_std, rules=rules)
    if signals.classes is None:
        notes.append(
            "no class scores with integer labels seen: the loss, accuracy and label checks are off"
        )
    elif math.isfinite(signals.initial_loss):
        rms = signals.initial_score_rms if math.isfinite(signals.initial_score_rms) else None
        faults += check_initial_loss(
            signals.initial_loss, signals.classes, score_rms=rms, rules=rules
        )
    counts = signals.label_counts or None
    if signals.classes is not None and math.isfinite(signals.initial_loss):
        faults += check_not_learning(
            signals.epochs,
            initial_loss=signals.initial_loss,
            label_counts=counts,
            val_label_counts=signals.val_label_counts or None,
            rules=rules,
        )
    faults += check_vanishing_gradients(
        signals.measured_steps, signals.relative_gradients, rules=rules
    )
    faults += check_exploding_gradients(
        [s.step for s in steps], [s.grad_norm for s in steps], [s.skipped for s in steps], rules
    )
    faults += check_saturation(signals.measured_steps, signals.saturated_shares, rules=rules)
    faults += check_dead_units(
        signals.initial_dead, latest_dead, step=signals.initial_dead_step, rules=rules
    )
    faults += check_frozen_parameters(
        signals.outside_optimizer, signals.unchanged_steps, step=step, rules=rules
    )
    faults += check_overfitting(signals.epochs, rules=rules)
    if counts is not None:
        faults += check_class_imbalance(
            counts, step=step, class_names=signals.class_names, rules=rules
        )
    faults = _vanishing_explained(faults, signals, judgement, rules, notes)
    faults = _not_learning_explained(faults, steps, judgement, rules, notes)
    learning_rate, withheld = learning_rate_fault(judgement, faults, step=step)
    if withheld is not None:
        notes.append(withheld)
    ordered = ([learning_rate] if learning_rate is not None else []) + faults
    return Diagnosis(tuple(ordered), tuple(notes))


def _vanishing_explained(
    faults: list[Fault],
    signals: RunSignals,
    judgement: Judgement,
    rules: FaultRules,
    notes: list[str],
) -> list[Fault]:
    """``faults`` without ``vanishing_gradients`` where a learning rate judged too high lost
    them: the first measurements saw the gradient reach the first layer, and it vanished
    after steps that overshot (a network thrown off by its first updates, not one built or
    initialised to lose its gradients)."""
    vanishing = next((f for f in faults if f.kind == "vanishing_gradients"), None)
    if vanishing is None or judgement.verdict != "too high" or not _flowed_at_first(signals, rules):
        return faults
    notes.append(
        f"the gradients vanished from step {vanishing.step} on, after the first measurements "
        "saw them reach the first layer: the learning rate's findings explain it"
    )
    return [f for f in faults if f is not vanishing]


def _flowed_at_first(signals: RunSignals, rules: FaultRules) -> bool:
    """Whether the first readable measurement saw the gradient reach the first layer (the kept
    first ratio; else the oldest measurement still kept)."""
    if math.isfinite(signals.first_gradient_ratio):
        return signals.first_gradient_ratio >= rules.vanishing_ratio
    return gradients_flowed_at_first(signals.relative_gradients, rules)


def _not_learning_explained(
    faults: list[Fault],
    steps: Sequence[StepSignals],
    judgement: Judgement,
    rules: FaultRules,
    notes: list[str],
) -> list[Fault]:
    """``faults`` without ``not_learning`` where another finding explains it: a fault of
    :data:`STOPS_LEARNING`, a learning rate judged too high (steps that overshoot, units it
    killed), or steps too small to move the weights (the learning rate's "too low" with a
    median update/weight ratio below ``small_update_ratio``)."""
    if "not_learning" not in {f.kind for f in faults}:
        return faults
    others = [f for f in faults if f.kind != "not_learning"]
    causes = sorted({f.kind for f in others} & STOPS_LEARNING)
    if causes:
        notes.append(f"the loss stays at chance: {', '.join(causes)} explains it")
        return others
    if judgement.verdict == "too high":  # steps that overshoot or killed units stall a run
        notes.append("the loss stays at chance: the learning rate's findings explain it")
        return others
    ratios = [s.update_ratio for s in steps if not s.skipped and math.isfinite(s.update_ratio)]
    recent = ratios[-rules.gradient_window :]
    if judgement.verdict == "too low" and recent:
        median = statistics.median(recent)
        if 0 < median < rules.small_update_ratio:
            notes.append(
                "the loss stays at chance because the steps are too small to move it (median "
                f"update/weight ratio {median:.1e} over the last {len(recent)} measurements)"
            )
            return others
    return faults
