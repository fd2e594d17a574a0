"""The training doctor's tensor signals against direct computations (torch's own moments,
cross-entropy and norms) and at their edges."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_convviz.functional.run_signals import (
    channel_moments,
    channel_sums,
    classification_sums,
    parameters_outside_optimizers,
    relative_gradient_norms,
    saturated_share,
    saturating_layers,
)


def test_channel_moments_add_over_batches_and_match_torch() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(10, 3, 8, 8, generator=generator, dtype=torch.float64) * 255
    sums = channel_sums(images[:4]) + channel_sums(images[4:])
    mean, std = channel_moments(sums)
    expected_mean = images.mean(dim=(0, 2, 3))
    expected_std = images.transpose(0, 1).reshape(3, -1).std(dim=1, unbiased=False)
    assert mean == pytest.approx(expected_mean.tolist(), rel=1e-9)
    assert std == pytest.approx(expected_std.tolist(), rel=1e-6)


def test_classification_sums_match_cross_entropy_accuracy_and_label_counts() -> None:
    generator = torch.Generator().manual_seed(1)
    scores = torch.randn(32, 5, generator=generator) * 3
    labels = torch.randint(0, 5, (32,), generator=generator)
    sums = classification_sums(scores[:20], labels[:20], 5) + classification_sums(
        scores[20:], labels[20:], 5
    )
    count, correct, loss_sum, square_sum = sums[:4].tolist()
    assert count == 32
    assert correct == float((scores.argmax(1) == labels).sum())
    assert loss_sum / count == pytest.approx(float(F.cross_entropy(scores, labels)), rel=1e-6)
    assert math.sqrt(square_sum / count) == pytest.approx(float(scores.square().mean().sqrt()))
    assert sums[4:].tolist() == torch.bincount(labels, minlength=5).double().tolist()


def test_saturated_share_counts_values_near_either_end() -> None:
    sigmoid = torch.sigmoid(torch.tensor([-10.0, -1.0, 0.0, 1.0, 10.0]))
    assert float(saturated_share(sigmoid, 0.0, 1.0)) == pytest.approx(0.4)
    tanh = torch.tanh(torch.tensor([5.0, -5.0, 0.1, 0.2]))
    assert float(saturated_share(tanh, -1.0, 1.0)) == pytest.approx(0.5)


def test_saturating_layers_are_found_by_type() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.Sigmoid(), nn.Conv2d(2, 2, 3), nn.Tanh(), nn.ReLU()
    )
    assert list(saturating_layers(model)) == ["1", "3"]


def test_relative_gradient_norms_and_a_zero_weight() -> None:
    grads = [torch.full((3,), 1.0), torch.ones(2)]
    weights = [torch.full((3,), 2.0), torch.zeros(2)]
    ratio, zero = relative_gradient_norms(grads, weights).tolist()
    assert ratio == pytest.approx(0.5) and math.isnan(zero)
    assert relative_gradient_norms([], []).numel() == 0


def test_parameters_left_out_of_the_optimizer_but_not_those_frozen_on_purpose() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2))
    model[2].requires_grad_(False)
    optimizer = torch.optim.SGD(model[1].parameters(), lr=0.1)
    assert parameters_outside_optimizers(model, [optimizer]) == ["0.weight", "0.bias"]
    everything = torch.optim.SGD(model.parameters(), lr=0.1)
    assert parameters_outside_optimizers(model, [everything]) == []
