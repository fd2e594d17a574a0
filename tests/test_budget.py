"""The diagnostics' time budget: the first and last drawings always made and counted apart, the
drawings in between within the share, cheap first and nobody starved."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from helpers import TinyCNN, fit, read_events
from pytorch_lightning import LightningModule, Trainer

from lightning_convviz import DiagnosticsBudget, FilterMonitor, MaxActivationMonitor
from lightning_convviz.callbacks import budget as budget_module
from lightning_convviz.callbacks.budget import Budget
from lightning_convviz.callbacks.context import context_of
from lightning_convviz.callbacks.probe import ProbeCallback
from lightning_convviz.demo import train

LOG = "run/version_0"


class FakeClock:
    """The budget's clock in the tests of its decisions: it moves only when a drawing or a
    training step says how long it took, so that what the budget decides is the same on any
    machine, idle or busy (the ``clock`` fixture puts it in place)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


CLOCK = FakeClock()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    CLOCK.now = 0.0
    monkeypatch.setattr(budget_module, "time", SimpleNamespace(perf_counter=CLOCK))
    return CLOCK


class SlowMonitor(ProbeCallback):
    """Draws every epoch; each drawing takes 0.3 s on the fake clock (far more than a TinyCNN
    epoch, which takes none)."""

    section = "slow"
    seconds = 0.3

    def __init__(self) -> None:
        super().__init__(None, None, 1, 1, "true", 16)

    def _setup_model(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pass

    def _draw(self, trainer: Trainer, pl_module: LightningModule) -> None:
        CLOCK.advance(self.seconds)
        self._log_scalars(trainer, {f"{self.section}/drawn": 1.0}, trainer.global_step)


class CheapMonitor(SlowMonitor):
    section = "cheap"
    seconds = 0.05


class SlowSteps(TinyCNN):
    """Training steps of a quarter of a second on the fake clock: epochs of two steps, half a
    second."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        CLOCK.advance(0.25)
        return super().training_step(batch, batch_idx)


def drawn_steps(tmp_path: Path, section: str = "slow") -> list[int]:
    return [e.step for e in read_events(tmp_path / LOG).Scalars(f"{section}/drawn")]


def test_due_drawings_over_the_budget_wait_but_the_first_and_last_are_made_apart(
    tmp_path: Path, console: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    monitor = SlowMonitor()
    monitor.seconds = 1.0  # epochs of 0.5 s: a drawing in between never fits in 10 %
    with console.at_level(logging.INFO):
        trainer, _ = fit(
            tmp_path, [monitor, DiagnosticsBudget(max_share=0.1)], SlowSteps(), max_epochs=6
        )
    assert drawn_steps(tmp_path) == [0, 12]  # the start and the end: a time-lapse of two
    account = context_of(trainer).budget.accounts["SlowMonitor"]
    # due at the start and every epoch end; the last epoch's drawing is the last one (fixed)
    assert (account.due, account.made_fixed, account.made_between) == (7, 2, 0)
    assert account.postponed == 5  # epochs 0 to 4: never affordable
    # the first epoch's end needed the most: 1 s over the 1.5 s so far, this 1 s and the
    # last drawing's 1 s to come
    assert account.peak_required == pytest.approx(1 / 3.5)
    events = read_events(tmp_path / LOG)
    assert [e.step for e in events.Scalars("cost/SlowMonitor")] == [0, 12]
    assert [e.value for e in events.Scalars("cost/SlowMonitor")] == [1.0, 1.0]
    # the first and the last are counted apart: nothing was spent of the share; they took
    # 2 s of the 5 s fit (3 s of training)
    assert events.Scalars("cost/share")[-1].value == 0.0
    assert events.Scalars("cost/fixed_share")[-1].value == pytest.approx(0.4)
    # one console line says what was held back, and the share that would have paid for it:
    # five more drawings of 1 s over the 5 s fit and them
    lines = [r.getMessage() for r in console.records if "held back" in r.getMessage()]
    assert lines == [
        "SlowMonitor: made 2 of its 7 due drawings, 5 held back by the budget (max_share=0.1); "
        "about DiagnosticsBudget(max_share=0.5) would have made them all"
    ]


def test_without_a_limit_every_due_drawing_is_made(tmp_path: Path) -> None:
    fit(tmp_path, [SlowMonitor(), DiagnosticsBudget(max_share=None)], max_epochs=3)
    assert drawn_steps(tmp_path) == [0, 2, 4, 6]


def test_a_postponed_drawing_is_made_when_the_budget_allows(
    tmp_path: Path, clock: FakeClock
) -> None:
    monitor = SlowMonitor()  # 0.3 s drawings, epochs of 0.5 s, 20 %
    trainer, _ = fit(
        tmp_path, [monitor, DiagnosticsBudget(max_share=0.2)], SlowSteps(), max_epochs=4
    )
    # epoch 0's end: 0.3 s over the 0.8 s so far, it and the last one's 0.3 s to come
    # (0.214): postponed; epoch 1's: 0.3 / 1.9 (0.158): made; epoch 2's: 0.6 / 2.7: postponed
    assert drawn_steps(tmp_path) == [0, 4, 8]
    account = context_of(trainer).budget.accounts["SlowMonitor"]
    assert (account.made_between, account.postponed) == (1, 2)
    assert account.spent == pytest.approx(0.3) and account.fixed == pytest.approx(0.6)


def test_collectors_draw_their_first_and_last_collection(tmp_path: Path) -> None:
    monitor = MaxActivationMonitor(layers="conv1", channels=1, k=2)
    trainer, _ = fit(
        tmp_path, [monitor, DiagnosticsBudget(max_share=1e-9)], max_epochs=4, limit_val_batches=1
    )
    steps = [e.step for e in read_events(tmp_path / LOG).Images("max_activation/conv1")]
    assert steps == [2, 8]  # the first validation epoch's and the last one's
    account = context_of(trainer).budget.accounts["MaxActivationMonitor"]
    assert (account.postponed, account.due, account.made) == (2, 4, 2)  # epochs 2 and 3


def test_default_share_and_a_long_drawing_is_announced(
    tmp_path: Path, console: pytest.LogCaptureFixture
) -> None:
    monitor = FilterMonitor(every_n_epochs=1)
    monitor.last_drawing_seconds = 2.5  # as if the previous drawing had taken 2.5 s
    with console.at_level(logging.INFO):
        trainer, _ = fit(tmp_path, [monitor, DiagnosticsBudget()])
    assert context_of(trainer).budget.max_share == 0.1
    assert "FilterMonitor: drawing at step 0 (about 2 s; training goes on after it)" in console.text


def test_budget_arithmetic_and_bad_shares() -> None:
    budget = Budget(max_share=0.1, clock=lambda: 100.0)
    budget.start()  # at 100 s, so every reading is 0 s after the start ...
    budget._started = 0.0  # ... but for this one: 100 s of fit so far
    budget.charge("A", 4.0)
    budget.charge("B", 5.0)
    budget.charge("C", 20.0, "first")  # apart, and its last is to come
    assert budget.total() == 9.0 and budget.fixed_share() == pytest.approx(0.2)
    # the last drawings to come: C's 20 s, A's 4 s and B's 5 s (each at its latest's seconds)
    assert budget.fit_seconds() == 129.0
    assert budget.share() == pytest.approx(9 / 129)
    # (9 + 4.3) / 133.3 <= 0.1 < (9 + 4.4) / 133.4 (nothing ahead of either in the queue)
    assert budget.affordable("A", 4.3) and not budget.affordable("A", 4.4)
    assert budget.accounts["A"].postponed == 1
    # B's next 5 s are ahead of a 6 s drawing of A: (9 + 6 + 5) / 135 > 0.1
    assert budget.required_share("A", 6.0) == pytest.approx(20 / 135)
    for owner, seconds in (("A", 4.0), ("B", 5.0), ("C", 20.0)):
        budget.charge(owner, seconds, "last")  # nothing more to come
    assert budget.fit_seconds() == 100.0 and budget.share() == pytest.approx(0.09)
    assert Budget(max_share=None).affordable("A", 1e9)
    for bad in (0, 1.5, -0.1, True, "0.1"):
        with pytest.raises(ValueError, match=r"^max_share: expected None or a number in \(0, 1\]"):
            DiagnosticsBudget(max_share=bad)  # type: ignore[arg-type]


def test_the_last_drawing_still_to_come_counts_in_the_fit() -> None:
    budget = Budget(max_share=0.1, clock=lambda: 10.0)
    budget.start()
    budget._started = 0.0  # 10 s of fit
    budget.charge("Resumed", 0.3)  # after a resume: no first drawing in this fit
    budget.charge("Short", 0.2, "last")  # its only drawing: the first and the last
    assert budget.fit_seconds() == pytest.approx(10.3)  # the resumed one's last is to come
    budget.charge("Resumed", 0.4, "last")
    assert budget.fit_seconds() == 10.0 and budget.share() == pytest.approx(0.03)


def test_the_share_that_would_have_made_every_frame() -> None:
    budget = Budget(max_share=0.1, clock=lambda: 20.0)
    budget.start()
    budget._started = 0.0  # 20 s of fit
    for owner, cost, between, due in (
        ("Cheap", 0.05, 4, 10),
        ("Mid", 0.1, 2, 10),
        ("Dear", 1, 0, 3),
    ):
        budget.charge(owner, cost, "first")
        for _ in range(between):
            budget.charge(owner, cost)
        for _ in range(due):
            budget.note_due(owner)
    # every frame of Mid: its 9 frames in between at 0.1 s, the cheap one's 9 at 0.05 s, and
    # the dear one a frame each time it would be ahead (about 0.1 s per due frame, 2 of them),
    # over the fit without the 0.4 s of frames in between it had
    wanted = 9 * 0.1 + 9 * 0.05 + 2 * 0.1
    assert budget.share_for_all("Mid") == pytest.approx(wanted / (20 - 0.4 + wanted))


def test_a_drawing_that_misses_due_frames_moves_up_the_queue() -> None:
    budget = Budget(max_share=0.1, clock=lambda: 0.0)
    budget.start()
    budget.charge("Cheap", 0.05)
    budget.charge("Dear", 0.5)
    assert budget.accounts["Dear"].priority == 0.5  # behind the cheap one
    for _ in range(20):
        budget.note_due("Dear")  # twenty due frames missed: 0.5 s for twenty frames
    assert budget.accounts["Dear"].priority == pytest.approx(0.025)  # now ahead of it
    budget.note_due("Cheap")
    budget._started = -10.0  # 10 s of fit: the cheap one keeps room for the dear one's 0.5 s
    # over the 10 s, the new drawing and both callbacks' last drawings to come
    assert budget.required_share("Cheap", 0.05) == pytest.approx(
        (0.55 + 0.05 + 0.5) / (10 + 0.05 + 0.05 + 0.5)
    )
    budget.charge("Dear", 0.5)  # drawn: back in its place
    assert budget.accounts["Dear"].priority == 0.5


def test_cheap_first_a_cheap_drawing_is_not_held_back_by_a_dear_one() -> None:
    """Both are due every second of training, the dear one asked first (the order of the
    Trainer's callbacks): the cheap one is made every time, the dear one when the share leaves
    room beside the cheap one's next drawing, and the share holds at every moment."""
    now = 0.0
    budget = Budget(max_share=0.1, clock=lambda: now)
    budget.start()
    costs = {"Dear": 2.5, "Cheap": 0.05}
    for owner, cost in costs.items():  # the first drawings: made, apart
        budget.note_due(owner)
        budget.charge(owner, cost, "first")
        now += cost
    for _ in range(60):
        now += 1.0  # an epoch of training
        for owner, cost in costs.items():
            budget.note_due(owner)
            if budget.affordable(owner, cost):
                budget.charge(owner, cost)
                now += cost
            assert budget.total() <= 0.1 * budget.fit_seconds() + 1e-9
    cheap, dear = budget.accounts["Cheap"], budget.accounts["Dear"]
    assert cheap.made_between == 60  # every time it was due
    # the dear one took what the cheap one left: about 0.1 - 0.05 / 1.05 of the time
    assert 1 <= dear.made_between <= 4, dear.made_between
    (line,) = budget.report()
    assert line.startswith(f"Dear: made {dear.made} of its 61 due drawings")
    for owner, cost in costs.items():  # the last drawings, made at the end
        budget.charge(owner, cost, "last")
        now += cost
    assert budget.fit_seconds() == budget.elapsed()  # nothing more to come
    assert 0.06 < budget.share() <= 0.1  # the share was used, and held over the whole fit
    # a share that pays for every dear drawing too, at least the held-back ones over the fit
    needed = float(re.findall(r"max_share=([0-9.]+)\) would", line)[0])
    assert needed >= dear.peak_required > 0.1


def test_a_cheap_monitor_draws_every_epoch_beside_a_dear_one_asked_first(
    tmp_path: Path, clock: FakeClock
) -> None:
    dear, cheap = SlowMonitor(), CheapMonitor()
    dear.seconds = 0.4
    trainer, _ = fit(
        tmp_path,
        [dear, cheap, DiagnosticsBudget(max_share=0.3)],
        max_epochs=8,
        model=SlowSteps(),
    )
    assert drawn_steps(tmp_path, "cheap") == list(range(0, 17, 2))  # the start, every epoch
    assert 2 < len(drawn_steps(tmp_path)) < 9  # the dear one drew in between, spaced out
    events = read_events(tmp_path / LOG)
    assert all(e.value <= 0.3 for e in events.Scalars("cost/share"))
    assert context_of(trainer).budget.accounts["CheapMonitor"].postponed == 0


def test_a_budget_knob_after_the_callbacks_still_sets_the_share(tmp_path: Path) -> None:
    trainer, _ = fit(tmp_path, [FilterMonitor(), DiagnosticsBudget(max_share=0.25)])
    assert context_of(trainer).budget.max_share == 0.25


def test_the_demo_keeps_a_time_lapse_within_the_default_share(
    tmp_path: Path, console: pytest.LogCaptureFixture
) -> None:
    """`make demo`: 20 epochs of the digits, every callback at the demo's cadence, 10 %, on
    this machine's clock. How many frames in between fit depends on how fast drawings are
    against training here (the budget's decisions are tested on a fake clock above); what holds
    at any speed: every picture has a start and the end, and the share of the frames in between
    stays at 10 % but for what one drawing took beyond its expected seconds."""
    with console.at_level(logging.INFO):
        trainer = train(epochs=20, log_dir=tmp_path, name="demo")
    events = read_events(trainer.log_dir)
    frames = {tag: [e.step for e in events.Images(tag)] for tag in events.Tags()["images"]}
    assert len(frames) >= 10
    for tag, steps in frames.items():
        if not tag.startswith("activation_stats/"):  # the statistics' own cadence
            assert len(steps) >= 2 and steps[-1] == 460, (tag, steps)  # a start and the end
    costs = {
        tag: [e.value for e in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
        if tag.startswith("cost/") and tag.count("/") == 1 and "share" not in tag
    }
    # the fit's seconds by the budget's clock: the first and last drawings over their share
    fixed = sum(values[0] + values[-1] for values in costs.values() if len(values) > 1)
    fit_seconds = fixed / events.Scalars("cost/fixed_share")[-1].value
    dearest = max(max(values) for values in costs.values())
    assert events.Scalars("cost/share")[-1].value <= 0.1 + dearest / fit_seconds
    told = [r.getMessage() for r in console.records if "held back by the budget" in r.getMessage()]
    assert all(re.search(r"would have made them all$", line) for line in told), told
