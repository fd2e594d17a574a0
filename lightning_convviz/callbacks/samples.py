"""Which validation samples a collecting callback keeps: spread over the set and its classes.

Validation loaders are not shuffled and data on disk is listed class by class, so "the first
``n`` samples" would be a few classes. A :class:`SampleCollector` plans, at the start of each
collecting validation epoch, which positions of this rank's epoch to keep: ``count`` positions
spread over the samples the epoch will show (the first ``num_val_batches`` batches of the
loader's batch sampler) and over their classes when the data set keeps its labels
(:func:`~lightning_convviz.functional.spread_indices`), the same every epoch and on every run.
A stream that cannot be indexed is reservoir-sampled instead (a fixed seed per rank). Rows are
kept in slots of a fixed size, on their own device; :meth:`SampleCollector.gathered` joins every
rank's rows (collectives on every rank, whatever each kept).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pytorch_lightning import Trainer

from lightning_convviz.callbacks.distributed import gather_rows
from lightning_convviz.callbacks.probe import first_validation_loader
from lightning_convviz.functional.sampling import (
    Reservoir,
    dataset_labels,
    is_indexable,
    spread_indices,
)

__all__ = ["SampleCollector"]


class SampleCollector:
    """Keep up to ``total`` samples per collecting epoch, over all ranks.

    Args:
        total: Samples wanted over all ranks (each rank keeps its share).
        seed: Seed of the reservoir for streams.
    """

    def __init__(self, total: int, seed: int = 0) -> None:
        self.total = total
        self.seed = seed
        self._keep: set[int] | None = None
        self._reservoir: Reservoir | None = None
        self._position = 0
        self._filled = 0
        self._capacity = 1
        self._columns: dict[str, torch.Tensor | None] = {}

    def start(self, trainer: Trainer) -> None:
        """Plan this epoch: positions spread over what it will show, or a reservoir."""
        self._capacity = math.ceil(self.total / trainer.world_size)  # this rank's share
        self._position, self._filled, self._columns = 0, 0, {}
        pool = _epoch_indices(trainer)
        if pool is None:
            self._keep = None
            self._reservoir = Reservoir(self._capacity, seed=self.seed + trainer.global_rank)
            return
        labels = dataset_labels(first_validation_loader(trainer).dataset)
        pool_labels = None if labels is None else labels[torch.as_tensor(pool, dtype=torch.long)]
        self._keep = set(spread_indices(len(pool), self._capacity, pool_labels)) if pool else set()
        self._reservoir = None

    def rows_to_keep(self, count: int) -> list[tuple[int, int]]:
        """For the next ``count`` rows of the epoch, the ``(row, slot)`` pairs to store."""
        start, self._position = self._position, self._position + count
        if self._reservoir is not None:
            return self._reservoir.offer(count)
        kept = [row for row in range(count) if start + row in (self._keep or ())]
        slots = range(self._filled, self._filled + len(kept))
        return list(zip(kept, slots, strict=True))

    def store(self, slots: list[int], **columns: torch.Tensor | None) -> None:
        """Put the kept rows (in the order of ``slots``) into their slots; a column that is
        ``None`` once (a batch without labels) stays ``None``."""
        for name, rows in columns.items():
            if name in self._columns and self._columns[name] is None:
                continue
            if rows is None:
                self._columns[name] = None
                continue
            column = self._columns.get(name)
            if column is None:
                column = rows.new_zeros((self._capacity, *rows.shape[1:]))
                self._columns[name] = column
            column[torch.as_tensor(slots, device=column.device)] = rows.to(column.device)
        self._filled = max(self._filled, max(slots, default=-1) + 1)

    def rows(self) -> dict[str, torch.Tensor | None]:
        """This rank's kept rows, in slot order."""
        return {
            name: None if column is None else column[: self._filled]
            for name, column in self._columns.items()
        }

    def gathered(
        self, trainer: Trainer, empty: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor | None]:
        """Every rank's rows of each column, rank after rank, cut to ``total``; a column that
        some rank lacks is ``None``. ``empty`` gives each column's dtype and dimensions for a
        rank that kept nothing. Collectives on every rank."""
        mine = self.rows()
        joined: dict[str, torch.Tensor | None] = {}
        for name, template in empty.items():
            rows = mine.get(name, template) if mine else template
            present = torch.tensor(
                int(rows is not None), device=trainer.strategy.root_device, dtype=torch.int32
            )
            everywhere = trainer.strategy.reduce(present, reduce_op="min")
            if int(everywhere) == 0:
                joined[name] = None
                continue
            assert rows is not None
            joined[name] = gather_rows(trainer, rows)[: self.total]
        return joined


def _epoch_indices(trainer: Trainer) -> list[int] | None:
    """The data set indices this rank's validation epoch will show, in order, or ``None`` for a
    stream (or a loader whose batch sampler cannot be read)."""
    loader: Any = first_validation_loader(trainer)
    sampler = getattr(loader, "batch_sampler", None)
    if sampler is None or not is_indexable(getattr(loader, "dataset", None)):
        return None
    counts = getattr(trainer, "num_val_batches", None) or [math.inf]
    limit = counts[0]
    indices: list[int] = []
    for number, batch in enumerate(sampler):
        if number >= limit:
            break
        indices.extend(int(index) for index in batch)
    return indices
