"""Layer selection and activation capture with forward hooks that never outlive their ``with``.

Layers are selected by name, glob, module or type; a name may carry a call number to pick one
call of a module that a forward pass calls several times (``"layer1.0.relu:3"``, see
:mod:`~lightning_convviz.functional.sites`). Captured activations are keyed by site name.

Pure torch: no Lightning, no logging.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from lightning_convviz.functional.defaults import ACTIVATION_SITES
from lightning_convviz.functional.kinds import ACTIVATION_TYPES, is_conv
from lightning_convviz.functional.sites import SITE_SEPARATOR, CallSites, Site, split_selector

__all__ = [
    "ACTIVATION_TYPES",
    "LayerSpec",
    "capture_activations",
    "capture_sites",
    "conv_layers",
    "is_conv",
    "resolve_layers",
    "resolve_single_layer",
    "resolve_single_site",
    "single_site_watch",
]

#: One layer selector: a ``named_modules()`` name or glob (optionally with a call number,
#: ``"layer1.0.relu:2"``, see :mod:`~lightning_convviz.functional.sites`), a module object, or a
#: module type.
LayerSpec = str | nn.Module | type[nn.Module]


def conv_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every convolution (``nn.Conv1d/2d/3d`` and transposed) of ``model``, by name, in order."""
    return {name: m for name, m in model.named_modules() if is_conv(m)}


def resolve_layers(
    model: nn.Module, layers: LayerSpec | Sequence[LayerSpec]
) -> dict[str, nn.Module]:
    """Turn a layer selection into ``{selector: module}`` in ``named_modules()`` order.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.ReLU())
        >>> list(resolve_layers(model, nn.ReLU)), list(resolve_layers(model, "[02]:2"))
        (['1', '3'], ['0:2', '2:2'])

    Args:
        model: The network.
        layers: One selector or a sequence of them. A selector is a module name from
            ``named_modules()`` (exact, or an ``fnmatch`` glob such as ``"features.*"``), a
            module object inside ``model``, or a module type (``nn.ReLU`` selects every ReLU).
            A name or glob may end in a call number, ``"layer1.0.relu:3"``: the third call of
            the module in each forward pass only.

    Returns:
        The selected modules, keyed by module name, or ``"<name>:<k>"`` for a single call.
        Each key appears once.

    Raises:
        ValueError: A name or glob matches nothing, a module object is not part of ``model``, or
            the selection is empty. The message lists the available layer names.
        TypeError: A selector is of an unsupported type.
    """
    single = isinstance(layers, (str, nn.Module, type))
    specs: Sequence[LayerSpec] = [layers] if single else list(layers)  # type: ignore[list-item,arg-type]
    named = [(name, m) for name, m in model.named_modules() if name]
    wanted: dict[int, set[int] | None] = {}
    for spec in specs:
        call: int | None = None
        if isinstance(spec, str):
            pattern, call = split_selector(spec)
            if any(name == spec for name, _ in named):  # a module whose name ends in ":<k>"
                pattern, call = spec, None
            matches = [
                m for name, m in named if name == pattern or fnmatch.fnmatchcase(name, pattern)
            ]
            if not matches:
                raise ValueError(
                    f"layers: no module named {pattern!r} in {type(model).__name__}. "
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
        for module in matches:
            calls = wanted.get(id(module), set())
            wanted[id(module)] = None if call is None or calls is None else {*calls, call}
    selected: dict[str, nn.Module] = {}
    for name, module in named:
        if id(module) not in wanted:
            continue
        calls = wanted.pop(id(module))
        if calls is None:
            selected[name] = module
        else:
            selected.update({f"{name}{SITE_SEPARATOR}{k}": module for k in sorted(calls)})
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
    return resolve_single_site(model, layer)[1]


def resolve_single_site(model: nn.Module, layer: LayerSpec) -> tuple[str, nn.Module, int | None]:
    """The module ``layer`` selects, with its name and the selected call (``None``: any call).

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
        >>> name, module, call = resolve_single_site(model, "1:2")
        >>> name, module is model[1], call
        ('1', True, 2)

    Raises:
        ValueError: ``layer`` is unknown or does not select exactly one module and call.
    """
    selected = resolve_layers(model, layer)
    modules = {id(module) for module in selected.values()}
    if len(modules) != 1 or len(selected) != 1:
        raise ValueError(
            f"layer: expected exactly one module, {layer!r} selects {len(selected)}: "
            f"{', '.join(selected)}"
        )
    key, module = next(iter(selected.items()))
    name = next(n for n, m in model.named_modules() if m is module)
    return name, module, None if key == name else split_selector(key)[1]


def single_site_watch(
    model: nn.Module, layer: LayerSpec, collecting: bool = False
) -> tuple[CallSites, str, int | None]:
    """:class:`CallSites` watching the one module ``layer`` selects: its selected call, or every
    call when ``layer`` names none (``collecting``: as :class:`CallSites`); with the module's
    name and the selected call.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
        >>> sites, name, call = single_site_watch(model, model[1])
        >>> with sites.attached():
        ...     _ = model(torch.zeros(1, 1, 4, 4))
        >>> name, call, sites.calls
        ('1', None, {'1': 1})

    Raises:
        ValueError: As :func:`resolve_single_site`.
    """
    name, module, call = resolve_single_site(model, layer)
    selector = name if call is None else f"{name}{SITE_SEPARATOR}{call}"
    return CallSites(model, {selector: module}, collecting=collecting), name, call


def _available(named: Sequence[tuple[str, nn.Module]], limit: int = 40) -> str:
    names = [f"{name} ({type(m).__name__})" for name, m in named]
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


@contextmanager
def capture_activations(
    model: nn.Module, layers: LayerSpec | Sequence[LayerSpec] | None = None
) -> Iterator[dict[str, torch.Tensor]]:
    """Record the detached output of each selected call site while the block runs.

    Example:
        >>> relu = nn.ReLU()
        >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), relu, nn.Conv2d(4, 4, 1), relu)
        >>> with capture_activations(model) as acts:
        ...     _ = model(torch.zeros(2, 1, 8, 8))
        >>> {name: tuple(a.shape) for name, a in acts.items()}
        {'1:1': (2, 4, 6, 6), '1:2': (2, 4, 6, 6)}

    Args:
        model: The network.
        layers: A layer selection, see :func:`resolve_layers`; ``None`` selects every conv
            block's activation, found from the calls of the forward pass
            (:data:`~lightning_convviz.functional.defaults.ACTIVATION_SITES`).

    Yields:
        A dict, filled when the block ends, with ``{site name: detached output}`` of each
        selected call in the block's latest forward pass (site names: see
        :mod:`~lightning_convviz.functional.sites`), channels in dimension 1 (a channels-last
        map that the default rule found, as in ConvNeXt's blocks, is moved there).

    Raises:
        ValueError: The selection is unknown, names a call that the forward pass does not make,
            or the model has no convolution.
    """
    if layers is None and not conv_layers(model):
        raise ValueError(
            f"layers: {type(model).__name__} has no convolution layer to capture; "
            "pass layers=... with module names, modules or module types"
        )
    selected = None if layers is None else resolve_layers(model, layers)
    sites = CallSites(model, selected, ACTIVATION_SITES)  # the rule only for layers=None
    with capture_sites(sites) as activations:
        yield activations
    missing = sites.unmatched()
    if missing:
        raise ValueError(f"layers: no such call: {'; '.join(missing)}")


@contextmanager
def capture_sites(sites: CallSites) -> Iterator[dict[str, torch.Tensor]]:
    """:func:`capture_activations` for call sites already chosen (or to be chosen by a rule);
    selected calls that were not made are left to the caller (``sites.unmatched()``)."""
    found: dict[Site, torch.Tensor] = {}
    activations: dict[str, torch.Tensor] = {}

    def store(site: Site, output: torch.Tensor) -> None:
        found[site] = output.detach()

    with sites.attached(store):
        yield activations
    order = sites.order or list(found)
    activations.update(
        {sites.name(s): found[s].movedim(sites.channel_dim(s), 1) for s in order if s in found}
    )
