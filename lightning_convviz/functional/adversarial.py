"""Fooling a ConvNet (Goodfellow et al., 2015): the fast gradient sign method, the smallest
step that changes the prediction, and targeted "fooling images".

Gradients are taken w.r.t. a copy of the images only, with the model in eval mode and every
``.training`` flag restored; parameters' ``.grad`` stay untouched. Pure torch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lightning_convviz.functional.arguments import (
    Target,
    check_class_scores,
    check_images,
    check_int,
    target_indices,
)
from lightning_convviz.functional.guard import grad_enabled, preserved_state

__all__ = ["FoolingResult", "fgsm", "fgsm_direction", "fooling_image", "min_fooling_epsilon"]

#: Gradient entries at most this large count as zero and are not perturbed (as in Captum).
ZERO_GRADIENT = 1e-6


def _loss_gradient(model: nn.Module, inputs: torch.Tensor, target: Target) -> torch.Tensor:
    """Gradient of the cross-entropy of ``target`` w.r.t. the inputs (summed over images)."""
    with preserved_state(model), grad_enabled():
        images = inputs.detach().clone().requires_grad_(True)
        outputs = check_class_scores(model(images), len(inputs))
        indices = target_indices(target, len(inputs), outputs.shape[1]).to(outputs.device)
        loss = F.cross_entropy(outputs, indices, reduction="sum")
        (gradient,) = torch.autograd.grad(loss, images)
    return gradient


def _check_epsilon(epsilon: float) -> None:
    if isinstance(epsilon, bool) or not epsilon >= 0:
        raise ValueError(f"epsilon: expected a number >= 0, got {epsilon!r}")


def fgsm(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target,
    epsilon: float,
    targeted: bool = False,
    lower_bound: float = float("-inf"),
    upper_bound: float = float("inf"),
) -> torch.Tensor:
    """One fast-gradient-sign step of size ``epsilon`` (L-infinity).

    Untargeted: away from ``target`` (the true class); targeted: towards it. Equals Captum's
    ``FGSM(softmax(model)).perturb(inputs, epsilon, target, targeted=targeted)``.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> moved = fgsm(model, torch.zeros(1, 1, 2, 2), target=0, epsilon=0.1)
        >>> float(moved.abs().max())
        0.1...

    Raises:
        ValueError: Bad ``inputs`` or ``target``, or ``epsilon`` < 0.
    """
    check_images(inputs)
    _check_epsilon(epsilon)
    gradient = _loss_gradient(model, inputs, target)
    step = (-1.0 if targeted else 1.0) * epsilon * gradient.sign()
    moved = torch.where(gradient.abs() > ZERO_GRADIENT, inputs.detach() + step, inputs.detach())
    return moved.clamp(lower_bound, upper_bound)


def fgsm_direction(model: nn.Module, inputs: torch.Tensor, target: Target) -> torch.Tensor:
    """The untargeted FGSM direction: the sign of the loss gradient, 0 where it is about zero.

    ``inputs + epsilon * fgsm_direction(...)`` is :func:`fgsm`'s step of size ``epsilon``.

    Raises:
        ValueError: Bad ``inputs`` or ``target``.
    """
    check_images(inputs)
    gradient = _loss_gradient(model, inputs, target)
    return torch.where(gradient.abs() > ZERO_GRADIENT, gradient.sign(), 0.0)


def min_fooling_epsilon(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target,
    max_epsilon: float = 1.0,
    scan_steps: int = 32,
    refine_steps: int = 12,
    direction: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per image, the smallest FGSM step that changes the prediction away from ``target``.

    The FGSM direction is computed once per image; the step size is scanned on a grid of
    ``scan_steps`` values in ``(0, max_epsilon]`` (all images and steps in one batch), then the
    first step that fools is refined by ``refine_steps`` bisections against the step before it.
    The result fools the model; a step smaller by more than ``max_epsilon / scan_steps /
    2**refine_steps`` found no success on the way. Images not fooled within ``max_epsilon`` get
    ``inf``; images already misclassified get 0.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(1, 2, bias=False))
        >>> with torch.no_grad():
        ...     _ = model[1].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        >>> min_fooling_epsilon(model, torch.full((1, 1, 1, 1), 0.3), 0)  # flips at x < 0
        tensor([0.3000])

    Args:
        model: Maps images to class scores.
        inputs: Images ``N x C x H x W``.
        target: The class to move away from (the true one), one int or one per image.
        max_epsilon: Largest step searched (input units).
        scan_steps: Grid points of the scan.
        refine_steps: Bisections after the scan.
        direction: The :func:`fgsm_direction` of ``inputs``, when the caller has it already.

    Raises:
        ValueError: Bad ``inputs`` or ``target``; ``max_epsilon`` <= 0; steps < 1.
    """
    check_images(inputs)
    if isinstance(max_epsilon, bool) or not max_epsilon > 0:
        raise ValueError(f"max_epsilon: expected a number > 0, got {max_epsilon!r}")
    check_int("scan_steps", scan_steps)
    check_int("refine_steps", refine_steps)
    images = inputs.detach()
    if direction is None:
        direction = fgsm_direction(model, images, target)
    count = len(images)
    with preserved_state(model), torch.no_grad():
        labels = target_indices(target, count, model(images[:1]).shape[1]).to(images.device)

        def fooled(epsilons: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            moved = images[index] + epsilons.view(-1, 1, 1, 1) * direction[index]
            result: torch.Tensor = model(moved).argmax(dim=1) != labels[index]
            return result

        grid = torch.linspace(0, max_epsilon, scan_steps + 1, device=images.device)
        every = torch.arange(count, device=images.device).repeat_interleave(scan_steps + 1)
        success = fooled(grid.repeat(count), every).view(count, scan_steps + 1)
        found = success.any(dim=1)
        first = success.float().argmax(dim=1)  # first fooling grid point
        high = grid[first]
        low = grid[(first - 1).clamp(min=0)]
        everyone = torch.arange(count, device=images.device)
        for _ in range(refine_steps):
            middle = (low + high) / 2
            works = fooled(middle, everyone)
            high = torch.where(works, middle, high)
            low = torch.where(works, low, middle)
    return torch.where(found, high, torch.full_like(high, torch.inf))


class FoolingResult(NamedTuple):
    """Images pushed towards a chosen class, and whether the model now predicts it."""

    images: torch.Tensor
    success: torch.Tensor
    steps: torch.Tensor  # (N,) steps taken


def fooling_image(
    model: nn.Module,
    inputs: torch.Tensor,
    target_class: Target,
    step_size: float = 0.01,
    steps: int = 100,
) -> FoolingResult:
    """Targeted iterative FGSM: small sign steps towards ``target_class`` until the model
    predicts it (an image of one class that the network takes for another).

    Raises:
        ValueError: Bad ``inputs`` or ``target_class``; ``step_size`` <= 0; ``steps`` < 1.
    """
    check_images(inputs)
    if isinstance(step_size, bool) or not step_size > 0:
        raise ValueError(f"step_size: expected a number > 0, got {step_size!r}")
    check_int("steps", steps)
    images = inputs.detach().clone()
    count = len(images)
    taken = torch.zeros(count, dtype=torch.long)
    with preserved_state(model), torch.no_grad():
        wanted = target_indices(target_class, count, model(images[:1]).shape[1])
    wanted = wanted.to(images.device)
    for _ in range(steps):
        with preserved_state(model), torch.no_grad():
            done = model(images).argmax(dim=1) == wanted
        if bool(done.all()):
            break
        moved = fgsm(model, images, wanted, step_size, targeted=True)
        images = torch.where(done.view(-1, 1, 1, 1), images, moved)
        taken += (~done).long().cpu()
    with preserved_state(model), torch.no_grad():
        success = model(images).argmax(dim=1) == wanted
    return FoolingResult(images, success, taken)
