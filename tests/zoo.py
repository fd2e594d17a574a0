"""The model zoo: every callback at its defaults on torchvision and timm classifiers.

Each architecture is built with random weights (``weights=None`` / ``pretrained=False``, nothing
is downloaded) and 10 classes, wrapped in a plain LightningModule, and fitted for one short epoch
on random images with all fifteen callbacks. A callback is ``ok`` when it logged under its own
section, did not switch itself off and said nothing about not applying; otherwise its status is
the reason. Used by ``tests/test_zoo.py`` (a representative set, in CI time) and by
``benchmarks/model_zoo.py`` (``make zoo``: every torchvision classifier and a dozen timm
families).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torchvision
from helpers import hook_count, make_trainer, read_events
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from workloads import Classifier

import lightning_convviz as convviz

CLASSES = 10


def build(name: str, side: int) -> nn.Module:
    """A classifier with random weights and 10 classes: ``"resnet50"`` (torchvision) or
    ``"timm:dla34"``. Vision transformers are built for ``side``."""
    if name.startswith("timm:"):
        import timm

        extra = {"img_size": side} if _timm_takes_size(name[5:]) else {}
        model: nn.Module = timm.create_model(
            name[5:], pretrained=False, num_classes=CLASSES, **extra
        )
        return model
    extra: dict[str, Any] = {}
    if name in ("googlenet", "inception_v3"):
        extra = {"aux_logits": True, "init_weights": False}
    elif name.startswith("vit_"):
        extra = {"image_size": side}
    elif name.startswith("maxvit"):
        extra = {"input_size": (side, side)}
    return torchvision.models.get_model(name, weights=None, num_classes=CLASSES, **extra)


def _timm_takes_size(name: str) -> bool:
    return name.startswith(("vit_", "deit", "levit", "efficientvit", "mobilevit", "coat"))


def every_callback_at_defaults(steps: int | None = None) -> list[pl.Callback]:
    """All fifteen callbacks at their defaults; ``steps`` lowers the optimisation steps of
    InversionMonitor and ClassModelMonitor (what a drawing costs, not which code runs)."""
    cost = {} if steps is None else {"steps": steps}
    return [
        convviz.ActivationStatsMonitor(),
        convviz.ActivationMapMonitor(),
        convviz.FilterMonitor(),
        convviz.SaliencyMonitor(),
        convviz.OcclusionMonitor(),
        convviz.MaxActivationMonitor(),
        convviz.EmbeddingMonitor(),
        convviz.InversionMonitor(**cost),
        convviz.AdversarialMonitor(),
        convviz.ClassModelMonitor(**cost),
        convviz.AttributePerformanceMonitor(),
        convviz.CorrespondenceMonitor(),
        convviz.ConfusionMonitor(),
        convviz.LearningRateDoctor(),
        convviz.TrainingDoctor(),
    ]


@dataclass
class ZooResult:
    """One architecture's run: each callback's status (``"ok"`` or why not) and the time."""

    model: str
    side: int
    seconds: float
    statuses: dict[str, str] = field(default_factory=dict)
    hooks_left: int = 0
    error: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            not self.error
            and not self.hooks_left
            and all(status == "ok" for status in self.statuses.values())
        )


def random_data(side: int, count: int = 16, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(count, 3, side, side, generator=generator)
    return TensorDataset(images, torch.arange(count) % CLASSES)


def run(name: str, side: int, root: Path, steps: int | None = 2) -> ZooResult:
    """Fit ``name`` for one epoch of two training steps and one validation batch (after a
    sanity check of one batch, so that the drawings at step 0 happen) with every callback."""
    torch.manual_seed(0)
    model = Classifier(build(name, side))
    callbacks = every_callback_at_defaults(steps)
    log_root = root / name.replace(":", "_")
    trainer = make_trainer(
        log_root,
        callbacks,
        logger=TensorBoardLogger(str(log_root), name="run", version=0),
        num_sanity_val_steps=1,  # Lightning's sanity check shows the probes before training
    )
    train = DataLoader(random_data(side), batch_size=8)
    val = DataLoader(random_data(side, seed=1), batch_size=8)
    result = ZooResult(name, side, 0.0)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            trainer.fit(model, train, val)
        except Exception as error:  # reported in the table
            result.error = f"{type(error).__name__}: {str(error)[:300]}"
    result.seconds = time.perf_counter() - start
    result.hooks_left = hook_count(model)
    messages = [str(w.message) for w in caught]
    tags = _tags(log_root / "run" / "version_0")
    for callback in callbacks:
        kind = type(callback).__name__
        own = [m for m in messages if m.startswith(kind) and _is_trouble(m)]
        if own:
            result.statuses[kind] = own[0][:300]
        elif not any(tag.startswith(f"{callback.section}/") for tag in tags):  # type: ignore[attr-defined]
            result.statuses[kind] = "logged nothing"
        else:
            result.statuses[kind] = "ok"
    result.notes = sorted({m[:200] for m in messages if m.startswith(("guided", "deconvnet"))})
    return result


def _is_trouble(message: str) -> bool:
    return any(
        phrase in message
        for phrase in (
            "failed in",
            "failed on another rank",
            "does not apply",
            "whole images",
            "an embedding failed",
        )
    )


def _tags(log_dir: Path) -> list[str]:
    if not log_dir.exists():
        return []
    events = read_events(log_dir)
    found = events.Tags()
    return [*found["images"], *found["scalars"], *found["histograms"], *found["tensors"]]
