"""What every logger's writer offers: scalars, pictures, histograms, texts and embeddings.

Callbacks name what they log with TensorBoard tags (``section/kind/layer``, a call site as
``layer1.0.relu:3``). A destination writes them as its logger can; where a logger or a file
system refuses a character, :func:`safe_name` gives the name it gets there.
"""

from __future__ import annotations

import io
import re
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Destination",
    "EmbeddingPoints",
    "as_uint8_hwc",
    "encode_png",
    "histogram_csv",
    "is_logger_named",
    "points_csv",
    "safe_name",
]

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-./ ]")


def safe_name(tag: str) -> str:
    """``tag`` with every character other than letters, digits, ``_ - . /`` and space read as
    ``-``: the names that MLflow accepts for images (and, on every system, for metrics) and
    that make portable file paths. A call site ``layer1.0.relu:3`` becomes ``layer1.0.relu-3``.

    Example:
        >>> safe_name("inversion/code_error/head:input")
        'inversion/code_error/head-input'
    """
    return _UNSAFE.sub("-", tag)


def as_uint8_hwc(picture: np.ndarray) -> np.ndarray:
    """A ``H x W x 3`` uint8 array from a ``H x W x C`` picture (C = 1, 3 or 4; uint8, or
    float in ``[0, 1]``): what every destination stores.

    Example:
        >>> as_uint8_hwc(np.ones((2, 3, 1))).shape, as_uint8_hwc(np.ones((2, 3, 4))).dtype
        ((2, 3, 3), dtype('uint8'))
    """
    if picture.ndim != 3 or picture.shape[2] not in (1, 3, 4):
        raise ValueError(f"picture: expected H x W x 1, 3 or 4, got shape {picture.shape}")
    if picture.dtype != np.uint8:
        picture = (np.clip(picture.astype(np.float64), 0.0, 1.0) * 255).round().astype(np.uint8)
    if picture.shape[2] == 1:
        picture = np.repeat(picture, 3, axis=2)
    return np.ascontiguousarray(picture[:, :, :3])


#: zlib level of the PNGs written: 1 encodes the package's pictures in about half the time of
#: the usual 6, for files 10 to 20 % larger (a lossless picture either way).
PNG_COMPRESS_LEVEL = 1


def encode_png(picture: np.ndarray) -> bytes:
    """A ``H x W x 3`` uint8 picture as PNG bytes, encoded fast (:data:`PNG_COMPRESS_LEVEL`).

    Example:
        >>> encode_png(np.zeros((2, 3, 3), dtype=np.uint8))[:4]
        b'\\x89PNG'
    """
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


@dataclass(frozen=True)
class EmbeddingPoints:
    """One embedding of CNN codes: the codes, their 2-D t-SNE points, labels and thumbnails.

    Attributes:
        codes: ``N x D`` codes.
        points: ``N x 2`` embedded points.
        labels: ``N`` class labels, or ``None`` when the data has none.
        thumbnails: ``N x C x H x W`` float pictures in ``[0, 1]`` for TensorBoard's projector
            (``None``: none).
    """

    codes: np.ndarray
    points: np.ndarray
    labels: np.ndarray | None
    thumbnails: np.ndarray | None = None


class Destination(ABC):
    """One logger of the Trainer, as the callbacks write to it (on global rank zero)."""

    #: The logger's kind, for messages and the docs' table.
    kind: str = ""

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    def prefixed(self, tag: str) -> str:
        """``tag`` as the logger's ``log_metrics`` names it (its ``prefix``, if any, joined
        with its join character), for a destination that writes scalars past ``log_metrics``."""
        prefix = getattr(self.logger, "_prefix", "")
        join = getattr(self.logger, "LOGGER_JOIN_CHAR", "-")
        return f"{prefix}{join}{tag}" if prefix else tag

    @abstractmethod
    def scalars(self, metrics: dict[str, float], step: int) -> None:
        """Write several scalars at one step."""

    @abstractmethod
    def image(self, tag: str, picture: np.ndarray, step: int) -> None:
        """Write one picture (``H x W x 3`` uint8, see :func:`as_uint8_hwc`)."""

    @abstractmethod
    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        """Write the distribution of ``values``."""

    @abstractmethod
    def text(self, tag: str, text: str, step: int) -> None:
        """Write a text (markdown)."""

    @abstractmethod
    def points(self, tag: str, embedding: EmbeddingPoints, step: int) -> None:
        """Write the embedded points with their labels (a table a UI can plot)."""

    def projector(self, tag: str, embedding: EmbeddingPoints, step: int) -> None:  # noqa: B027
        """Write the codes themselves for an embedding projector (TensorBoard's); elsewhere
        nothing (the codes are large)."""

    def layout(self, charts: dict[str, list[str]]) -> None:  # noqa: B027 (optional)
        """Group scalars into multi-line charts (``title: [tag regexes]``), where the logger
        has such dashboards (TensorBoard); elsewhere nothing."""

    def hyperparameters(self, params: dict[str, float | str], metric_tags: list[str]) -> None:
        """Record the run's settings and outcome so that runs compare side by side (the
        logger's run table); ``metric_tags`` names scalars already logged that belong beside
        them (TensorBoard's HParams tab shows their latest values)."""
        self.logger.log_hyperparams(params)

    def flush(self) -> None:  # noqa: B027 (optional)
        """Make what was written visible (files closed, queues drained)."""


def is_logger_named(logger: object, name: str) -> bool:
    """Whether ``logger`` is an instance of Lightning's logger class ``name``, from
    ``pytorch_lightning.loggers`` or, when the program imported it, ``lightning.pytorch``."""
    for module in ("pytorch_lightning.loggers", "lightning.pytorch.loggers"):
        loggers = sys.modules.get(module)
        kind = getattr(loggers, name, None) if loggers is not None else None
        if isinstance(kind, type) and isinstance(logger, kind):
            return True
    return False


def histogram_csv(values: np.ndarray) -> str:
    """The histogram of ``values`` (numpy's ``"auto"`` bins) as CSV text.

    Example:
        >>> print(histogram_csv(np.array([0.0, 0.0, 1.0, 2.0])), end="")
        bin_start,bin_end,count
        0.0,0.6666666666666666,2
        0.6666666666666666,1.3333333333333333,1
        1.3333333333333333,2.0,1
    """
    counts, edges = np.histogram(values, bins="auto")
    rows = [
        f"{float(edges[i])!r},{float(edges[i + 1])!r},{int(counts[i])}" for i in range(len(counts))
    ]
    return "bin_start,bin_end,count\n" + "".join(row + "\n" for row in rows)


def points_csv(embedding: EmbeddingPoints) -> str:
    """The embedded points as CSV text, ``x,y,label`` (the label empty without labels)."""
    out = io.StringIO()
    out.write("x,y,label\n")
    labels = embedding.labels
    for index, (x, y) in enumerate(embedding.points):
        label = "" if labels is None else str(labels[index])
        out.write(f"{float(x)!r},{float(y)!r},{label}\n")
    return out.getvalue()
