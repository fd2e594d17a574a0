"""Test helpers: tiny seeded CNNs, in-memory data, a Trainer factory and a log reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class TinyCNN(pl.LightningModule):
    """Two conv blocks (conv, BatchNorm, in-place ReLU) and a linear head on 3 x 16 x 16 inputs."""

    def __init__(self, in_channels: int = 3, dead_first_layer: bool = False, lr: float = 0.05):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.relu2 = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(8 * 4, 2)
        self.lr = lr
        self.dead_first_layer = dead_first_layer
        if dead_first_layer:  # no BatchNorm to rescue it: conv1 -> ReLU reads 0 everywhere
            self.bn1 = nn.Identity()  # type: ignore[assignment]
            with torch.no_grad():
                self.conv1.bias.fill_(-1e3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.head(self.pool(x).flatten(1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val/loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.dead_first_layer:  # keep the dead bias where it is
            params = [p for n, p in self.named_parameters() if n != "conv1.bias"]
            return torch.optim.SGD(params, lr=self.lr, momentum=0.9)
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def colour_data(n: int = 32, channels: int = 3, side: int = 16, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n, channels, side, side, generator=generator)
    labels = (images[:, 0].mean(dim=(1, 2)) > 0).long()
    return TensorDataset(images, labels)


def loaders(batch_size: int = 8, channels: int = 3) -> tuple[DataLoader[Any], DataLoader[Any]]:
    train = DataLoader(colour_data(channels=channels), batch_size=batch_size, shuffle=False)
    val = DataLoader(colour_data(channels=channels, seed=1), batch_size=batch_size)
    return train, val


def make_trainer(tmp_path: Path, callbacks: list[pl.Callback], **overrides: Any) -> pl.Trainer:
    options: dict[str, Any] = dict(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        log_every_n_steps=1,
        logger=TensorBoardLogger(str(tmp_path), name="run", version=0),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        callbacks=callbacks,
    )
    options.update(overrides)
    return pl.Trainer(**options)


def read_events(log_dir: str | Path) -> EventAccumulator:
    accumulator = EventAccumulator(
        str(log_dir), size_guidance={"images": 0, "scalars": 0, "histograms": 0, "tensors": 0}
    )
    accumulator.Reload()
    return accumulator


def hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_hooks)
        + len(m._backward_pre_hooks)
        for m in model.modules()
    )
