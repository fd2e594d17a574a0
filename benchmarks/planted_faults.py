"""Faults planted in the digits and photographs demos' runs, for the training doctor's grid
and tests: a network with parts left out of its optimizer, deep sigmoid or tanh stacks, weights
scaled at initialisation, ReLU biases that kill every unit, and training sets changed (pixels
on a raw scale, shuffled labels, 150 images, one class at 60 %).

Each plant is a name (:data:`PLANTS`) and a strength; :func:`planted_run` builds the model and
the data module of a run with one planted.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytorch_lightning as pl
import torch
import torchvision
from torch import nn
from torch.utils.data import TensorDataset

from lightning_convviz.data.digits import DigitsDataModule
from lightning_convviz.data.in_memory import InMemoryDataModule
from lightning_convviz.data.photos import PhotoCropsDataModule
from lightning_convviz.demo import DATASETS, SmallConvNet

__all__ = [
    "PLANTS",
    "Deep",
    "Planted",
    "PlantedDigits",
    "PlantedPhotos",
    "fit_with_doctor",
    "plant_training_set",
    "planted_run",
]

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
        channels = int(kw.get("in_channels", 1))
        for index in range(depth):
            conv = nn.Conv2d(channels, 16, 3, padding=1)
            nn.init.normal_(conv.weight, std=init_gain / math.sqrt(9 * channels))
            layers += [conv, activation()]
            if index % 3 == 2:
                layers.append(nn.MaxPool2d(2))
            channels = 16
        self.features = nn.Sequential(*layers)
        side = int(kw.get("image_size", 32)) // 2 ** (depth // 3)
        classes = int(kw.get("num_classes", 10))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * side * side, classes))


class ResNet18(Planted):
    """torchvision's ResNet-18 (random weights) in the demo's frame: ``features`` (every block
    up to the pooling) and ``classifier`` (its fully connected layer)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        network = torchvision.models.resnet18(num_classes=int(kw.get("num_classes", 10)))
        if int(kw.get("in_channels", 3)) != 3:
            network.conv1 = nn.Conv2d(int(kw["in_channels"]), 64, 7, 2, 3, bias=False)
        self.features = nn.Sequential(*list(network.children())[:-1])
        self.classifier = nn.Sequential(nn.Flatten(), network.fc)


def plant_training_set(module: InMemoryDataModule, plant: str, strength: float, seed: int) -> None:
    """Change ``module``'s training set (after its ``setup``) as ``plant`` says: pixels on
    0..strength (``raw``; the validation set too), ``shuffled`` labels, 150 images
    (``small``), class 0 at 60 % (``imbalance``, its images repeated)."""
    assert module.train_set is not None and module.val_set is not None
    images, labels = module.train_set.tensors
    val_images, val_labels = module.val_set.tensors
    generator = torch.Generator().manual_seed(seed + 100)
    if plant == "raw":  # undo the standardisation
        low, high = images.min(), images.max()
        images = (images - low) / (high - low) * strength
        val_images = (val_images - low) / (high - low) * strength
    elif plant == "shuffled":
        labels = labels[torch.randperm(len(labels), generator=generator)]
    elif plant == "small":
        keep = torch.randperm(len(labels), generator=generator)[:150]
        images, labels = images[keep], labels[keep]
    elif plant == "imbalance":
        zeros = (labels == 0).nonzero().flatten()
        others = (labels != 0).nonzero().flatten()
        others = others[torch.randperm(len(others), generator=generator)][:400]
        zeros = zeros.repeat(math.ceil(600 / len(zeros)))[:600]
        keep = torch.cat([zeros, others])
        images, labels = images[keep], labels[keep]
    module.train_set = TensorDataset(images, labels)
    module.val_set = TensorDataset(val_images, val_labels)


class _Planting:
    """Plants in the training set after the data module's own ``setup``."""

    plant: str
    strength: float
    seed: int
    train_set: TensorDataset | None

    def setup(self, stage: str | None = None) -> None:
        fresh = self.train_set is None
        super().setup(stage)  # type: ignore[misc]
        if fresh:
            plant_training_set(self, self.plant, self.strength, self.seed)  # type: ignore[arg-type]


class PlantedDigits(_Planting, DigitsDataModule):
    """The digits with the training set changed (:func:`plant_training_set`)."""

    def __init__(self, plant: str, strength: float, seed: int) -> None:
        super().__init__(batch_size=64, seed=seed)
        self.plant, self.strength = plant, strength


class PlantedPhotos(_Planting, PhotoCropsDataModule):
    """The photographs demo's crops (100 per photograph for training) with the training set
    changed (:func:`plant_training_set`)."""

    def __init__(self, plant: str, strength: float, seed: int) -> None:
        super().__init__(
            batch_size=64, train_crops_per_photo=100, seed=seed, **DATASETS["photos"].data
        )
        self.plant, self.strength = plant, strength


def planted_run(
    plant: str = "none",
    strength: float = 1.0,
    *,
    optimizer: str = "adam",
    lr: float = 1e-3,
    batch_norm: bool = False,
    seed: int = 0,
    data: str = "digits",
    architecture: str = "small",
) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    """The model and the data module of a run of the demo named ``data`` (``digits`` or
    ``photos``) with ``plant`` planted at ``strength`` (pixels on 0..strength, weights times
    strength, biases at -strength); ``architecture``: the demo's ``small`` network or
    ``resnet18`` (for the plants that do not change the network)."""
    if plant not in PLANTS:
        raise ValueError(f"plant: expected one of {', '.join(PLANTS)}, got {plant!r}")
    kw: dict[str, Any] = {
        "lr": lr,
        "optimizer": "adam",
        "batch_norm": batch_norm,
        **DATASETS[data].model,
    }
    init_std: float | None = None if plant == "default_init" else 0.01
    model: Planted
    if plant == "sigmoid_deep":
        model = Deep(nn.Sigmoid, 9, 1.0, first_layer_init_std=init_std, **kw)
    elif plant == "tanh_big":
        model = Deep(nn.Tanh, 6, 6.0, first_layer_init_std=init_std, **kw)
    elif architecture == "resnet18":
        model = ResNet18(first_layer_init_std=init_std, **kw)
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
    kind = PlantedDigits if data == "digits" else PlantedPhotos
    return model, kind(plant, strength, seed)


def fit_with_doctor(
    model: pl.LightningModule,
    data: pl.LightningDataModule,
    doctor: pl.Callback,
    *,
    epochs: int,
    log_dir: Any,
    name: str,
) -> tuple[pl.Trainer, list[str]]:
    """Fit ``model`` on ``data`` on the CPU with ``doctor`` (logged under ``log_dir/name``);
    the Trainer and the doctor's warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = pl.Trainer(
            max_epochs=epochs,
            logger=pl.loggers.TensorBoardLogger(log_dir, name=name),
            callbacks=[doctor],
            log_every_n_steps=10,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=False,
            accelerator="cpu",
            devices=1,
        )
        trainer.fit(model, datamodule=data)
    prefix = type(doctor).__name__
    return trainer, [str(w.message) for w in caught if str(w.message).startswith(prefix)]
