"""A gradient oracle for receptive fields: the input pixels that can change one unit.

The model is made linear and positive so that nothing cancels and every path counts: weights
and biases positive (float64), max pooling replaced by average pooling (max routes the gradient
to one pixel per window), activations replaced by the identity, and global pooling branches
(squeeze-and-excitation gates) detached, so that the support is the spatial path's field, which
is what :func:`lightning_convviz.functional.receptive_field` reports. The support of the
gradient of one unit w.r.t. a random positive image is then the unit's field, clipped to the
image.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from lightning_convviz.functional import CallSites, Site, resolve_layers

_IDENTITY = frozenset(
    {
        "relu",
        "relu_",
        "relu6",
        "hardtanh",
        "hardtanh_",
        "gelu",
        "silu",
        "hardswish",
        "hardsigmoid",
        "sigmoid",
        "leaky_relu",
        "elu",
        "mish",
    }
)


class _Linearised(TorchFunctionMode):
    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _IDENTITY:
            return args[0]
        if name in ("max_pool2d", "max_pool2d_with_indices"):
            keys = ("kernel_size", "stride", "padding")
            values = dict(zip(keys, args[1:4], strict=False))
            values.update({key: kwargs[key] for key in keys if key in kwargs})
            ceil = kwargs.get("ceil_mode", args[5] if len(args) > 5 else False)
            return F.avg_pool2d(args[0], **values, ceil_mode=ceil)
        result = func(*args, **kwargs)
        if name in ("adaptive_avg_pool2d", "adaptive_max_pool2d") and result.shape[-2:] == (1, 1):
            return result.detach()  # a gate's global branch
        if name == "mean" and isinstance(result, torch.Tensor) and result.shape[-2:] == (1, 1):
            return result.detach()
        return result


class _StopError(Exception):
    """The unit has been reached: the rest of the forward pass is not needed."""


def gradient_support(
    model: nn.Module, layer: str, shape: tuple[int, int], units: Sequence[tuple[int, int]]
) -> list[tuple[int, int, int, int]]:
    """For each unit ``(row, column)`` of ``layer``'s output (``N x C x H x W``), the bounding
    box ``(top, left, bottom, right)`` of the input pixels with a non-zero gradient."""
    twin = copy.deepcopy(model).double().eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in twin.parameters():
            parameter.copy_(torch.rand(parameter.shape, generator=generator, dtype=torch.float64))
            parameter.add_(0.5).div_(max(parameter[0].numel(), 1))
    sites = CallSites(twin, resolve_layers(twin, layer), None)
    boxes = []
    for row, column in units:
        image = torch.rand(1, 3, *shape, generator=generator, dtype=torch.float64) + 0.5
        image.requires_grad_(True)
        output = _output_at(twin, sites, image)
        weights = torch.rand(output.shape[1], generator=generator, dtype=torch.float64) + 0.5
        (gradient,) = torch.autograd.grad((output[0, :, row, column] * weights).sum(), image)
        rows, columns = gradient[0].abs().sum(dim=0).nonzero(as_tuple=True)
        boxes.append(
            (int(rows.min()), int(columns.min()), int(rows.max()) + 1, int(columns.max()) + 1)
        )
    return boxes


def _output_at(model: nn.Module, sites: CallSites, image: torch.Tensor) -> torch.Tensor:
    found: list[torch.Tensor] = []

    def stop(site: Site, output: torch.Tensor) -> None:
        found.append(output)
        raise _StopError

    try:
        with sites.attached(stop), _Linearised():
            model(image)
    except _StopError:
        pass
    return found[0]
