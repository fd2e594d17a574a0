"""Receptive field of a layer's units, from the layer geometry, and crops of it.

The model is traced with ``torch.fx``; along every path from the input to the layer the usual
receptive-field arithmetic is applied (Araujo et al., 2019): through a layer with kernel ``k``,
dilation ``d``, stride ``s`` and padding ``p``, with ``k' = d (k - 1) + 1``,

* size grows by ``(k' - 1) * jump``,
* jump (input pixels between neighbouring units) is multiplied by ``s``,
* the first unit's centre moves by ``((k' - 1) / 2 - p) * jump``.

Where paths join (a residual sum, a concatenation) the field is the union of the paths' fields.
Known: ``nn.Conv2d``, ``nn.MaxPool2d``, ``nn.AvgPool2d``, and operations that act per pixel
(normalisation, activations, dropout, identity, element-wise arithmetic, channel
concatenation). Anything else on the way raises ``ValueError`` naming it.

Pure torch: no Lightning, no logging.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from lightning_convviz.functional.capture import ACTIVATION_TYPES, LayerSpec, resolve_single_layer
from lightning_convviz.functional.relu_override import OTHER_ACTIVATIONS

__all__ = ["ReceptiveField", "crop_receptive_field", "receptive_field"]

_PER_PIXEL_MODULES: tuple[type[nn.Module], ...] = (
    *ACTIVATION_TYPES,
    nn.modules.batchnorm._BatchNorm,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
    nn.Sigmoid,
    nn.Tanh,
)
_PER_PIXEL_FUNCTIONS = (
    frozenset(
        {
            "relu",
            "relu_",
            "add",
            "iadd",
            "mul",
            "imul",
            "sub",
            "cat",
            "contiguous",
            "clone",
            "dropout",
            "batch_norm",
        }
    )
    | OTHER_ACTIVATIONS
)


@dataclass(frozen=True)
class ReceptiveField:
    """Where a layer's units look in the input, per axis ``(rows, columns)``.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3))
        >>> field = receptive_field(model, "2")
        >>> field.size, field.jump, field.region(0, 0)
        ((7, 7), (1, 1), (0, 0, 7, 7))
    """

    #: Side of the field in input pixels.
    size: tuple[int, int]
    #: Input pixels between neighbouring units.
    jump: tuple[int, int]
    #: Input coordinate of the centre of unit (0, 0) (may be fractional or negative).
    start: tuple[float, float]

    def region(self, row: int, column: int) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)``, bottom/right exclusive, of unit ``(row, column)``;
        may reach outside the image (into the layer's padding)."""
        top = math.floor(self.start[0] + row * self.jump[0] - (self.size[0] - 1) / 2 + 0.5)
        left = math.floor(self.start[1] + column * self.jump[1] - (self.size[1] - 1) / 2 + 0.5)
        return top, left, top + self.size[0], left + self.size[1]


@dataclass(frozen=True)
class _Axis:
    size: float
    jump: float
    start: float

    def through(self, kernel: int, stride: int, padding: int, dilation: int) -> _Axis:
        span = dilation * (kernel - 1)
        return _Axis(
            self.size + span * self.jump,
            self.jump * stride,
            self.start + (span / 2 - padding) * self.jump,
        )

    def union(self, other: _Axis) -> _Axis:
        if self.jump != other.jump:
            raise ValueError("layer: branches with different strides meet; no single field")
        low = min(self.start - (self.size - 1) / 2, other.start - (other.size - 1) / 2)
        high = max(self.start + (self.size - 1) / 2, other.start + (other.size - 1) / 2)
        return _Axis(high - low + 1, self.jump, (low + high) / 2)


def receptive_field(model: nn.Module, layer: LayerSpec) -> ReceptiveField:
    """The receptive field of the units of ``layer``'s output (its first call).

    Args:
        model: The network; it must be traceable by ``torch.fx.symbolic_trace``.
        layer: The module (a name, module or type that selects exactly one module).

    Raises:
        ValueError: The layer is unknown or ambiguous, the model cannot be traced, the layer
            is not reached, or an operation on the way has no known geometry.
    """
    module = resolve_single_layer(model, layer)
    name = next(n for n, m in model.named_modules() if m is module)
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as error:  # any tracing failure is reported the same way
        raise ValueError(
            f"layer: cannot trace {type(model).__name__} with torch.fx to compute the receptive "
            f"field ({type(error).__name__}: {error})"
        ) from None
    modules = dict(model.named_modules())
    fields: dict[fx.Node, tuple[_Axis, _Axis]] = {}
    for node in graph.nodes:
        inputs = [fields[arg] for arg in node.all_input_nodes if arg in fields]
        if node.op == "placeholder":
            if not fields:
                fields[node] = (_Axis(1, 1, 0), _Axis(1, 1, 0))
            continue
        if not inputs:
            continue  # constants and parameters carry no field
        field = inputs[0]
        for other in inputs[1:]:
            field = (field[0].union(other[0]), field[1].union(other[1]))
        if node.op == "call_module":
            field = _through_module(modules[str(node.target)], field, str(node.target))
        elif node.op in ("call_function", "call_method"):
            function = getattr(node.target, "__name__", str(node.target))
            if function not in _PER_PIXEL_FUNCTIONS and node.target not in (
                operator.add,
                operator.mul,
                operator.sub,
                torch.add,
                torch.cat,
            ):
                raise ValueError(
                    f"layer: no receptive-field rule for {function!r} on the way to {name!r}"
                )
        fields[node] = field
        if node.op == "call_module" and str(node.target) == name:
            rows, columns = field
            return ReceptiveField(
                size=(round(rows.size), round(columns.size)),
                jump=(round(rows.jump), round(columns.jump)),
                start=(rows.start, columns.start),
            )
    raise ValueError(f"layer: {name!r} is not reached from the model's input")


def _through_module(
    module: nn.Module, field: tuple[_Axis, _Axis], name: str
) -> tuple[_Axis, _Axis]:
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        if isinstance(module, nn.Conv2d) and isinstance(module.padding, str):
            raise ValueError(f"layer: {name!r} uses padding={module.padding!r}; give it in pixels")
        kernel, stride, padding = (
            _pair(module.kernel_size),
            _pair(module.stride),
            _pair(module.padding),
        )
        dilation = _pair(getattr(module, "dilation", 1))
        return (
            field[0].through(kernel[0], stride[0], padding[0], dilation[0]),
            field[1].through(kernel[1], stride[1], padding[1], dilation[1]),
        )
    if isinstance(module, _PER_PIXEL_MODULES):
        return field
    raise ValueError(f"layer: no receptive-field rule for {type(module).__name__} ({name!r})")


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    items = tuple(value)
    return (int(items[0]), int(items[-1])) if items else (1, 1)


def crop_receptive_field(
    images: torch.Tensor, field: ReceptiveField, rows: torch.Tensor, columns: torch.Tensor
) -> torch.Tensor:
    """For each image ``n``, the field of unit ``(rows[n], columns[n])``: ``N x C x h x w``.

    Parts of the field outside the image (the layer's padding) are filled with the image's
    minimum value, so the picture shows where the unit looked past the border.

    Example:
        >>> field = ReceptiveField(size=(3, 3), jump=(2, 2), start=(0.0, 0.0))
        >>> crop_receptive_field(torch.arange(16.0).view(1, 1, 4, 4), field,
        ...                      torch.tensor([1]), torch.tensor([0]))[0, 0]
        tensor([[ 0.,  4.,  5.],
                [ 0.,  8.,  9.],
                [ 0., 12., 13.]])
    """
    count, _, height, width = images.shape
    size_h, size_w = field.size
    base_top, base_left, _, _ = field.region(0, 0)
    top = base_top + rows.cpu() * field.jump[0]
    left = base_left + columns.cpu() * field.jump[1]
    row_index = top[:, None] + torch.arange(size_h)
    column_index = left[:, None] + torch.arange(size_w)
    inside = ((row_index >= 0) & (row_index < height))[:, :, None] & (
        (column_index >= 0) & (column_index < width)
    )[:, None, :]
    device = images.device
    crops = images[
        torch.arange(count, device=device)[:, None, None],
        :,
        row_index.clamp(0, height - 1).to(device)[:, :, None],
        column_index.clamp(0, width - 1).to(device)[:, None, :],
    ]  # (N, h, w, C)
    fill = images.flatten(1).min(dim=1).values[:, None, None, None]
    crops = torch.where(inside.to(device)[..., None], crops, fill)
    return crops.permute(0, 3, 1, 2).contiguous()
