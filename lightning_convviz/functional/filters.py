"""Measures of convolution filters: how noisy they are and how far they moved.

Pure torch: no Lightning, no logging.
"""

from __future__ import annotations

import torch

__all__ = ["filter_noise_score", "relative_change"]


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
