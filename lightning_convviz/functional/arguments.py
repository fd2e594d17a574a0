"""Argument checks shared by the functional core and the callbacks: integers, images,
targets, windows.

Each check raises ``ValueError`` naming the argument and what is allowed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["Target", "check_class_scores", "check_images", "check_int", "pair", "target_indices"]

#: Which class to explain: one index for every image, or one per image.
Target = int | Sequence[int] | torch.Tensor


def check_int(
    name: str,
    value: object,
    minimum: int = 1,
    maximum: int | None = None,
    allow_none: bool = False,
) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is an int (not a bool) of at least
    ``minimum`` (and at most ``maximum``), or ``None`` where that is allowed.

    Example:
        >>> check_int("steps", 3)
        >>> check_int("steps", 0)
        Traceback (most recent call last):
        ...
        ValueError: steps: expected an integer >= 1, got 0
        >>> check_int("jitter", True, minimum=0)
        Traceback (most recent call last):
        ...
        ValueError: jitter: expected an integer >= 0, got True
    """
    if value is None and allow_none:
        return
    in_range = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    if in_range and maximum is not None:
        in_range = value <= maximum  # type: ignore[operator]
    if not in_range:
        allowed = (
            f"an integer in [{minimum}, {maximum}]"
            if maximum is not None
            else f"an integer >= {minimum}"
        )
        raise ValueError(
            f"{name}: expected {'None or ' if allow_none else ''}{allowed}, got {value!r}"
        )


def check_images(inputs: object) -> torch.Tensor:
    """Return ``inputs`` if it is a floating tensor ``N x C x H x W`` with N >= 1."""
    if not isinstance(inputs, torch.Tensor):
        raise ValueError(f"inputs: expected a tensor N x C x H x W, got {type(inputs).__name__}")
    if inputs.ndim != 4 or inputs.shape[0] == 0:
        raise ValueError(
            f"inputs: expected a tensor N x C x H x W with N >= 1, got shape {tuple(inputs.shape)}"
        )
    if not inputs.is_floating_point():
        raise ValueError(f"inputs: expected a floating point tensor, got {inputs.dtype}")
    return inputs


def check_class_scores(outputs: object, batch_size: int) -> torch.Tensor:
    """Return the model's ``outputs`` if they are class scores ``batch_size x classes``."""
    if not isinstance(outputs, torch.Tensor) or outputs.ndim != 2 or len(outputs) != batch_size:
        shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs)
        raise ValueError(f"model: expected class scores N x classes as output, got {shape}")
    return outputs


def target_indices(target: Target, batch_size: int, num_classes: int) -> torch.Tensor:
    """``target`` as an int64 CPU tensor of length ``batch_size`` with values in range.

    Args:
        target: An int for every image, or a sequence / 1-D tensor with one int per image.
        batch_size: Number of images.
        num_classes: Number of model outputs per image.
    """
    if isinstance(target, bool):
        raise ValueError(f"target: expected an int or one int per image, got {target!r}")
    if isinstance(target, int):
        indices = torch.full((batch_size,), target, dtype=torch.long)
    else:
        try:
            indices = torch.as_tensor(target).detach().cpu()
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"target: expected an int or one int per image, got {target!r}"
            ) from None
        if indices.is_floating_point() or indices.dtype == torch.bool:
            raise ValueError(f"target: expected integer class indices, got {indices.dtype}")
        indices = indices.long().flatten() if indices.ndim == 0 else indices.long()
        if indices.ndim != 1 or indices.numel() not in (1, batch_size):
            raise ValueError(
                f"target: expected an int or {batch_size} ints (one per image), got shape "
                f"{tuple(indices.shape)}"
            )
        indices = indices.expand(batch_size).clone()
    out_of_range = (indices < 0) | (indices >= num_classes)
    if bool(out_of_range.any()):
        raise ValueError(
            f"target: class indices must lie in [0, {num_classes - 1}] (the model has "
            f"{num_classes} outputs), got {sorted(set(indices[out_of_range].tolist()))}"
        )
    return indices


def pair(name: str, value: int | Sequence[int]) -> tuple[int, int]:
    """``value`` as ``(h, w)`` of ints >= 1: an int means a square."""
    items = [value, value] if isinstance(value, int) else list(value)
    if len(items) != 2 or not all(
        isinstance(item, int) and not isinstance(item, bool) and item >= 1 for item in items
    ):
        raise ValueError(f"{name}: expected an int >= 1 or a pair (h, w) of them, got {value!r}")
    return items[0], items[1]
