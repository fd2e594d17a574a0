"""Reading a batch: its input images, a copy that may enter autograd, a copy in host memory."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = [
    "batch_labels",
    "clone_for_autograd",
    "inputs_from_batch",
    "labels_from_batch",
    "to_host",
]


_INPUT_KEYS = ("image", "images", "input", "inputs", "x", "pixel_values")
_LABEL_KEYS = ("label", "labels", "target", "targets", "y")


def inputs_from_batch(batch: Any) -> torch.Tensor:
    """The input images of a batch: the batch itself, its first item, or a known dict key.

    Raises:
        ValueError: No image tensor (``N x C x H x W``) can be found.
    """
    candidate: Any = batch
    if isinstance(batch, (list, tuple)) and batch:
        candidate = batch[0]
    elif isinstance(batch, Mapping):
        candidate = next((batch[key] for key in _INPUT_KEYS if key in batch), None)
    if isinstance(candidate, torch.Tensor) and candidate.ndim == 4:
        return candidate
    raise ValueError(
        "could not find the input images in the batch: expected a tensor N x C x H x W, a "
        f"(inputs, targets) pair or a dict with one of the keys {_INPUT_KEYS}; "
        "pass probe_images=... to the callback instead"
    )


def clone_for_autograd(tensor: torch.Tensor) -> torch.Tensor:
    """A detached copy that may enter autograd, even when made from an inference-mode tensor."""
    with torch.inference_mode(False):
        return tensor.detach().clone()


def to_host(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of ``tensor`` in host memory that training cannot change (from a GPU without
    waiting: the drawing worker waits for the copy before it reads it)."""
    return tensor.detach().to("cpu", non_blocking=True, copy=True)


def batch_labels(batch: Any) -> torch.Tensor | None:
    """The integer class labels of a batch where they are (a 1-D tensor on the batch's device,
    not copied: the second item of a pair or a known dict key), else ``None``."""
    candidate: Any = None
    if isinstance(batch, (list, tuple)) and len(batch) > 1:
        candidate = batch[1]
    elif isinstance(batch, Mapping):
        candidate = next((batch[key] for key in _LABEL_KEYS if key in batch), None)
    if (
        isinstance(candidate, torch.Tensor)
        and candidate.ndim == 1
        and not candidate.is_floating_point()
    ):
        return candidate
    return None


def labels_from_batch(batch: Any, count: int) -> torch.Tensor | None:
    """Integer class labels ``(count,)`` of a batch's first images, or ``None`` if it has none."""
    labels = batch_labels(batch)
    if labels is None or labels.numel() < count:
        return None
    return clone_for_autograd(labels[:count]).long().cpu()
