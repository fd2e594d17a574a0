"""The writing layer: one object that hands each item to every logger of the Trainer.

Which logger gets what (the full table is in ``docs/loggers.md``):

* ``TensorBoardLogger``: everything in its own tabs, the projector on request and the
  custom-scalars dashboard (:mod:`~lightning_convviz.writing.to_tensorboard`);
* ``WandbLogger``: charts, media, histograms, HTML texts and a table of the t-SNE points
  (:mod:`~lightning_convviz.writing.to_wandb`);
* ``MLFlowLogger``: metrics, step-indexed images, the rest as artifacts
  (:mod:`~lightning_convviz.writing.to_mlflow`);
* ``CSVLogger`` and any logger with a ``log_dir``: scalars through ``log_metrics``, the rest as
  files in its folder (:mod:`~lightning_convviz.writing.to_files`);
* a logger without a folder: the scalars only.

Only global rank zero writes (the callbacks ask for the writers there only).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning import Trainer
from pytorch_lightning.utilities import rank_zero_warn

from lightning_convviz.writing.destination import Destination, EmbeddingPoints, as_uint8_hwc
from lightning_convviz.writing.to_files import FileDestination, MetricsDestination
from lightning_convviz.writing.to_mlflow import MLflowDestination, is_mlflow_logger
from lightning_convviz.writing.to_tensorboard import TensorBoardDestination, is_tensorboard_logger
from lightning_convviz.writing.to_wandb import WandbDestination, is_wandb_logger

__all__ = ["Writers", "destination_for", "writers_for"]


def destination_for(logger: Any) -> Destination:
    """How the callbacks write to ``logger``."""
    if is_tensorboard_logger(logger):
        return TensorBoardDestination(logger)
    if is_wandb_logger(logger):
        return WandbDestination(logger)
    if is_mlflow_logger(logger):
        return MLflowDestination(logger)
    log_dir = getattr(logger, "log_dir", None)
    if isinstance(log_dir, str) and log_dir:
        return FileDestination(logger, log_dir)
    return MetricsDestination(logger)


class Writers:
    """Every destination of one Trainer, written to as one.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from pytorch_lightning.loggers import CSVLogger
        >>> folder = tempfile.mkdtemp()
        >>> writers = Writers([destination_for(CSVLogger(folder))])
        >>> writers.image("filters/conv1", np.zeros((4, 4, 3), np.uint8), step=7)
        >>> sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*.png"))
        ['lightning_logs/version_0/filters/conv1/7.png']
    """

    def __init__(self, destinations: Sequence[Destination]) -> None:
        self.destinations = list(destinations)
        self._layout_written = False

    @property
    def takes_pictures(self) -> bool:
        """Whether some destination keeps pictures."""
        return any(type(d) is not MetricsDestination for d in self.destinations)

    def scalars(self, metrics: dict[str, float], step: int) -> None:
        if metrics:
            self._each(lambda d: d.scalars(metrics, step))

    def image(self, tag: str, picture: np.ndarray, step: int) -> None:
        picture = as_uint8_hwc(np.asarray(picture))
        self._each(lambda d: d.image(tag, picture, step))

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        values = np.asarray(values)
        self._each(lambda d: d.histogram(tag, values, step))

    def text(self, tag: str, text: str, step: int) -> None:
        self._each(lambda d: d.text(tag, text, step))

    def points(self, tag: str, embedding: EmbeddingPoints, step: int) -> None:
        self._each(lambda d: d.points(tag, embedding, step))

    def projector(self, tag: str, embedding: EmbeddingPoints, step: int) -> None:
        self._each(lambda d: d.projector(tag, embedding, step))

    def hyperparameters(self, params: dict[str, float | str], metric_tags: list[str]) -> None:
        self._each(lambda d: d.hyperparameters(params, metric_tags))

    def layout_once(self, charts: dict[str, list[str]]) -> None:
        """Write the dashboard layout (see :meth:`Destination.layout`), once per Trainer."""
        if not self._layout_written:
            self._layout_written = True
            self._each(lambda d: d.layout(charts))

    def flush(self) -> None:
        self._each(lambda d: d.flush())

    def _each(self, write: Callable[[Destination], None]) -> None:
        for destination in self.destinations:
            write(destination)


def writers_for(trainer: Trainer, callbacks: Sequence[str] = ()) -> Writers:
    """Writers for ``trainer``'s loggers (the callbacks' context makes them once per fit).
    Fails clearly without a logger; warns when no logger keeps pictures, naming ``callbacks``
    whose pictures are skipped.

    Raises:
        MisconfigurationException: The Trainer has no logger.
    """
    loggers = list(trainer.loggers)
    if not loggers:
        raise MisconfigurationException(
            "lightning_convviz writes to the Trainer's loggers, and this Trainer has none "
            "(logger=False). Use Trainer(logger=TensorBoardLogger('runs')), or a WandbLogger, "
            "MLFlowLogger or CSVLogger."
        )
    writers = Writers([destination_for(logger) for logger in loggers])
    if not writers.takes_pictures:
        found = ", ".join(type(logger).__name__ for logger in loggers)
        names = ", ".join(callbacks) or "the lightning_convviz callbacks"
        rank_zero_warn(
            f"No logger of this Trainer keeps pictures ({found}: no log_dir): the images, "
            f"histograms, texts and embeddings of {names} are skipped; their scalars are "
            "logged. Add a TensorBoardLogger, WandbLogger, MLFlowLogger or CSVLogger to see them."
        )
    return writers
