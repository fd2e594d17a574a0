"""Noise score, orientedness, chromatic share and relative change of filters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_convviz.functional import (
    filter_chromatic_share,
    filter_noise_score,
    filter_orientedness,
    relative_change,
)


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


def _gabor(angle_degrees: float, side: int = 7, period: float = 5.0, phase: float = 0.0):
    centre = (side - 1) / 2
    y, x = torch.meshgrid(torch.arange(side) - centre, torch.arange(side) - centre, indexing="ij")
    theta = math.radians(angle_degrees)
    along = x * math.cos(theta) + y * math.sin(theta)
    envelope = torch.exp(-(x**2 + y**2) / 6.0)
    return (envelope * torch.cos(2 * math.pi * along / period + phase)).double()


def test_orientedness_equals_a_direct_fourier_sum() -> None:
    # the definition computed the slow way: the DFT as a sum over taps at each frequency
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(3, 2, 5, 4, generator=generator).double()
    side = 4 * 5 + 1
    frequencies = np.fft.fftfreq(side)
    expected = []
    for kernel in weight.numpy():
        kernel = kernel - kernel.mean(axis=(1, 2), keepdims=True)
        total, resultant = 0.0, 0.0j
        for fy in frequencies:
            for fx in frequencies:
                if fy == 0 and fx == 0:
                    continue
                ys, xs = np.meshgrid(np.arange(5), np.arange(4), indexing="ij")
                phase = np.exp(-2j * np.pi * (fy * ys + fx * xs))
                power = sum(abs((k * phase).sum()) ** 2 for k in kernel)
                total += power
                resultant += power * np.exp(2j * np.arctan2(fy, fx))
        expected.append(abs(resultant) / total)
    torch.testing.assert_close(filter_orientedness(weight), torch.tensor(expected).double())


def test_orientedness_is_the_same_at_every_angle_and_zero_for_a_round_blob() -> None:
    for phase in (0.0, math.pi / 2):  # even (a bar) and odd (an edge)
        scores = torch.stack(
            [filter_orientedness(_gabor(a, phase=phase)[None, None]) for a in range(0, 180, 15)]
        )
        assert scores.min() > 0.6, scores.flatten()
        assert scores.max() - scores.min() < 0.04, scores.flatten()
    blob = _gabor(0.0, period=1e9)  # the envelope alone
    ring = blob - _gabor(0.0, period=1e9, side=7).pow(0.5)
    assert filter_orientedness(torch.stack([blob, ring])[:, None]).abs().max() < 1e-9


def test_orientedness_ignores_scale_mean_quarter_turns_and_flips() -> None:
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(16, 3, 5, 5, generator=generator)
    scores = filter_orientedness(weight)
    for same in (
        weight * 1e-4,
        weight + 3.0,
        weight.rot90(1, dims=(2, 3)),
        weight.flip(-1),
        weight.flip(-2),
    ):
        torch.testing.assert_close(filter_orientedness(same), scores, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("side", "low", "high"), [(3, 0.13, 0.21), (5, 0.09, 0.15), (7, 0.07, 0.11)]
)
def test_random_filters_read_low_and_well_below_a_gabor(side: int, low: float, high: float) -> None:
    generator = torch.Generator().manual_seed(2)
    mean = filter_orientedness(torch.randn(2000, 3, side, side, generator=generator)).mean()
    assert low < mean.item() < high
    assert filter_orientedness(_gabor(30.0)[None, None]).item() > 4 * mean.item()


def test_orientedness_of_flat_filters_is_nan_and_bad_shapes_fail() -> None:
    scores = filter_orientedness(
        torch.cat([torch.ones(1, 1, 3, 3), _gabor(0.0)[None, None, 2:5, 2:5].float()])
    )
    assert math.isnan(scores[0].item()) and not math.isnan(scores[1].item())
    assert math.isnan(filter_orientedness(torch.randn(2, 3, 1, 1))[0].item())
    with pytest.raises(ValueError, match="weight"):
        filter_orientedness(torch.randn(2, 3, 5))


def test_chromatic_share_by_hand_and_of_random_filters() -> None:
    grey = torch.randn(4, 1, 5, 5).expand(4, 3, 5, 5)
    torch.testing.assert_close(filter_chromatic_share(grey), torch.zeros(4), atol=1e-7, rtol=0)
    opponent = torch.randn(1, 1, 5, 5) * torch.tensor([1.0, -1.0, 0.0])[None, :, None, None]
    torch.testing.assert_close(filter_chromatic_share(opponent), torch.ones(1))
    # red only: mean (r/3, r/3, r/3) -> chromatic (2r/3, -r/3, -r/3): 6/9 of r^2
    red = torch.randn(1, 1, 5, 5) * torch.tensor([1.0, 0.0, 0.0])[None, :, None, None]
    torch.testing.assert_close(filter_chromatic_share(red), torch.tensor([2 / 3]))
    generator = torch.Generator().manual_seed(3)
    mean = filter_chromatic_share(torch.randn(4000, 3, 5, 5, generator=generator)).mean().item()
    assert mean == pytest.approx(2 / 3, abs=0.01)
    assert math.isnan(filter_chromatic_share(torch.zeros(1, 3, 3, 3))[0].item())
    with pytest.raises(ValueError, match="in >= 2"):
        filter_chromatic_share(torch.randn(2, 1, 3, 3))
