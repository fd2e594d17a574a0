"""Layer selection and activation capture with forward hooks that never outlive their ``with``.

Pure torch: no Lightning, no logging.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

__all__ = [
    "ACTIVATION_TYPES",
    "LayerSpec",
    "capture_activations",
    "conv_layers",
    "default_activation_layers",
    "hook_outputs",
    "is_conv",
    "resolve_layers",
    "resolve_single_layer",
]

#: Activation modules that end a conv block in :func:`default_activation_layers`.
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Softplus,
)

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LayerNorm,
)

#: One layer selector: a ``named_modules()`` name or glob, a module object, or a module type.
LayerSpec = str | nn.Module | type[nn.Module]


def is_conv(module: nn.Module) -> bool:
    """Whether ``module`` is a convolution (``nn.Conv1d/2d/3d`` or a transposed one)."""
    return isinstance(module, nn.modules.conv._ConvNd)


def conv_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every convolution (``nn.Conv1d/2d/3d`` and transposed) of ``model``, by name, in order."""
    return {name: m for name, m in model.named_modules() if is_conv(m)}


def default_activation_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The output of every conv block's activation, found in ``named_modules()`` order.

    For each convolution, the first activation module (one of :data:`ACTIVATION_TYPES`) that
    follows it in ``named_modules()`` order, before the next convolution or ``nn.Linear``, is
    selected. A convolution with no such module (the model calls ``F.relu`` in ``forward``) is
    captured at its own output, or at the output of the normalisation layer right after it: a
    channel with no positive value there is a channel that a following ReLU zeroes everywhere.
    A module found twice (torchvision ResNet blocks reuse one ``relu``) is selected once and
    its hook sees every call.

    Args:
        model: The network to inspect.

    Returns:
        Selected modules by ``named_modules()`` name, in model order. Empty when ``model`` has no
        convolution.
    """
    selected: dict[str, nn.Module] = {}
    pending: tuple[str, nn.Module] | None = None
    seen: set[int] = set()

    def select(name: str, module: nn.Module) -> None:
        if id(module) not in seen:
            seen.add(id(module))
            selected[name] = module

    for name, module in model.named_modules():
        if is_conv(module):
            if pending is not None:
                select(*pending)
            pending = (name, module)
        elif pending is not None and isinstance(module, _NORM_TYPES):
            pending = (name, module)
        elif pending is not None and isinstance(module, ACTIVATION_TYPES):
            select(name, module)
            pending = None
        elif pending is not None and isinstance(module, nn.Linear):
            select(*pending)
            pending = None
    if pending is not None:
        select(*pending)
    return selected


def resolve_layers(
    model: nn.Module, layers: LayerSpec | Sequence[LayerSpec] | None = None
) -> dict[str, nn.Module]:
    """Turn a layer selection into ``{name: module}`` in ``named_modules()`` order.

    Args:
        model: The network.
        layers: ``None`` for :func:`default_activation_layers`; otherwise one selector or a
            sequence of them. A selector is a module name from ``named_modules()`` (exact, or an
            ``fnmatch`` glob such as ``"features.*"``), a module object inside ``model``, or a
            module type (``nn.ReLU`` selects every ReLU).

    Returns:
        The selected modules by name. Each module appears once.

    Raises:
        ValueError: A name or glob matches nothing, a module object is not part of ``model``, or
            the selection is empty. The message lists the available layer names.
        TypeError: A selector is of an unsupported type.
    """
    if layers is None:
        return default_activation_layers(model)
    single = isinstance(layers, (str, nn.Module, type))
    specs: Sequence[LayerSpec] = [layers] if single else list(layers)  # type: ignore[list-item,arg-type]
    named = [(name, m) for name, m in model.named_modules() if name]
    wanted: set[int] = set()
    for spec in specs:
        if isinstance(spec, str):
            matches = [m for name, m in named if name == spec or fnmatch.fnmatchcase(name, spec)]
            if not matches:
                raise ValueError(
                    f"layers: no module named {spec!r} in {type(model).__name__}. "
                    f"Available layers: {_available(named)}"
                )
        elif isinstance(spec, nn.Module):
            matches = [m for _, m in named if m is spec]
            if not matches:
                raise ValueError(
                    f"layers: the module {type(spec).__name__} is not part of "
                    f"{type(model).__name__}. Available layers: {_available(named)}"
                )
        elif isinstance(spec, type) and issubclass(spec, nn.Module):
            matches = [m for _, m in named if isinstance(m, spec)]
            if not matches:
                raise ValueError(
                    f"layers: {type(model).__name__} has no {spec.__name__} module. "
                    f"Available layers: {_available(named)}"
                )
        else:
            raise TypeError(
                "layers: expected a module name or glob (str), a module, or a module type; "
                f"got {type(spec).__name__}"
            )
        wanted.update(id(m) for m in matches)
    selected: dict[str, nn.Module] = {}
    for name, module in named:
        if id(module) in wanted:
            selected[name] = module
            wanted.discard(id(module))
    return selected


def resolve_single_layer(model: nn.Module, layer: LayerSpec | None) -> nn.Module:
    """The one module ``layer`` selects; ``None`` selects the last convolution.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3))
        >>> resolve_single_layer(model, None) is model[2]
        True

    Raises:
        ValueError: ``layer`` is unknown or selects several modules, or ``layer`` is ``None``
            and the model has no convolution.
    """
    if layer is None:
        convs = conv_layers(model)
        if not convs:
            raise ValueError(
                f"layer: {type(model).__name__} has no convolution; pass layer=... (a module "
                "name or a module)"
            )
        return list(convs.values())[-1]
    selected = resolve_layers(model, layer)
    if len(selected) != 1:
        raise ValueError(
            f"layer: expected exactly one module, {layer!r} selects {len(selected)}: "
            f"{', '.join(selected)}"
        )
    return next(iter(selected.values()))


def _available(named: Sequence[tuple[str, nn.Module]], limit: int = 40) -> str:
    names = [f"{name} ({type(m).__name__})" for name, m in named]
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


OutputCallback = Callable[[str, torch.Tensor], None]


@contextmanager
def hook_outputs(layers: dict[str, nn.Module], callback: OutputCallback) -> Iterator[None]:
    """Call ``callback(name, output)`` for every forward call of each layer, inside the block.

    The hooks are removed in ``finally``: none survive the block, also when it raises. Outputs
    that are not tensors (tuples, dicts) are skipped.

    Args:
        layers: ``{name: module}``, e.g. from :func:`resolve_layers`.
        callback: Receives the layer name and its output tensor (not detached).
    """
    handles = []
    try:
        for name, module in layers.items():

            def hook(
                _module: nn.Module, _inputs: object, output: object, _name: str = name
            ) -> None:
                if isinstance(output, torch.Tensor):
                    callback(_name, output)

            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def capture_activations(
    model: nn.Module, layers: LayerSpec | Sequence[LayerSpec] | None = None
) -> Iterator[dict[str, torch.Tensor]]:
    """Record the detached output of each selected layer while the block runs.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten())
        >>> with capture_activations(model) as acts:
        ...     _ = model(torch.zeros(2, 1, 8, 8))
        >>> {name: tuple(a.shape) for name, a in acts.items()}
        {'1': (2, 4, 6, 6)}

    Args:
        model: The network.
        layers: A layer selection, see :func:`resolve_layers`; ``None`` selects every conv
            block's activation (:func:`default_activation_layers`).

    Yields:
        A dict filled during the block with ``{layer name: detached output}`` of each layer's
        latest call.

    Raises:
        ValueError: The selection is unknown or empty (e.g. a model without convolutions).
    """
    selected = resolve_layers(model, layers)
    if not selected:
        raise ValueError(
            f"layers: {type(model).__name__} has no convolution layer to capture; "
            "pass layers=... with module names, modules or module types"
        )
    activations: dict[str, torch.Tensor] = {}

    def store(name: str, output: torch.Tensor) -> None:
        activations[name] = output.detach()

    with hook_outputs(selected, store):
        yield activations
