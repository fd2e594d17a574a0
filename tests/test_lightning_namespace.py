"""The callbacks with the unified package: lightning.pytorch's Trainer, module and logger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as L
import pytest
import torch
import torch.nn.functional as F
from helpers import every_callback, hook_count, loaders, read_events
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn


class UnifiedCNN(L.LightningModule):
    """TinyCNN's layers on ``lightning.pytorch.LightningModule``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.head = nn.Linear(8 * 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.relu2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.head(F.adaptive_avg_pool2d(features, 2).flatten(1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val/loss", F.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def test_every_callback_with_lightning_pytorch(tmp_path: Path) -> None:
    model = UnifiedCNN()
    trainer = L.Trainer(
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=2,
        log_every_n_steps=1,
        logger=TensorBoardLogger(str(tmp_path), name="run", version=0),
        callbacks=every_callback(),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    train, val = loaders()
    with pytest.warns() as caught:
        trainer.fit(model, train, val)
    assert [str(w.message) for w in caught if "failed in" in str(w.message)] == []
    assert hook_count(model) == 0
    events = read_events(tmp_path / "run/version_0")
    assert {"activation_stats/dead_fraction/relu1", "lr_doctor/verdict"} <= set(
        events.Tags()["scalars"]
    )
    assert {"attribution/grad_cam", "embedding/scatter", "max_activation/conv2"} <= set(
        events.Tags()["images"]
    )


@pytest.mark.parametrize(("installed", "served"), [("2.5.5", False), ("2.6.0", True)])
def test_an_older_unified_lightning_is_named_at_import(
    monkeypatch: pytest.MonkeyPatch, installed: str, served: bool
) -> None:
    from lightning_convviz import versions

    monkeypatch.setattr(versions.metadata, "version", lambda name: installed)
    if served:
        assert versions.check_unified_lightning()
    else:
        with pytest.warns(UserWarning, match=rf"lightning {installed} is installed.*>=2\.6"):
            assert not versions.check_unified_lightning()
