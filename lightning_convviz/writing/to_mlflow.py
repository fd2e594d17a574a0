"""MLflow: scalars as metrics, pictures as step-indexed images of the run (the UI's image
charts), texts, histograms and embeddings as artifacts; names through
:func:`~lightning_convviz.writing.destination.safe_name` (MLflow refuses ``:`` in image keys)."""

from __future__ import annotations

import time
from typing import Any, TypeGuard

import numpy as np

from lightning_convviz.writing.destination import (
    Destination,
    EmbeddingPoints,
    histogram_csv,
    is_logger_named,
    points_csv,
    safe_name,
)

__all__ = ["MLflowDestination", "is_mlflow_logger"]


def is_mlflow_logger(logger: object) -> TypeGuard[Any]:
    """Whether ``logger`` is Lightning's MLFlowLogger."""
    return is_logger_named(logger, "MLFlowLogger")


class MLflowDestination(Destination):
    """Writes with the logger's ``MlflowClient`` to its run: ``log_batch`` for the scalars of a
    step, ``log_image(key=..., step=...)`` for pictures, ``log_text`` for texts, histograms
    (``<tag>/<step>.csv``: bin start, bin end, count) and embeddings (``<tag>/<step>.csv``: x,
    y, label)."""

    kind = "MLflow"

    @property
    def client(self) -> Any:
        return self.logger.experiment

    @property
    def run_id(self) -> str:
        run_id: str = self.logger.run_id
        return run_id

    def scalars(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(safe_name(self.prefixed(tag)), value, now, step)
            for tag, value in metrics.items()
        ]
        for start in range(0, len(batch), 1000):  # MLflow's batch limit
            self.client.log_batch(self.run_id, metrics=batch[start : start + 1000])

    def image(self, tag: str, picture: np.ndarray, step: int) -> None:
        self.client.log_image(self.run_id, picture, key=safe_name(tag), step=step)

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        self._artifact(tag, step, "csv", histogram_csv(values))

    def text(self, tag: str, text: str, step: int) -> None:
        self._artifact(tag, step, "md", text)

    def points(self, tag: str, embedding: EmbeddingPoints, step: int) -> None:
        self._artifact(tag, step, "csv", points_csv(embedding))

    def _artifact(self, tag: str, step: int, extension: str, text: str) -> None:
        self.client.log_text(self.run_id, text, f"{safe_name(tag)}/{step}.{extension}")
