"""The fixed probe images a callback draws for: chosen once, kept for the whole run.

Data on disk is listed class by class and validation loaders are not shuffled, so the probe is
not "the first validation images" but images spread over the whole validation set and, when its
labels are known (``targets`` of an ``ImageFolder``, ...), over its classes, one per class first
(:func:`~lightning_convviz.functional.spread_indices`). They are read from the validation data
set by index when it has one (at the first validation batch, the sanity check's included), the
same on every rank; from a stream (an ``IterableDataset``) they are reservoir-sampled over the
first validation epoch. Or the user passes a tensor; without validation data, the first training
batch serves. Labels come along when the batch carries them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning import Trainer
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import default_collate

from lightning_convviz.callbacks.batches import (
    clone_for_autograd,
    inputs_from_batch,
    labels_from_batch,
)
from lightning_convviz.functional.sampling import (
    Reservoir,
    dataset_labels,
    is_indexable,
    spread_indices,
)

__all__ = ["ProbeSet", "check_probe_images", "first_validation_loader"]


def check_probe_images(probe_images: object) -> None:
    """Raise ``ValueError`` unless ``probe_images`` is ``None`` or a tensor ``N x C x H x W``."""
    if probe_images is not None and (
        not isinstance(probe_images, torch.Tensor) or probe_images.ndim != 4
    ):
        raise ValueError(
            "probe_images: expected None or a tensor N x C x H x W, got "
            f"{getattr(probe_images, 'shape', type(probe_images).__name__)}"
        )


def first_validation_loader(trainer: Trainer) -> Any:
    """The Trainer's first validation dataloader (``None`` when there is none)."""
    loaders: Any = getattr(trainer, "val_dataloaders", None)
    if isinstance(loaders, Mapping):
        loaders = next(iter(loaders.values()), None)
    elif isinstance(loaders, (list, tuple)):
        loaders = loaders[0] if loaders else None
    return loaders


class ProbeSet:
    """Pick and keep the probe images (and labels) for one callback.

    Args:
        owner: Name of the callback, for messages.
        count: How many images to take from a batch.
        images: User-given probe images (then batches are ignored).
        labels: User-given labels for ``images``.
    """

    def __init__(
        self,
        owner: str,
        count: int,
        images: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> None:
        self.owner = owner
        self.count = count
        self.from_user = images is not None
        self.images = None if images is None else images.detach().clone().cpu()
        self.labels = None if labels is None else labels.detach().clone().long().cpu()
        self._train_images: torch.Tensor | None = None
        self._train_labels: torch.Tensor | None = None
        self._looked_at_dataset = False
        self._reservoir = Reservoir(count)
        self._kept: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def _take(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        try:
            images = inputs_from_batch(batch)
        except ValueError as error:
            raise MisconfigurationException(f"{self.owner}: {error}") from None
        taken = clone_for_autograd(images[: self.count]).cpu()
        return taken, labels_from_batch(batch, len(taken))

    def offer_validation_batch(
        self, trainer: Trainer, batch: Any, batch_idx: int, dataloader_idx: int
    ) -> None:
        """At the first validation batch, read the probe from the data set; for a stream, keep
        a reservoir sample of the first validation epoch's images."""
        if self.images is not None or dataloader_idx != 0:
            return
        if not self._looked_at_dataset:
            self._looked_at_dataset = True
            picked = self._pick_from_dataset(first_validation_loader(trainer))
            if picked is not None:
                self.images, self.labels = picked
                return
        if not trainer.sanity_checking:
            self._keep_in_reservoir(batch)

    def end_validation_epoch(self, trainer: Trainer) -> None:
        """A stream's probe is the reservoir of the first validation epoch."""
        if self.images is None and self._kept is not None and not trainer.sanity_checking:
            filled = min(self._reservoir.seen, self.count)  # a short stream fills fewer slots
            images, labels = self._kept
            self.images, self.labels = images[:filled], None if labels is None else labels[:filled]
            self._kept = None
            rank_zero_info(
                f"{self.owner}: probing with {len(self.images)} images reservoir-sampled over "
                "the first validation epoch (the validation data cannot be read by index)."
            )

    def _pick_from_dataset(self, loader: Any) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """Images spread over the validation set and its classes, read by index; ``None`` when
        the data set cannot be indexed or its samples cannot be collated into a batch."""
        dataset: Any = getattr(loader, "dataset", None)
        if not is_indexable(dataset) or not len(dataset):
            return None
        labels = dataset_labels(dataset)
        indices = spread_indices(len(dataset), self.count, labels)
        # a loader without automatic batching (batch_size=None) hands its collate function
        # whole batches: single samples are collated as a batched loader would
        batched = getattr(loader, "batch_sampler", None) is not None
        collate = loader.collate_fn if batched else default_collate
        try:
            batch = collate([dataset[index] for index in indices])
            inputs_from_batch(batch)
        except Exception:  # a data set or collate function we cannot call this way
            return None
        picked = self._take(batch)
        classes = "" if labels is None else f" and over its {len(torch.unique(labels))} classes"
        rank_zero_info(
            f"{self.owner}: probing with {len(picked[0])} of the {len(dataset)} validation "
            f"images, spread over the set{classes} (indices {indices})."
        )
        return picked

    def _keep_in_reservoir(self, batch: Any) -> None:
        images, labels = self._take_all(batch)
        for row, slot in self._reservoir.offer(len(images)):
            if self._kept is None:
                shape = (self.count, *images.shape[1:])
                kept_labels = None if labels is None else torch.zeros(self.count, dtype=torch.long)
                self._kept = (images.new_zeros(shape), kept_labels)
            self._kept[0][slot] = images[row]
            if self._kept[1] is not None and labels is not None:
                self._kept[1][slot] = labels[row]

    def _take_all(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        try:
            images = inputs_from_batch(batch)
        except ValueError as error:
            raise MisconfigurationException(f"{self.owner}: {error}") from None
        taken = clone_for_autograd(images).cpu()
        return taken, labels_from_batch(batch, len(taken))

    def offer_training_batch(self, batch: Any) -> None:
        """Remember the first training batch's images as a fallback, once."""
        if self.images is None and self._train_images is None:
            self._train_images, self._train_labels = self._take(batch)

    def get(self) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """The probe images and labels, or ``None`` when no batch has been seen yet."""
        if self.images is None and self._train_images is not None:
            rank_zero_info(
                f"{self.owner}: no validation batch seen; probing with the first training images."
            )
            self.images, self.labels = self._train_images, self._train_labels
        if self.images is None:
            return None
        return self.images, self.labels

    def state_dict(self) -> dict[str, Any]:
        return {"probe": self.images, "probe_labels": self.labels}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not self.from_user:
            self.images = state_dict.get("probe")
            self.labels = state_dict.get("probe_labels")
