"""The fixed probe images a callback draws for: chosen once, kept for the whole run.

The probe is the first images of the first validation batch (captured during the sanity check
or the first validation run), or a tensor the user passes; without validation data, the first
training batch serves. Labels come along when the batch carries them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.utilities import rank_zero_info

from lightning_convviz.callbacks.base import clone_for_autograd, inputs_from_batch

__all__ = ["ProbeSet", "check_probe_images", "labels_from_batch"]

_LABEL_KEYS = ("label", "labels", "target", "targets", "y")


def check_probe_images(probe_images: object) -> None:
    """Raise ``ValueError`` unless ``probe_images`` is ``None`` or a tensor ``N x C x H x W``."""
    if probe_images is not None and (
        not isinstance(probe_images, torch.Tensor) or probe_images.ndim != 4
    ):
        raise ValueError(
            "probe_images: expected None or a tensor N x C x H x W, got "
            f"{getattr(probe_images, 'shape', type(probe_images).__name__)}"
        )


def labels_from_batch(batch: Any, count: int) -> torch.Tensor | None:
    """Integer class labels ``(count,)`` of a batch's first images, or ``None`` if it has none."""
    candidate: Any = None
    if isinstance(batch, (list, tuple)) and len(batch) > 1:
        candidate = batch[1]
    elif isinstance(batch, Mapping):
        candidate = next((batch[key] for key in _LABEL_KEYS if key in batch), None)
    if (
        isinstance(candidate, torch.Tensor)
        and candidate.ndim == 1
        and not candidate.is_floating_point()
        and candidate.numel() >= count
    ):
        return clone_for_autograd(candidate[:count]).long().cpu()
    return None


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

    def _take(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        try:
            images = inputs_from_batch(batch)
        except ValueError as error:
            raise MisconfigurationException(f"{self.owner}: {error}") from None
        taken = clone_for_autograd(images[: self.count]).cpu()
        return taken, labels_from_batch(batch, len(taken))

    def offer_validation_batch(self, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        """Keep the first images of the first validation batch, once."""
        if self.images is None and batch_idx == 0 and dataloader_idx == 0:
            self.images, self.labels = self._take(batch)

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
