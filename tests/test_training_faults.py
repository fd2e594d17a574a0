"""The training doctor's checks as pure functions: each on built signals of its fault, on the
same signals of a healthy run, and at the edges (too few signals, values that are not finite)."""

from __future__ import annotations

import math

import pytest

from lightning_convviz.functional.faults import (
    EXPLAINS_LEARNING_RATE_SIGNALS,
    FAULT_KINDS,
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
)
from lightning_convviz.functional.lr_judgement import Finding, Judgement
from lightning_convviz.functional.run_faults import (
    EpochRecord,
    check_class_imbalance,
    check_initial_loss,
    check_inputs,
    check_not_learning,
    check_overfitting,
    label_entropy,
)


def test_the_kind_vocabulary_is_the_documented_one() -> None:
    assert FAULT_KINDS == (
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
    )
    assert set(FAULT_KINDS) >= EXPLAINS_LEARNING_RATE_SIGNALS
    assert not {"lr_too_high", "lr_too_low", "overfitting"} & EXPLAINS_LEARNING_RATE_SIGNALS


@pytest.mark.parametrize(
    ("mean", "std", "faulty"),
    [
        ([0.0], [1.0], False),  # standardised
        ([0.45, 0.45, 0.4], [0.25, 0.25, 0.27], False),  # ToTensor without Normalize trains fine
        ([-2.1, 1.8, 0.3], [1.2, 0.8, 1.1], False),
        ([120.0, 110.0, 100.0], [70.0, 68.0, 72.0], True),  # 0..255 pixels
        ([0.0017], [0.001], True),  # 0..1 divided by 255 again
        ([math.nan], [1.0], True),
    ],
)
def test_inputs_on_a_raw_scale_or_all_but_zero_are_found(
    mean: list[float], std: list[float], faulty: bool
) -> None:
    faults = check_inputs(mean, std, step=3)
    assert [f.kind for f in faults] == (["inputs_not_normalized"] if faulty else [])
    assert all(f.step == 3 and "standardise" in f.advice for f in faults)


def test_input_channels_and_their_stds_must_pair_up() -> None:
    assert check_inputs([], []) == []
    with pytest.raises(ValueError):
        check_inputs([0.0, 0.0], [1.0])


@pytest.mark.parametrize(
    ("loss", "classes", "faulty"),
    [
        (2.30, 10, False),
        (4.0, 10, False),  # an unnormalised CNN may start a little above chance
        (887.0, 10, True),  # a weight initialisation 8x too large
        (7.2, 10, True),
        (0.05, 10, False),  # a pretrained model being fine-tuned
        (math.nan, 10, True),  # NaN before any update cannot be the learning rate
        (1e6, 1, False),  # one class: no chance level to compare with
    ],
)
def test_the_first_loss_is_compared_with_chance(loss: float, classes: int, faulty: bool) -> None:
    faults = check_initial_loss(loss, classes, score_rms=40.0)
    assert [f.kind for f in faults] == (["init_loss_off"] if faulty else [])
    assert all("root mean square is 40" in f.evidence for f in faults)


def test_label_entropy_is_the_loss_of_predicting_the_frequencies() -> None:
    assert label_entropy([10] * 10) == pytest.approx(math.log(10))
    assert label_entropy([600] + [44] * 9) == pytest.approx(
        -(0.6 * math.log(0.6) + 9 * (44 / 996) * math.log(44 / 996)), rel=1e-2
    )
    assert label_entropy([5, 0, 0]) == 0.0
    assert math.isnan(label_entropy([]))


def epochs_of(
    train: list[float], val: list[float] | None = None, **fields: float
) -> list[EpochRecord]:
    val = val or [math.nan] * len(train)
    return [
        EpochRecord(e, 25 * (e + 1), t, v, **fields)
        for e, (t, v) in enumerate(zip(train, val, strict=True))
    ]


def test_shuffled_labels_keep_the_loss_at_the_label_entropy() -> None:
    flat = epochs_of([2.30, 2.29, 2.28], train_accuracy=0.11)
    faults = check_not_learning(flat, initial_loss=2.31, label_counts=[100] * 10)
    assert [f.kind for f in faults] == ["not_learning"]
    assert "the loss of predicting the class frequencies" in faults[0].evidence
    assert faults[0].step == 50  # the second epoch's end: the first time it could be judged


def test_learning_runs_are_not_flagged() -> None:
    falling = epochs_of([1.2, 0.5, 0.3])
    assert check_not_learning(falling, initial_loss=2.3, label_counts=[100] * 10) == []
    assert check_not_learning(epochs_of([2.3]), initial_loss=2.3) == []  # one epoch: too soon


def test_an_imbalanced_run_that_learns_the_prior_only_is_not_learning() -> None:
    """60 % one class: predicting the frequencies reaches 1.55 from ln 10; a model that gets
    no further learned nothing from its inputs, though its loss fell by a third."""
    counts = [600] + [44] * 9
    prior = epochs_of([1.6, 1.56, 1.55], train_accuracy=0.6)
    assert [f.kind for f in check_not_learning(prior, initial_loss=2.3, label_counts=counts)] == [
        "not_learning"
    ]
    learning = epochs_of([1.6, 1.56, 1.55], train_accuracy=0.8)  # accuracy says otherwise
    assert check_not_learning(learning, initial_loss=2.3, label_counts=counts) == []


def test_a_huge_first_loss_falling_to_chance_is_still_not_learning() -> None:
    """From a loss of 887 down to 2.3: the fall is the initialisation's, not learning."""
    run = epochs_of([3.0, 2.31, 2.30])
    faults = check_not_learning(run, initial_loss=887.0, label_counts=[100] * 10)
    assert [f.kind for f in faults] == ["not_learning"]


def test_overfitting_needs_a_rising_validation_loss_beside_a_falling_training_loss() -> None:
    train = [1.0, 0.6, 0.4, 0.3, 0.2, 0.1]
    rising = [1.0, 0.7, 0.6, 0.7, 0.75, 0.9]
    faults = check_overfitting(epochs_of(train, rising))
    assert [f.kind for f in faults] == ["overfitting"]
    assert "epoch 2" in faults[0].evidence and faults[0].step == 150
    noisy = [1.0, 0.7, 0.6, 0.62, 0.59, 0.61]  # wanders near its best: no finding
    assert check_overfitting(epochs_of(train, noisy)) == []
    both_rise = epochs_of([1.0, 0.6, 0.4, 0.5, 0.7, 0.9], rising)  # diverging, not overfitting
    assert check_overfitting(both_rise) == []
    assert check_overfitting(epochs_of(train)) == []  # no validation loss


def test_shuffled_labels_learnt_by_heart_leave_the_validation_accuracy_at_chance() -> None:
    """A network that can memorise its training set fits shuffled labels (training accuracy
    well above chance) while its validation accuracy never leaves chance."""
    memorising = [
        EpochRecord(e, 25 * (e + 1), loss, 2.7, accuracy, 0.07)
        for e, (loss, accuracy) in enumerate([(2.64, 0.06), (2.6, 0.09), (2.5, 0.16)])
    ]
    faults = check_not_learning(
        memorising, initial_loss=2.64, label_counts=[100] * 14, val_label_counts=[48] * 14
    )
    assert [f.kind for f in faults] == ["not_learning"] and faults[0].step == 50
    assert "validation accuracy is at chance (at best 0.07" in faults[0].evidence
    assert "training accuracy reached 0.16" in faults[0].evidence
    learning = [
        EpochRecord(e, 25 * (e + 1), 2.0, 2.4, 0.3, accuracy)
        for e, accuracy in enumerate([0.07, 0.13, 0.33])
    ]
    assert (
        check_not_learning(
            learning, initial_loss=2.64, label_counts=[100] * 14, val_label_counts=[48] * 14
        )
        == []
    )


def test_a_rising_validation_loss_while_the_validation_accuracy_climbs_is_not_overfitting() -> None:
    train = [2.56, 2.17, 1.81, 1.48, 1.24, 1.03]
    val = [2.60, 2.41, 2.34, 2.98, 2.64, 2.59]
    climbing = [0.13, 0.26, 0.33, 0.33, 0.36, 0.42]  # the photographs demo, seed 0
    run = [
        EpochRecord(e, 22 * (e + 1), t, v, math.nan, a)
        for e, (t, v, a) in enumerate(zip(train, val, climbing, strict=True))
    ]
    assert check_overfitting(run) == []
    flat = [0.13, 0.26, 0.33, 0.33, 0.34, 0.33]
    stalled = [
        EpochRecord(e, 22 * (e + 1), t, v, math.nan, a)
        for e, (t, v, a) in enumerate(zip(train, val, flat, strict=True))
    ]
    assert [f.kind for f in check_overfitting(stalled)] == ["overfitting"]


def test_class_imbalance_from_the_labels_seen() -> None:
    faults = check_class_imbalance(
        [600] + [44] * 9, step=40, class_names=[str(d) for d in range(10)]
    )
    assert [f.kind for f in faults] == ["class_imbalance"]
    assert faults[0].evidence.startswith("0 is 60% of the 996 training labels seen")
    assert check_class_imbalance([130, 100, 73, 120], step=40) == []  # ImageNet-like spread
    assert check_class_imbalance([60, 0, 40], step=40)[0].evidence.endswith("(never seen)")
    assert check_class_imbalance([9, 1], step=1) == []  # too few labels to say


def test_vanishing_gradients_compare_the_first_layer_with_the_last() -> None:
    deep_sigmoid = [{"fc1": 1e-8, "fc4": 1e-5, "fc8": 1e-2}] * 8
    faults = check_vanishing_gradients(list(range(0, 80, 10)), deep_sigmoid)
    assert [f.kind for f in faults] == ["vanishing_gradients"]
    assert "fc1" in faults[0].evidence and "fc8" in faults[0].evidence
    assert faults[0].step == 0
    healthy = [{"conv1": 3e-3, "conv2": 1e-3, "fc": 1e-2}] * 8
    assert check_vanishing_gradients(range(8), healthy) == []
    assert check_vanishing_gradients(range(2), deep_sigmoid[:2]) == []  # too few measurements


def test_vanishing_gradients_read_the_latest_measurements() -> None:
    """A run whose gradients recovered (a warmup of BatchNorm) is not flagged any more."""
    recovered = [{"a": 1e-8, "b": 1e-2}] * 8 + [{"a": 1e-3, "b": 1e-2}] * 8
    assert check_vanishing_gradients(range(16), recovered) == []
    vanished = [{"a": 1e-3, "b": 1e-2}] * 8 + [{"a": 1e-9, "b": 1e-2}] * 8
    assert check_vanishing_gradients(range(16), vanished)[0].step == 8


def test_exploding_gradients_nonfinite_or_growing_without_bound() -> None:
    assert check_exploding_gradients([0, 1], [1.0, math.inf])[0].step == 1
    assert check_exploding_gradients([0, 1], [1.0, math.inf], [False, True]) == []  # GradScaler
    growing = [1.0] * 8 + [10.0 ** (i / 2) for i in range(8)] + [1e5] * 8
    assert [f.kind for f in check_exploding_gradients(range(24), growing)] == [
        "exploding_gradients"
    ]
    plateau_end = [1.0] * 8 + [20.0] * 8  # a plateau's end makes healthy norms grow 20x
    assert check_exploding_gradients(range(16), plateau_end) == []


def test_saturation_must_hold_in_the_latest_measurements() -> None:
    shares = [{"sig1": 0.9, "sig2": 0.2}, {"sig1": 0.95, "sig2": 0.6}, {"sig1": 0.97, "sig2": 0.7}]
    faults = check_saturation([0, 10, 20], shares)
    assert [f.kind for f in faults] == ["saturated_activations"]
    assert faults[0].evidence.startswith("sig1, sig2:") and faults[0].step == 0
    once = [{"sig1": 0.1}, {"sig1": 0.9}]
    assert check_saturation([0, 10], once) == []
    assert check_saturation([0], [{"sig1": 1.0}]) == []


def test_dead_units_from_the_start_are_told_apart_from_units_that_die_later() -> None:
    dead_at_init = check_dead_units({"relu1": (32, 32), "relu2": (3, 64)}, {"relu1": (32, 32)})
    assert [f.kind for f in dead_at_init] == ["dead_units"]
    assert "relu1 32 of 32" in dead_at_init[0].evidence and "relu2" not in dead_at_init[0].evidence
    died_later = check_dead_units({"relu1": (0, 32)}, {"relu1": (32, 32)})
    assert died_later == []  # the learning-rate judgement's evidence
    recovered = check_dead_units({"relu1": (32, 32)}, {"relu1": (4, 32)})
    assert recovered == []


def test_frozen_parameters_outside_the_optimizer_or_never_changing() -> None:
    names = [f"backbone.{i}.weight" for i in range(6)]
    faults = check_frozen_parameters(names, step=0)
    assert [f.kind for f in faults] == ["frozen_layers"]
    assert "6 trainable parameters" in faults[0].evidence and "and 2 more" in faults[0].evidence
    rules = FaultRules(frozen_steps=3)
    assert check_frozen_parameters([], {"head.weight": 2}, rules=rules) == []
    unchanged = check_frozen_parameters([], {"head.weight": 3}, rules=rules)
    assert "head.weight had gradients" in unchanged[0].evidence
    assert check_frozen_parameters([]) == []
    both = check_frozen_parameters(["head.weight"], {"head.weight": 3}, rules=rules)
    assert "had gradients" not in both[0].evidence  # said once, as outside the optimizer


def too_low() -> Judgement:
    return Judgement(
        "too low", (Finding("barely_moves", "too low", "steps barely move"),), 0.01, -0.95
    )


def test_the_learning_rate_verdict_becomes_a_fault_with_its_suggestion() -> None:
    fault, note = learning_rate_fault(too_low(), [], step=40)
    assert fault is not None and note is None
    assert (fault.kind, fault.evidence, fault.step) == ("lr_too_low", "steps barely move", 40)
    assert "0.01" in fault.advice
    healthy = Judgement("healthy so far", (), None, 0.1)
    assert learning_rate_fault(healthy, [], step=40) == (None, None)


@pytest.mark.parametrize("kind", sorted(EXPLAINS_LEARNING_RATE_SIGNALS))
def test_no_learning_rate_verdict_where_another_fault_explains_its_signals(kind: str) -> None:
    other = Fault(kind, "evidence", "advice", 0)  # type: ignore[arg-type]
    fault, note = learning_rate_fault(too_low(), [other], step=40)
    assert fault is None and note is not None and kind in note


def test_overfitting_does_not_withhold_the_learning_rate_verdict() -> None:
    train, val = [1.0, 0.6, 0.4, 0.3, 0.2, 0.1], [1.0, 0.7, 0.6, 0.7, 0.75, 0.9]
    overfit = check_overfitting(epochs_of(train, val))
    fault, _ = learning_rate_fault(too_low(), overfit, step=40)
    assert fault is not None and fault.kind == "lr_too_low"
