"""Forward passes of images that differ from known images only inside a small window.

An occluded image equals the original except under the patch. Through the first layers of a
ConvNet (convolutions, BatchNorm, ReLU, max pooling, residual additions) the change stays local:
each layer's output differs from the original image's output only near the patch. This module
computes those layers on the changed region alone, pasted on the original image's activations,
and switches to ordinary full-size computation where the region has grown to most of the map,
or at the first operation it does not know. The result equals the ordinary forward pass up to
float rounding (checked on the first batch of every call; see :func:`occlusion_scores`).

How: the model is traced with ``torch.fx.symbolic_trace`` and its graph interpreted. A value in
the local part is a :class:`_Local`: the clean activation of every original image plus, per
occluded image, a small changed block and its position. Handled locally, exactly these (the
module types themselves, not subclasses, and without hooks, which would otherwise be skipped):
``nn.Conv2d`` (zero padding), ``nn.BatchNorm2d`` in eval mode, ``nn.ReLU``, ``F.relu``,
``torch.relu``, ``Tensor.relu`` (and in-place forms), ``nn.MaxPool2d`` (no ``ceil_mode``),
``nn.Identity``, ``nn.Dropout`` in eval mode, and the sum of two such values.
A model that cannot be traced, or has forward hooks anywhere, is evaluated the ordinary way.

Also, an eval-mode ``nn.BatchNorm2d`` that only reads an ``nn.Conv2d`` is folded into the
convolution's weight and bias (one pass over the activations fewer).

Pure torch: no Lightning, no logging.
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = ["IncrementalForward"]

#: Past this fraction of a feature map's area, the changed region is computed in full.
DENSE_FRACTION = 0.8

_RELU_FUNCTIONS: tuple[Callable[..., Any], ...] = (F.relu, torch.relu, torch.relu_, F.relu_)
_ADD_FUNCTIONS: tuple[Callable[..., Any], ...] = (operator.add, operator.iadd, torch.add)


@dataclass
class _Local:
    """Per occluded image ``b``: the clean map ``clean[image[b]]`` with ``values[b]`` pasted at
    rows ``top[b]...`` and columns ``left[b]...``."""

    clean: torch.Tensor  # (N, C, H, W) for the N original images
    image: torch.Tensor  # (B,) index into clean, on the device
    values: torch.Tensor  # (B, C, h, w)
    top: torch.Tensor  # (B,) int64 on the CPU
    left: torch.Tensor  # (B,) int64 on the CPU


class _NotLocalError(Exception):
    """The node cannot be computed locally: switch to full-size computation."""


class IncrementalForward:
    """Evaluate a model on images that differ from ``images`` only in a window each.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(),
        ...                       nn.Linear(2 * 8 * 8, 3)).eval()
        >>> images = torch.randn(2, 1, 8, 8)
        >>> forward = IncrementalForward.try_build(model, images)
        >>> patch = torch.zeros(1, 1, 3, 3)  # image 1 with a 3x3 zero patch at (2, 4)
        >>> occluded = images[1:].clone(); occluded[:, :, 2:5, 4:7] = 0
        >>> out = forward(torch.tensor([1]), torch.tensor([2]), torch.tensor([4]), patch)
        >>> torch.allclose(out, model(occluded), atol=1e-6)
        True

    Args:
        graph_module: The traced model.
        images: The original images ``N x C x H x W``.
    """

    def __init__(self, graph_module: fx.GraphModule, images: torch.Tensor) -> None:
        self.graph_module = graph_module
        self.images = images
        self.modules = dict(graph_module.named_modules())
        self._clean: dict[fx.Node, torch.Tensor] = {}
        self._padded: dict[tuple[int, int, float], torch.Tensor] = {}
        self._folded = _fold_batch_norms(graph_module.graph, self.modules)
        self._skipped = {bn for bn, _ in self._folded.values()}
        placeholders = [n for n in graph_module.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise _NotLocalError("the model takes more than one input")

    @classmethod
    def try_build(cls, model: nn.Module, images: torch.Tensor) -> IncrementalForward | None:
        """The incremental evaluator, or ``None`` when the model cannot be traced or has forward
        hooks (tracing inlines submodules, so their hooks would not run)."""
        if any(_hooked(module) for module in model.modules()):
            return None
        try:
            return cls(_traced(model), images)
        except Exception:  # any tracing failure: evaluate the ordinary way
            return None

    def __call__(
        self,
        image: torch.Tensor,
        top: torch.Tensor,
        left: torch.Tensor,
        values: torch.Tensor,
    ) -> Any:
        """The model's output for each image ``images[image[b]]`` with ``values[b]`` pasted at
        ``(top[b], left[b])`` (the window must lie inside the image)."""
        env: dict[fx.Node, Any] = {}
        local = True
        densified: dict[int, torch.Tensor] = {}
        for node in self.graph_module.graph.nodes:
            if node.op == "placeholder":
                env[node] = _Local(
                    self.images, image.to(self.images.device), values, top.cpu(), left.cpu()
                )
                continue
            if node.op == "output":
                return fx.node.map_arg(node.args[0], lambda n: self._dense(env[n], densified))
            if node in self._skipped:  # a BatchNorm folded into the convolution before it
                env[node] = env[node.args[0]]
                continue
            if local:
                try:
                    env[node] = self._local(node, env)
                    continue
                except _NotLocalError:
                    local = False
            env[node] = self._run(node, env, densified)
        raise RuntimeError("graph has no output node")

    # -- local computation -------------------------------------------------------------------

    def _local(self, node: fx.Node, env: dict[fx.Node, Any]) -> Any:
        if node.op == "get_attr":
            raise _NotLocalError(node.op)
        args = [env[a] if isinstance(a, fx.Node) else a for a in node.args]
        source = args[0] if args else None
        if not isinstance(source, _Local):
            raise _NotLocalError("not a local value")
        if node.op == "call_module":
            module = self.modules[str(node.target)]
            if _hooked(module) or len(args) != 1 or node.kwargs:
                raise _NotLocalError("hooks or extra arguments")
            kind = type(module)
            if kind is nn.Conv2d:
                return self._window_op(node, source, module, _conv_geometry(module), 0.0)
            if kind is nn.MaxPool2d:
                return self._window_op(node, source, module, _pool_geometry(module), -torch.inf)
            if (kind is nn.BatchNorm2d and _frozen_norm(module)) or kind is nn.ReLU:
                return self._pointwise(node, source, module, env, inplace=kind is nn.ReLU)
            if kind is nn.Identity or (kind is nn.Dropout and not module.training):
                return source
            raise _NotLocalError(kind.__name__)
        if node.op == "call_function" and node.target in _RELU_FUNCTIONS:
            inplace = node.target in (torch.relu_, F.relu_) or bool(node.kwargs.get("inplace"))
            return self._pointwise(node, source, torch.relu, env, inplace=inplace)
        if node.op == "call_method" and node.target in ("relu", "relu_") and not node.kwargs:
            return self._pointwise(node, source, torch.relu, env, inplace=node.target == "relu_")
        if (
            node.op == "call_function"
            and node.target in _ADD_FUNCTIONS
            and len(args) == 2
            and not node.kwargs
            and isinstance(args[1], _Local)
        ):
            return self._add(node, source, args[1])
        raise _NotLocalError(str(node.target))

    def _clean_of(self, node: fx.Node, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        if node not in self._clean:
            self._clean[node] = compute()
        return self._clean[node]

    def _pointwise(
        self,
        node: fx.Node,
        source: _Local,
        function: Callable[[torch.Tensor], torch.Tensor],
        env: dict[fx.Node, Any],
        inplace: bool,
    ) -> _Local:
        clean = self._clean_of(node, lambda: function(source.clean))
        result = _Local(clean, source.image, function(source.values), source.top, source.left)
        if inplace:  # later readers of the input (and its aliases) see the result, as in eager
            for other, value in env.items():
                if value is source:
                    env[other] = result
        return result

    def _window_op(
        self,
        node: fx.Node,
        source: _Local,
        module: nn.Module,
        geometry: tuple[tuple[int, int, int, int], tuple[int, int, int, int]],
        pad_value: float,
    ) -> _Local:
        folded = self._folded.get(node)
        if folded is None:
            clean = self._clean_of(node, lambda: module(source.clean))
        else:
            norm = self.modules[str(folded[0].target)]
            clean = self._clean_of(node, lambda: norm(module(source.clean)))
        out_height, out_width = clean.shape[2:]
        rows = _output_span(source.top, source.values.shape[2], *geometry[0], out_height)
        columns = _output_span(source.left, source.values.shape[3], *geometry[1], out_width)
        if rows[1] * columns[1] > DENSE_FRACTION * out_height * out_width:
            raise _NotLocalError("the changed region covers most of the map")
        block = _gather(source, rows[2], columns[2], rows[3], columns[3], pad_value, self._padded)
        if isinstance(module, nn.Conv2d):
            weight, bias = (module.weight, module.bias) if folded is None else folded[1]
            values = F.conv2d(block, weight, bias, module.stride, 0, module.dilation, module.groups)
        else:
            assert isinstance(module, nn.MaxPool2d)
            values = F.max_pool2d(block, module.kernel_size, module.stride, 0, module.dilation)
        return _Local(clean, source.image, values, rows[0], columns[0])

    def _add(self, node: fx.Node, first: _Local, second: _Local) -> _Local:
        if first.clean.shape != second.clean.shape or first.image is not second.image:
            raise _NotLocalError("operands of different shapes")
        clean = self._clean_of(node, lambda: first.clean + second.clean)
        height, width = clean.shape[2:]
        top, rows = _union(first.top, first.values.shape[2], second.top, second.values.shape[2])
        left, cols = _union(first.left, first.values.shape[3], second.left, second.values.shape[3])
        if rows * cols > DENSE_FRACTION * height * width:
            raise _NotLocalError("the changed region covers most of the map")
        top = top.clamp(max=height - rows)
        left = left.clamp(max=width - cols)
        values = _gather(first, top, left, rows, cols, 0.0, self._padded) + _gather(
            second, top, left, rows, cols, 0.0, self._padded
        )
        return _Local(clean, first.image, values, top, left)

    # -- ordinary computation ----------------------------------------------------------------

    def _dense(self, value: Any, densified: dict[int, torch.Tensor]) -> Any:
        if not isinstance(value, _Local):
            return value
        if id(value) not in densified:  # one tensor per value keeps in-place aliasing intact
            height, width = value.clean.shape[2:]
            zeros = torch.zeros_like(value.top)
            densified[id(value)] = _gather(value, zeros, zeros, height, width, 0.0, self._padded)
        return densified[id(value)]

    def _run(
        self, node: fx.Node, env: dict[fx.Node, Any], densified: dict[int, torch.Tensor]
    ) -> Any:
        args = fx.node.map_arg(node.args, lambda n: self._dense(env[n], densified))
        kwargs = fx.node.map_arg(node.kwargs, lambda n: self._dense(env[n], densified))
        if node.op == "call_module" and node in self._folded:
            conv = self.modules[str(node.target)]
            assert isinstance(conv, nn.Conv2d)
            weight, bias = self._folded[node][1]
            source = args[0]
            assert isinstance(source, torch.Tensor)
            return conv._conv_forward(source, weight, bias)
        if node.op == "call_module":
            return self.modules[str(node.target)](*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)  # type: ignore[operator]
        if node.op == "call_method":
            return getattr(args[0], str(node.target))(*args[1:], **kwargs)
        if node.op == "get_attr":
            value: Any = self.graph_module
            for part in str(node.target).split("."):
                value = getattr(value, part)
            return value
        raise RuntimeError(f"unexpected node {node.op}")


#: One trace per model: every trace makes a new GraphModule class and caches its generated code,
#: so tracing at each call (every epoch of OcclusionMonitor) would grow memory without bound.
_TRACES: weakref.WeakKeyDictionary[nn.Module, fx.GraphModule] = weakref.WeakKeyDictionary()


def _traced(model: nn.Module) -> fx.GraphModule:
    """``fx.symbolic_trace(model)``, reused while the model's submodules are the same objects."""
    cached = _TRACES.get(model)
    if cached is not None:
        current = dict(model.named_modules())
        if all(current.get(name) is module for name, module in cached.named_modules() if name):
            return cached
    traced = fx.symbolic_trace(model)
    _TRACES[model] = traced
    return traced


def _fold_batch_norms(
    graph: fx.Graph, modules: dict[str, nn.Module]
) -> dict[fx.Node, tuple[fx.Node, tuple[torch.Tensor, torch.Tensor]]]:
    """For each ``nn.Conv2d`` read only by an eval-mode ``nn.BatchNorm2d`` (neither hooked): the
    BatchNorm node and the convolution's weight and bias with the BatchNorm folded in."""
    folded = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(node.args[0], fx.Node):
            continue
        conv_node = node.args[0]
        norm = modules[str(node.target)]
        conv = modules.get(str(conv_node.target)) if conv_node.op == "call_module" else None
        if (
            type(norm) is not nn.BatchNorm2d
            or not _frozen_norm(norm)
            or type(conv) is not nn.Conv2d
            or len(conv_node.users) != 1
            or len(node.args) != 1
            or node.kwargs
            or _hooked(norm)
            or _hooked(conv)
        ):
            continue
        assert isinstance(norm, nn.BatchNorm2d) and isinstance(conv, nn.Conv2d)
        assert norm.running_mean is not None and norm.running_var is not None
        scale = torch.rsqrt(norm.running_var + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight
        bias = -norm.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        if norm.bias is not None:
            bias = bias + norm.bias
        weight = conv.weight * scale.reshape(-1, 1, 1, 1)
        folded[conv_node] = (node, (weight.detach(), bias.detach()))
    return folded


def _hooked(module: nn.Module) -> bool:
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or nn.modules.module._global_forward_hooks
        or nn.modules.module._global_forward_pre_hooks
    )


def _frozen_norm(module: nn.Module) -> bool:
    return (
        not module.training
        and getattr(module, "running_mean", None) is not None
        and getattr(module, "running_var", None) is not None
    )


def _conv_geometry(
    module: nn.Conv2d,
) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    if module.padding_mode != "zeros" or isinstance(module.padding, str):
        raise _NotLocalError("padding")
    return (
        (module.kernel_size[0], module.stride[0], int(module.padding[0]), module.dilation[0]),
        (module.kernel_size[1], module.stride[1], int(module.padding[1]), module.dilation[1]),
    )


def _pool_geometry(
    module: nn.MaxPool2d,
) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    if module.ceil_mode or module.return_indices:
        raise _NotLocalError("ceil_mode or return_indices")

    def two(value: Any) -> tuple[int, int]:
        return (value, value) if isinstance(value, int) else (value[0], value[1])

    kernel, stride = two(module.kernel_size), two(module.stride or module.kernel_size)
    padding, dilation = two(module.padding), two(module.dilation)
    return (
        (kernel[0], stride[0], padding[0], dilation[0]),
        (kernel[1], stride[1], padding[1], dilation[1]),
    )


def _output_span(
    start: torch.Tensor,
    extent: int,
    kernel: int,
    stride: int,
    padding: int,
    dilation: int,
    out_size: int,
) -> tuple[torch.Tensor, int, torch.Tensor, int]:
    """Along one axis: the outputs a changed input span can reach, and the input they read.

    Returns (first output per image, output count, first input row per image, input count);
    input rows may lie in the padding (negative or past the end).
    """
    span = (kernel - 1) * dilation
    count = min(out_size, (extent - 1 + span) // stride + 1)
    first = -torch.div(-(start + padding - span), stride, rounding_mode="floor")  # ceil
    first = first.clamp(0, out_size - count)
    return first, count, first * stride - padding, (count - 1) * stride + span + 1


def _union(
    first: torch.Tensor, first_size: int, second: torch.Tensor, second_size: int
) -> tuple[torch.Tensor, int]:
    start = torch.minimum(first, second)
    end = torch.maximum(first + first_size, second + second_size)
    return start, int((end - start).max())


def _gather(
    value: _Local,
    top: torch.Tensor,
    left: torch.Tensor,
    height: int,
    width: int,
    pad: float,
    padded_cache: dict[tuple[int, int, float], torch.Tensor],
) -> torch.Tensor:
    """The block ``(B, C, height, width)`` of each occluded map starting at ``(top, left)``;
    positions outside the map read ``pad``. Comes out ``channels_last``."""
    clean = value.clean
    device = clean.device
    map_height, map_width = clean.shape[2:]
    rows = top[:, None] + torch.arange(height)
    columns = left[:, None] + torch.arange(width)
    margin = max(
        0,
        -int(rows.min()),
        int(rows.max()) - map_height + 1,
        -int(columns.min()),
        int(columns.max()) - map_width + 1,
    )
    if margin:  # read the padding from a padded copy of the clean map, made once per layer
        key = (id(clean), margin, pad)
        if key not in padded_cache:
            padded_cache[key] = F.pad(clean, (margin,) * 4, value=pad)
        clean = padded_cache[key]
    rows_d = (rows + margin).to(device)[:, :, None]
    columns_d = (columns + margin).to(device)[:, None, :]
    block = clean[value.image[:, None, None], :, rows_d, columns_d]  # (B, h, w, C)
    # paste the changed values where they fall inside the block
    patch_height, patch_width = value.values.shape[2:]
    patch_rows = (value.top - top)[:, None] + torch.arange(patch_height)
    patch_columns = (value.left - left)[:, None] + torch.arange(patch_width)
    rows_ok = (patch_rows >= 0) & (patch_rows < height)
    columns_ok = (patch_columns >= 0) & (patch_columns < width)
    changed = value.values.permute(0, 2, 3, 1)  # (B, h, w, C)
    if bool(rows_ok.all()) and bool(columns_ok.all()):
        batch = torch.arange(len(top), device=device)[:, None, None]
        block[batch, patch_rows.to(device)[:, :, None], patch_columns.to(device)[:, None, :]] = (
            changed
        )
    else:
        sample, row, column = (rows_ok[:, :, None] & columns_ok[:, None, :]).nonzero(as_tuple=True)
        block[
            sample.to(device),
            patch_rows[sample, row].to(device),
            patch_columns[sample, column].to(device),
        ] = changed[sample.to(device), row.to(device), column.to(device)]
    return block.permute(0, 3, 1, 2)
