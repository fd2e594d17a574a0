"""A run interrupted after epoch 2 and resumed from its checkpoint logs what an uninterrupted
run logs: same tags at the same steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
from helpers import TinyCNN, loaders, make_trainer, read_events

import lightning_convviz as convviz


def callbacks(background: bool | None = None) -> list[pl.Callback]:
    return [
        # room in the worker's queue for every drawing of an epoch's end: a full queue postpones
        # a due drawing, and whether it is full depends on how fast the worker drains it
        convviz.DiagnosticsBudget(max_share=None, background=background, max_queued=64),
        convviz.ActivationStatsMonitor(every_n_steps=2, window_steps=4),
        convviz.ActivationMapMonitor(every_n_epochs=2),
        convviz.FilterMonitor(every_n_epochs=2),
        convviz.SaliencyMonitor(methods=("saliency",), num_probe_images=2, every_n_epochs=2),
        convviz.MaxActivationMonitor(layers="conv2", k=2, every_n_epochs=2),
        convviz.AdversarialMonitor(num_probe_images=2, every_n_epochs=2),
        convviz.CorrespondenceMonitor(num_probe_images=2, points_per_side=6, every_n_epochs=2),
        convviz.ConfusionMonitor(every_n_epochs=2, top_losses=4),
        convviz.LearningRateDoctor(every_n_steps=2),
    ]


def logged(log_dir: Path) -> dict[str, list[int]]:
    events = read_events(log_dir)
    steps = {}
    for kind in ("scalars", "images"):
        for tag in events.Tags()[kind]:
            if tag.startswith(("train/", "val/", "epoch", "hp_metric")):
                continue
            items = events.Scalars(tag) if kind == "scalars" else events.Images(tag)
            steps[tag] = sorted(item.step for item in items)
    return steps


@pytest.mark.parametrize("worker", [None, True], ids=["drawing-as-chosen", "drawing-worker"])
def test_resumed_run_logs_the_same_steps(tmp_path: Path, worker: bool | None) -> None:
    train, val = loaders()
    options = {"limit_train_batches": 3, "limit_val_batches": 1}
    pl.seed_everything(0)
    whole = make_trainer(tmp_path / "whole", callbacks(worker), max_epochs=4, **options)
    whole.fit(TinyCNN(), train, val)

    pl.seed_everything(0)
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = make_trainer(
        tmp_path / "split",
        [*callbacks(worker), checkpoint],
        max_epochs=2,
        enable_checkpointing=True,
        **options,
    )
    first.fit(TinyCNN(), train, val)
    second = make_trainer(
        tmp_path / "split",
        [*callbacks(worker), pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "c2")],
        max_epochs=4,
        enable_checkpointing=True,
        **options,
    )
    second.fit(TinyCNN(), train, val, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))

    expected = logged(tmp_path / "whole/run/version_0")
    found = logged(tmp_path / "split/run/version_0")
    assert expected  # the callbacks logged something
    assert found == expected
