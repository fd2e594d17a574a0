"""Streaming top-k per channel: keep the k strongest samples seen so far, merge partial results.

torchmetrics-style split: :func:`channel_maxima` measures a batch, :func:`topk_update` folds it
into the running state, :func:`topk_merge` joins states (from DDP ranks). Memory is ``k`` entries
per channel, whatever the number of samples. Both return, beside the new state, which entry of
the inputs fills each slot, so a caller can carry data along (image crops) and compute it only
for the entries that win. Order is total and deterministic: larger value
first, and among equal values the smaller sample id, so the result equals a full sort of all
samples (ties included) whatever the batching or the split over ranks.

Pure torch: no Lightning, no logging.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = [
    "ChannelMaxima",
    "TopK",
    "channel_maxima",
    "take_slots",
    "topk_merge",
    "topk_update",
]


class ChannelMaxima(NamedTuple):
    """Per sample and channel: the largest activation and where it is."""

    #: ``(N, C)`` largest value over the feature map.
    values: torch.Tensor
    #: ``(N, C)`` its row.
    rows: torch.Tensor
    #: ``(N, C)`` its column.
    columns: torch.Tensor


class TopK(NamedTuple):
    """The best ``k`` samples per channel, best first; empty slots have value ``-inf``, id -1."""

    values: torch.Tensor  # (C, k)
    ids: torch.Tensor  # (C, k) int64 sample ids
    rows: torch.Tensor  # (C, k) where the maximum is
    columns: torch.Tensor  # (C, k)

    @classmethod
    def empty(cls, channels: int, k: int, device: torch.device | str = "cpu") -> TopK:
        """A state with no sample yet."""
        return cls(
            values=torch.full((channels, k), -torch.inf, device=device),
            ids=torch.full((channels, k), -1, dtype=torch.long, device=device),
            rows=torch.zeros((channels, k), dtype=torch.long, device=device),
            columns=torch.zeros((channels, k), dtype=torch.long, device=device),
        )


def channel_maxima(activation: torch.Tensor) -> ChannelMaxima:
    """Each channel's maximum over the feature map of each sample, and its position.

    NaN reads as ``-inf`` (never a winner).

    Example:
        >>> activation = torch.zeros(1, 2, 2, 3)
        >>> activation[0, 1, 1, 2] = 5.0
        >>> channel_maxima(activation)
        ChannelMaxima(values=tensor([[0., 5.]]), rows=tensor([[0, 1]]), columns=tensor([[0, 2]]))
    """
    if activation.ndim != 4:
        raise ValueError(f"activation: expected N x C x H x W, got {tuple(activation.shape)}")
    width = activation.shape[3]
    flat = torch.nan_to_num(activation.detach().float().flatten(2), nan=-torch.inf)
    values, position = flat.max(dim=2)
    return ChannelMaxima(values, position // width, position % width)


def topk_update(state: TopK, maxima: ChannelMaxima, ids: torch.Tensor) -> tuple[TopK, torch.Tensor]:
    """Fold a batch into ``state``.

    Args:
        state: The running state, ``k`` slots per channel.
        maxima: The batch's :func:`channel_maxima`, ``(N, C)``.
        ids: ``(N,)`` unique sample ids (e.g. the position in the data set).

    Returns:
        The new state, and ``(C, k)`` sources: ``j < k`` means the state's slot ``j``,
        ``j >= k`` the batch's sample ``j - k``.
    """
    channels = maxima.values.shape[1]
    batch = TopK(
        values=maxima.values.T.to(state.values.device),
        ids=ids.to(state.ids.device)[None, :].expand(channels, -1),
        rows=maxima.rows.T.to(state.rows.device),
        columns=maxima.columns.T.to(state.columns.device),
    )
    return topk_merge([state, batch], k=state.values.shape[1])


def topk_merge(states: list[TopK], k: int | None = None) -> tuple[TopK, torch.Tensor]:
    """The best ``k`` (default: the first state's) entries per channel of all ``states``.

    Returns:
        The merged state, and ``(C, k)`` sources: indices into the states' slots laid end to
        end (see :func:`take_slots`).
    """
    if not states:
        raise ValueError("states: expected at least one state")
    k = k or states[0].values.shape[1]
    joined = TopK(*(torch.cat(parts, dim=1) for parts in zip(*states, strict=True)))
    # among equal values the smaller id first: sort by id, then stably by value, descending
    ids = torch.where(joined.ids < 0, torch.iinfo(torch.long).max, joined.ids)
    by_id = ids.argsort(dim=1, stable=True)
    by_value = joined.values.gather(1, by_id).argsort(dim=1, descending=True, stable=True)
    order = by_id.gather(1, by_value)[:, :k]
    return TopK(*(part.gather(1, order) for part in joined)), order


def take_slots(payloads: list[torch.Tensor], order: torch.Tensor) -> torch.Tensor:
    """Reorder per-slot data ``(C, slots, *shape)`` laid end to end like :func:`topk_merge`."""
    joined = torch.cat(payloads, dim=1)
    index = order.view(*order.shape, *([1] * (joined.ndim - 2))).expand(-1, -1, *joined.shape[2:])
    return joined.gather(1, index.to(joined.device))
