"""Test helpers: tiny seeded CNNs, in-memory data, every callback, a Trainer factory and a log
reader."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from workloads import TinyCNN

import lightning_convviz as convviz
from lightning_convviz.callbacks.saliency import ATTRIBUTION_METHODS

#: The tag sections of the demo's callbacks that draw pictures (all but the doctor).
PICTURE_SECTIONS = (
    "activation_stats/",
    "activation_maps/",
    "filters/",
    "attribution/",
    "occlusion/",
    "max_activation/",
    "embedding/",
    "inversion/",
    "adversarial/",
    "class_model/",
    "performance/",
    "correspondence/",
    "errors/",
)


def every_callback() -> list[pl.Callback]:
    """All fifteen callbacks, at every cadence they have, sized for :class:`TinyCNN`."""
    return [
        convviz.ActivationStatsMonitor(every_n_steps=1),
        convviz.ActivationMapMonitor(),
        convviz.FilterMonitor(),
        convviz.SaliencyMonitor(methods=ATTRIBUTION_METHODS, num_probe_images=2),
        convviz.OcclusionMonitor(num_probe_images=2),
        convviz.MaxActivationMonitor(layers=["conv1", "conv2"], k=2),
        convviz.EmbeddingMonitor(max_samples=16, n_jobs=1),
        convviz.InversionMonitor(steps=3, every_n_epochs=1, num_probe_images=2),
        convviz.AdversarialMonitor(num_probe_images=2),
        convviz.ClassModelMonitor(steps=3, every_n_epochs=1),
        convviz.AttributePerformanceMonitor(),
        convviz.CorrespondenceMonitor(num_probe_images=2, points_per_side=6),
        convviz.ConfusionMonitor(top_losses=4),
        convviz.LearningRateDoctor(every_n_steps=1),
        convviz.TrainingDoctor(every_n_steps=1),
    ]


class PositionBiasCNN(TinyCNN):
    """A :class:`TinyCNN` whose first block adds a bias computed by a small MLP from the pixel
    coordinates (as Swin V2 computes its relative position bias): the MLP's convolution and
    ReLU are called first, on a table with one row, not one per image."""

    def __init__(self) -> None:
        super().__init__()
        self.bias_mlp = nn.Sequential(nn.Conv2d(2, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 1))
        axis = torch.linspace(-1, 1, 16)
        self.register_buffer("coords", torch.stack(torch.meshgrid(axis, axis, indexing="ij"))[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias_mlp(self.coords)
        features = self.relu1(self.bn1(self.conv1(x)) + bias)
        features = self.relu2(self.bn2(self.conv2(features)))
        return self.head(self.pool(features).flatten(1))


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
    """A short fit's Trainer. Unless ``callbacks`` has a DiagnosticsBudget, every drawing is made
    when it is due (no budget) and on the training thread (no drawing worker): the tests check
    cadences and pictures, which a budget would make depend on how fast this machine is, and
    a worker on how many cores it has and how busy they are (the worker is tested with its own
    DiagnosticsBudget(background=True))."""
    if not any(isinstance(callback, convviz.DiagnosticsBudget) for callback in callbacks):
        callbacks = [*callbacks, convviz.DiagnosticsBudget(max_share=None, background=False)]
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


def fit(
    tmp_path: Path,
    callbacks: list[pl.Callback],
    model: pl.LightningModule | None = None,
    **overrides: Any,
) -> tuple[pl.Trainer, pl.LightningModule]:
    """Fit ``model`` (default: a :class:`TinyCNN`) on the colour data with ``callbacks``."""
    model = model or TinyCNN()
    trainer = make_trainer(tmp_path, callbacks, **overrides)
    train, val = loaders()
    trainer.fit(model, train, val)
    return trainer, model


def logged_image(events: EventAccumulator, tag: str, index: int = -1) -> np.ndarray:
    """The ``index``-th image logged under ``tag``, decoded to ``H x W x 3`` uint8."""
    event = events.Images(tag)[index]
    return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))


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
