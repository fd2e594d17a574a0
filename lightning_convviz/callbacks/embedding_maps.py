"""What one t-SNE map of :class:`~lightning_convviz.EmbeddingMonitor` is made of and how it is
made: the job handed over (codes, labels, pictures, threads), the map and its measures and
pictures, and how they are written. Runs on the training thread or in the drawing worker's
second lane; no Lightning here."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lightning_convviz import plots, render
from lightning_convviz.functional.embedding import (
    available_cores,
    embed_codes,
    grid_cells,
    knn_accuracy,
    trustworthiness,
)
from lightning_convviz.writing import EmbeddingPoints

__all__ = [
    "GRID_LIMIT",
    "SPRITE_LIMIT",
    "EmbeddingJob",
    "EmbeddingMap",
    "MapSettings",
    "make_map",
    "picture_side",
    "tsne_threads",
    "write_map",
]

#: The TensorBoard projector rejects sprites larger than this (pixels per side).
SPRITE_LIMIT = 8192
#: The image grid is at most this many pixels wide.
GRID_LIMIT = 2048


@dataclass(frozen=True)
class MapSettings:
    """The monitor's settings that every map is made with."""

    perplexity: float
    seed: int
    knn_neighbors: int
    grid_side: int


@dataclass
class EmbeddingJob:
    """The gathered codes of one validation epoch, handed over to be embedded."""

    step: int
    epoch: int
    codes: np.ndarray
    labels: np.ndarray | None
    #: ``N x C x h x w`` uint8 thumbnails of the samples.
    pictures: torch.Tensor
    #: Threads of the t-SNE.
    threads: int
    #: Embedded in the drawing worker's second lane (beside training), not on the training
    #: thread.
    background: bool = False


@dataclass
class EmbeddingMap:
    """One finished map: its points, measures and pictures."""

    step: int
    seconds: float
    scatter: np.ndarray
    grid: np.ndarray
    metrics: dict[str, float]
    job: EmbeddingJob
    points: np.ndarray


def tsne_threads(
    background: bool, on_accelerator: bool, busy_threads: int, n_jobs: int | None = None
) -> int:
    """How many threads the t-SNE gets.

    In the background (training leaves cores free): beside an accelerator every core but the
    one that feeds it, on a CPU the cores training's ``busy_threads`` leave (at least one).
    At once, on the training thread: every core (threads beside PyTorch's on busy cores slow
    both down: on the digits suite on 2 cores two embeddings in the background cost the fit
    8.5 s, about their own 1.2 s at once). ``n_jobs`` caps the threads.

    Example:
        >>> tsne_threads(False, on_accelerator=False, busy_threads=2) == available_cores()
        True
        >>> tsne_threads(True, on_accelerator=True, busy_threads=1, n_jobs=1)
        1
    """
    cores = available_cores()
    if not background:
        threads = cores
    elif on_accelerator:
        threads = cores - 1
    else:
        threads = cores - busy_threads
    threads = max(threads, 1)
    return min(threads, n_jobs or threads)


def picture_side(max_samples: int, thumbnail_side: int) -> int:
    """Thumbnail side: as asked, but small enough for a projector sprite of ``max_samples``.

    Example:
        >>> picture_side(2000, 32), picture_side(1_000_000, 32)
        (32, 8)
    """
    per_row = int(np.ceil(np.sqrt(max_samples)))
    return max(1, min(thumbnail_side, SPRITE_LIMIT // per_row))


def make_map(
    job: EmbeddingJob,
    previous: np.ndarray | None,
    settings: MapSettings,
    chart: plots.Chart,
    class_names: list[str] | None,
) -> EmbeddingMap:
    """Embed ``job``'s codes (from the ``previous`` map when it has as many points), measure the
    map and draw its scatter and image grid."""
    start = time.perf_counter()
    if previous is not None and previous.shape[0] != len(job.codes):
        previous = None
    embedding = embed_codes(job.codes, previous, settings.perplexity, settings.seed, job.threads)
    neighbours = min(settings.knn_neighbors, len(job.codes) // 2 - 1)
    metrics = {
        "trustworthiness": float(
            trustworthiness(job.codes, embedding, n_neighbors=max(1, neighbours))
        )
    }
    if job.labels is not None:
        metrics["knn_accuracy"] = knn_accuracy(embedding, job.labels, settings.knn_neighbors)
    title = f"epoch {job.epoch}, step {job.step}: {len(job.codes)} samples"
    scatter = plots.class_scatter(
        embedding, job.labels, title, chart=chart, class_names=class_names
    )
    cell = max(8, min(job.pictures.shape[-1], GRID_LIMIT // settings.grid_side))
    pictures = torch.nn.functional.interpolate(job.pictures.float() / 255, size=(cell, cell))
    grid = render.to_uint8_hwc(
        render.cell_grid(pictures, grid_cells(embedding, settings.grid_side))
    )
    seconds = time.perf_counter() - start
    return EmbeddingMap(job.step, seconds, scatter, grid, metrics, job, embedding)


def write_map(
    writer: Any, made: EmbeddingMap, tag: Callable[[str], str], projector: str | None
) -> None:
    """Write the map's pictures, measures and points (``tag`` names them); with ``projector``,
    TensorBoard projector data under that tag, with a sprite within the frontend's limit."""
    writer.image(tag("scatter"), made.scatter, made.step)
    writer.image(tag("grid"), made.grid, made.step)
    writer.scalars({tag(name): value for name, value in made.metrics.items()}, made.step)
    job = made.job
    points = EmbeddingPoints(job.codes, made.points, job.labels)
    writer.points(tag("points"), points, made.step)
    if projector is not None:
        per_row = int(np.ceil(np.sqrt(len(job.codes))))
        side = max(1, min(job.pictures.shape[-1], SPRITE_LIMIT // per_row))
        sprite = torch.nn.functional.interpolate(
            job.pictures.float() / 255, size=(side, side), mode="area"
        )
        points = dataclasses.replace(points, thumbnails=sprite.numpy())
        writer.projector(projector, points, made.step)
