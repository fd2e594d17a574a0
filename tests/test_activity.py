"""Per-channel activity, sparsity and dead channels, on values computed by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_convviz.functional import (
    capture_activations,
    channel_positive_counts,
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
