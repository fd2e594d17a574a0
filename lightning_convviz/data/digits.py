"""DigitsDataModule: scikit-learn's bundled handwritten digits, upsampled; no download needed."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from lightning_convviz.data.in_memory import InMemoryDataModule

__all__ = ["DigitsDataModule", "load_digits_tensors"]


def load_digits_tensors(image_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as ``N x 1 x image_size x image_size`` floats in ``[0, 1]`` and labels.

    The 8x8 originals (values 0-16) are enlarged with bilinear interpolation.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0
    if image_size != images.shape[-1]:
        images = F.interpolate(
            images, size=(image_size, image_size), mode="bilinear", align_corners=False
        ).clamp(0, 1)
    return images, torch.from_numpy(digits.target).long()


class DigitsDataModule(InMemoryDataModule):
    """scikit-learn's 1797 handwritten digits (10 classes), in memory, standardised.

    A seeded split keeps ``val_fraction`` for validation; the validation loader is not shuffled,
    so its first batch (the probe of the visualisation callbacks) is the same in every run.

    Example:
        >>> data = DigitsDataModule(batch_size=64)
        >>> data.setup("fit")
        >>> images, labels = next(iter(data.val_dataloader()))
        >>> tuple(images.shape)
        (64, 1, 32, 32)

    Args:
        batch_size: Images per batch.
        image_size: Side of the upsampled images.
        val_fraction: Share of the images kept for validation.
        seed: Seed of the split and of the training loader's shuffling.
    """

    def __init__(
        self, batch_size: int = 64, image_size: int = 32, val_fraction: float = 0.2, seed: int = 0
    ) -> None:
        super().__init__(batch_size, seed)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction: expected a number in (0, 1), got {val_fraction!r}")
        self.image_size = image_size
        self.val_fraction = val_fraction

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        images, labels = load_digits_tensors(self.image_size)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.seed))
        n_val = round(len(images) * self.val_fraction)
        val_idx, train_idx = order[:n_val], order[n_val:]
        mean, std = images[train_idx].mean(), images[train_idx].std()
        images = (images - mean) / std
        self.train_set = TensorDataset(images[train_idx], labels[train_idx])
        self.val_set = TensorDataset(images[val_idx], labels[val_idx])
