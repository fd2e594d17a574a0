"""The drawing worker: rendering and writing beside training lose nothing, change no pixel,
keep each tag's steps in order, report a failure once and leave no thread behind."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import TinyCNN, every_callback, fit, logged_image, read_events

import lightning_convviz as convviz
from lightning_convviz.callbacks.batches import to_host
from lightning_convviz.writing.background import DrawingWorker, background_choice


def _drawing_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "convviz-drawing"]


def _run(tmp_path: Path, background: bool, **overrides: Any) -> Any:
    torch.manual_seed(0)
    budget = convviz.DiagnosticsBudget(max_share=None, background=background, max_queued=64)
    fit(tmp_path, [*every_callback(), budget], max_epochs=2, **overrides)
    return read_events(tmp_path / "run" / "version_0")


def _pictures(events: Any) -> dict[str, list[tuple[int, np.ndarray]]]:
    return {
        tag: [(e.step, logged_image(events, tag, i)) for i, e in enumerate(events.Images(tag))]
        for tag in events.Tags()["images"]
    }


def test_the_same_pictures_at_the_same_steps_with_and_without_the_worker(tmp_path: Path) -> None:
    now = _run(tmp_path / "now", background=False)
    later = _run(tmp_path / "later", background=True)
    assert not _drawing_threads()  # closed at teardown: no thread survives fit
    pictures_now, pictures_later = _pictures(now), _pictures(later)
    assert set(pictures_later) == set(pictures_now)
    assert len(pictures_now) >= 10  # every drawing callback drew something
    for tag, frames in pictures_now.items():
        assert [step for step, _ in pictures_later[tag]] == [step for step, _ in frames], tag
        for (_, expected), (_, got) in zip(frames, pictures_later[tag], strict=True):
            np.testing.assert_array_equal(got, expected, err_msg=tag)
    assert set(later.Tags()["histograms"]) == set(now.Tags()["histograms"])
    for tag in now.Tags()["histograms"]:
        assert [e.step for e in later.Histograms(tag)] == [e.step for e in now.Histograms(tag)]
    # the worker's seconds are logged beside what the loop waited for
    scalars = set(later.Tags()["scalars"])
    assert {"cost/ActivationMapMonitor", "cost/ActivationMapMonitor/background"} <= scalars
    assert "cost/ActivationMapMonitor/background" not in set(now.Tags()["scalars"])


def test_a_failing_drawing_is_one_warning_naming_the_callback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_convviz import render

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no ink")

    monkeypatch.setattr(render, "filter_grid", broken)
    budget = convviz.DiagnosticsBudget(max_share=None, background=True)
    with pytest.warns(UserWarning, match="FilterMonitor: its drawing at step 0 failed") as caught:
        trainer, _ = fit(tmp_path, [convviz.FilterMonitor(), budget], max_epochs=3)
    assert sum("FilterMonitor" in str(w.message) for w in caught) == 1
    assert trainer.current_epoch == 3  # training went on
    events = read_events(tmp_path / "run" / "version_0")
    assert not [t for t in events.Tags()["images"] if t.startswith("filters/")]
    assert "cost/FilterMonitor" in events.Tags()["scalars"]  # drawn (and failed) 4 times
    assert len(events.Scalars("cost/FilterMonitor")) == 4
    assert not _drawing_threads()


def test_what_is_queued_is_written_when_training_fails(tmp_path: Path) -> None:
    class Failing(TinyCNN):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            if self.current_epoch == 1:
                raise ValueError("the user's bug")
            return super().training_step(batch, batch_idx)

    budget = convviz.DiagnosticsBudget(max_share=None, background=True)
    with pytest.raises(ValueError, match="the user's bug"):
        fit(tmp_path, [convviz.ActivationMapMonitor(), budget], model=Failing(), max_epochs=3)
    assert not _drawing_threads()
    events = read_events(tmp_path / "run" / "version_0")
    steps = [e.step for e in events.Images("activation_maps/relu1")]
    assert steps == [0, 2]  # the first drawing and the one of epoch 0's end


def test_a_full_queue_postpones_a_drawing_in_between_and_waits_for_first_and_last() -> None:
    worker = DrawingWorker(max_queued=1)
    gate = threading.Event()
    done: list[int] = []
    worker.submit("Slow", 0, gate.wait)
    deadline = time.monotonic() + 5
    while not worker._jobs.empty() and time.monotonic() < deadline:  # the worker took it
        time.sleep(0.01)
    worker.submit("Slow", 1, lambda: done.append(1))
    assert worker.full  # a drawing in between would now be postponed (base._may_draw)
    gate.set()
    worker.close()
    assert done == [1] and not worker.alive


def test_to_host_copies_so_that_training_cannot_change_a_queued_picture() -> None:
    weight = torch.ones(2, 3)
    copy = to_host(weight)
    weight.add_(1)
    assert copy.tolist() == [[1.0] * 3] * 2


def test_the_choice_follows_the_free_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    class CpuTrainer:
        accelerator = type("CPUAccelerator", (), {})()
        num_devices = 1

    from lightning_convviz.writing import background

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(background, "available_cores", lambda: 2)
    chosen, why = background_choice(CpuTrainer())  # type: ignore[arg-type]
    assert not chosen and "all 2 CPU cores busy" in why
    monkeypatch.setattr(background, "available_cores", lambda: 4)
    chosen, why = background_choice(CpuTrainer())  # type: ignore[arg-type]
    assert chosen and "2 of 4" in why
    assert background_choice(CpuTrainer(), wanted=False)[0] is False  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("arguments", "name"),
    [({"background": "yes"}, "background"), ({"max_queued": 0}, "max_queued")],
)
def test_bad_arguments_name_themselves(arguments: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        convviz.DiagnosticsBudget(**arguments)
