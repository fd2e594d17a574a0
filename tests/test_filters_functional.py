"""Noise score and relative change of filters."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_convviz.functional import filter_noise_score, relative_change


def test_ramp_and_checkerboard_by_hand() -> None:
    # 3x3 ramp: 12 neighbour pairs, 6 with squared difference 1 -> 0.5; unbiased variance 0.75
    ramp = torch.tensor([[0.0, 1.0, 2.0]] * 3).reshape(1, 1, 3, 3)
    assert filter_noise_score(ramp).item() == pytest.approx(0.5 / 1.5)
    # checkerboard of +-1: every pair differs by 2 -> 4; unbiased variance 10/9
    checker = (torch.arange(9).reshape(3, 3) % 2 * -2.0 + 1.0).reshape(1, 1, 3, 3)
    assert filter_noise_score(checker).item() == pytest.approx(4.0 / (20.0 / 9.0))


@pytest.mark.parametrize("kernel", [3, 5, 7])
def test_smooth_kernels_read_lower_than_random(kernel: int) -> None:
    generator = torch.Generator().manual_seed(0)
    random_score = filter_noise_score(torch.randn(64, 16, kernel, kernel, generator=generator))
    assert 0.9 < random_score.item() < 1.1
    axis = torch.linspace(-1, 1, kernel)
    blob = torch.exp(-(axis[:, None] ** 2 + axis[None] ** 2))
    edge = axis[None].expand(kernel, kernel)
    smooth = torch.stack([blob, edge, -blob, edge.T]).unsqueeze(1)  # 4 x 1 x k x k
    assert filter_noise_score(smooth).item() < 0.5 * random_score.item()


def test_score_is_scale_invariant_and_nan_for_1x1() -> None:
    weight = torch.randn(8, 4, 3, 3)
    torch.testing.assert_close(filter_noise_score(weight), filter_noise_score(weight * 1e-3))
    assert math.isnan(filter_noise_score(torch.randn(8, 4, 1, 1)).item())


def test_relative_change_by_hand() -> None:
    initial = torch.tensor([3.0, 4.0])
    assert relative_change(torch.tensor([3.0, 4.0]), initial).item() == 0.0
    assert relative_change(torch.tensor([6.0, 8.0]), initial).item() == pytest.approx(1.0)
