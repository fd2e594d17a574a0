"""Measures of convolution filters: how noisy, how oriented and how coloured they are, how far
they moved.

Pure torch: no Lightning, no logging.
"""

from __future__ import annotations

import torch

__all__ = [
    "filter_chromatic_share",
    "filter_noise_score",
    "filter_orientedness",
    "relative_change",
]


def filter_noise_score(weight: torch.Tensor) -> torch.Tensor:
    """How rough a layer's kernels are, on a scale where white noise reads 1.

    For each 2-D (or 1-D, 3-D) kernel slice ``weight[o, i]`` the score compares the squared
    difference between spatially neighbouring taps with the slice's variance (Geary's ratio):

    ``score = sum_slices mean_neighbours (a - b)^2 / (2 * sum_slices var(slice))``

    with the unbiased variance. Independent random taps read about 1.0 whatever the kernel size
    (3x3 included, where a frequency measure has no room between "smooth" and "high"), smooth
    kernels (blobs, ramps, Gabor-like edges) read well below 1, and alternating patterns such
    as a checkerboard read above 1 (at most about 2). Summing numerator and denominator over
    slices weights each slice by its energy, so near-constant slices cannot dominate.

    Example:
        >>> ramp = torch.tensor([[0.0, 1.0, 2.0]] * 3).reshape(1, 1, 3, 3)
        >>> filter_noise_score(ramp)
        tensor(0.3333)

    Args:
        weight: Convolution weight ``out x in x k1 [x k2 [x k3]]``.

    Returns:
        A scalar tensor; NaN when the kernels have a single tap (1x1 convolutions) or are all
        constant.
    """
    if weight.ndim < 3:
        raise ValueError(f"weight: expected out x in x kernel..., got shape {tuple(weight.shape)}")
    w = weight.detach().double().flatten(0, 1)  # slices x k1 x k2 ...
    taps = w[0].numel()
    if taps < 2:
        return torch.tensor(float("nan"), dtype=weight.dtype, device=weight.device)
    squared_diffs = w.new_zeros(())
    pairs = 0
    for axis in range(1, w.ndim):
        if w.shape[axis] > 1:
            diffs = torch.diff(w, dim=axis)
            squared_diffs = squared_diffs + diffs.pow(2).sum()
            pairs += diffs[0].numel()
    variance = w.flatten(1).var(dim=1, unbiased=True).sum()
    score: torch.Tensor = (squared_diffs / pairs) / (2.0 * variance)
    return score.to(weight.dtype)


def relative_change(current: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    """``||current - initial|| / ||initial||`` (Frobenius norms), as a float scalar tensor."""
    initial64 = initial.detach().double()
    distance = torch.linalg.vector_norm(current.detach().double() - initial64)
    change: torch.Tensor = (distance / torch.linalg.vector_norm(initial64)).float()
    return change


def filter_orientedness(weight: torch.Tensor) -> torch.Tensor:
    """How much of each filter's spatial structure runs along one orientation, from 0 to 1.

    Each filter's power spectrum (its input channels' 2-D DFTs, each slice's mean removed
    first, zero-padded to a fine odd grid, 17 x 17 or 4 times the kernel plus one, powers summed
    over the input channels) is read as a distribution over orientations; the score is the
    length of its mean resultant of doubled angles (one minus the circular variance used for
    orientation tuning in neuroscience):

    ``score = |sum_f P(f) exp(2i theta(f))| / sum_f P(f)`` over the non-zero frequencies ``f``.

    Edges and gratings read high whatever their angle (a Gabor filter on 7 x 7 taps reads
    0.77 to 0.78 at every angle, a windowed step edge 0.62 to 0.64), isotropic blobs and rings
    0. The padded grid is symmetric under a quarter turn, so isotropic noise reads near 0 on
    average, but not 0 on a few taps: independent random 3 x 3, 5 x 5 and 7 x 7 filters read
    about 0.17, 0.12 and 0.09 on average, so compare with random filters of the same shape.

    Example:
        >>> stripes = torch.tensor([[1.0, -1.0, 1.0, -1.0]] * 4).reshape(1, 1, 4, 4)
        >>> filter_orientedness(stripes)  # 4 taps: the stripes end abruptly
        tensor([0.8304])

    Args:
        weight: Convolution weight ``out x in x k1 x k2`` (2-D kernels).

    Returns:
        One score per output channel; NaN for a filter without spatial structure (constant
        slices, 1 x 1 kernels).
    """
    if weight.ndim != 4:
        raise ValueError(f"weight: expected out x in x k1 x k2, got shape {tuple(weight.shape)}")
    w = weight.detach().double()
    w = w - w.mean(dim=(2, 3), keepdim=True)
    # an odd side: no Nyquist line, so the frequency grid is symmetric under a quarter turn
    side = max(16, 4 * max(w.shape[2], w.shape[3])) + 1
    chunk = max(1, 2**22 // (w.shape[1] * side * side))  # a few tens of MB at a time
    power = torch.cat(
        [
            torch.fft.fft2(part, s=(side, side)).abs().pow(2).sum(dim=1)
            for part in torch.split(w, chunk)
        ]
    )  # out x side x side
    frequencies = torch.fft.fftfreq(side, dtype=torch.float64, device=w.device)
    fy, fx = frequencies[:, None].expand(side, side), frequencies[None, :].expand(side, side)
    doubled = 2.0 * torch.atan2(fy, fx)
    rotation = torch.polar(torch.ones_like(doubled), doubled)
    rotation[0, 0] = 0.0  # the mean, removed above, has no orientation
    total = power.sum(dim=(1, 2))
    resultant = (power * rotation).sum(dim=(1, 2)).abs()
    score = torch.where(total > 1e-12 * total.max().clamp_min(1e-300), resultant / total, torch.nan)
    return score.to(weight.dtype if weight.is_floating_point() else torch.float32)


def filter_chromatic_share(weight: torch.Tensor) -> torch.Tensor:
    """Share of each filter's energy that differs between its input channels, from 0 to 1.

    ``sum (w - mean_channels(w))^2 / sum w^2`` per output channel: 0 for a filter that weighs
    every input channel alike (a grey edge or blob on an RGB image), 1 for one whose channels
    cancel (a red-green opponent). Independent random taps on ``C`` channels read about
    ``(C - 1) / C`` (2/3 on RGB).

    Example:
        >>> grey = torch.ones(1, 3, 3, 3)
        >>> red_green = grey * torch.tensor([1.0, -1.0, 0.0])[:, None, None]
        >>> filter_chromatic_share(torch.cat([grey, red_green]))
        tensor([0., 1.])

    Args:
        weight: Convolution weight ``out x in x k...`` with at least 2 input channels.

    Returns:
        One share per output channel; NaN for an all-zero filter.
    """
    if weight.ndim < 3 or weight.shape[1] < 2:
        raise ValueError(
            f"weight: expected out x in x kernel... with in >= 2, got shape {tuple(weight.shape)}"
        )
    w = weight.detach().double().flatten(2)
    chromatic = (w - w.mean(dim=1, keepdim=True)).pow(2).sum(dim=(1, 2))
    total = w.pow(2).sum(dim=(1, 2))
    share = torch.where(total > 0, chromatic / total.clamp_min(1e-300), torch.nan)
    return share.to(weight.dtype if weight.is_floating_point() else torch.float32)
