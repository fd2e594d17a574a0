"""TensorBoard: the home of lightning_convviz (scalars, images, histograms, text, projector and a
custom-scalars dashboard)."""

from __future__ import annotations

from typing import Any, TypeGuard

import numpy as np
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.compat.proto.summary_pb2 import Summary

from lightning_convviz.writing.destination import (
    Destination,
    EmbeddingPoints,
    encode_png,
    is_logger_named,
)

__all__ = ["DASHBOARD", "TensorBoardDestination", "is_tensorboard_logger"]

#: The custom-scalars category holding the callbacks' multi-line charts.
DASHBOARD = "lightning_convviz"


def is_tensorboard_logger(logger: object) -> TypeGuard[TensorBoardLogger]:
    """Whether ``logger`` is Lightning's TensorBoardLogger, from ``pytorch_lightning`` or from
    ``lightning.pytorch`` (the latter checked only when the program imported it)."""
    return is_logger_named(logger, "TensorBoardLogger")


class TensorBoardDestination(Destination):
    """Writes through the logger's ``SummaryWriter``; scalars of one step as a single event
    (dozens of scalars cost about 0.2 ms that way instead of about 7 ms through
    ``log_metrics``), with the logger's prefix; pictures as PNG events encoded fast
    (:func:`encode_png`)."""

    kind = "TensorBoard"

    @property
    def writer(self) -> Any:
        return self.logger.experiment

    def scalars(self, metrics: dict[str, float], step: int) -> None:
        summary = Summary(
            value=[
                Summary.Value(tag=self.prefixed(tag), simple_value=value)
                for tag, value in metrics.items()
            ]
        )
        self.writer._get_file_writer().add_summary(summary, step)

    def image(self, tag: str, picture: np.ndarray, step: int) -> None:
        height, width, channels = picture.shape
        encoded = Summary.Image(
            height=height,
            width=width,
            colorspace=channels,
            encoded_image_string=encode_png(picture),
        )
        summary = Summary(value=[Summary.Value(tag=tag, image=encoded)])
        self.writer._get_file_writer().add_summary(summary, step)

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        self.writer.add_histogram(tag, values, step, bins="auto")

    def text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, step)

    def points(self, tag: str, embedding: EmbeddingPoints, step: int) -> None:
        pass  # the scatter picture shows them; the codes go to the projector on request

    def projector(self, tag: str, embedding: EmbeddingPoints, step: int) -> None:
        labels, thumbnails = embedding.labels, embedding.thumbnails
        self.writer.add_embedding(
            embedding.codes,
            metadata=None if labels is None else labels.tolist(),
            label_img=None if thumbnails is None else torch.from_numpy(thumbnails),
            global_step=step,
            tag=tag,
        )

    def layout(self, charts: dict[str, list[str]]) -> None:
        if charts:
            self.writer.add_custom_scalars(
                {DASHBOARD: {title: ["Multiline", tags] for title, tags in charts.items()}}
            )

    def hyperparameters(self, params: dict[str, float | str], metric_tags: list[str]) -> None:
        # the HParams tab's table: these values, and the latest value of each metric tag
        # (written here directly: the logger's log_hyperparams would log the metrics at step 0)
        from torch.utils.tensorboard.summary import hparams

        metrics = {self.prefixed(tag): 0.0 for tag in metric_tags}
        writer = self.writer._get_file_writer()
        for summary in hparams(params, metrics):  # type: ignore[no-untyped-call]
            writer.add_summary(summary)

    def flush(self) -> None:
        self.writer.flush()
