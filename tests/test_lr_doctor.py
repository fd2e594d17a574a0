"""LearningRateDoctor on real training: too high, healthy, too low; NaN; no repeated warnings."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import TinyCNN, fit, read_events

from lightning_convviz import LearningRateDoctor
from lightning_convviz.demo import train


def run(tmp_path: Path, optimizer: str, lr: float, epochs: int = 5) -> LearningRateDoctor:
    doctor = LearningRateDoctor()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(
            lr=lr,
            epochs=epochs,
            log_dir=tmp_path,
            name=f"{optimizer}{lr:g}",
            callbacks=[doctor],
            optimizer=optimizer,
        )
    return doctor


@pytest.mark.training_outcome
def test_adam_3e_2_is_too_high_with_dead_filters_as_evidence(tmp_path: Path) -> None:
    doctor = run(tmp_path, "adam", 3e-2)
    assert doctor.verdict == "too high"
    # which layer dies first depends on the CPU's float kernels (AVX2 or AVX-512): the promise
    # is the verdict with dead filters of some layer as its evidence, and the logged fraction
    evidence = " ".join(f.evidence for f in doctor.active_findings())
    dying = re.findall(r"(features\.\d+): \d+ of \d+ filters dead since step", evidence)
    assert dying, evidence
    events = read_events(tmp_path / "adam0.03/version_0")
    assert events.Scalars("lr_doctor/verdict")[-1].value == 1.0
    for layer in dying:
        assert events.Scalars(f"lr_doctor/dead_fraction/{layer}")[-1].value > 0.5
    assert "lr_doctor/summary/text_summary" in events.Tags()["tensors"]  # the text tab


@pytest.mark.training_outcome
def test_adam_1e_3_is_not_flagged(tmp_path: Path) -> None:
    doctor = run(tmp_path, "adam", 1e-3)
    assert doctor.verdict == "healthy so far", [f.evidence for f in doctor.findings]
    assert doctor.active_findings() == []


@pytest.mark.training_outcome
def test_sgd_1e_4_is_too_low(tmp_path: Path) -> None:
    doctor = run(tmp_path, "sgd", 1e-4)
    assert doctor.verdict == "too low"
    assert {f.key for f in doctor.active_findings()} >= {"update_low", "loss_stalled"}


class TurnsNaN(TinyCNN):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.global_step == 5 else loss


def test_a_nan_loss_is_reported_at_the_step_it_appears(tmp_path: Path) -> None:
    doctor = LearningRateDoctor(every_n_steps=4)
    with pytest.warns(UserWarning, match="NaN or infinite at step 5"):
        fit(tmp_path, [doctor], TurnsNaN(), max_epochs=3, limit_train_batches=4)
    assert doctor.verdict == "too high"
    assert [f.key for f in doctor.findings].count("nonfinite_loss") == 1


class GradientJumps(TinyCNN):
    """Gradients 1000x larger at step 10 (the third epoch of 4 steps)."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        return loss * 1000.0 if self.global_step == 10 else loss


def test_a_gradient_explosion_is_measured_against_earlier_epochs(tmp_path: Path) -> None:
    doctor = LearningRateDoctor(every_n_steps=1)
    with pytest.warns(UserWarning, match="gradient norm .* at step 10, over 10x the largest"):
        fit(tmp_path, [doctor], GradientJumps(), max_epochs=4, limit_train_batches=4)
    explosions = [f for f in doctor.findings if f.key == "grad_explosion"]
    assert len(explosions) == 1 and "step 10," in explosions[0].evidence
    assert doctor.verdict == "too high"  # permanent


def test_memory_per_step_is_bounded(tmp_path: Path) -> None:
    doctor = LearningRateDoctor(every_n_steps=1)
    fit(tmp_path, [doctor], max_epochs=8, limit_train_batches=4)  # 32 measured steps
    history = doctor._history
    assert history.grad_norm_count == 32
    assert {len(ratios) for ratios in history.update_ratios.values()} == {20}
    assert {len(entries) for entries in history.dead.values()} == {2}
    assert len(history.epoch_losses) == 8  # one number per epoch


def test_each_finding_is_warned_once(tmp_path: Path) -> None:
    doctor = LearningRateDoctor(every_n_steps=1, high_update_ratio=1e-9, low_update_ratio=1e-10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(tmp_path, [doctor], max_epochs=4, limit_train_batches=3)
    messages = [str(w.message) for w in caught if "LearningRateDoctor" in str(w.message)]
    assert messages and len(messages) == len({f.key for f in doctor.findings})
    assert doctor.verdict == "too high"  # the update ratio is above a tiny threshold each epoch


def test_state_survives_a_round_trip(tmp_path: Path) -> None:
    doctor = LearningRateDoctor(every_n_steps=1)
    fit(tmp_path, [doctor], max_epochs=2)
    again = LearningRateDoctor()
    again.load_state_dict(doctor.state_dict())
    assert again.findings == doctor.findings and again.verdict == doctor.verdict
    assert again._history.update_ratios == doctor._history.update_ratios
    assert again.summary() == doctor.summary()


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ({"high_update_ratio": 0}, "high_update_ratio"),
        ({"low_update_ratio": -1}, "low_update_ratio"),
        ({"low_update_ratio": 0.5, "high_update_ratio": 0.1}, "low_update_ratio"),
        ({"dead_fraction_high": 1.5}, "dead_fraction_high"),
        ({"divergence_factor": 1.0}, "divergence_factor"),
        ({"explosion_factor": "x"}, "explosion_factor"),
        ({"slow_loss_fraction": 0}, "slow_loss_fraction"),
        ({"every_n_steps": 0}, "every_n_steps"),
    ],
)
def test_thresholds_are_validated(arguments: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name}: expected"):
        LearningRateDoctor(**arguments)
