"""What the demos' data modules share: two tensor data sets in memory and their loaders."""

from __future__ import annotations

import torch
from pytorch_lightning import LightningDataModule
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["InMemoryDataModule"]


class InMemoryDataModule(LightningDataModule):
    """A training and a validation :class:`TensorDataset`, made by a subclass's ``setup``.

    The training loader shuffles with a generator seeded from ``seed``; the validation loader
    keeps its order, so its first batch (the probe of the visualisation callbacks) is the same
    in every run.
    """

    def __init__(self, batch_size: int, seed: int) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.seed = seed
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None

    def train_dataloader(self) -> DataLoader[tuple[torch.Tensor, ...]]:
        assert self.train_set is not None, "call setup() first"
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.train_set, self.batch_size, shuffle=True, generator=generator)

    def val_dataloader(self) -> DataLoader[tuple[torch.Tensor, ...]]:
        assert self.val_set is not None, "call setup() first"
        return DataLoader(self.val_set, self.batch_size, shuffle=False)
