"""Image attributes and performance per attribute bin (the ImageNet challenge's analysis).

Built-in attributes take images ``N x C x H x W`` and return one value per image; any function
with that signature serves. :func:`binned_performance` splits the values into quantile bins
and reports accuracy, mean true-class probability and the sample count per bin. Pure torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from lightning_convviz.functional.arguments import check_int

__all__ = [
    "BUILTIN_ATTRIBUTES",
    "Attribute",
    "BinnedPerformance",
    "binned_performance",
    "brightness",
    "contrast",
    "evaluate_attribute",
    "foreground_fraction",
]

#: An attribute: images ``N x C x H x W`` to one value per image ``(N,)``.
Attribute = Callable[[torch.Tensor], torch.Tensor]


def brightness(images: torch.Tensor) -> torch.Tensor:
    """Mean pixel value per image."""
    return images.detach().float().flatten(1).mean(dim=1)


def contrast(images: torch.Tensor) -> torch.Tensor:
    """Standard deviation of the pixel values per image."""
    return images.detach().float().flatten(1).std(dim=1)


def foreground_fraction(images: torch.Tensor) -> torch.Tensor:
    """Share of pixels far from the border colour: how much of the image the object covers.

    The border colour is the median of the outermost pixels, per channel; a pixel is foreground
    when it differs from it by more than a quarter of the image's value range in any channel.

    Example:
        >>> image = torch.zeros(1, 1, 8, 8)
        >>> image[:, :, 2:6, 2:6] = 1.0
        >>> foreground_fraction(image)
        tensor([0.2500])
    """
    images = images.detach().float()
    border = torch.cat(
        [
            images[:, :, 0, :],
            images[:, :, -1, :],
            images[:, :, :, 0],
            images[:, :, :, -1],
        ],
        dim=2,
    )
    background = border.median(dim=2).values[:, :, None, None]
    flat = images.flatten(1)
    span = (flat.max(dim=1).values - flat.min(dim=1).values)[:, None, None, None]
    far = ((images - background).abs() > 0.25 * span.clamp_min(1e-12)).any(dim=1)
    return far.float().flatten(1).mean(dim=1)


#: The attributes :class:`~lightning_convviz.AttributePerformanceMonitor` measures by default.
BUILTIN_ATTRIBUTES: dict[str, Attribute] = {
    "brightness": brightness,
    "contrast": contrast,
    "foreground": foreground_fraction,
}


def evaluate_attribute(name: str, function: Attribute, images: torch.Tensor) -> torch.Tensor:
    """``function(images)`` as a float ``(N,)`` tensor, or a ``ValueError`` naming ``name``."""
    try:
        values = torch.as_tensor(function(images)).detach().float().flatten()
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(
            f"attributes[{name!r}]: the function failed on the images: {error}"
        ) from None
    if values.numel() != len(images):
        raise ValueError(
            f"attributes[{name!r}]: expected one value per image ({len(images)}), got "
            f"{values.numel()}"
        )
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"attributes[{name!r}]: the function returned NaN or infinite values")
    return values.to(images.device)


class BinnedPerformance(NamedTuple):
    """Performance per quantile bin of an attribute."""

    #: ``(bins + 1,)`` bin edges (quantiles of the values; bins with equal edges merged).
    edges: torch.Tensor
    #: ``(bins,)`` accuracy per bin.
    accuracy: torch.Tensor
    #: ``(bins,)`` mean probability of the true class per bin.
    true_probability: torch.Tensor
    #: ``(bins,)`` samples per bin.
    counts: torch.Tensor


def binned_performance(
    values: torch.Tensor,
    correct: torch.Tensor,
    true_probability: torch.Tensor,
    bins: int = 5,
) -> BinnedPerformance:
    """Accuracy and mean true-class probability per quantile bin of ``values``.

    Example:
        >>> values = torch.arange(8.0)
        >>> result = binned_performance(values, values >= 4, torch.full((8,), 0.5), bins=2)
        >>> result.accuracy, result.counts
        (tensor([0., 1.]), tensor([4, 4]))
    """
    check_int("bins", bins)
    values = values.detach().float().cpu()
    edges = torch.unique(torch.quantile(values, torch.linspace(0, 1, bins + 1)))
    if len(edges) == 1:
        edges = torch.cat([edges, edges])
    index = (torch.bucketize(values, edges[1:-1], right=True)).clamp(max=len(edges) - 2)
    count = len(edges) - 1
    counts = torch.bincount(index, minlength=count)
    hits = torch.bincount(index, weights=correct.float().cpu(), minlength=count)
    probability = torch.bincount(index, weights=true_probability.float().cpu(), minlength=count)
    safe = counts.clamp_min(1).float()
    return BinnedPerformance(edges, hits / safe, probability / safe, counts)
