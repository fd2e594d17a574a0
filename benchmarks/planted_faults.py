"""Faults planted in the digits demo's run, for the training doctor's grid and tests: a network
with parts left out of its optimizer, deep sigmoid or tanh stacks, weights scaled at
initialisation, ReLU biases that kill every unit, and training sets changed (pixels on a raw
scale, shuffled labels, 150 images, one class at 60 %).

Each plant is a name (:data:`PLANTS`) and a strength; :func:`planted_run` builds the model and
the data module of a run with one planted.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import TensorDataset

from lightning_convviz.data.digits import DigitsDataModule
from lightning_convviz.demo import SmallConvNet

__all__ = ["PLANTS", "DataPlant", "Deep", "Planted", "planted_run"]

#: What can be planted (``none``: a healthy run; ``default_init``: PyTorch's initialisation).
PLANTS = (
    "none",
    "default_init",
    "raw",
    "init",
    "shuffled",
    "sigmoid_deep",
    "tanh_big",
    "dead_bias",
    "frozen",
    "frozen_first",
    "small",
    "imbalance",
)


class Planted(SmallConvNet):
    """The demo's network with its optimizer choice widened (AdamW; a frozen part)."""

    frozen_prefix: str | None = None

    def configure_optimizers(self) -> torch.optim.Optimizer:
        lr = self.hparams["lr"]
        params = [
            p
            for name, p in self.named_parameters()
            if self.frozen_prefix is None or not name.startswith(self.frozen_prefix)
        ]
        if self.hparams["optimizer"] == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=0.9)
        if self.hparams["optimizer"] == "adamw":
            return torch.optim.AdamW(params, lr=lr)
        return torch.optim.Adam(params, lr=lr)


class Deep(Planted):
    """A plain stack of 3x3 convolutions with one activation kind (the vanishing-gradient and
    saturation plants)."""

    def __init__(self, activation: type[nn.Module], depth: int, init_gain: float, **kw: Any):
        super().__init__(**kw)
        layers: list[nn.Module] = []
        channels = 1
        for index in range(depth):
            conv = nn.Conv2d(channels, 16, 3, padding=1)
            nn.init.normal_(conv.weight, std=init_gain / math.sqrt(9 * channels))
            layers += [conv, activation()]
            if index % 3 == 2:
                layers.append(nn.MaxPool2d(2))
            channels = 16
        self.features = nn.Sequential(*layers)
        side = 32 // 2 ** (depth // 3)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * side * side, 10))


class DataPlant(DigitsDataModule):
    """The digits with the training set changed."""

    def __init__(self, plant: str, strength: float, seed: int) -> None:
        super().__init__(batch_size=64, seed=seed)
        self.plant, self.strength = plant, strength

    def setup(self, stage: str | None = None) -> None:
        fresh = self.train_set is None
        super().setup(stage)
        if not fresh:
            return
        assert self.train_set is not None and self.val_set is not None
        images, labels = self.train_set.tensors
        val_images, val_labels = self.val_set.tensors
        generator = torch.Generator().manual_seed(self.seed + 100)
        if self.plant == "raw":  # undo the standardisation: pixels on 0..strength
            low = images.min()
            images = (images - low) / (images.max() - low) * self.strength
            val_images = (val_images - low) / (val_images.max() - low) * self.strength
        elif self.plant == "shuffled":
            labels = labels[torch.randperm(len(labels), generator=generator)]
        elif self.plant == "small":
            keep = torch.randperm(len(labels), generator=generator)[:150]
            images, labels = images[keep], labels[keep]
        elif self.plant == "imbalance":  # class 0 is 60% of the training set (repeated)
            zeros = (labels == 0).nonzero().flatten()
            others = (labels != 0).nonzero().flatten()
            others = others[torch.randperm(len(others), generator=generator)][:400]
            zeros = zeros.repeat(math.ceil(600 / len(zeros)))[:600]
            keep = torch.cat([zeros, others])
            images, labels = images[keep], labels[keep]
        self.train_set = TensorDataset(images, labels)
        self.val_set = TensorDataset(val_images, val_labels)


def planted_run(
    plant: str = "none",
    strength: float = 1.0,
    *,
    optimizer: str = "adam",
    lr: float = 1e-3,
    batch_norm: bool = False,
    seed: int = 0,
) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    """The model and the data module of a digits run with ``plant`` planted at ``strength``
    (pixels on 0..strength, weights times strength, biases at -strength)."""
    if plant not in PLANTS:
        raise ValueError(f"plant: expected one of {', '.join(PLANTS)}, got {plant!r}")
    kw: dict[str, Any] = {"lr": lr, "optimizer": "adam", "batch_norm": batch_norm}
    init_std: float | None = None if plant == "default_init" else 0.01
    model: Planted
    if plant == "sigmoid_deep":
        model = Deep(nn.Sigmoid, 9, 1.0, first_layer_init_std=init_std, **kw)
    elif plant == "tanh_big":
        model = Deep(nn.Tanh, 6, 6.0, first_layer_init_std=init_std, **kw)
    else:
        model = Planted(first_layer_init_std=init_std, **kw)
    model.hparams["optimizer"] = optimizer
    with torch.no_grad():
        if plant == "init":
            for module in model.modules():
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    module.weight.mul_(strength)
        elif plant == "dead_bias":
            for module in model.features:
                if isinstance(module, nn.Conv2d):
                    module.bias.fill_(-strength)
                    module.weight.abs_().mul_(0.1)
    if plant == "frozen":
        model.frozen_prefix = "features."
    elif plant == "frozen_first":
        model.frozen_prefix = "features.0."
    return model, DataPlant(plant, strength, seed)
