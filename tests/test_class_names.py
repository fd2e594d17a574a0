"""Captions and legends name the classes when the datamodule says their names."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytorch_lightning as pl
from helpers import TinyCNN, loaders, make_trainer

from lightning_convviz import (
    AdversarialMonitor,
    ClassModelMonitor,
    EmbeddingMonitor,
    OcclusionMonitor,
    SaliencyMonitor,
    plots,
    render,
)
from lightning_convviz.callbacks.class_names import class_names_of


class NamedColours(pl.LightningDataModule):
    """The tests' colour data, whose classes have names (as torchvision datasets' ``classes``)."""

    classes = ("dim", "bright")

    def train_dataloader(self) -> Any:
        return loaders()[0]

    def val_dataloader(self) -> Any:
        return loaders()[1]


@pytest.mark.parametrize(
    ("datamodule", "expected"),
    [
        (SimpleNamespace(class_names=["cat", "dog"]), ["cat", "dog"]),
        (SimpleNamespace(classes=("cat", "dog")), ["cat", "dog"]),
        (SimpleNamespace(class_names=["cat"], classes=["x"]), ["cat"]),
        (SimpleNamespace(classes=[0, 1]), None),  # not names
        (SimpleNamespace(classes="cats"), None),
        (SimpleNamespace(classes=[]), None),
        (None, None),
    ],
)
def test_class_names_come_from_the_datamodule(datamodule: Any, expected: list[str] | None) -> None:
    assert class_names_of(SimpleNamespace(datamodule=datamodule)) == expected  # type: ignore[arg-type]


def test_every_caption_and_legend_names_the_classes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    captions: list[str] = []
    legends: list[list[str] | None] = []
    grid, scatter = render.labelled_grid, plots.class_scatter

    def recording_grid(tiles: Any, texts: Any, *args: Any, **kwargs: Any) -> Any:
        captions.extend(texts)
        return grid(tiles, texts, *args, **kwargs)

    def recording_scatter(*args: Any, **kwargs: Any) -> Any:
        legends.append(kwargs.get("class_names"))
        return scatter(*args, **kwargs)

    monkeypatch.setattr(render, "labelled_grid", recording_grid)
    monkeypatch.setattr(plots, "class_scatter", recording_scatter)
    callbacks = [
        SaliencyMonitor(num_probe_images=4),
        OcclusionMonitor(num_probe_images=4),
        AdversarialMonitor(num_probe_images=4),
        ClassModelMonitor(steps=2),
        EmbeddingMonitor(max_samples=16, n_jobs=1, perplexity=3.0),
    ]
    trainer = make_trainer(tmp_path, callbacks)
    trainer.fit(TinyCNN(), datamodule=NamedColours())
    assert captions and legends == [["dim", "bright"]] * len(legends) and legends
    probe_captions = [text for text in captions if text.startswith(("true", "pred"))]
    assert probe_captions and all(
        word in ("dim", "bright") for text in probe_captions for word in _named(text)
    )
    assert any(text.startswith(("dim\np =", "bright\np =")) for text in captions)  # class models


def _named(text: str) -> list[str]:
    """The class names of a ``true X\\npred Y (p)`` caption."""
    words = text.replace("\n", " ").split()
    return [words[i + 1] for i, word in enumerate(words) if word in ("true", "pred")]


def test_without_names_captions_keep_the_indices(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, [SaliencyMonitor(num_probe_images=2)])
    train, val = loaders()
    model = TinyCNN()
    trainer.fit(model, train, val)
    (monitor,) = [c for c in trainer.callbacks if isinstance(c, SaliencyMonitor)]  # type: ignore[attr-defined]
    images, labels = next(iter(val))
    _, texts = monitor._predict(model, images[:2], labels[:2])
    for text, label in zip(texts, labels[:2], strict=True):
        assert text.startswith(f"true {int(label)}\npred ")
