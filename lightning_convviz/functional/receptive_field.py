"""Receptive field of a layer's units, found by following a real forward pass, and crops of it.

One forward pass of a single image runs under a :class:`~torch.overrides.TorchFunctionMode` that
sees every torch operation (inside modules and in functional code alike) and carries, for each
tensor, the geometry of its units along the two spatial dimensions: field size, jump (input
pixels between neighbouring units) and the centre of unit (0, 0). Through an operation with
kernel ``k``, dilation ``d``, stride ``s`` and padding ``p`` (``k' = d (k - 1) + 1``), the usual
arithmetic (Araujo et al., Distill 2019) applies:

* size grows by ``(k' - 1) * jump``,
* jump is multiplied by ``s``,
* the first unit's centre moves by ``((k' - 1) / 2 - p) * jump``.

Known operations: 2-D convolutions (``nn.Conv2d``, ``F.conv2d``, string padding), max, average
and power-average pooling as modules or functions, ``F.pad``; everything that acts per pixel
(activations, normalisation, dropout, element-wise arithmetic, linear layers and layer norms
over channels, channel concatenation and splits, reshapes and permutes that keep the spatial
dimensions, as in ShuffleNet's channel shuffle or ConvNeXt's channels-last blocks). Where paths
join (a residual sum, a concatenation) the field is the union of the paths' fields.

**Gates.** A branch that pools the whole map (``AdaptiveAvgPool2d(1)``, ``x.mean((2, 3))``)
is global; where it rescales the spatial path (squeeze-and-excitation in EfficientNet,
MobileNet-V3 and RegNetY, any ``x * gate``), the field reported is the spatial path's: the gate
depends on the whole image, but only through one number per channel. Normalisations whose
statistics span the map (GroupNorm, InstanceNorm) are treated the same way.

**Upsampling.** ``F.interpolate`` (``nn.Upsample``, HRNet's and FPN's fusions) divides the jump by
the scale; a unit's field is centred where it maps back to the input and widened so that it
holds the fields of the units it reads (one input step for ``nearest`` at an integer scale, two
for ``bilinear``): a field may then be a step larger than the pixels that count, never smaller.
A layer whose units end up closer than one input pixel has no whole-pixel field and raises.

Anything else on the way to the layer (other interpolation modes, adaptive pooling to a size
other than 1x1, attention, flattening the map) makes the field unknown, and asking for it raises
``ValueError`` naming the operation. Operations that are not on the way (a classifier head after
the layer, an auxiliary head) do not matter.

Pure torch: no Lightning, no logging.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from lightning_convviz.functional.capture import LayerSpec, conv_layers, resolve_layers
from lightning_convviz.functional.guard import preserved_state
from lightning_convviz.functional.relu_override import OTHER_ACTIVATIONS
from lightning_convviz.functional.sites import CallSites, Site, site_name, split_selector

__all__ = ["ReceptiveField", "crop_receptive_field", "receptive_field", "receptive_fields"]


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


# -- geometry of one tensor ------------------------------------------------------------------------


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

    def union(self, other: _Axis) -> _Axis | None:
        if self.jump != other.jump:
            return None
        low = min(self.start - (self.size - 1) / 2, other.start - (other.size - 1) / 2)
        high = max(self.start + (self.size - 1) / 2, other.start + (other.size - 1) / 2)
        return _Axis(high - low + 1, self.jump, (low + high) / 2)


@dataclass(frozen=True)
class _Spatial:
    """A map whose units have a field; ``dims`` are the rows' and columns' dimensions, counted
    from the end (``(-2, -1)`` for ``N x C x H x W``, ``(-3, -2)`` channels-last)."""

    rows: _Axis
    columns: _Axis
    dims: tuple[int, int] = (-2, -1)


@dataclass(frozen=True)
class _Global:
    """Computed from a global pooling of the map: every unit sees the whole image."""


@dataclass(frozen=True)
class _Unknown:
    """No field: ``reason`` names the operation that had no rule."""

    reason: str


_Geometry = _Spatial | _Global | _Unknown
_GLOBAL = _Global()


class _NoRuleError(Exception):
    pass


# -- rules -----------------------------------------------------------------------------------------

_PER_PIXEL = frozenset(
    {
        "relu",
        "relu_",
        "relu6",
        "hardtanh",
        "hardtanh_",
        "sigmoid",
        "sigmoid_",
        "tanh",
        "tanh_",
        "add",
        "add_",
        "__add__",
        "__radd__",
        "__iadd__",
        "sub",
        "sub_",
        "__sub__",
        "__rsub__",
        "__isub__",
        "mul",
        "mul_",
        "__mul__",
        "__rmul__",
        "__imul__",
        "div",
        "div_",
        "__truediv__",
        "__rtruediv__",
        "__itruediv__",
        "neg",
        "__neg__",
        "abs",
        "pow",
        "__pow__",
        "sqrt",
        "rsqrt",
        "exp",
        "log",
        "square",
        "sign",
        "clamp",
        "clamp_",
        "clamp_min",
        "clamp_min_",
        "clamp_max",
        "clip",
        "maximum",
        "minimum",
        "where",
        "masked_fill",
        "addcmul",
        "lerp",
        "dropout",
        "dropout_",
        "dropout2d",
        "alpha_dropout",
        "feature_alpha_dropout",
        "batch_norm",
        "instance_norm",
        "group_norm",
        "layer_norm",
        "detach",
        "clone",
        "contiguous",
        "to",
        "float",
        "half",
        "bfloat16",
        "double",
        "type",
        "type_as",
        "requires_grad_",
        "copy_",
    }
    | OTHER_ACTIVATIONS
)
#: Operations that keep the dimensions from the rows' dimension on unchanged.
_LAYOUT = frozenset(
    {
        "view",
        "reshape",
        "view_as",
        "reshape_as",
        "flatten",
        "unflatten",
        "squeeze",
        "unsqueeze",
        "__getitem__",
        "chunk",
        "split",
        "split_with_sizes",
        "tensor_split",
        "unbind",
        "narrow",
        "select",
        "expand",
        "expand_as",
        "repeat",
        "stack",
        "__get__",
    }
)
_REDUCTIONS = frozenset(
    {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "norm", "logsumexp", "prod"}
)
_CONSTANT = frozenset(
    {
        "zeros_like",
        "ones_like",
        "empty_like",
        "full_like",
        "rand_like",
        "randn_like",
        "new_zeros",
        "new_ones",
        "new_empty",
        "new_full",
        "new_tensor",
        "zero_",
        "fill_",
        "bernoulli_",
        "normal_",
        "uniform_",
    }
)


def _argument(
    args: Sequence[Any], kwargs: dict[str, Any], index: int, name: str, default: Any
) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    items = tuple(value)
    return (int(items[0]), int(items[-1])) if items else (1, 1)


def _windowed(
    spatial: _Spatial,
    kernel: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    what: str,
) -> _Spatial:
    if spatial.dims != (-2, -1):
        raise _NoRuleError(f"{what} over dimensions other than the last two")
    k, s, p, d = _pair(kernel), _pair(stride if stride else kernel), _pair(padding), _pair(dilation)
    return _Spatial(
        spatial.rows.through(k[0], s[0], p[0], d[0]),
        spatial.columns.through(k[1], s[1], p[1], d[1]),
        spatial.dims,
    )


def _convolution(spatial: _Spatial, args: Sequence[Any], kwargs: dict[str, Any]) -> _Spatial:
    weight = _argument(args, kwargs, 1, "weight", None)
    kernel = tuple(weight.shape[-2:])
    stride = _argument(args, kwargs, 3, "stride", 1)
    padding = _argument(args, kwargs, 4, "padding", 0)
    dilation = _argument(args, kwargs, 5, "dilation", 1)
    if isinstance(padding, str):
        spans = [d * (k - 1) for k, d in zip(kernel, _pair(dilation), strict=True)]
        padding = (0, 0) if padding == "valid" else tuple(span // 2 for span in spans)
    return _windowed(spatial, kernel, stride, padding, dilation, "a convolution")


def _pooling(name: str, spatial: _Spatial, args: Sequence[Any], kwargs: dict[str, Any]) -> _Spatial:
    if name == "lp_pool2d":
        kernel = _argument(args, kwargs, 2, "kernel_size", None)
        stride = _argument(args, kwargs, 3, "stride", None)
        return _windowed(spatial, kernel, stride, 0, 1, "pooling")
    kernel = _argument(args, kwargs, 1, "kernel_size", None)
    stride = _argument(args, kwargs, 2, "stride", None)
    padding = _argument(args, kwargs, 3, "padding", 0)
    dilation = 1 if name == "avg_pool2d" else _argument(args, kwargs, 4, "dilation", 1)
    return _windowed(spatial, kernel, stride, padding, dilation, "pooling")


def _padded(spatial: _Spatial, args: Sequence[Any], kwargs: dict[str, Any]) -> _Spatial:
    amounts = list(_argument(args, kwargs, 1, "pad", ()))
    if spatial.dims != (-2, -1):
        raise _NoRuleError("padding of a channels-last map")
    left = amounts[0] if amounts else 0
    top = amounts[2] if len(amounts) > 2 else 0
    return _Spatial(
        spatial.rows.through(1, 1, top, 1), spatial.columns.through(1, 1, left, 1), spatial.dims
    )


def _interpolated(
    spatial: _Spatial,
    source: torch.Tensor,
    output: torch.Tensor,
    args: Sequence[Any],
    kwargs: dict[str, Any],
) -> _Spatial:
    """``F.interpolate`` (``nn.Upsample``): each output unit reads one or two input units near
    its position mapped back to the input (``(o + 0.5) * in / out - 0.5``, or ``o * (in - 1) /
    (out - 1)`` with ``align_corners``). The field is centred there and widened so that it holds
    the fields of the units read: by one input step for ``nearest`` at an integer scale and for
    ``nearest-exact`` (the unit read is within half a step), by two for ``bilinear`` (two
    neighbours, within a step). Other modes and scales raise."""
    if spatial.dims != (-2, -1):
        raise _NoRuleError("interpolation of a channels-last map")
    mode = _argument(args, kwargs, 3, "mode", "nearest")
    corners = bool(_argument(args, kwargs, 4, "align_corners", False))
    axes = [
        _resampled(axis, int(before), int(after), str(mode), corners)
        for axis, before, after in zip(
            (spatial.rows, spatial.columns), source.shape[-2:], output.shape[-2:], strict=True
        )
    ]
    return _Spatial(axes[0], axes[1], spatial.dims)


def _resampled(axis: _Axis, before: int, after: int, mode: str, corners: bool) -> _Axis:
    if after == before:
        return axis  # every mode reads the unit itself
    if mode in ("nearest", "nearest-exact") and (mode == "nearest-exact" or after % before == 0):
        widen = 1.0
    elif mode in ("bilinear", "linear"):
        widen = 2.0
    else:
        raise _NoRuleError(f"interpolate (mode {mode!r}) from {before} to {after} pixels")
    if corners and mode in ("bilinear", "linear"):
        ratio = (before - 1) / (after - 1) if after > 1 else 0.0
        return _Axis(axis.size + widen * axis.jump, axis.jump * ratio, axis.start)
    ratio = before / after
    return _Axis(
        axis.size + widen * axis.jump, axis.jump * ratio, axis.start + (ratio - 1) / 2 * axis.jump
    )


def _spatial_positions(spatial: _Spatial, ndim: int) -> tuple[int, int]:
    return ndim + spatial.dims[0], ndim + spatial.dims[1]


def _reduced(
    name: str,
    spatial: Sequence[_Spatial],
    source: torch.Tensor,
    args: Sequence[Any],
    kwargs: dict[str, Any],
) -> _Geometry:
    if len(args) > 1 and isinstance(args[1], torch.Tensor):
        return _joined(spatial)  # torch.max(a, b): element-wise
    dim = _argument(args, kwargs, 2 if name == "norm" else 1, "dim", None)  # norm(x, p, dim)
    if dim is None or not isinstance(dim, (int, tuple, list)):
        return _GLOBAL  # over everything
    ndim = source.ndim
    reduced = {d % ndim for d in ([dim] if isinstance(dim, int) else dim)}
    first = spatial[0]
    rows, columns = _spatial_positions(first, ndim)
    if rows in reduced and columns in reduced:
        return _GLOBAL
    if rows in reduced or columns in reduced:
        raise _NoRuleError("a reduction over one spatial dimension")
    if _argument(args, kwargs, 3 if name == "norm" else 2, "keepdim", False):
        return first
    return _Spatial(
        first.rows,
        first.columns,
        tuple(  # type: ignore[arg-type]
            d + sum(1 for r in reduced if r > ndim + d) for d in first.dims
        ),
    )


def _kept_layout(spatial: _Spatial, source: torch.Tensor, output: torch.Tensor) -> _Spatial:
    first = min(spatial.dims)
    if output.ndim >= -first and tuple(output.shape[first:]) == tuple(source.shape[first:]):
        return spatial
    raise _NoRuleError("a reshape or slice that changes the spatial dimensions (e.g. flatten)")


def _permuted(
    name: str, spatial: _Spatial, source: torch.Tensor, args: Sequence[Any], kwargs: dict[str, Any]
) -> _Spatial:
    ndim = source.ndim
    positions = list(_spatial_positions(spatial, ndim))
    if name == "permute":
        order = kwargs.get("dims", args[1:])
        if len(order) == 1 and isinstance(order[0], (tuple, list)):
            order = order[0]
        order = [int(d) % ndim for d in order]
        positions = [order.index(p) for p in positions]
    else:  # transpose / swapaxes / swapdims
        first = int(_argument(args, kwargs, 1, "dim0", 0)) % ndim
        second = int(_argument(args, kwargs, 2, "dim1", 1)) % ndim
        swap = {first: second, second: first}
        positions = [swap.get(p, p) for p in positions]
    return _Spatial(spatial.rows, spatial.columns, (positions[0] - ndim, positions[1] - ndim))


def _joined(spatial: Sequence[_Spatial]) -> _Spatial:
    joined = spatial[0]
    for other in spatial[1:]:
        if other.dims != joined.dims:
            raise _NoRuleError("maps with different layouts meet")
        rows, columns = joined.rows.union(other.rows), joined.columns.union(other.columns)
        if rows is None or columns is None:
            raise _NoRuleError("branches with different strides meet")
        joined = _Spatial(rows, columns, joined.dims)
    return joined


def _rule(
    name: str,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    geometries: Sequence[_Geometry],
    source: torch.Tensor,
    output: torch.Tensor,
) -> _Geometry | None:
    """The geometry of ``output`` of the operation ``name`` on inputs of ``geometries``."""
    if name in _CONSTANT:
        return None
    unknown = next((g for g in geometries if isinstance(g, _Unknown)), None)
    if unknown is not None:
        return unknown
    spatial = [g for g in geometries if isinstance(g, _Spatial)]
    if not spatial:
        return _GLOBAL  # computed from global maps only
    first = spatial[0]
    if name == "conv2d":
        return _convolution(first, args, kwargs)
    if name in ("max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "lp_pool2d"):
        return _pooling(name.replace("_with_indices", ""), first, args, kwargs)
    if name in ("adaptive_avg_pool2d", "adaptive_max_pool2d"):
        if tuple(output.shape[-2:]) == (1, 1):
            return _GLOBAL
        if output.shape[-2:] == source.shape[-2:]:
            return first
        raise _NoRuleError(
            f"{name} to {tuple(output.shape[-2:])}, whose windows depend on the input size"
        )
    if name == "pad":
        return _padded(first, args, kwargs)
    if name == "interpolate":
        return _interpolated(first, source, output, args, kwargs)
    if name in ("cat", "concat", "concatenate"):
        if any(isinstance(g, _Global) for g in geometries):
            return _GLOBAL  # channels that saw the whole image
        dim = int(_argument(args, kwargs, 1, "dim", 0)) % output.ndim - output.ndim
        if dim in first.dims:
            raise _NoRuleError("a concatenation along a spatial dimension")
        return _joined(spatial)
    if name in ("permute", "transpose", "swapaxes", "swapdims"):
        return _permuted(name, first, source, args, kwargs)
    if name in _REDUCTIONS:
        return _reduced(name, spatial, source, args, kwargs)
    if name == "linear" and -1 in first.dims:
        raise _NoRuleError("a linear layer over a spatial dimension")
    if name in ("softmax", "log_softmax"):
        dim = int(_argument(args, kwargs, 1, "dim", -1)) % source.ndim - source.ndim
        if dim in first.dims:
            raise _NoRuleError(f"{name} over a spatial dimension")
        return first
    if name in _LAYOUT:
        return _kept_layout(first, source, output)
    if name in _PER_PIXEL or name == "linear":
        return _joined(spatial)
    raise _NoRuleError(f"no receptive-field rule for {name!r}")


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


class _GeometryMode(TorchFunctionMode):
    """Carries each tensor's geometry through every torch operation of a forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self._known: dict[int, tuple[torch.Tensor, _Geometry]] = {}

    def mark(self, tensor: torch.Tensor, geometry: _Geometry | None) -> None:
        if geometry is None:
            self._known.pop(id(tensor), None)
        else:
            self._known[id(tensor)] = (tensor, geometry)

    def of(self, tensor: torch.Tensor) -> _Geometry | None:
        found = self._known.get(id(tensor))
        return found[1] if found is not None and found[0] is tensor else None

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        outputs = list(_tensors(result))
        if not outputs:
            return result
        inputs = [(t, g) for t in _tensors((args, kwargs)) if (g := self.of(t)) is not None]
        if not inputs:
            return result
        name = getattr(func, "__name__", str(func))
        source = next((t for t, g in inputs if isinstance(g, _Spatial)), inputs[0][0])
        geometries = [g for _, g in inputs]
        for output in outputs:
            try:
                geometry = _rule(name, args, kwargs, geometries, source, output)
            except _NoRuleError as reason:
                geometry = _Unknown(str(reason))
            self.mark(output, geometry)
        return result


# -- public ---------------------------------------------------------------------------------------


class _ReachedError(Exception):
    """Every wanted site has been measured: the rest of the forward pass is not needed."""


def receptive_fields(
    model: nn.Module,
    layers: dict[str, nn.Module],
    inputs: torch.Tensor,
) -> dict[Site, ReceptiveField | ValueError]:
    """The receptive field of every call site of ``layers`` reached by a forward pass.

    One image of ``inputs`` is passed through the model in eval mode without gradients
    (every ``.training`` flag, the RNG and the gradients as before); its values do not matter,
    its size does for operations whose geometry depends on it (``F.pad`` of "same" padding).

    Args:
        model: The network.
        layers: ``{selector: module}`` from
            :func:`~lightning_convviz.functional.resolve_layers` (a container's site is its
            output; ``"name:k"`` selects the k-th call).
        inputs: Images ``N x C x H x W``; the first one is used.

    Returns:
        For each site reached, its field, or the ``ValueError`` that says why it has none.
    """
    sites = CallSites(model, layers, None)
    exact = all(split_selector(key)[1] is not None for key in layers)
    wanted = {Site(split_selector(key)[0], split_selector(key)[1] or 0) for key in layers}
    mode = _GeometryMode()
    found: dict[Site, ReceptiveField | ValueError] = {}

    def measure(site: Site, output: torch.Tensor) -> None:
        geometry = mode.of(output)
        found[site] = _field(geometry, sites.name(site))
        if exact and all(site in found for site in wanted):
            raise _ReachedError

    image = inputs[:1].detach()
    with preserved_state(model), torch.no_grad():
        mode.mark(image, _Spatial(_Axis(1, 1, 0), _Axis(1, 1, 0)))
        try:
            with sites.attached(measure), mode:
                model(image)
        except _ReachedError:
            pass
        except Exception as error:
            if not found:
                raise ValueError(
                    f"layer: the forward pass of {type(model).__name__} failed before reaching "
                    f"the layer ({type(error).__name__}: {error})"
                ) from None
    return dict(sorted(found.items()))


def _field(geometry: _Geometry | None, name: str) -> ReceptiveField | ValueError:
    if isinstance(geometry, _Spatial):
        jumps = (geometry.rows.jump, geometry.columns.jump)
        if any(abs(jump - round(jump)) > 1e-6 or jump < 1 - 1e-6 for jump in jumps):
            return ValueError(
                f"layer: the units of {name!r} are {jumps[0]:g} x {jumps[1]:g} input pixels apart "
                "(upsampled beyond the input's grid); no whole-pixel field"
            )
        return ReceptiveField(  # sizes rounded up: a field holds every pixel that can count
            size=(_whole(geometry.rows.size), _whole(geometry.columns.size)),
            jump=(round(jumps[0]), round(jumps[1])),
            start=(geometry.rows.start, geometry.columns.start),
        )
    if isinstance(geometry, _Global):
        return ValueError(
            f"layer: the units of {name!r} are computed from a global pooling of the map; each "
            "sees the whole image"
        )
    if isinstance(geometry, _Unknown):
        return ValueError(f"layer: {geometry.reason} on the way to {name!r}")
    return ValueError(f"layer: the output of {name!r} does not come from the input image")


def _whole(size: float) -> int:
    return math.ceil(size - 1e-6)


def receptive_field(
    model: nn.Module, layer: LayerSpec, inputs: torch.Tensor | None = None
) -> ReceptiveField:
    """The receptive field of the units of one layer's output (one call of it).

    Args:
        model: The network.
        layer: The module: a name (``"layer4"``, a block's field is its output's;
            ``"layer1.0.relu:3"`` for the third call of a module called several times), a module
            or a type that selects exactly one module.
        inputs: An example input ``N x C x H x W`` (the first image is used); default: zeros of
            224 x 224 with the first convolution's input channels.

    Raises:
        ValueError: The layer is unknown, ambiguous or not reached; a module called several
            times is named without a call number; or an operation on the way has no known
            geometry (the message names it).
    """
    selected = resolve_layers(model, layer)
    if len({id(module) for module in selected.values()}) != 1 or len(selected) != 1:
        raise ValueError(
            f"layer: expected exactly one module, {layer!r} selects {len(selected)}: "
            f"{', '.join(selected)}"
        )
    if inputs is None:
        inputs = _default_input(model)
    fields = receptive_fields(model, selected, inputs)
    if not fields:
        raise ValueError(f"layer: {next(iter(selected))!r} is not reached by the forward pass")
    if len(fields) > 1:
        choices = ", ".join(site_name(s.module, s.call, len(fields)) for s in fields)
        raise ValueError(
            f"layer: {next(iter(selected))!r} is called {len(fields)} times per forward pass; "
            f"name one call: {choices}"
        )
    field = next(iter(fields.values()))
    if isinstance(field, ValueError):
        raise field
    return field


def _default_input(model: nn.Module) -> torch.Tensor:
    convs = list(conv_layers(model).values())
    channels = int(getattr(convs[0], "in_channels", 3)) if convs else 3
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else None
    return torch.zeros(1, channels, 224, 224, device=device, dtype=dtype or torch.float32)


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
