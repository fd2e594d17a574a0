"""What one optimizer step did to the weights: the slope along its update, the gradient's and
the update's norms, and each weight's update over its size (CS231n's update/weight ratio).

Pure torch, on the weights' device, without a host copy (the learning-rate doctor copies all
of a measured step's numbers to the host at once).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["update_statistics"]


def update_statistics(
    grads: Sequence[torch.Tensor],
    before: Sequence[torch.Tensor],
    after: Sequence[torch.Tensor],
    ratio_of: Sequence[int] = (),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """``(slope, gradient norm, update norm, ratios)`` of a step from weights ``before`` to
    ``after`` taken with gradients ``grads``: the slope is the directional derivative along
    the update, ``g . (after - before)`` (negative for a descent step); ``ratios`` holds
    ``|after - before| / |before|`` for the weights at the indices ``ratio_of``.

    Example:
        >>> w0, w1, g = [torch.tensor([2.0, 0.0])], [torch.tensor([1.0, 0.0])], [torch.ones(2)]
        >>> slope, grad_norm, moved, ratios = update_statistics(g, w0, w1, ratio_of=[0])
        >>> float(slope), round(float(grad_norm), 3), float(moved), float(ratios[0])
        (-1.0, 1.414, 1.0, 0.5)
    """
    with torch.no_grad():
        deltas = [a.detach() - b for a, b in zip(after, before, strict=True)]
        slope = torch.stack(
            [
                torch.vdot(g.flatten().float(), d.flatten().float())
                for g, d in zip(grads, deltas, strict=True)
            ]
        ).sum()
        grad_norm = torch.stack([g.float().norm() for g in grads]).norm()
        delta_norms = [d.float().norm() for d in deltas]
        moved = torch.stack(delta_norms).norm()
        ratios = [delta_norms[i] / before[i].float().norm().clamp_min(1e-12) for i in ratio_of]
    return slope, grad_norm, moved, ratios
