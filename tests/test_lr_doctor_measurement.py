"""What LearningRateDoctor measures and leaves behind: the replayed loss changes nothing a user
keeps (logged metrics, torchmetrics, collected outputs, dropout, BatchNorm), alpha equals the
parabola through the recorded numbers, and the run's settings reach the HParams tab."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchmetrics
from helpers import TinyCNN, fit, read_events
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2
from torch import nn

from lightning_convviz import LearningRateDoctor
from lightning_convviz.functional.lr_judgement import cockpit_alpha


class Busy(TinyCNN):
    """Dropout, a torchmetric, self.log of both, and outputs collected for the epoch end."""

    def __init__(self) -> None:
        super().__init__(lr=0.05)
        self.dropout = nn.Dropout(0.5)
        self.accuracy = torchmetrics.classification.MulticlassAccuracy(num_classes=2)
        self.collected: list[torch.Tensor] = []
        self.epoch_sizes: list[int] = []
        self.logged: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
        return self.head(self.dropout(self.pool(features).flatten(1)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.accuracy(logits, y)
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        self.log("train/accuracy", self.accuracy, on_step=False, on_epoch=True)
        self.collected.append(loss.detach())
        return loss

    def on_train_epoch_end(self) -> None:
        self.epoch_sizes.append(len(self.collected))
        self.logged.append(float(self.trainer.callback_metrics["train/loss_epoch"]))
        self.collected.clear()


def run(tmp_path: Path, callbacks: list[pl.Callback], **overrides: Any) -> Busy:
    pl.seed_everything(0)
    model = Busy()
    fit(tmp_path, callbacks, model, max_epochs=3, limit_train_batches=4, **overrides)
    return model


@pytest.mark.parametrize("accumulate", [1, 2])
def test_the_replayed_step_leaves_no_trace(tmp_path: Path, accumulate: int) -> None:
    plain = run(tmp_path / "plain", [], accumulate_grad_batches=accumulate)
    doctor = LearningRateDoctor(every_n_steps=1)
    measured = run(tmp_path / "doctor", [doctor], accumulate_grad_batches=accumulate)
    assert [s.alpha for s in doctor.steps].count(None) < len(doctor.steps)  # it replayed
    for (name, value), other in zip(
        plain.state_dict().items(), measured.state_dict().values(), strict=True
    ):
        assert torch.equal(value, other), name  # weights, BatchNorm buffers, metric states
    assert measured.epoch_sizes == plain.epoch_sizes == [4, 4, 4]
    assert measured.logged == plain.logged  # the epoch's mean of the logged loss


def test_alpha_is_the_parabola_through_the_recorded_numbers(tmp_path: Path) -> None:
    doctor = LearningRateDoctor(every_n_steps=2)
    run(tmp_path, [doctor])
    assert len(doctor.steps) == 6
    for step in doctor.steps:
        assert step.alpha == cockpit_alpha(step.loss, step.loss_after, step.slope)
    events = read_events(tmp_path / "run/version_0")
    logged = {e.step: e.value for e in events.Scalars("lr_doctor/alpha")}
    assert logged == pytest.approx({s.step: s.alpha for s in doctor.steps if s.alpha is not None})
    assert [e.value for e in events.Scalars("lr_doctor/lr")] == pytest.approx([0.05] * 6)


def test_the_run_reaches_the_hparams_tab(tmp_path: Path) -> None:
    doctor = LearningRateDoctor(every_n_steps=1)
    run(tmp_path, [doctor])
    found: dict[str, Any] = {}
    metrics: list[str] = []
    for path in (tmp_path / "run/version_0").glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == "_hparams_/session_start_info":
                    data = plugin_data_pb2.HParamsPluginData.FromString(
                        value.metadata.plugin_data.content
                    )
                    found.update(data.session_start_info.hparams)
                if value.tag == "_hparams_/experiment":
                    data = plugin_data_pb2.HParamsPluginData.FromString(
                        value.metadata.plugin_data.content
                    )
                    metrics += [m.name.tag for m in data.experiment.metric_infos]
    assert found["lr_doctor/lr"].number_value == pytest.approx(0.05)
    assert found["lr_doctor/optimizer"].string_value == "SGD"
    assert found["lr_doctor/scheduler"].string_value == "none"
    assert found["lr_doctor/verdict"].string_value == doctor.verdict
    assert {"lr_doctor/verdict", "lr_doctor/suggested_lr", "train/loss_epoch"} <= set(metrics)
