"""Any other logger (``CSVLogger`` and the rest): scalars through its ``log_metrics``, and, when
it has a ``log_dir``, everything else as files there, so that nothing is lost:

* pictures: ``<log_dir>/<tag>/<step>.png``;
* histograms: ``<log_dir>/<tag>/<step>.csv`` (bin start, bin end, count);
* texts: ``<log_dir>/<tag>/<step>.md``;
* embeddings: ``<log_dir>/<tag>/<step>.csv`` (x, y, label of each t-SNE point).

Tags become paths through :func:`~lightning_convviz.writing.destination.safe_name`
(``layer1.0.relu:3`` is the folder ``layer1.0.relu-3``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lightning_convviz.writing.destination import (
    Destination,
    EmbeddingPoints,
    encode_png,
    histogram_csv,
    points_csv,
    safe_name,
)

__all__ = ["FileDestination", "MetricsDestination"]


class MetricsDestination(Destination):
    """A logger without a folder: the scalars only (the rest is skipped, as said at setup)."""

    def __init__(self, logger: Any) -> None:
        super().__init__(logger)
        self.kind = type(logger).__name__

    def scalars(self, metrics: dict[str, float], step: int) -> None:
        self.logger.log_metrics(metrics, step=step)

    def image(self, tag: str, picture: np.ndarray, step: int) -> None:
        pass

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        pass

    def text(self, tag: str, text: str, step: int) -> None:
        pass

    def points(self, tag: str, embedding: EmbeddingPoints, step: int) -> None:
        pass


class FileDestination(MetricsDestination):
    """Scalars through ``log_metrics``; pictures, histograms, texts and embeddings as files
    under ``root`` (the logger's ``log_dir``)."""

    def __init__(self, logger: Any, root: str | Path) -> None:
        super().__init__(logger)
        self.root = Path(root)

    def path(self, tag: str, step: int, extension: str) -> Path:
        """Where the item ``tag`` of ``step`` is written (its folder is made)."""
        folder = self.root / safe_name(tag)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{step}.{extension}"

    def image(self, tag: str, picture: np.ndarray, step: int) -> None:
        self.path(tag, step, "png").write_bytes(encode_png(picture))

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        self.path(tag, step, "csv").write_text(histogram_csv(values))

    def text(self, tag: str, text: str, step: int) -> None:
        self.path(tag, step, "md").write_text(text)

    def points(self, tag: str, embedding: EmbeddingPoints, step: int) -> None:
        self.path(tag, step, "csv").write_text(points_csv(embedding))
