"""Streaming top-k per channel equals a full sort, with ties, batching and ranks."""

from __future__ import annotations

import torch

from lightning_convviz.functional import (
    TopK,
    channel_maxima,
    take_slots,
    topk_merge,
    topk_update,
)


def brute_force(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel, the k best (value, id) pairs: larger value first, then smaller id."""
    best_values, best_ids = [], []
    for channel in values.T.tolist():
        ranked = sorted(range(len(channel)), key=lambda i: (-channel[i], i))[:k]
        best_values.append([channel[i] for i in ranked])
        best_ids.append(ranked)
    return torch.tensor(best_values), torch.tensor(best_ids)


def maps_with_ties(samples: int, channels: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    maps = torch.randint(0, 4, (samples, channels, 3, 5), generator=generator).float()
    return maps


def stream(maps: torch.Tensor, ids: torch.Tensor, k: int, batch: int) -> tuple[TopK, torch.Tensor]:
    """Run the update over batches, carrying each sample's own id as payload."""
    state = TopK.empty(maps.shape[1], k)
    payload = torch.full((maps.shape[1], k), -1)
    for start in range(0, len(maps), batch):
        chunk = maps[start : start + batch]
        state, order = topk_update(state, channel_maxima(chunk), ids[start : start + batch])
        batch_payload = ids[start : start + batch][None, :].expand(maps.shape[1], -1)
        payload = take_slots([payload, batch_payload], order)
    return state, payload


def test_streaming_equals_a_full_sort_with_ties() -> None:
    maps = maps_with_ties(50, 3)
    ids = torch.arange(50)
    expected_values, expected_ids = brute_force(maps.flatten(2).max(dim=2).values, k=6)
    for batch in (1, 7, 50):
        state, payload = stream(maps, ids, k=6, batch=batch)
        assert torch.equal(state.values, expected_values)
        assert torch.equal(state.ids, expected_ids)
        assert torch.equal(payload, expected_ids)  # the payload travels with its entry


def test_positions_point_at_the_maximum() -> None:
    maps = torch.randn(10, 2, 4, 6)
    state, _ = stream(maps, torch.arange(10), k=3, batch=4)
    for channel in range(2):
        for slot in range(3):
            sample = int(state.ids[channel, slot])
            value = maps[sample, channel, state.rows[channel, slot], state.columns[channel, slot]]
            assert value == state.values[channel, slot]


def test_two_ranks_merged_equal_one_process() -> None:
    maps = maps_with_ties(40, 4, seed=3)
    ids = torch.arange(40)
    rank_states = []
    for rank in range(2):  # DistributedSampler-like interleaving
        mine = ids[rank::2]
        rank_states.append(stream(maps[mine], mine, k=5, batch=6)[0])
    merged, order = topk_merge(rank_states)
    expected_values, expected_ids = brute_force(maps.flatten(2).max(dim=2).values, k=5)
    assert torch.equal(merged.values, expected_values)
    assert torch.equal(merged.ids, expected_ids)
    assert torch.equal(take_slots([s.ids for s in rank_states], order), expected_ids)


def test_fewer_samples_than_k_leave_empty_slots_and_nan_never_wins() -> None:
    maps = torch.tensor([[[[1.0]]], [[[float("nan")]]]])
    state, _ = stream(maps, torch.arange(2), k=3, batch=2)
    assert state.ids.tolist() == [[0, 1, -1]]
    assert state.values[0, 0] == 1.0 and torch.isinf(state.values[0, 1:]).all()
