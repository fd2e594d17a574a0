"""Collectives the callbacks share under DDP (each called on every rank)."""

from __future__ import annotations

import torch
from pytorch_lightning import Trainer

__all__ = ["gather_rows"]


def gather_rows(trainer: Trainer, rows: torch.Tensor) -> torch.Tensor:
    """Every rank's ``rows`` (a tensor of any number of rows, possibly none) joined in rank
    order, on every rank. Collectives on every rank: each must call it, with tensors of the same
    number of dimensions (a rank without rows may pass a tensor of zeros in every dimension)."""
    if trainer.world_size == 1:
        return rows
    device = trainer.strategy.root_device
    shape = torch.tensor(rows.shape, device=device)
    shapes = trainer.strategy.all_gather(shape).reshape(trainer.world_size, -1)
    largest = shapes.max(dim=0).values.tolist()
    padded = rows.new_zeros(largest)
    padded[tuple(slice(0, size) for size in rows.shape)] = rows
    gathered = trainer.strategy.all_gather(padded.to(device))
    counts = shapes[:, 0].tolist()
    return torch.cat([part[:count] for part, count in zip(gathered, counts, strict=True)])
