"""The diagnostics' time budget: due drawings postponed, the first and last always made."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from helpers import fit, read_events
from pytorch_lightning import LightningModule, Trainer

from lightning_convviz import DiagnosticsBudget, FilterMonitor, MaxActivationMonitor
from lightning_convviz.callbacks.budget import Budget, budget_for
from lightning_convviz.callbacks.explainer import ProbeCallback

LOG = "run/version_0"


class SlowMonitor(ProbeCallback):
    """Draws every epoch; each drawing takes 0.3 s (far more than a TinyCNN epoch)."""

    section = "slow"

    def __init__(self) -> None:
        super().__init__(None, None, 1, 1, "true", 16)

    def _setup_model(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pass

    def _draw(self, trainer: Trainer, pl_module: LightningModule) -> None:
        time.sleep(0.3)
        self._log_scalars(trainer, {"slow/drawn": 1.0}, trainer.global_step)


def drawn_steps(tmp_path: Path) -> list[int]:
    return [e.step for e in read_events(tmp_path / LOG).Scalars("slow/drawn")]


def test_due_drawings_over_the_budget_wait_but_the_first_and_last_are_made(
    tmp_path: Path,
) -> None:
    monitor = SlowMonitor()
    trainer, _ = fit(tmp_path, [monitor, DiagnosticsBudget(max_share=0.1)], max_epochs=6)
    assert drawn_steps(tmp_path) == [0, 12]  # the start and the end: a time-lapse of two
    budget = budget_for(trainer)
    assert budget.postponed == {"SlowMonitor": 6}  # due at every epoch end, never affordable
    events = read_events(tmp_path / LOG)
    costs = [e.value for e in events.Scalars("cost/SlowMonitor")]
    assert [e.step for e in events.Scalars("cost/SlowMonitor")] == [0, 12]
    assert all(0.29 < seconds < 1.0 for seconds in costs), costs
    assert 0 < events.Scalars("cost/share")[-1].value < 1


def test_without_a_limit_every_due_drawing_is_made(tmp_path: Path) -> None:
    fit(tmp_path, [SlowMonitor(), DiagnosticsBudget(max_share=None)], max_epochs=3)
    assert drawn_steps(tmp_path) == [0, 2, 4, 6]


def test_a_postponed_drawing_is_made_when_the_budget_allows(tmp_path: Path) -> None:
    monitor = SlowMonitor()
    # a generous budget after the first drawing: each later one fits once training went on
    trainer, _ = fit(tmp_path, [monitor, DiagnosticsBudget(max_share=0.9)], max_epochs=3)
    assert drawn_steps(tmp_path)[0] == 0 and drawn_steps(tmp_path)[-1] == 6
    assert budget_for(trainer).spent["SlowMonitor"] > 0.3 * len(drawn_steps(tmp_path)) - 0.01


def test_collectors_draw_their_first_and_last_collection(tmp_path: Path) -> None:
    monitor = MaxActivationMonitor(layers="conv1", channels=1, k=2)
    trainer, _ = fit(
        tmp_path, [monitor, DiagnosticsBudget(max_share=1e-9)], max_epochs=4, limit_val_batches=1
    )
    steps = [e.step for e in read_events(tmp_path / LOG).Images("max_activation/conv1")]
    assert steps == [2, 8]  # the first validation epoch's and the last one's
    assert budget_for(trainer).postponed["MaxActivationMonitor"] == 2  # epochs 2 and 3


def test_default_share_and_a_long_drawing_is_announced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = FilterMonitor(every_n_epochs=1)
    monitor.last_drawing_seconds = 2.5  # as if the previous drawing had taken 2.5 s
    with caplog.at_level(logging.INFO):
        trainer, _ = fit(tmp_path, [monitor, DiagnosticsBudget()])
    assert budget_for(trainer).max_share == 0.1
    assert "FilterMonitor: drawing at step 0 (about 2 s; training goes on after it)" in caplog.text


def test_budget_arithmetic_and_bad_shares() -> None:
    ticks = iter([0.0, 100.0, 100.0, 100.0])
    budget = Budget(max_share=0.1, clock=lambda: next(ticks))
    budget.start()
    budget.charge("A", 4.0)
    budget.charge("B", 5.0)
    assert budget.total() == 9.0 and budget.share() == pytest.approx(0.09)
    assert budget.affordable(1.1) and not budget.affordable(1.2)  # 10.1 <= 10.11, 10.2 > 10.12
    assert Budget(max_share=None).affordable(1e9)
    for bad in (0, 1.5, -0.1, True, "0.1"):
        with pytest.raises(ValueError, match=r"^max_share: expected None or a number in \(0, 1\]"):
            DiagnosticsBudget(max_share=bad)  # type: ignore[arg-type]


def test_a_budget_knob_after_the_callbacks_still_sets_the_share(tmp_path: Path) -> None:
    trainer, _ = fit(tmp_path, [FilterMonitor(), DiagnosticsBudget(max_share=0.25)])
    assert budget_for(trainer).max_share == 0.25
