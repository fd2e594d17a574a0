"""The demo: a small CNN trained with every lightning_convviz callback, on data bundled with
packages: scikit-learn's digits (the default) or crops of photographs that ship inside
scikit-image and scikit-learn (``--data photos``, ``make demo DATA=photos``; needs
scikit-image, the ``demo`` extra).

Run ``python -m lightning_convviz.demo --lr 0.03`` (or ``make demo LR=0.03``) to see what a
too-high learning rate does to the filters. ``--logger wandb,mlflow`` (``make demo
LOGGER=wandb,mlflow``) logs to other loggers than TensorBoard: Weights & Biases (offline unless
``WANDB_MODE=online``), MLflow (a SQLite store in the log directory) or a CSV logger.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import (
    CSVLogger,
    Logger,
    MLFlowLogger,
    TensorBoardLogger,
    WandbLogger,
)
from torch import nn

from lightning_convviz.callbacks import (
    ActivationMapMonitor,
    ActivationStatsMonitor,
    AdversarialMonitor,
    AttributePerformanceMonitor,
    ClassModelMonitor,
    ConfusionMonitor,
    CorrespondenceMonitor,
    EmbeddingMonitor,
    FilterMonitor,
    InversionMonitor,
    LearningRateDoctor,
    MaxActivationMonitor,
    OcclusionMonitor,
    SaliencyMonitor,
)
from lightning_convviz.data import DigitsDataModule, PhotoCropsDataModule

__all__ = [
    "DATASETS",
    "LOGGERS",
    "DemoData",
    "DigitsConvNet",
    "SmallConvNet",
    "default_callbacks",
    "main",
    "make_data_and_model",
    "make_loggers",
    "train",
]


class SmallConvNet(pl.LightningModule):
    """Three conv blocks (conv-ReLU-maxpool; 16, 32, 64 channels by default) and an MLP head.

    The defaults are the digits demo's model; the photographs demo takes 3 input channels,
    14 classes and a wider first layer.

    Args:
        lr: The optimizer's learning rate.
        weight_decay: The optimizer's (L2) weight decay.
        first_layer_init_std: Standard deviation of the first convolution's normal
            initialisation (its bias starts at 0); ``None`` keeps PyTorch's default.
        batch_norm: Put a BatchNorm between each convolution and its ReLU.
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9).
        in_channels: Channels of the input images.
        num_classes: Outputs of the classifier.
        image_size: Side of the (square) input images, a multiple of 8.
        widths: Output channels of the three conv blocks.
        first_kernel: Kernel side of the first convolution (odd; later ones are 3).
    """

    def __init__(
        self,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        first_layer_init_std: float | None = None,
        batch_norm: bool = False,
        optimizer: str = "adam",
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 32,
        widths: tuple[int, int, int] = (16, 32, 64),
        first_kernel: int = 5,
    ) -> None:
        super().__init__()
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer: expected 'adam' or 'sgd', got {optimizer!r}")
        if image_size % 8:
            raise ValueError(f"image_size: expected a multiple of 8, got {image_size!r}")
        if first_kernel < 1 or first_kernel % 2 == 0:
            raise ValueError(f"first_kernel: expected an odd kernel side, got {first_kernel!r}")
        self.save_hyperparameters()

        def block(inputs: int, outputs: int, kernel: int) -> list[nn.Module]:
            norm: list[nn.Module] = [nn.BatchNorm2d(outputs)] if batch_norm else []
            conv = nn.Conv2d(inputs, outputs, kernel, padding=kernel // 2)
            return [conv, *norm, nn.ReLU(), nn.MaxPool2d(2)]

        first, second, third = widths
        self.features = nn.Sequential(
            *block(in_channels, first, first_kernel),
            *block(first, second, 3),
            *block(second, third, 3),
        )
        side = image_size // 8
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(third * side * side, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )
        if first_layer_init_std is not None:
            conv = self.features[0]
            assert isinstance(conv, nn.Conv2d) and conv.bias is not None
            nn.init.normal_(conv.weight, std=first_layer_init_std)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.features(x))
        return logits

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        images, labels = batch
        loss = F.cross_entropy(self(images), labels)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        self.log("val/loss", F.cross_entropy(logits, labels))
        self.log("val/accuracy", (logits.argmax(dim=1) == labels).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        lr, decay = self.hparams["lr"], self.hparams["weight_decay"]
        if self.hparams["optimizer"] == "sgd":
            return torch.optim.SGD(self.parameters(), lr=lr, momentum=0.9, weight_decay=decay)
        return torch.optim.Adam(self.parameters(), lr=lr, weight_decay=decay)


#: The digits demo's model: :class:`SmallConvNet` at its defaults (the name it has always had).
DigitsConvNet = SmallConvNet


def default_callbacks() -> list[pl.Callback]:
    """Every callback lightning_convviz has, at the demo's cadences."""
    return [
        ActivationStatsMonitor(every_n_steps=10),
        ActivationMapMonitor(num_probe_images=2, every_n_epochs=2),
        FilterMonitor(every_n_epochs=2),
        SaliencyMonitor(methods=("saliency", "guided_backprop", "grad_cam"), every_n_epochs=2),
        OcclusionMonitor(every_n_epochs=2),
        MaxActivationMonitor(every_n_epochs=2),
        EmbeddingMonitor(every_n_epochs=5),
        InversionMonitor(every_n_epochs=10, steps=100),
        AdversarialMonitor(every_n_epochs=2),
        ClassModelMonitor(every_n_epochs=10, steps=100),
        AttributePerformanceMonitor(every_n_epochs=5),
        CorrespondenceMonitor(every_n_epochs=5),
        ConfusionMonitor(every_n_epochs=5),
        LearningRateDoctor(),
    ]


#: The demo's loggers, by the name ``--logger`` takes.
LOGGERS = ("tensorboard", "wandb", "mlflow", "csv")


def make_loggers(names: Sequence[str], log_dir: str | Path, name: str) -> list[Logger]:
    """The loggers named in ``names`` (see :data:`LOGGERS`), all writing under ``log_dir``.

    Raises:
        ValueError: An unknown name.
    """
    unknown = sorted(set(names) - set(LOGGERS))
    if unknown or not names:
        raise ValueError(f"logger: expected some of {', '.join(LOGGERS)}, got {list(names)}")
    root = Path(log_dir).resolve()
    made: list[Logger] = []
    for kind in names:
        if kind == "tensorboard":
            made.append(TensorBoardLogger(str(root), name=name, default_hp_metric=False))
        elif kind == "wandb":
            root.mkdir(parents=True, exist_ok=True)
            online = os.environ.get("WANDB_MODE") == "online"
            made.append(
                WandbLogger(
                    name=name, project="lightning_convviz", save_dir=str(root), offline=not online
                )
            )
        elif kind == "mlflow":
            root.mkdir(parents=True, exist_ok=True)
            made.append(
                MLFlowLogger(
                    experiment_name="lightning_convviz",
                    run_name=name,
                    tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
                    artifact_location=(root / "mlflow-artifacts").as_uri(),
                )
            )
        else:
            made.append(CSVLogger(str(root / "csv"), name=name))
    return made


@dataclass(frozen=True)
class DemoData:
    """One demo: its epochs and learning rate, and arguments of its model and data module."""

    epochs: int
    lr: float
    model: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)


#: The demos, by the name ``--data`` takes: the digits (:class:`DigitsDataModule`, the model
#: at its defaults), and crops of 14 bundled photographs (:class:`PhotoCropsDataModule`: 48 px
#: RGB, each crop's mean colour subtracted; 32 first-layer filters of 7 x 7; how these were
#: chosen: ``benchmarks/photo_filters.py`` and ``docs/photos.md``).
DATASETS: dict[str, DemoData] = {
    "digits": DemoData(epochs=20, lr=1e-3),
    "photos": DemoData(
        epochs=20,
        lr=1e-3,
        model={
            "in_channels": 3,
            "num_classes": 14,
            "image_size": 48,
            "widths": (32, 32, 64),
            "first_kernel": 7,
        },
        data={"image_size": 48, "centre_crops": True},
    ),
}


def make_data_and_model(
    data: str = "digits",
    lr: float | None = None,
    weight_decay: float = 0.0,
    first_layer_init_std: float | None = 0.01,
    batch_norm: bool = False,
    optimizer: str = "adam",
) -> tuple[pl.LightningDataModule, SmallConvNet]:
    """The data module of :data:`DATASETS` named ``data`` and a fresh model for it.

    Raises:
        ValueError: An unknown ``data``.
    """
    if data not in DATASETS:
        raise ValueError(f"data: expected one of {', '.join(DATASETS)}, got {data!r}")
    demo = DATASETS[data]
    model = SmallConvNet(
        lr=demo.lr if lr is None else lr,
        weight_decay=weight_decay,
        first_layer_init_std=first_layer_init_std,
        batch_norm=batch_norm,
        optimizer=optimizer,
        **demo.model,
    )
    module: pl.LightningDataModule = (
        DigitsDataModule(**demo.data) if data == "digits" else PhotoCropsDataModule(**demo.data)
    )
    return module, model


def train(
    lr: float | None = None,
    epochs: int | None = None,
    log_dir: str | Path = "runs",
    name: str | None = None,
    seed: int = 0,
    weight_decay: float = 0.0,
    first_layer_init_std: float | None = 0.01,
    batch_norm: bool = False,
    callbacks: list[pl.Callback] | None = None,
    optimizer: str = "adam",
    loggers: Sequence[str] = ("tensorboard",),
    data: str = "digits",
) -> pl.Trainer:
    """Train :class:`SmallConvNet` on ``data`` with the callbacks; return the Trainer.

    ``lr`` and ``epochs`` default to those of :data:`DATASETS` for ``data``.
    """
    pl.seed_everything(seed)
    datamodule, model = make_data_and_model(
        data, lr, weight_decay, first_layer_init_std, batch_norm, optimizer
    )
    lr = float(model.hparams["lr"])
    trainer = pl.Trainer(
        max_epochs=DATASETS[data].epochs if epochs is None else epochs,
        logger=make_loggers(loggers, log_dir, name or f"{data}_lr{lr:g}"),
        callbacks=default_callbacks() if callbacks is None else callbacks,
        log_every_n_steps=10,
        enable_checkpointing=False,
        enable_model_summary=False,
        accelerator="auto",
        devices=1,
    )
    trainer.fit(model, datamodule=datamodule)
    return trainer


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m lightning_convviz.demo [--lr LR] [--epochs N] [--logdir DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data",
        choices=tuple(DATASETS),
        default="digits",
        help="digits (default) or photos (crops of photographs bundled with scikit-image)",
    )
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: 1e-3)")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="default: " + ", ".join(f"{k} {v.epochs}" for k, v in DATASETS.items()),
    )
    parser.add_argument("--logdir", default="runs", help="TensorBoard log directory")
    parser.add_argument("--name", default=None, help="run name (default: <data>_lr<LR>)")
    parser.add_argument(
        "--logger",
        default="tensorboard",
        help=f"comma-separated loggers, of {', '.join(LOGGERS)} (default: tensorboard)",
    )
    args = parser.parse_args(argv)
    if args.data == "photos" and importlib.util.find_spec("skimage") is None:
        parser.error(
            "--data photos: the photographs come with scikit-image, which is not installed: "
            "pip install 'lightning_convviz[demo]' (or scikit-image)"
        )
    names = [name.strip() for name in args.logger.split(",") if name.strip()]
    if not names or not set(names) <= set(LOGGERS):
        parser.error(f"--logger: expected some of {', '.join(LOGGERS)}, got {args.logger!r}")
    start = time.perf_counter()
    trainer = train(
        lr=args.lr,
        epochs=args.epochs,
        log_dir=args.logdir,
        name=args.name,
        loggers=names,
        data=args.data,
    )
    accuracy = trainer.callback_metrics.get("val/accuracy")
    lr = float(trainer.lightning_module.hparams["lr"])
    print(
        f"\nTrained {trainer.current_epoch} epochs on the {args.data} at lr={lr:g} in "
        f"{time.perf_counter() - start:.0f} s"
        + (f", validation accuracy {float(accuracy):.3f}" if accuracy is not None else "")
    )
    root = Path(args.logdir).resolve()
    if "tensorboard" in names:
        print(
            f"TensorBoard:  .venv/bin/tensorboard --logdir {args.logdir} --samples_per_plugin "
            "images=1000  (http://localhost:6006; without the flag a time-lapse shows 10 frames)"
        )
    if "wandb" in names:
        print(f"W&B:          wandb sync {root / 'wandb'}/offline-run-*  (offline runs)")
    if "mlflow" in names:
        print(
            f"MLflow:       .venv/bin/mlflow ui --backend-store-uri sqlite:///{root / 'mlflow.db'}"
        )
    if "csv" in names:
        print(f"CSV and PNG:  {root / 'csv'}/<run name>/version_*/")


if __name__ == "__main__":
    main()
