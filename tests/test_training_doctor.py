"""TrainingDoctor on real training: one planted fault per run on the digits, each found with
its kind and no learning-rate verdict beside it; a healthy run with no finding and no warning;
the learning-rate doctor withholding its verdict where another fault explains its signals;
what it logs; state for resume; a model without class scores."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from helpers import TinyCNN, fit, read_events
from planted_faults import fit_with_doctor, planted_run

from lightning_convviz import LearningRateDoctor, TrainingDoctor
from lightning_convviz.functional import FaultRules

LR_KINDS = {"lr_too_high", "lr_too_low"}


def diagnose(
    tmp_path: Path,
    plant: str = "none",
    strength: float = 1.0,
    epochs: int = 4,
    doctor: pl.Callback | None = None,
    **settings: Any,
) -> tuple[Any, list[str]]:
    """Train on the digits with ``plant`` planted (benchmarks/planted_faults.py) and the
    doctor; the doctor and its warnings."""
    pl.seed_everything(0)
    model, data = planted_run(plant, strength, **settings)
    doctor = doctor or TrainingDoctor()
    _, warned = fit_with_doctor(model, data, doctor, epochs=epochs, log_dir=tmp_path, name="run")
    return doctor, warned


def kinds(doctor: TrainingDoctor) -> list[str]:
    return [fault.kind for fault in doctor.findings]


def test_a_healthy_run_has_no_finding_and_no_warning(tmp_path: Path) -> None:
    doctor, warned = diagnose(tmp_path)
    assert kinds(doctor) == [] and warned == [], doctor.summary()
    assert "nothing wrong found so far" in doctor.summary()
    events = read_events(tmp_path / "run/version_0")
    assert [e.value for e in events.Scalars("doctor/findings")] == [0.0] * 4
    assert "doctor/summary/text_summary" in events.Tags()["tensors"]
    assert "doctor/verdict" not in events.Tags()["scalars"]  # the lr is one finding among others


def test_inputs_on_a_raw_scale_are_found_with_their_numbers(tmp_path: Path) -> None:
    doctor, warned = diagnose(tmp_path, "raw", 255, epochs=2)
    assert "inputs_not_normalized" in kinds(doctor)
    assert not LR_KINDS & set(kinds(doctor))
    fault = doctor.findings[kinds(doctor).index("inputs_not_normalized")]
    assert fault.step == 0 and fault.advice
    assert any("inputs_not_normalized" in message for message in warned)


def test_a_weight_initialisation_8x_too_large_is_init_loss_off(tmp_path: Path) -> None:
    doctor, _ = diagnose(tmp_path, "init", 8, epochs=2)
    assert "init_loss_off" in kinds(doctor), doctor.summary()
    assert doctor.fault_records.signals.initial_loss > 3 * math.log(10)


@pytest.mark.training_outcome
def test_shuffled_labels_are_not_learning_and_get_no_learning_rate_verdict(
    tmp_path: Path,
) -> None:
    doctor, _ = diagnose(tmp_path, "shuffled")
    assert "not_learning" in kinds(doctor), doctor.summary()
    assert not LR_KINDS & set(kinds(doctor))


@pytest.mark.training_outcome
def test_units_dead_from_the_start_are_dead_units_not_a_high_learning_rate(
    tmp_path: Path,
) -> None:
    doctor, _ = diagnose(tmp_path, "dead_bias", 4, epochs=3)
    assert "dead_units" in kinds(doctor), doctor.summary()
    assert not LR_KINDS & set(kinds(doctor))
    assert "no learning-rate verdict" in doctor.summary()


def test_a_backbone_left_out_of_the_optimizer_is_frozen_layers(tmp_path: Path) -> None:
    doctor, warned = diagnose(tmp_path, "frozen", epochs=2)
    assert "frozen_layers" in kinds(doctor)
    assert not LR_KINDS & set(kinds(doctor))
    assert "features.0.weight" in doctor.findings[0].evidence
    assert any("frozen_layers" in message for message in warned)


def test_skewed_labels_are_class_imbalance(tmp_path: Path) -> None:
    doctor, _ = diagnose(tmp_path, "imbalance", epochs=2)
    assert "class_imbalance" in kinds(doctor), doctor.summary()


@pytest.mark.training_outcome
def test_a_deep_sigmoid_network_has_vanishing_gradients(tmp_path: Path) -> None:
    doctor, _ = diagnose(tmp_path, "sigmoid_deep")
    assert "vanishing_gradients" in kinds(doctor), doctor.summary()
    assert not LR_KINDS & set(kinds(doctor))


@pytest.mark.training_outcome
def test_a_learning_rate_too_low_is_still_the_learning_rate(tmp_path: Path) -> None:
    doctor, _ = diagnose(tmp_path, epochs=5, optimizer="sgd", lr=1e-4)
    assert kinds(doctor) == ["lr_too_low"], doctor.summary()
    assert "steps are too small" in doctor.summary()


@pytest.mark.training_outcome
def test_the_learning_rate_doctor_withholds_its_verdict_on_dead_units(tmp_path: Path) -> None:
    doctor, warned = diagnose(tmp_path, "dead_bias", 4, epochs=3, doctor=LearningRateDoctor())
    assert doctor.verdict == "cannot tell" and doctor.suggested_lr is None
    assert doctor.active_findings() == []
    assert doctor.withheld is not None and "dead_units" in doctor.withheld
    assert warned == [f"LearningRateDoctor: {doctor.withheld} (see TrainingDoctor)"]
    resumed = LearningRateDoctor()
    resumed.load_state_dict(doctor.state_dict())
    assert resumed.verdict == "cannot tell" and resumed._said == doctor._said  # said once only


def test_a_model_without_class_scores_turns_the_label_checks_off(tmp_path: Path) -> None:
    class Regression(TinyCNN):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x)[:, :1]

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self(batch[0]).square().mean()

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("val_loss", self(batch[0]).square().mean())

    doctor = TrainingDoctor(every_n_steps=1)
    fit(tmp_path, [doctor], Regression(), max_epochs=2)
    assert doctor.fault_records.signals.classes is None
    assert any("class scores" in note for note in doctor.diagnosis.notes)
    assert "not_learning" not in [f.kind for f in doctor.diagnosis.faults]


def test_state_survives_a_round_trip(tmp_path: Path) -> None:
    doctor, _ = diagnose(tmp_path, "frozen_first", epochs=2)
    again = TrainingDoctor()
    again.load_state_dict(doctor.state_dict())
    assert again.findings == doctor.findings and again.findings
    assert again.fault_records == doctor.fault_records
    assert again.summary() == doctor.summary()


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ({"every_n_steps": 0}, "every_n_steps"),
        ({"measurements_per_epoch": -1}, "measurements_per_epoch"),
        ({"fault_rules": {"dead_fraction": 0.5}}, "fault_rules"),
        ({"replay_loss": "yes"}, "replay_loss"),
    ],
)
def test_bad_arguments_fail_at_construction(arguments: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        TrainingDoctor(**arguments)


def test_custom_fault_rules_are_used(tmp_path: Path) -> None:
    doctor, _ = diagnose(
        tmp_path, doctor=TrainingDoctor(fault_rules=FaultRules(input_scale_high=0.5)), epochs=2
    )
    assert "inputs_not_normalized" in kinds(doctor)  # standardised digits read "raw" now


@pytest.mark.training_outcome
@pytest.mark.parametrize(
    ("plant", "settings"),
    [("none", {"batch_norm": True}), ("default_init", {})],
    ids=["bn-adam1e-3", "no-normalisation-default-init"],
)
def test_the_learning_rate_doctor_warns_nothing_on_healthy_runs(
    tmp_path: Path, plant: str, settings: dict[str, Any]
) -> None:
    """The runs on which it warned "too low" in the first epochs and took it back."""
    doctor, warned = diagnose(tmp_path, plant, epochs=5, doctor=LearningRateDoctor(), **settings)
    assert warned == [] and doctor.verdict == "healthy so far", doctor.summary()


@pytest.mark.training_outcome
def test_a_deep_tanh_network_with_a_large_initialisation_has_saturated_activations(
    tmp_path: Path,
) -> None:
    doctor, _ = diagnose(tmp_path, "tanh_big")
    assert "saturated_activations" in kinds(doctor), doctor.summary()
    assert not LR_KINDS & set(kinds(doctor))


@pytest.mark.training_outcome
def test_150_images_trained_long_are_overfitting(tmp_path: Path) -> None:
    doctor, _ = diagnose(tmp_path, "small", epochs=25)
    assert "overfitting" in kinds(doctor), doctor.summary()
    fault = doctor.findings[kinds(doctor).index("overfitting")]
    assert "the validation loss rose from" in fault.evidence


def test_a_gradient_that_is_not_finite_is_exploding_at_once(tmp_path: Path) -> None:
    class Blows(TinyCNN):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = super().training_step(batch, batch_idx)
            return loss * float("inf") if self.global_step == 5 else loss

    doctor = TrainingDoctor(every_n_steps=1)
    with pytest.warns(UserWarning, match=r"TrainingDoctor: exploding_gradients \(from step 5\)"):
        fit(tmp_path, [doctor], Blows(), max_epochs=3, limit_train_batches=4)
    assert "exploding_gradients" in [fault.kind for fault in doctor.diagnosis.faults]
