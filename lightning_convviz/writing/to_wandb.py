"""Weights & Biases: scalars and pictures on the run's charts at Lightning's global step,
histograms, texts as HTML and each t-SNE embedding as a table (x, y, label) that the W&B UI
plots and colours by label."""

from __future__ import annotations

import html
from typing import Any, TypeGuard

import numpy as np

from lightning_convviz.writing.destination import Destination, EmbeddingPoints, is_logger_named

__all__ = ["WandbDestination", "is_wandb_logger"]


def is_wandb_logger(logger: object) -> TypeGuard[Any]:
    """Whether ``logger`` is Lightning's WandbLogger (``pytorch_lightning`` or, when imported,
    ``lightning.pytorch``)."""
    return is_logger_named(logger, "WandbLogger")


class WandbDestination(Destination):
    """Writes through the logger's ``log_metrics`` (which adds ``trainer/global_step``, the step
    the WandbLogger plots every key against), one call per drawing's item."""

    kind = "Weights & Biases"

    def __init__(self, logger: Any) -> None:
        import wandb  # the WandbLogger exists, so wandb is installed

        super().__init__(logger)
        self.wandb = wandb

    def _log(self, values: dict[str, Any], step: int) -> None:
        self.logger.log_metrics(values, step=step)

    def scalars(self, metrics: dict[str, float], step: int) -> None:
        self._log(dict(metrics), step)

    def image(self, tag: str, picture: np.ndarray, step: int) -> None:
        self._log({tag: self.wandb.Image(picture)}, step)

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        counts, edges = np.histogram(values, bins="auto")
        self._log({tag: self.wandb.Histogram(np_histogram=(counts, edges))}, step)

    def text(self, tag: str, text: str, step: int) -> None:
        self._log({tag: self.wandb.Html(f"<pre>{html.escape(text)}</pre>")}, step)

    def points(self, tag: str, embedding: EmbeddingPoints, step: int) -> None:
        labels = embedding.labels
        rows = [
            [float(x), float(y), "" if labels is None else str(labels[index]), index]
            for index, (x, y) in enumerate(embedding.points)
        ]
        table = self.wandb.Table(columns=["x", "y", "label", "sample"], data=rows)
        self._log({tag: table}, step)
