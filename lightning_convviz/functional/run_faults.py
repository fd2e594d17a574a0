"""Faults seen in a run's inputs, labels and losses: inputs on a raw scale, a first loss far
above chance, a loss that stays where predicting the class frequencies puts it, overfitting and
skewed labels. Pure Python on recorded numbers (:mod:`~lightning_convviz.functional.faults`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from lightning_convviz.functional.faults import Fault, FaultRules

__all__ = [
    "EpochRecord",
    "check_class_imbalance",
    "check_initial_loss",
    "check_inputs",
    "check_not_learning",
    "check_overfitting",
    "label_entropy",
]


@dataclass(frozen=True)
class EpochRecord:
    """The losses of one epoch (NaN where not measured).

    Attributes:
        epoch: The epoch index.
        step: The optimizer step at its end.
        train_loss: Mean training loss.
        val_loss: Mean validation loss (after the epoch's training).
        train_accuracy: Share of training samples whose top class was the label.
        val_accuracy: Share of validation samples whose top class was the label.
    """

    epoch: int
    step: int
    train_loss: float
    val_loss: float = math.nan
    train_accuracy: float = math.nan
    val_accuracy: float = math.nan


def check_inputs(
    channel_mean: Sequence[float],
    channel_std: Sequence[float],
    *,
    step: int = 0,
    rules: FaultRules | None = None,
) -> list[Fault]:
    """Inputs on a raw scale (0..255 pixels), all but zero, or not finite.

    Example:
        >>> [f.kind for f in check_inputs([120.0, 115.0, 100.0], [60.0, 58.0, 61.0])]
        ['inputs_not_normalized']
        >>> check_inputs([0.1, -0.2, 0.0], [1.0, 0.9, 1.1])
        []

    Args:
        channel_mean: Each input channel's mean over the first batches.
        channel_std: Each input channel's standard deviation over the same batches.
        step: The step of the first of those batches.
        rules: Thresholds (the defaults when ``None``).

    Returns:
        One ``inputs_not_normalized`` fault, or none.
    """
    rules = rules or FaultRules()
    pairs = list(zip(channel_mean, channel_std, strict=True))
    if not pairs:
        return []
    advice = (
        "standardise each input channel (subtract the dataset's mean, divide by its std, "
        "e.g. torchvision's Normalize after ToTensor)"
    )
    if not all(math.isfinite(m) and math.isfinite(s) for m, s in pairs):
        return [
            Fault("inputs_not_normalized", "the inputs hold NaN or infinite values", advice, step)
        ]
    scales = [math.hypot(m, s) for m, s in pairs]
    shown = ", ".join(f"{m:.3g} ± {s:.3g}" for m, s in pairs[:4])
    if max(scales) > rules.input_scale_high:
        return [
            Fault(
                "inputs_not_normalized",
                f"input channels read mean ± std {shown}: a raw scale (0..255 pixels read "
                "about 120 ± 70), not zero mean and unit scale",
                advice,
                step,
            )
        ]
    if max(scales) < rules.input_scale_low:
        return [
            Fault(
                "inputs_not_normalized",
                f"input channels read mean ± std {shown}: all but zero (scaled down twice?)",
                advice,
                step,
            )
        ]
    return []


def check_initial_loss(
    loss: float,
    classes: int,
    *,
    step: int = 0,
    score_rms: float | None = None,
    rules: FaultRules | None = None,
) -> list[Fault]:
    """A loss at the first step far above chance (``ln C`` for C classes), or not finite.

    Only the high side is a fault: a loss below chance at the start is what a pretrained model
    being fine-tuned reads.

    Example:
        >>> [f.kind for f in check_initial_loss(887.0, 10)]
        ['init_loss_off']
        >>> check_initial_loss(2.31, 10)
        []

    Args:
        loss: The training loss of the first step, before any update.
        classes: How many classes the model scores (below 2: cannot judge).
        step: The step of that loss.
        score_rms: The root mean square of the class scores on that batch (a scale far above a
            few is an initialisation that saturates the softmax), if known.
        rules: Thresholds (the defaults when ``None``).

    Returns:
        One ``init_loss_off`` fault, or none.
    """
    rules = rules or FaultRules()
    if classes < 2:
        return []
    chance = math.log(classes)
    advice = (
        "initialise smaller (the layers' defaults or kaiming with the nonlinearity's gain, a "
        "last layer near zero) and check that the loss reads logits, not probabilities"
    )
    logits = (
        f"; the class scores' root mean square is {score_rms:.3g}" if score_rms is not None else ""
    )
    if not math.isfinite(loss):
        evidence = f"the loss is {loss} at step {step}, before any update{logits}"
        return [Fault("init_loss_off", evidence, advice, step)]
    if loss > rules.initial_loss_factor * chance:
        evidence = (
            f"the loss at step {step} is {loss:.3g}, {loss / chance:.3g}x chance "
            f"(ln {classes} = {chance:.3g}){logits}"
        )
        return [Fault("init_loss_off", evidence, advice, step)]
    return []


def label_entropy(counts: Sequence[int]) -> float:
    """The cross-entropy of predicting the class frequencies: the loss a model reaches that
    learns nothing from its inputs (``ln C`` for balanced classes).

    Example:
        >>> round(label_entropy([5, 5, 5, 5]), 4) == round(math.log(4), 4)
        True
    """
    total = sum(counts)
    return -sum(c / total * math.log(c / total) for c in counts if c > 0) if total else math.nan


def check_not_learning(
    epochs: Sequence[EpochRecord],
    *,
    initial_loss: float,
    label_counts: Sequence[int] | None = None,
    val_label_counts: Sequence[int] | None = None,
    rules: FaultRules | None = None,
) -> list[Fault]:
    """A training loss that stays at the loss of predicting the class frequencies, or a
    validation accuracy that never leaves chance.

    The reference is the entropy of the labels seen (:func:`label_entropy`; ``ln C`` for
    balanced classes) or the first loss where that is lower (a pretrained start). Broken labels
    (shuffled apart from their inputs), a loss on the wrong outputs or a model whose parameters
    are all frozen stay there; a run whose training accuracy is clearly above the most frequent
    class's share is learning, whatever its loss says, unless its validation accuracy never
    rose above chance (the most frequent validation class's share) by ``accuracy_margin``: a
    network that can memorise its training set learns shuffled labels by heart and nothing
    that holds beyond them.

    Example:
        >>> flat = [EpochRecord(e, 10 * e, 2.30) for e in range(3)]
        >>> [f.kind for f in check_not_learning(flat, initial_loss=2.31, label_counts=[9] * 10)]
        ['not_learning']

    Args:
        epochs: One record per finished epoch, oldest first.
        initial_loss: The first measured training loss.
        label_counts: How many training labels of each class were seen (``None``: unknown).
        val_label_counts: How many validation labels of each class were seen per validation
            pass (``None``: unknown).
        rules: Thresholds (the defaults when ``None``).

    Returns:
        One ``not_learning`` fault, or none.
    """
    rules = rules or FaultRules()
    finished = [e for e in epochs if math.isfinite(e.train_loss)]
    if len(finished) < rules.not_learning_epochs or not math.isfinite(initial_loss):
        return []
    training = _training_at_chance(finished, initial_loss, label_counts, rules)
    if training is not None:
        return [training]
    at_chance = _validation_at_chance(finished, val_label_counts, rules)
    return [] if at_chance is None else [at_chance]


def _training_at_chance(
    finished: Sequence[EpochRecord],
    initial_loss: float,
    label_counts: Sequence[int] | None,
    rules: FaultRules,
) -> Fault | None:
    """``not_learning`` when the latest training loss is still at the reference and the
    training accuracy not above the most frequent class's share."""
    prior = label_entropy(label_counts) if label_counts else math.nan
    reference = min(prior, initial_loss) if math.isfinite(prior) else initial_loss
    latest = finished[-1]
    if latest.train_loss < rules.not_learning_fraction * reference:
        return None
    majority = max(label_counts) / sum(label_counts) if label_counts else math.nan
    measured = math.isfinite(latest.train_accuracy) and math.isfinite(majority)
    if measured and latest.train_accuracy > majority + rules.accuracy_margin:
        return None
    what = "the loss of predicting the class frequencies" if reference == prior else "its start"
    accuracy = (
        f" (training accuracy {latest.train_accuracy:.2f}, the most frequent class {majority:.2f})"
        if measured
        else ""
    )
    since = next(
        e.step
        for e in finished[rules.not_learning_epochs - 1 :]
        if e.train_loss >= rules.not_learning_fraction * reference
    )
    return Fault(
        "not_learning",
        f"after {len(finished)} epochs the training loss {latest.train_loss:.3g} is "
        f"{100 * latest.train_loss / reference:.0f}% of {reference:.3g}, {what}{accuracy}",
        _NOT_LEARNING_ADVICE,
        since,
    )


_NOT_LEARNING_ADVICE = (
    "check that the labels belong to their inputs (shuffled apart?), that the loss reads the "
    "model's class scores, and that the parameters reach the optimizer"
)


def _validation_at_chance(
    finished: Sequence[EpochRecord], val_label_counts: Sequence[int] | None, rules: FaultRules
) -> Fault | None:
    """``not_learning`` when every validation accuracy so far stayed within
    ``accuracy_margin`` of the most frequent validation class's share."""
    measured = [e for e in finished if math.isfinite(e.val_accuracy)]
    if len(measured) < rules.not_learning_epochs or not val_label_counts:
        return None
    chance = max(val_label_counts) / max(sum(val_label_counts), 1)
    best = max(e.val_accuracy for e in measured)
    if best > chance + rules.accuracy_margin:
        return None
    latest = finished[-1]
    training = (
        f" while the training accuracy reached {latest.train_accuracy:.2f} (the labels learnt "
        "by heart?)"
        if math.isfinite(latest.train_accuracy)
        else ""
    )
    return Fault(
        "not_learning",
        f"after {len(measured)} epochs the validation accuracy is at chance (at best "
        f"{best:.2f}; the most frequent validation class {chance:.2f}){training}: nothing "
        "learnt holds beyond the training set",
        _NOT_LEARNING_ADVICE,
        measured[rules.not_learning_epochs - 1].step,
    )


def check_overfitting(
    epochs: Sequence[EpochRecord], rules: FaultRules | None = None
) -> list[Fault]:
    """The validation loss rising from its best for several epochs while the training loss
    falls (the gap between them growing), and the validation accuracy, where measured, no
    longer improving (not more than ``accuracy_margin`` above all it had reached before the
    last ``overfit_epochs`` epochs: a validation loss that rises on a few confident errors
    while the accuracy still climbs is not yet a reason to stop).

    Example:
        >>> val = [1.0, 0.8, 0.7, 0.8, 0.9, 1.0]
        >>> train = [1.0, 0.7, 0.5, 0.3, 0.2, 0.1]
        >>> run = [EpochRecord(e, 10 * e, t, v) for e, (t, v) in enumerate(zip(train, val))]
        >>> [f.kind for f in check_overfitting(run)]
        ['overfitting']

    Args:
        epochs: One record per finished epoch, oldest first.
        rules: Thresholds (the defaults when ``None``).

    Returns:
        One ``overfitting`` fault, or none.
    """
    rules = rules or FaultRules()
    measured = [e for e in epochs if math.isfinite(e.val_loss) and math.isfinite(e.train_loss)]
    for index in range(len(measured)):
        best = min(measured[: index + 1], key=lambda e: e.val_loss)
        now = measured[index]
        after_best = sum(1 for e in measured[: index + 1] if e.epoch > best.epoch)
        if (
            after_best >= rules.overfit_epochs
            and now.val_loss >= (1 + rules.overfit_rise) * best.val_loss
            and now.train_loss < best.train_loss
            and now.val_loss - now.train_loss > best.val_loss - best.train_loss
            and not _accuracy_still_rising(measured[: index + 1], now, rules)
        ):
            return [
                Fault(
                    "overfitting",
                    f"the validation loss rose from {best.val_loss:.3g} (epoch {best.epoch}) "
                    f"to {now.val_loss:.3g} (epoch {now.epoch}) while the training loss fell "
                    f"from {best.train_loss:.3g} to {now.train_loss:.3g}",
                    "more data or augmentation, weight decay or dropout; or keep the model of "
                    f"epoch {best.epoch} (ModelCheckpoint or EarlyStopping on the validation loss)",
                    now.step,
                )
            ]
    return []


def _accuracy_still_rising(
    epochs: Sequence[EpochRecord], now: EpochRecord, rules: FaultRules
) -> bool:
    """Whether the validation accuracy rose by more than ``accuracy_margin`` over the last
    ``overfit_epochs`` epochs (above all it had reached before them)."""
    before = [e.val_accuracy for e in epochs if e.epoch <= now.epoch - rules.overfit_epochs]
    reached = max((a for a in before if math.isfinite(a)), default=math.nan)
    return math.isfinite(reached) and now.val_accuracy > reached + rules.accuracy_margin


def check_class_imbalance(
    label_counts: Sequence[int],
    *,
    step: int,
    class_names: Sequence[str] | None = None,
    rules: FaultRules | None = None,
) -> list[Fault]:
    """Training labels heavily skewed towards some classes (as the batches bring them: a
    resampling sampler that balances them reads balanced).

    Example:
        >>> [f.kind for f in check_class_imbalance([600] + [44] * 9, step=50)]
        ['class_imbalance']
        >>> check_class_imbalance([100] * 10, step=50)
        []

    Args:
        label_counts: How many training labels of each class were seen.
        step: The step at which they were counted.
        class_names: Names of the classes, for the evidence.
        rules: Thresholds (the defaults when ``None``).

    Returns:
        One ``class_imbalance`` fault, or none.
    """
    rules = rules or FaultRules()
    total = sum(label_counts)
    classes = len(label_counts)
    if classes < 2 or total < rules.labels_per_class * classes:
        return []
    largest = max(range(classes), key=lambda c: label_counts[c])
    smallest = min(range(classes), key=lambda c: label_counts[c])
    most, least = label_counts[largest], label_counts[smallest]
    if least > 0 and most < rules.imbalance_ratio * least:
        return []

    def name(c: int) -> str:
        return class_names[c] if class_names is not None else f"class {c}"

    ratio = f"{most / least:.3g}x" if least else "never seen"
    return [
        Fault(
            "class_imbalance",
            f"{name(largest)} is {100 * most / total:.0f}% of the {total} training labels seen, "
            f"{name(smallest)} {100 * least / total:.1f}% ({ratio})",
            "weight the loss by inverse class frequency (CrossEntropyLoss(weight=...)) or "
            "resample (WeightedRandomSampler), and read the accuracy per class",
            step,
        )
    ]
