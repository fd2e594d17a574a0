"""The models the benchmarks and the tests run: a tiny seeded CNN and a plain LightningModule
around any classifier (``tests/`` imports them from here; nothing here imports the tests)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Classifier", "TinyCNN"]


class TinyCNN(pl.LightningModule):
    """Two conv blocks (conv, BatchNorm, in-place ReLU) and a linear head on 3 x 16 x 16 inputs.

    With ``dead_layer=True`` a third block, ``dead_conv`` (bias -1e3, never trained) and
    ``dead_relu``, reads the input beside the others and feeds the head: it is zero everywhere.
    """

    def __init__(self, in_channels: int = 3, dead_layer: bool = False, lr: float = 0.05):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.relu2 = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.lr = lr
        self.dead_layer = dead_layer
        if dead_layer:
            self.dead_conv = nn.Conv2d(in_channels, 4, 3, padding=1)
            self.dead_relu = nn.ReLU()
            with torch.no_grad():
                self.dead_conv.bias.fill_(-1e3)
        self.head = nn.Linear((12 if dead_layer else 8) * 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
        if self.dead_layer:
            features = torch.cat([features, self.dead_relu(self.dead_conv(x))], dim=1)
        return self.head(self.pool(features).flatten(1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val/loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for n, p in self.named_parameters() if not n.startswith("dead_")]
        return torch.optim.SGD(params, lr=self.lr, momentum=0.9)


class Classifier(pl.LightningModule):
    """A plain LightningModule around an architecture, as a user writes one. GoogLeNet and
    Inception-v3 return their auxiliary outputs in training mode: the main logits are used."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        logits: torch.Tensor = out[0] if isinstance(out, tuple) else out
        return logits

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        return F.cross_entropy(self(images), labels)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, labels = batch
        self.log("val/loss", F.cross_entropy(self(images), labels))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # gentle: random-init MNASNet at 32 px overflows with SGD 0.01 + momentum on noise
        return torch.optim.SGD(self.parameters(), lr=1e-3)
