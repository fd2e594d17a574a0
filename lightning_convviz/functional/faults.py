"""The training doctor's vocabulary: what a fault is, its thresholds, and the learning rate's
place among the faults.

The checks are pure Python on recorded numbers, like
:mod:`~lightning_convviz.functional.lr_judgement` (no torch, no Lightning, no logging), so each
rule can be tested on built signals and re-run on a recorded run. Each ``check_*`` function
reads one kind of signal and returns the :class:`Fault` records it supports (an empty list when
the signals are healthy or too few to judge): :mod:`~lightning_convviz.functional.run_faults`
reads the inputs, labels and losses, :mod:`~lightning_convviz.functional.layer_faults` the
layers (gradients, units, parameters). :func:`learning_rate_fault` turns the learning-rate
judgement into the same record and says nothing where another fault explains the signals it
read: the first rule of the doctor is never to blame the learning rate for another fault.

The checks follow what a person does by hand while "babysitting the learning process" (CS231n):
the loss at step 0 against chance, the inputs' scale, gradients per layer, units that are dead
or saturated, parameters that never move, the gap between training and validation loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from lightning_convviz.functional.lr_judgement import Judgement

__all__ = [
    "EXPLAINS_LEARNING_RATE_SIGNALS",
    "FAULT_KINDS",
    "WITHHELD",
    "Fault",
    "FaultKind",
    "FaultRules",
    "learning_rate_fault",
    "listed_names",
    "trailing_run_start",
]


#: What a fault is (users filter on it: the vocabulary is stable).
FaultKind = Literal[
    "lr_too_high",
    "lr_too_low",
    "inputs_not_normalized",
    "init_loss_off",
    "not_learning",
    "vanishing_gradients",
    "exploding_gradients",
    "saturated_activations",
    "dead_units",
    "frozen_layers",
    "overfitting",
    "class_imbalance",
]

FAULT_KINDS: tuple[FaultKind, ...] = FaultKind.__args__  # type: ignore[attr-defined]

#: Faults that explain the signals the learning-rate judgement reads (steps that barely move, a
#: loss that does not fall, dead filters): while one of them is found there is no learning-rate
#: verdict. Overfitting and exploding gradients do not: the learning rate may be wrong beside them.
EXPLAINS_LEARNING_RATE_SIGNALS: frozenset[FaultKind] = frozenset(
    {
        "inputs_not_normalized",
        "init_loss_off",
        "not_learning",
        "vanishing_gradients",
        "saturated_activations",
        "dead_units",
        "frozen_layers",
        "class_imbalance",
    }
)


#: How the note on a withheld learning-rate verdict begins.
WITHHELD = "no learning-rate verdict"


@dataclass(frozen=True)
class Fault:
    """One fault found in a run.

    Attributes:
        kind: What is wrong, one of :data:`FAULT_KINDS`.
        evidence: The numbers that show it (layers, steps, values).
        advice: What to change.
        step: The optimizer step at which the evidence was first seen.
    """

    kind: FaultKind
    evidence: str
    advice: str
    step: int


@dataclass(frozen=True)
class FaultRules:
    """The thresholds of the checks.

    Attributes:
        input_scale_high: A channel whose root mean square is above this is on a raw scale
            (pixels of 0..255 read about 120; standardised inputs about 1).
        input_scale_low: Every channel's root mean square below this: the inputs are all but
            zero (scaled down twice).
        initial_loss_factor: A loss at step 0 above this times chance (``ln C``) is off.
        not_learning_epochs: Fewest finished epochs before a run can be "not learning".
        not_learning_fraction: The latest epoch's training loss at or above this fraction of
            the reference (the loss of predicting the class frequencies, or the first loss if
            that is lower) is no learning.
        accuracy_margin: Training accuracy more than this above the most frequent class's share
            is learning, whatever the loss says.
        vanishing_ratio: The first layer's relative gradient (gradient norm over weight norm)
            below this times the last layer's: vanishing gradients.
        gradient_window: How many of the latest measurements the gradient checks read (their
            median).
        explosion_growth: The latest gradient norms' median above this times the first ones':
            gradients growing without bound.
        saturated_share: A layer with at least this share of its outputs at the asymptotes in
            each of the latest ``saturated_measurements`` measurements is saturated.
        saturated_measurements: How many consecutive measurements must show saturation.
        dead_fraction: A layer with more than this fraction of its units dead at the first
            measurement and still at the latest was dead from the start.
        frozen_steps: Measured steps in which a parameter with a gradient stayed unchanged
            while others moved, before it is frozen.
        overfit_rise: The validation loss at least this fraction above its best ...
        overfit_epochs: ... for at least this many epochs, while the training loss fell.
        imbalance_ratio: The most frequent class at least this many times the least frequent
            one (among the labels seen) is an imbalance.
        labels_per_class: Fewest labels seen per class (on average) before imbalance is judged.
        small_update_ratio: A loss that stays at chance while the latest steps' median
            update/weight ratio is below this (and the learning-rate judgement says "too low")
            is the learning rate's fault, not a sign that nothing can be learnt (healthy steps
            move weights by about 1e-3 of their norm; shuffled labels' by 3e-4 to 5e-3).
    """

    input_scale_high: float = 10.0
    input_scale_low: float = 0.02
    initial_loss_factor: float = 3.0
    not_learning_epochs: int = 2
    not_learning_fraction: float = 0.9
    accuracy_margin: float = 0.05
    vanishing_ratio: float = 1e-3
    gradient_window: int = 8
    explosion_growth: float = 1e3
    saturated_share: float = 0.5
    saturated_measurements: int = 2
    dead_fraction: float = 0.5
    frozen_steps: int = 3
    overfit_rise: float = 0.1
    overfit_epochs: int = 3
    imbalance_ratio: float = 5.0
    labels_per_class: int = 20
    small_update_ratio: float = 3e-5


def listed_names(names: Sequence[str], most: int = 4) -> str:
    """The first ``most`` names, and how many more."""
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"


def trailing_run_start(steps: Sequence[int], flags: Sequence[bool]) -> int:
    """The step that began the latest unbroken run of true flags (the last step when the last
    flag is false)."""
    start = None
    for step, flag in zip(steps, flags, strict=True):
        start = (step if start is None else start) if flag else None
    return start if start is not None else steps[-1]


def learning_rate_fault(
    judgement: Judgement, faults: Sequence[Fault], *, step: int
) -> tuple[Fault | None, str | None]:
    """The learning-rate verdict as a fault, unless another fault explains its signals.

    Example:
        >>> from lightning_convviz.functional.lr_judgement import Finding
        >>> finding = Finding("barely_moves", "too low", "steps barely move")
        >>> low = Judgement("too low", (finding,), 0.01, -0.9)
        >>> learning_rate_fault(low, [], step=40)[0].kind
        'lr_too_low'
        >>> frozen = Fault("frozen_layers", "conv1.weight in no param group", "...", 0)
        >>> learning_rate_fault(low, [frozen], step=40)
        (None, 'no learning-rate verdict: frozen_layers explains the signals it reads')

    Args:
        judgement: The learning-rate judgement of the run so far.
        faults: The other faults found.
        step: The step of the judgement.

    Returns:
        The ``lr_too_high`` or ``lr_too_low`` fault (``None`` when healthy or explained by
        another fault), and a note saying why a verdict was withheld (else ``None``).
    """
    if judgement.verdict == "healthy so far":
        return None, None
    explaining = sorted({f.kind for f in faults} & EXPLAINS_LEARNING_RATE_SIGNALS)
    if explaining:
        verb = "explains" if len(explaining) == 1 else "explain"
        return (
            None,
            f"{WITHHELD}: {', '.join(explaining)} {verb} the signals it reads",
        )
    kind: FaultKind = "lr_too_high" if judgement.verdict == "too high" else "lr_too_low"
    evidence = "; ".join(f.evidence for f in judgement.findings)
    if judgement.suggested_lr is not None:
        advice = f"try a learning rate of about {judgement.suggested_lr:.1g}"
    else:
        advice = "lower the learning rate" if kind == "lr_too_high" else "raise the learning rate"
    return Fault(kind, evidence, advice, step), None
