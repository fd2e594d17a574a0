"""Per-channel activity, sparsity and dead channels, on values computed by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_convviz.functional import (
    accumulate_positive_counts,
    capture_activations,
    channel_positive_counts,
    channel_positive_presence,
    dead_channels,
    dead_fraction,
    sparsity,
)


def test_counts_by_hand() -> None:
    activation = torch.tensor(
        [[[[1.0, 0.0], [2.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [[-1.0, 3.0], [0.0, 0.0]]]]
    )  # 1 x 3 x 2 x 2
    counts = channel_positive_counts(activation)
    assert counts.tolist() == [2, 0, 1]
    assert dead_channels(counts).tolist() == [False, True, False]
    assert dead_fraction(counts).item() == pytest.approx(1 / 3)
    assert sparsity(counts, 4).item() == pytest.approx(1 - 3 / 12)


def test_linear_features_are_counted_per_column() -> None:
    assert channel_positive_counts(torch.tensor([[1.0, -1.0], [2.0, 0.0]])).tolist() == [2, 0]
    with pytest.raises(ValueError, match="N x C"):
        channel_positive_counts(torch.ones(3))


def test_conv_with_bias_minus_1e3_is_100_percent_dead() -> None:
    conv = nn.Conv2d(3, 5, 3)
    with torch.no_grad():
        conv.bias.fill_(-1e3)
    model = nn.Sequential(conv, nn.ReLU(), nn.Conv2d(5, 4, 3), nn.ReLU())
    healthy = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    x = torch.randn(8, 3, 12, 12)
    with capture_activations(model) as acts:
        model(x)
    counts = channel_positive_counts(acts["1"])
    assert dead_fraction(counts).item() == 1.0
    assert sparsity(counts, acts["1"].numel() // 5).item() == 1.0
    with capture_activations(healthy) as acts:
        healthy(x)
    assert dead_fraction(channel_positive_counts(acts["1"])).item() == 0.0


def test_counts_agree_for_contiguous_and_channels_last_layouts() -> None:
    activation = torch.randn(4, 6, 5, 7)
    channels_last = activation.to(memory_format=torch.channels_last)
    expected = (activation > 0).sum(dim=(0, 2, 3))
    assert torch.equal(channel_positive_counts(activation), expected)
    assert torch.equal(channel_positive_counts(channels_last), expected)
    assert channel_positive_counts(activation).dtype == torch.int64


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_counts_equal_the_plain_definition_in_every_dtype(dtype: torch.dtype) -> None:
    activation = torch.randn(16, 5, 9, 11).relu().to(dtype) - 0.3 * torch.rand(1).item()
    activation[0, 1, 2, 3] = float("inf")
    activation[1, 2, 0, 0] = float("-inf")
    activation[2, 3] = -0.0
    expected = (activation > 0).sum(dim=(0, 2, 3))
    assert torch.equal(channel_positive_counts(activation), expected)


def test_nan_is_not_positive() -> None:
    activation = torch.ones(3, 2, 2, 2)
    activation[1, 0, 0, 0] = float("nan")
    assert channel_positive_counts(activation).tolist() == [11, 12]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_presence_is_any_positive_element_in_every_dtype_and_layout(dtype: torch.dtype) -> None:
    activation = torch.randn(8, 6, 5, 7).relu().to(dtype)
    activation[:, 2] = 0.0  # dead
    activation[:, 4] = -1.0  # dead
    activation[3, 5] = float("-inf")
    activation[:, 0] = -0.0
    activation[5, 0, 1, 1] = float("inf")  # one positive element keeps it alive
    expected = (activation > 0).any(dim=0).flatten(1).any(dim=1).to(torch.int64)
    assert channel_positive_presence(activation).tolist() == expected.tolist()
    channels_last = activation.to(memory_format=torch.channels_last)
    assert torch.equal(channel_positive_presence(channels_last), expected)
    assert expected.tolist() == [1, 1, 0, 1, 0, 1]


def test_presence_calls_a_channel_with_nan_alive_and_needs_n_by_c() -> None:
    activation = -torch.ones(3, 2, 2, 2)
    activation[1, 0, 0, 0] = float("nan")
    assert channel_positive_presence(activation).tolist() == [1, 0]
    with pytest.raises(ValueError, match="N x C"):
        channel_positive_presence(torch.ones(3))


def test_presence_only_accumulation_finds_the_same_dead_channels() -> None:
    batches = [torch.randn(4, 5, 3, 3) for _ in range(3)]
    for batch in batches:
        batch[:, 1] = -batch[:, 1].abs()  # never positive
        batch[:, 3] = 0.0
    batches[2][0, 3, 0, 0] = 0.5  # positive once, in the last batch
    exact: dict[str, tuple[torch.Tensor, int]] = {}
    present: dict[str, tuple[torch.Tensor, int]] = {}
    for batch in batches:
        accumulate_positive_counts(exact, "relu", batch)
        accumulate_positive_counts(present, "relu", batch, presence_only=True)
    assert dead_channels(present["relu"][0]).tolist() == dead_channels(exact["relu"][0]).tolist()
    assert dead_channels(present["relu"][0]).tolist() == [False, True, False, False, False]
    assert present["relu"][1] == 3  # one element per batch
