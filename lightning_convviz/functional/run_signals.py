"""The training doctor's signals, measured on tensors: the inputs' channel moments, a batch's
class scores against its labels, saturated activations, gradients relative to their weights,
and trainable parameters that no optimizer holds.

Every function returns tensors on the inputs' device (sums that add over batches and ranks),
so that nothing waits for the device until the doctor reads them at an epoch's end; the checks
of :mod:`~lightning_convviz.functional.run_faults` and
:mod:`~lightning_convviz.functional.layer_faults` read the host numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SATURATING_RANGES",
    "channel_moments",
    "channel_sums",
    "classification_sums",
    "parameters_outside_optimizers",
    "relative_gradient_norms",
    "saturated_share",
    "saturating_layers",
]

#: The output range of each saturating activation module.
SATURATING_RANGES: dict[type[nn.Module], tuple[float, float]] = {
    nn.Sigmoid: (0.0, 1.0),
    nn.Tanh: (-1.0, 1.0),
    nn.Hardsigmoid: (0.0, 1.0),
    nn.Hardtanh: (-1.0, 1.0),
}


def channel_sums(images: torch.Tensor) -> torch.Tensor:
    """Per channel of ``N x C x ...`` images: how many values, their sum and their sum of
    squares, as a ``3 x C`` float64 tensor that adds over batches and ranks.

    Example:
        >>> channel_sums(torch.ones(2, 3, 4, 4))[:, 0].tolist()
        [32.0, 32.0, 32.0]
    """
    values = images.detach().transpose(0, 1).reshape(images.shape[1], -1).double()
    count = torch.full_like(values[:, 0], values.shape[1])
    return torch.stack([count, values.sum(1), values.square().sum(1)])


def channel_moments(sums: torch.Tensor) -> tuple[list[float], list[float]]:
    """Each channel's mean and standard deviation from :func:`channel_sums` (a host copy).

    Example:
        >>> images = torch.tensor([0.0, 2.0, 4.0, 6.0]).reshape(4, 1, 1, 1)
        >>> mean, std = channel_moments(channel_sums(images))
        >>> mean, [round(s, 4) for s in std]
        ([3.0], [2.2361])
    """
    count, total, squares = sums.double().cpu()
    mean = total / count.clamp_min(1)
    variance = (squares / count.clamp_min(1) - mean.square()).clamp_min(0)
    return mean.tolist(), variance.sqrt().tolist()


def classification_sums(scores: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """A batch's samples, correct top classes, summed cross-entropy and summed squared class
    scores, then its label counts per class: one float64 vector of ``4 + classes`` that adds
    over batches and ranks.

    Example:
        >>> scores = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
        >>> sums = classification_sums(scores, torch.tensor([0, 0, 0]), 2)
        >>> sums[[0, 1, 4, 5]].tolist()
        [3.0, 2.0, 3.0, 0.0]
    """
    scores = scores.detach().float()
    labels = labels.to(scores.device).long()
    losses = F.cross_entropy(scores, labels, reduction="sum")
    head = torch.stack(
        [
            torch.tensor(float(len(labels)), device=scores.device),
            (scores.argmax(1) == labels).sum().float(),
            losses,
            scores.square().mean(1).sum(),
        ]
    ).double()
    counts = torch.bincount(labels.clamp(0, classes - 1), minlength=classes).double()
    return torch.cat([head, counts])


def saturated_share(
    output: torch.Tensor, low: float, high: float, margin: float = 0.02
) -> torch.Tensor:
    """The share of ``output``'s values within ``margin`` of the range ``[low, high]``'s ends
    (as a fraction of the range), where the activation's gradient vanishes.

    Example:
        >>> float(saturated_share(torch.tensor([0.001, 0.5, 0.999, 0.3]), 0.0, 1.0))
        0.5
    """
    width = margin * (high - low)
    values = output.detach()
    near = (values <= low + width) | (values >= high - width)
    return near.float().mean()


def saturating_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The saturating activation modules of ``model`` (:data:`SATURATING_RANGES`), by name.

    Example:
        >>> saturating_layers(nn.Sequential(nn.Linear(2, 2), nn.Sigmoid(), nn.ReLU()))
        {'1': Sigmoid()}
    """
    return {
        name: module for name, module in model.named_modules() if type(module) in SATURATING_RANGES
    }


def relative_gradient_norms(
    gradients: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]
) -> torch.Tensor:
    """``||grad|| / ||weight||`` of each pair, as one tensor on the device (NaN where the
    weight is zero).

    Example:
        >>> relative_gradient_norms([torch.ones(4)], [torch.full((4,), 2.0)]).tolist()
        [0.5]
    """
    if not gradients:
        return torch.zeros(0)
    grads = torch.stack([g.detach().float().norm() for g in gradients])
    norms = torch.stack([w.detach().float().norm() for w in weights])
    return torch.where(norms > 0, grads / norms, torch.full_like(norms, math.nan))


def parameters_outside_optimizers(
    model: nn.Module, optimizers: Iterable[torch.optim.Optimizer]
) -> list[str]:
    """Names of ``model``'s parameters that require a gradient but are in no param group of
    any of ``optimizers`` (frozen by mistake: they get gradients and never change).

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
        >>> parameters_outside_optimizers(model, [torch.optim.SGD(model[1].parameters(), 0.1)])
        ['0.weight', '0.bias']
    """
    held = {
        id(p)
        for optimizer in optimizers
        for group in optimizer.param_groups
        for p in group["params"]
    }
    return [name for name, p in model.named_parameters() if p.requires_grad and id(p) not in held]
