"""The demo: a small CNN on the bundled digits, trained with every lightning_convviz callback.

Run ``python -m lightning_convviz.demo --lr 0.03`` (or ``make demo LR=0.03``) to see what a
too-high learning rate does to the filters. ``--logger wandb,mlflow`` (``make demo
LOGGER=wandb,mlflow``) logs to other loggers than TensorBoard: Weights & Biases (offline unless
``WANDB_MODE=online``), MLflow (a SQLite store in the log directory) or a CSV logger.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path

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
    EmbeddingMonitor,
    FilterMonitor,
    InversionMonitor,
    LearningRateDoctor,
    MaxActivationMonitor,
    OcclusionMonitor,
    SaliencyMonitor,
)
from lightning_convviz.data import DigitsDataModule

__all__ = ["LOGGERS", "DigitsConvNet", "default_callbacks", "main", "make_loggers", "train"]


class DigitsConvNet(pl.LightningModule):
    """Three conv blocks (16, 32, 64 channels; conv-ReLU-maxpool) and an MLP head.

    Args:
        lr: The optimizer's learning rate.
        weight_decay: The optimizer's (L2) weight decay.
        first_layer_init_std: Standard deviation of the first convolution's normal
            initialisation (its bias starts at 0); ``None`` keeps PyTorch's default.
        batch_norm: Put a BatchNorm between each convolution and its ReLU.
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9).
    """

    def __init__(
        self,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        first_layer_init_std: float | None = None,
        batch_norm: bool = False,
        optimizer: str = "adam",
    ) -> None:
        super().__init__()
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer: expected 'adam' or 'sgd', got {optimizer!r}")
        self.save_hyperparameters()

        def block(inputs: int, outputs: int, kernel: int) -> list[nn.Module]:
            norm: list[nn.Module] = [nn.BatchNorm2d(outputs)] if batch_norm else []
            conv = nn.Conv2d(inputs, outputs, kernel, padding=kernel // 2)
            return [conv, *norm, nn.ReLU(), nn.MaxPool2d(2)]

        self.features = nn.Sequential(*block(1, 16, 5), *block(16, 32, 3), *block(32, 64, 3))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, 10)
        )
        if first_layer_init_std is not None:
            first = self.features[0]
            assert isinstance(first, nn.Conv2d) and first.bias is not None
            nn.init.normal_(first.weight, std=first_layer_init_std)
            nn.init.zeros_(first.bias)

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


def train(
    lr: float = 1e-3,
    epochs: int = 20,
    log_dir: str | Path = "runs",
    name: str | None = None,
    seed: int = 0,
    weight_decay: float = 0.0,
    first_layer_init_std: float | None = 0.01,
    batch_norm: bool = False,
    callbacks: list[pl.Callback] | None = None,
    optimizer: str = "adam",
    loggers: Sequence[str] = ("tensorboard",),
) -> pl.Trainer:
    """Train :class:`DigitsConvNet` on the digits with the callbacks; return the Trainer."""
    pl.seed_everything(seed)
    model = DigitsConvNet(
        lr=lr,
        weight_decay=weight_decay,
        first_layer_init_std=first_layer_init_std,
        batch_norm=batch_norm,
        optimizer=optimizer,
    )
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=make_loggers(loggers, log_dir, name or f"digits_lr{lr:g}"),
        callbacks=default_callbacks() if callbacks is None else callbacks,
        log_every_n_steps=10,
        enable_checkpointing=False,
        enable_model_summary=False,
        accelerator="auto",
        devices=1,
    )
    trainer.fit(model, datamodule=DigitsDataModule())
    return trainer


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m lightning_convviz.demo [--lr LR] [--epochs N] [--logdir DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--logdir", default="runs", help="TensorBoard log directory")
    parser.add_argument("--name", default=None, help="run name (default: digits_lr<LR>)")
    parser.add_argument(
        "--logger",
        default="tensorboard",
        help=f"comma-separated loggers, of {', '.join(LOGGERS)} (default: tensorboard)",
    )
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.logger.split(",") if name.strip()]
    if not names or not set(names) <= set(LOGGERS):
        parser.error(f"--logger: expected some of {', '.join(LOGGERS)}, got {args.logger!r}")
    start = time.perf_counter()
    trainer = train(
        lr=args.lr, epochs=args.epochs, log_dir=args.logdir, name=args.name, loggers=names
    )
    accuracy = trainer.callback_metrics.get("val/accuracy")
    print(
        f"\nTrained {args.epochs} epochs at lr={args.lr:g} in {time.perf_counter() - start:.0f} s"
        + (f", validation accuracy {float(accuracy):.3f}" if accuracy is not None else "")
    )
    root = Path(args.logdir).resolve()
    if "tensorboard" in names:
        print(
            f"TensorBoard:  .venv/bin/tensorboard --logdir {args.logdir}  (http://localhost:6006)"
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
