"""The diagnosis on built signals: every check together, the learning rate placed among the
faults, a loss at chance explained by another fault; the training doctor's confirmation and
withdrawal of warnings; its records through state_dict."""

from __future__ import annotations

import math

import pytest

from lightning_convviz.callbacks.fault_records import (
    CONFIRMING_EPOCHS,
    KEPT_MEASUREMENTS,
    FaultRecords,
)
from lightning_convviz.callbacks.fault_signals import EpochTotals
from lightning_convviz.functional import (
    Diagnosis,
    Fault,
    RunSignals,
    diagnose_run,
)
from lightning_convviz.functional.lr_judgement import Finding, Judgement, StepSignals
from lightning_convviz.functional.run_faults import EpochRecord

HEALTHY = Judgement("healthy so far", (), None, 0.1)
TOO_LOW = Judgement("too low", (Finding("barely_moves", "too low", "steps barely move"),), 0.01, -1)
TOO_HIGH = Judgement("too high", (Finding("overshoot", "too high", "steps overshoot"),), 1e-4, 2)


def step(index: int, update_ratio: float = 1e-3) -> StepSignals:
    return StepSignals(
        step=index, lr=0.1, alpha=-1.0, update_ratio=update_ratio, grad_norm=1.0, loss=2.3
    )


def at_chance(epochs: int = 3) -> RunSignals:
    """Ten balanced classes whose training loss stays at ln 10."""
    return RunSignals(
        initial_loss=math.log(10),
        classes=10,
        label_counts=[50] * 10,
        epochs=[EpochRecord(e, 10 * (e + 1), math.log(10), math.nan, 0.1) for e in range(epochs)],
    )


def test_healthy_signals_have_no_fault_and_no_note() -> None:
    signals = RunSignals(
        input_mean=[0.0],
        input_std=[1.0],
        initial_loss=2.31,
        initial_score_rms=0.05,
        classes=10,
        label_counts=[50] * 10,
        epochs=[EpochRecord(e, 10 * (e + 1), 2.0 / (e + 1), 2.1 / (e + 1), 0.5) for e in range(3)],
    )
    assert diagnose_run(signals, [step(i) for i in range(8)], HEALTHY, {}, step=30) == Diagnosis(())


def test_without_class_scores_the_label_checks_say_they_are_off() -> None:
    diagnosis = diagnose_run(RunSignals(), [], HEALTHY, {}, step=0)
    assert diagnosis.faults == () and "checks are off" in diagnosis.notes[0]


def test_a_loss_at_chance_with_healthy_steps_is_not_learning_and_withholds_the_verdict() -> None:
    diagnosis = diagnose_run(at_chance(), [step(i) for i in range(8)], TOO_LOW, {}, step=30)
    assert diagnosis.kinds == ["not_learning"]
    assert diagnosis.notes == (
        "no learning-rate verdict: not_learning explains the signals it reads",
    )


def test_a_loss_at_chance_with_tiny_steps_is_the_learning_rate() -> None:
    steps = [step(i, update_ratio=2e-6) for i in range(8)]
    diagnosis = diagnose_run(at_chance(), steps, TOO_LOW, {}, step=30)
    assert diagnosis.kinds == ["lr_too_low"]
    assert "steps are too small to move it (median update/weight ratio 2.0e-06" in str(
        diagnosis.notes
    )


def test_a_loss_at_chance_under_a_learning_rate_too_high_is_the_learning_rate() -> None:
    diagnosis = diagnose_run(at_chance(), [step(i) for i in range(8)], TOO_HIGH, {}, step=30)
    assert diagnosis.kinds == ["lr_too_high"]


def test_units_dead_from_the_start_explain_the_loss_at_chance_and_the_learning_rate() -> None:
    signals = at_chance()
    signals.initial_dead = {"relu1": (16, 16)}
    diagnosis = diagnose_run(signals, [], TOO_HIGH, {"relu1": (16, 16)}, step=30)
    assert diagnosis.kinds == ["dead_units"]
    assert any("dead_units explains it" in note for note in diagnosis.notes)
    assert any(note.startswith("no learning-rate verdict: dead_units") for note in diagnosis.notes)


def gradients(first_to_last: list[float]) -> RunSignals:
    """A loss at chance whose first layer's relative gradient is ``first_to_last`` of the
    last layer's at each of the measured steps 0, 10, 20, ..."""
    signals = at_chance()
    signals.measured_steps = [10 * i for i in range(len(first_to_last))]
    signals.relative_gradients = [{"conv1": r * 1e-2, "fc": 1e-2} for r in first_to_last]
    return signals


def test_gradients_lost_after_the_first_steps_at_a_rate_too_high_are_the_learning_rate() -> None:
    """ConvNeXt-Atto with Adam at 0.1 on the learning-rate grid: the first layer's gradient is
    2x the last's at step 0, then 1e-8 of it once the first updates threw the network off."""
    signals = gradients([2.0] + [1e-8] * 9)
    diagnosis = diagnose_run(signals, [step(i) for i in range(8)], TOO_HIGH, {}, step=90)
    assert diagnosis.kinds == ["lr_too_high"]
    assert any(
        "vanished from step 10 on" in note and "learning rate's findings explain it" in note
        for note in diagnosis.notes
    ), diagnosis.notes


def test_gradients_that_vanish_from_the_first_step_withhold_a_verdict_too_high() -> None:
    """The deep sigmoid network: 1e-7 from the first measurement on."""
    diagnosis = diagnose_run(
        gradients([1e-7] * 10), [step(i) for i in range(8)], TOO_HIGH, {}, step=90
    )
    assert diagnosis.kinds == ["vanishing_gradients"]
    assert diagnosis.withheld is not None and "vanishing_gradients" in diagnosis.withheld


def test_gradients_lost_later_without_a_rate_too_high_stay_vanishing_gradients() -> None:
    diagnosis = diagnose_run(
        gradients([2.0] + [1e-8] * 9), [step(i) for i in range(8)], TOO_LOW, {}, step=90
    )
    assert diagnosis.kinds == ["vanishing_gradients"]


def test_faults_come_in_the_vocabulary_order_with_the_learning_rate_first() -> None:
    steps = [StepSignals(i, 0.1, None, 1e-3, math.inf if i == 3 else 1.0) for i in range(4)]
    exploding = diagnose_run(RunSignals(), steps, TOO_HIGH, {}, step=40)
    # exploding gradients do not explain a verdict away: the learning rate may be wrong too
    assert exploding.kinds == ["lr_too_high", "exploding_gradients"]
    signals = RunSignals(
        input_mean=[120.0], input_std=[60.0], classes=10, label_counts=[600] + [40] * 9
    )
    diagnosis = diagnose_run(signals, steps, TOO_HIGH, {}, step=40)
    assert diagnosis.kinds == ["inputs_not_normalized", "exploding_gradients", "class_imbalance"]
    assert diagnosis.notes[-1] == (
        "no learning-rate verdict: class_imbalance, inputs_not_normalized explain the signals "
        "it reads"
    )


def fault(kind: str) -> Fault:
    return Fault(kind, f"{kind} evidence", "advice", 0)  # type: ignore[arg-type]


def test_facts_are_confirmed_at_once_and_other_kinds_after_two_epoch_ends() -> None:
    records = FaultRecords()
    seen = Diagnosis((fault("frozen_layers"), fault("not_learning")))
    fresh, withdrawn = records.confirm(seen, epoch_end=True)
    assert [f.kind for f in fresh] == ["frozen_layers"] and withdrawn == []
    assert [f.kind for f in records.confirmed(seen)] == ["frozen_layers"]
    for _ in range(CONFIRMING_EPOCHS - 1):
        fresh, _ = records.confirm(seen, epoch_end=True)
    assert [f.kind for f in fresh] == ["not_learning"]
    fresh, _ = records.confirm(seen, epoch_end=True)
    assert fresh == []  # warned once


def test_a_streak_broken_starts_again_and_a_judgement_between_epochs_does_not_count() -> None:
    records = FaultRecords()
    overfit = Diagnosis((fault("overfitting"),))
    records.confirm(overfit, epoch_end=True)
    records.confirm(Diagnosis(()), epoch_end=True)
    assert records.confirm(overfit, epoch_end=True)[0] == []
    assert records.confirm(overfit, epoch_end=False)[0] == []  # a step's judgement
    assert [f.kind for f in records.confirm(overfit, epoch_end=True)[0]] == ["overfitting"]


def test_a_warned_fault_that_stops_holding_is_withdrawn_once() -> None:
    records = FaultRecords()
    records.confirm(Diagnosis((fault("init_loss_off"),)), epoch_end=True)
    assert records.confirm(Diagnosis(()), epoch_end=True) == ([], ["init_loss_off"])
    assert records.confirm(Diagnosis(()), epoch_end=True) == ([], [])


def test_a_measured_step_counts_parameters_unchanged_in_a_row() -> None:
    records = FaultRecords()
    layout = {"weights": ["conv"], "parameters": ["conv.weight", "fc.weight"], "saturating": []}
    for index in range(3):
        records.add_step(step(index), [0.1, 1.0, 0.0], **layout)  # conv.weight did not move
    records.add_step(step(3, update_ratio=0.0), [0.1, 1.0, 1.0], **layout)  # nothing moved
    assert records.signals.unchanged_steps == {"conv.weight": 3}
    records.add_step(step(4), [0.1, 0.0, 0.0], **layout)  # it moved
    assert records.signals.unchanged_steps == {}
    assert records.signals.relative_gradients[-1] == {"conv": 0.1}
    assert records.signals.saturated_shares[-1] == {}


def test_the_first_gradient_ratio_outlives_the_measurements_kept() -> None:
    """A run long enough to drop its oldest measurements still knows that the gradient reached
    the first layer at first: a rate too high that lost it later stays the learning rate's."""
    records = FaultRecords()
    layout = {"weights": ["conv1", "fc"], "parameters": [], "saturating": []}
    records.add_step(step(0), [2e-2, 1e-2], **layout)
    for index in range(1, KEPT_MEASUREMENTS + 5):
        records.add_step(step(index), [1e-10, 1e-2], **layout)
    signals = FaultRecords.from_state_dict(records.state_dict()).signals
    assert len(signals.relative_gradients) == KEPT_MEASUREMENTS
    assert signals.first_gradient_ratio == pytest.approx(2.0)
    signals.epochs = at_chance().epochs
    diagnosis = diagnose_run(signals, [step(i) for i in range(8)], TOO_HIGH, {}, step=9999)
    assert "vanishing_gradients" not in diagnosis.kinds and "lr_too_high" in diagnosis.kinds


def test_epoch_totals_become_losses_accuracy_and_label_counts() -> None:
    records = FaultRecords()
    train = [100.0, 40.0, 150.0, 4.0, 60.0, 40.0]  # samples, correct, CE sum, squares, counts
    totals = EpochTotals(([0.1], [1.0]), (2.5, 0.3), train, [50.0, 20.0, 100.0, 1.0, 25.0, 25.0])
    for epoch in range(2):
        records.add_epoch(
            epoch,
            10 * epoch,
            9.9,
            totals,
            classes=2,
            dead={"relu": (1, 4)} if epoch == 0 else None,
            first_measured_step=0,
        )
    signals = records.signals
    assert signals.epochs[-1] == EpochRecord(1, 10, 1.5, 2.0, 0.4, 0.4)
    assert signals.val_label_counts == [25, 25]
    assert signals.label_counts == [60, 40]  # the latest epoch's
    assert (signals.initial_loss, signals.initial_score_rms) == (2.5, 0.3)
    assert signals.input_mean == [0.1] and signals.initial_dead == {"relu": (1, 4)}
    again = FaultRecords.from_state_dict(records.state_dict())
    assert again == records


def test_a_fault_keeps_the_step_it_was_first_found_at() -> None:
    records = FaultRecords()
    first = records.dated(Diagnosis((Fault("frozen_layers", "e", "a", 40),)))
    later = records.dated(Diagnosis((Fault("frozen_layers", "e", "a", 80),)))
    assert first.faults[0].step == later.faults[0].step == 40
    again = FaultRecords.from_state_dict(records.state_dict())
    assert again.dated(Diagnosis((Fault("frozen_layers", "e", "a", 120),))).faults[0].step == 40
