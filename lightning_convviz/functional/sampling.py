"""Which samples to show: spread over a data set and over its classes, deterministically.

Data sets on disk are listed class by class (torchvision's ``ImageFolder``) and validation
loaders are not shuffled, so "the first images" are all of one class. These helpers pick
samples spread over the whole set instead: evenly over the indices, or, when the labels are
known, one per class first (classes themselves spread when there are more than samples), then
round robin. Streams that cannot be indexed are sampled with a reservoir.

Pure torch: no Lightning, no logging.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import ConcatDataset, Dataset, IterableDataset, Subset, TensorDataset

__all__ = ["Reservoir", "dataset_labels", "is_indexable", "spread_classes", "spread_indices"]


def _spread(length: int, count: int) -> list[int]:
    """``count`` positions in ``range(length)``, evenly spaced (the middle of equal parts)."""
    count = min(count, length)
    return [(2 * j + 1) * length // (2 * count) for j in range(count)]


def spread_indices(
    length: int, count: int, labels: torch.Tensor | Sequence[int] | None = None
) -> list[int]:
    """``count`` indices of a data set of ``length`` samples, spread over it and its classes.

    Without labels: evenly spaced indices. With labels (one per sample): classes are taken in
    turn, one sample each per round (round robin), so that ``count`` samples cover
    ``min(count, classes)`` classes; with fewer samples than classes, the classes are spread
    over the sorted class list. Within a class its samples are evenly spaced too. The result is
    in round-robin order (one per class first), deterministic.

    Example:
        >>> spread_indices(10, 3)
        [1, 5, 8]
        >>> spread_indices(6, 4, labels=[0, 0, 0, 1, 1, 2])  # sorted by class
        [0, 4, 5, 2]

    Args:
        length: Samples in the data set.
        count: Samples wanted (all of them when ``count >= length``).
        labels: Integer class of each sample, or ``None``.

    Raises:
        ValueError: ``count`` < 1, or ``labels`` of the wrong length.
    """
    if count < 1:
        raise ValueError(f"count: expected an integer >= 1, got {count!r}")
    if labels is None:
        return _spread(length, count)
    labels = torch.as_tensor(labels).long().flatten().cpu()  # one copy, not one per class
    if len(labels) != length:
        raise ValueError(f"labels: expected {length} labels, one per sample, got {len(labels)}")
    classes = torch.unique(labels).tolist()
    members = {c: (labels == c).nonzero().flatten().tolist() for c in classes}
    count = min(count, length)
    if count < len(classes):
        classes = [classes[position] for position in _spread(len(classes), count)]
    quota = dict.fromkeys(classes, 0)
    remaining = count
    while remaining > 0:  # one more per class per round, while a class has samples left
        grown = False
        for c in classes:
            if remaining and quota[c] < len(members[c]):
                quota[c] += 1
                remaining -= 1
                grown = True
        if not grown:
            break
    picks = {c: [members[c][p] for p in _spread(len(members[c]), quota[c])] for c in classes}
    rounds = max(quota.values(), default=0)
    return [picks[c][r] for r in range(rounds) for c in classes if r < len(picks[c])]


def spread_classes(
    num_classes: int, count: int, preferred: Sequence[int] | torch.Tensor = ()
) -> list[int]:
    """At most ``count`` of ``num_classes`` classes, sorted: all of them when they are few
    enough, else the ``preferred`` ones first (the probe images' classes) and an even spread of
    the others.

    Example:
        >>> spread_classes(10, 16), spread_classes(1000, 4), spread_classes(1000, 4, [7, 7, 3])
        ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [125, 375, 625, 875], [3, 7, 251, 750])
    """
    if num_classes <= count:
        return list(range(num_classes))
    chosen = list(dict.fromkeys(int(c) for c in torch.as_tensor(preferred).flatten().tolist()))
    chosen = [c for c in chosen if 0 <= c < num_classes][:count]
    others = [c for c in range(num_classes) if c not in set(chosen)]
    chosen += [others[p] for p in _spread(len(others), count - len(chosen))] if others else []
    return sorted(chosen[:count])


def is_indexable(dataset: object) -> bool:
    """Whether samples can be read by index (a map-style data set with a length)."""
    return (
        isinstance(dataset, Dataset)
        and not isinstance(dataset, IterableDataset)
        and hasattr(dataset, "__len__")
    )


def dataset_labels(dataset: Any) -> torch.Tensor | None:
    """Every sample's integer label, when the data set keeps them without loading the samples.

    Reads ``targets`` or ``labels`` (torchvision's ``ImageFolder``, ``CIFAR10``, ``MNIST``, ...),
    the second tensor of a ``TensorDataset``, and goes through ``Subset`` and ``ConcatDataset``.
    ``None`` when none is found or it does not have one integer per sample.

    Example:
        >>> dataset_labels(TensorDataset(torch.zeros(3, 1, 2, 2), torch.tensor([2, 0, 1])))
        tensor([2, 0, 1])
    """
    found: torch.Tensor | None = None
    if isinstance(dataset, Subset):
        base = dataset_labels(dataset.dataset)
        found = None if base is None else base[torch.as_tensor(list(dataset.indices))]
    elif isinstance(dataset, ConcatDataset):
        parts = [dataset_labels(part) for part in dataset.datasets]
        found = torch.cat(parts) if parts and all(p is not None for p in parts) else None  # type: ignore[arg-type]
    elif isinstance(dataset, TensorDataset) and len(dataset.tensors) > 1:
        found = dataset.tensors[1]
    else:
        for attribute in ("targets", "labels"):
            value = getattr(dataset, attribute, None)
            if value is not None:
                try:
                    found = torch.as_tensor(value)
                except (TypeError, ValueError, RuntimeError):
                    found = None
                break
    if (
        found is None
        or found.ndim != 1
        or found.is_floating_point()
        or found.is_complex()
        or len(found) != len(dataset)
    ):
        return None
    return found.long()


class Reservoir:
    """A uniform sample of fixed size from a stream (Algorithm R), with its own generator.

    Example:
        >>> reservoir = Reservoir(size=2, seed=0)
        >>> [reservoir.offer(3), reservoir.offer(3)]  # rows of each batch to keep, and where
        [[(0, 0), (1, 1)], [(2, 0)]]

    Args:
        size: How many items to keep.
        seed: Seed of the generator (the same stream gives the same sample).
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        if size < 1:
            raise ValueError(f"size: expected an integer >= 1, got {size!r}")
        self.size = size
        self.seen = 0
        self._generator = torch.Generator().manual_seed(seed)

    def offer(self, count: int) -> list[tuple[int, int]]:
        """Take the next ``count`` items of the stream; returns ``(row, slot)`` pairs: row
        ``row`` of them goes to slot ``slot`` (a later row may replace an earlier one)."""
        kept: list[tuple[int, int]] = []
        for row in range(count):
            self.seen += 1
            if self.seen <= self.size:
                kept.append((row, self.seen - 1))
                continue
            slot = int(torch.randint(self.seen, (1,), generator=self._generator))
            if slot < self.size:
                kept.append((row, slot))
        return kept
