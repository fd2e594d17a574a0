"""Per-channel activity of feature maps: positive counts, sparsity and dead channels.

Pure torch: no Lightning, no logging. A channel is *active* at an element where its value is
positive; after a ReLU, the other elements are exact zeros.
"""

from __future__ import annotations

from collections.abc import Hashable, MutableMapping
from typing import TypeVar

import torch

__all__ = [
    "accumulate_positive_counts",
    "add_positive_counts",
    "channel_positive_counts",
    "channel_positive_presence",
    "dead_channels",
    "dead_fraction",
    "sparsity",
]

Key = TypeVar("Key", bound=Hashable)


def _check_channels(activation: torch.Tensor) -> None:
    if activation.ndim < 2:
        raise ValueError(
            f"activation: expected N x C x ..., got a tensor of shape {tuple(activation.shape)}"
        )


def channel_positive_counts(activation: torch.Tensor) -> torch.Tensor:
    """How many elements of each channel (dim 1) are positive, summed over every other dim.

    Runs on the tensor's device with no host synchronisation. NaN is not positive (as with
    ``activation > 0``).

    Example:
        >>> channel_positive_counts(torch.tensor([[1.0, -1.0], [2.0, 0.0]]))  # N=2, C=2
        tensor([2, 0])

    Args:
        activation: ``N x C x ...`` (a feature map, or ``N x C`` features).

    Returns:
        ``int64`` tensor of shape ``(C,)``.

    Raises:
        ValueError: ``activation`` has fewer than 2 dimensions.
    """
    _check_channels(activation)
    # sign() clamped at 0 is 1 where positive and 0 elsewhere (sign(NaN) is 0), in the
    # activation's dtype: on CPU two to three times faster than summing the bool `> 0`.
    # Per-map sums are exact in float32 below 2**24 elements, then summed over N in float64.
    positive = torch.sign(activation.detach()).clamp_(min=0)
    if activation.ndim > 2:
        per_map = activation[0, 0].numel()
        dtype = torch.float32 if per_map < 2**24 else torch.float64
        positive = positive.sum(dim=tuple(range(2, activation.ndim)), dtype=dtype)
    return positive.sum(dim=0, dtype=torch.float64).to(torch.int64)


def channel_positive_presence(activation: torch.Tensor) -> torch.Tensor:
    """1 for each channel (dim 1) with at least one positive element, else 0: what
    :func:`dead_channels` needs and no more (one max per channel, about four times cheaper
    than :func:`channel_positive_counts` on a CPU). A channel holding a NaN counts as present:
    its max cannot tell, and a channel is only called dead when it surely is.

    Example:
        >>> channel_positive_presence(torch.tensor([[1.0, -1.0], [2.0, 0.0]]))
        tensor([1, 0])

    Args:
        activation: ``N x C x ...``.

    Returns:
        ``int64`` tensor of shape ``(C,)``.

    Raises:
        ValueError: ``activation`` has fewer than 2 dimensions.
    """
    _check_channels(activation)
    peak = activation.detach().amax(dim=(0, *range(2, activation.ndim)))
    return ((peak > 0) | peak.isnan()).to(torch.int64)


def accumulate_positive_counts(
    totals: MutableMapping[Key, tuple[torch.Tensor, int]],
    key: Key,
    activation: torch.Tensor,
    presence_only: bool = False,
) -> None:
    """Add one batch's positive counts per channel (dim 1) and its elements per channel to
    ``totals[key]``: the running sums from which dead filters and sparsity are read.

    A key whose channel count changed starts again. Runs on the activation's device with no
    host synchronisation. With ``presence_only``, each batch adds 1 where a channel was
    positive anywhere (:func:`channel_positive_presence`) and counts as one element: enough
    for :func:`dead_channels`, not for :func:`sparsity`, and cheaper.

    Example:
        >>> totals = {}
        >>> accumulate_positive_counts(totals, "relu", torch.tensor([[1.0, -1.0]]))
        >>> accumulate_positive_counts(totals, "relu", torch.tensor([[2.0, -3.0]]))
        >>> totals["relu"]
        (tensor([2, 0]), 2)

    Args:
        totals: Running ``(counts, elements per channel)`` by key; updated in place.
        key: Which running sum (a layer's call site).
        activation: ``N x C x ...``.
        presence_only: Count batches with a positive element, not positive elements.
    """
    if presence_only:
        counts, elements = channel_positive_presence(activation), 1
    else:
        counts = channel_positive_counts(activation)
        elements = activation.numel() // max(activation.shape[1], 1)
    add_positive_counts(totals, key, counts, elements)


def add_positive_counts(
    totals: MutableMapping[Key, tuple[torch.Tensor, int]],
    key: Key,
    counts: torch.Tensor,
    elements: int,
) -> None:
    """Add counts already made (:func:`channel_positive_counts` or
    :func:`channel_positive_presence` of one batch, with its elements per channel) to
    ``totals[key]``, as :func:`accumulate_positive_counts` does; a key whose channel count
    changed starts again.

    Example:
        >>> totals = {}
        >>> add_positive_counts(totals, "relu", torch.tensor([3, 0]), 4)
        >>> add_positive_counts(totals, "relu", torch.tensor([1, 0]), 4)
        >>> totals["relu"]
        (tensor([4, 0]), 8)
    """
    previous = totals.get(key)
    if previous is None or previous[0].shape != counts.shape:
        totals[key] = (counts, elements)
    else:
        totals[key] = (previous[0].to(counts.device) + counts, previous[1] + elements)


def sparsity(
    positive_counts: torch.Tensor, elements_per_channel: int | torch.Tensor
) -> torch.Tensor:
    """Fraction of elements that are not positive (for ReLU outputs: the fraction of zeros).

    Args:
        positive_counts: ``(C,)`` counts from :func:`channel_positive_counts`, possibly summed
            over many batches.
        elements_per_channel: How many elements each channel had over the same batches.

    Returns:
        A float scalar tensor in ``[0, 1]``.
    """
    total = positive_counts.numel() * elements_per_channel
    return 1.0 - positive_counts.sum().double() / total


def dead_channels(positive_counts: torch.Tensor) -> torch.Tensor:
    """Boolean ``(C,)`` mask of the channels that were never positive."""
    return positive_counts == 0


def dead_fraction(positive_counts: torch.Tensor) -> torch.Tensor:
    """Fraction of channels that were never positive, as a float scalar tensor."""
    return dead_channels(positive_counts).double().mean()
