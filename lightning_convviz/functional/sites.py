"""Call sites: each call of a module within one forward pass, told apart and named.

torchvision's ``BasicBlock`` calls its one ``relu`` module after ``bn1`` and again after the
residual sum; ``Bottleneck`` calls it three times (64, 64 and 256 channels in ``layer1``). Each
call sees other values, often other channels, so each call is its own **site**: the k-th call
of a module within one forward pass of the model.

Naming: a module called once per forward pass is named as in ``named_modules()``; a module
called several times gets one site per call, ``<name>:1``, ``<name>:2``, ... in call order
(``layer1.0.relu:1`` after ``bn1``, ``layer1.0.relu:2`` after ``bn2``, ``layer1.0.relu:3``
after the sum). The same strings select sites: ``"layer1.0.relu:3"`` picks the third call only,
``"layer1.0.relu"`` (or a glob, a module, a type) every call.

Counting: call numbers restart at each call of the outermost module around the watched ones
(the model, or the submodule a LightningModule calls), found with a pre-hook and an
always-called forward hook on each of their ancestors. A model that calls a watched module in
a loop gets one site per iteration.

Pure torch: no Lightning, no logging.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from torch import nn

from lightning_convviz.functional.guard import in_diagnostic
from lightning_convviz.functional.kinds import is_conv, is_linear, map_channel_dim, same_map

__all__ = [
    "SITE_SEPARATOR",
    "CallSites",
    "ModuleCall",
    "Site",
    "SiteRule",
    "site_name",
    "split_selector",
]

#: Between a module's name and its call number in a site name: ``layer1.0.relu:2``.
SITE_SEPARATOR = ":"

_CALL_SUFFIX = re.compile(r"^(.*)" + re.escape(SITE_SEPARATOR) + r"([1-9][0-9]*)$")


class Site(NamedTuple):
    """One call of one module: its ``named_modules()`` name and call number (from 1)."""

    module: str
    call: int


@dataclass(frozen=True)
class ModuleCall:
    """What a forward pass showed of one call: the site, the module and its output's shape."""

    site: Site
    layer: nn.Module
    #: Shape of the output tensor; ``None`` when the module returned something else.
    output_shape: tuple[int, ...] | None
    #: Shape of the first input, when it is a tensor.
    input_shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class SiteRule:
    """How a default selection is found from the calls of one forward pass.

    Attributes:
        description: What the rule selects, for messages.
        candidate: Which modules to watch while the rule has not decided yet.
        choose: The sites to keep, from the candidates' calls in call order and the shape of
            the model's output (``None`` while the pass runs), each with the dimension of its
            channels (1 for ``N x C x H x W``, -1 for channels-last maps).
    """

    description: str
    candidate: Callable[[nn.Module], bool]
    choose: Callable[[Sequence[ModuleCall], tuple[int, ...] | None], dict[Site, int]]


def site_name(module: str, call: int, calls: int) -> str:
    """The name of the ``call``-th of ``calls`` calls of ``module`` in one forward pass.

    Example:
        >>> site_name("layer1.0.relu", 2, 3), site_name("conv1", 1, 1)
        ('layer1.0.relu:2', 'conv1')
    """
    return module if calls <= 1 else f"{module}{SITE_SEPARATOR}{call}"


def split_selector(selector: str) -> tuple[str, int | None]:
    """Split a call number off a selector: the module part and the call (``None``: every call).

    Example:
        >>> split_selector("layer1.0.relu:3"), split_selector("features.*")
        (('layer1.0.relu', 3), ('features.*', None))
    """
    match = _CALL_SUFFIX.match(selector)
    if match is None:
        return selector, None
    return match.group(1), int(match.group(2))


#: Called with each watched call's site and tensor; a tensor it returns (reading outputs) replaces
#: the call's output in the forward pass, as a forward hook's return value does.
SiteCallback = Callable[[Site, torch.Tensor], torch.Tensor | None]


class CallSites:
    """Watch the calls of selected modules, numbered within each forward pass, and name them.

    Args:
        model: The network around the watched modules.
        layers: ``{selector: module}`` as from
            :func:`~lightning_convviz.functional.resolve_layers`: a key ``"name"`` watches
            every call of the module, ``"name:k"`` its k-th call only.
        rule: With ``layers=None`` (ignored otherwise): a default selection found from the
            first complete forward pass. Until then every candidate module is watched (and
            reported, with :meth:`channel_dim` as the rule gives it on the calls so far), so
            the first pass is not lost; afterwards only the chosen sites.
        collecting: Watch training or validation passes only: forward passes made by a
            diagnostic (inside :func:`~lightning_convviz.functional.preserved_state`) are not
            counted or reported.
        learn_layouts: With explicit ``layers``: watch every convolution and linear layer in
            the first pass too, to learn which selected maps are channels-last
            (:meth:`channel_dim`); ``False`` for outputs that are not maps (a model's scores),
            so that nothing else is hooked.

    Example:
        >>> block = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
        >>> relu = nn.ReLU()
        >>> model = nn.Sequential(block, relu, nn.Conv2d(2, 2, 1), relu)
        >>> sites = CallSites(model, {"1": relu})
        >>> seen = []
        >>> with sites.attached(lambda site, output: seen.append(site)):
        ...     _ = model(torch.randn(1, 1, 5, 5))
        >>> [sites.name(site) for site in seen]
        ['1:1', '1:2']
    """

    def __init__(
        self,
        model: nn.Module,
        layers: dict[str, nn.Module] | None,
        rule: SiteRule | None = None,
        collecting: bool = False,
        learn_layouts: bool = True,
    ) -> None:
        if layers is None and rule is None:
            raise ValueError("CallSites: give layers or a rule to choose them")
        self.model = model
        self.rule = rule if layers is None else None
        self.collecting = collecting
        names = {id(module): name for name, module in model.named_modules()}
        self._wanted: dict[str, set[int] | None] = {}
        self._modules: dict[str, nn.Module] = {}
        if layers is not None:
            for selector, module in layers.items():
                name, call = split_selector(selector)
                if name not in names.values():
                    name = names[id(module)]
                self._modules[name] = module
                calls = self._wanted.get(name, set())
                self._wanted[name] = None if call is None or calls is None else {*calls, call}
        #: Most calls of each watched module seen in one forward pass.
        self.calls: dict[str, int] = {}
        #: The default rule's choice, once made (``None`` before, or with explicit layers).
        self.chosen: list[Site] | None = None
        #: The dimension of each chosen site's channels, where it is not 1.
        self.channel_dims: dict[Site, int] = {}
        #: Watched sites in call order, as found by the latest complete forward pass.
        self.order: list[Site] = []
        #: With a rule: every candidate call of the pass the rule decided on, in call order.
        self.first_pass: list[ModuleCall] = []
        #: With a rule: the shape of the model's output in that pass (``None``: not a tensor).
        self.output_shape: tuple[int, ...] | None = None
        #: Free for the owner: whether the rule's choice has been reported.
        self.announced = False
        # explicit layers: the first pass also watches convolutions and linear layers, to know
        # which selected maps are channels-last (the latest such layer before them made them)
        self._layouts_known = layers is None or not learn_layouts
        self._opener: tuple[int, tuple[int, ...]] | None = None  # channel dim, shape
        self._hooked: tuple[tuple[bool, bool], dict[str, nn.Module], list[nn.Module]] | None = None
        self._current: dict[str, int] = {}
        self._recorded: list[ModuleCall] = []
        self._passed: list[Site] = []
        self._depth = 0

    # -- naming and selection --------------------------------------------------------------------

    @property
    def deciding(self) -> bool:
        """Whether the default rule still waits for its first complete forward pass."""
        return self.rule is not None and self.chosen is None

    def name(self, site: Site) -> str:
        """The site's name (see the module docs)."""
        return site_name(site.module, site.call, max(self.calls.get(site.module, 1), site.call))

    def channel_dim(self, site: Site) -> int:
        """The dimension of the site's channels: 1, or -1 for a channels-last map (made by a
        linear layer on a map, as in ConvNeXt's blocks; known from the first forward pass)."""
        return self.channel_dims.get(site, 1)

    def keeps(self, site: Site) -> bool:
        """Whether ``site`` belongs to the selection (after the rule's choice, when it has one)."""
        if self.rule is not None:
            return self.chosen is not None and site in self.chosen
        wanted = self._wanted.get(site.module, set())
        return wanted is None or site.call in wanted

    def unmatched(self) -> list[str]:
        """Selectors ``name:k`` whose module was called, but fewer than ``k`` times, per pass."""
        return [
            f"{name}{SITE_SEPARATOR}{call} ({name} is called {self.calls[name]} time"
            f"{'s' if self.calls[name] > 1 else ''} per forward pass)"
            for name, wanted in self._wanted.items()
            if wanted is not None and name in self.calls
            for call in sorted(wanted)
            if call > self.calls[name]
        ]

    # -- hooks -----------------------------------------------------------------------------------

    @contextmanager
    def attached(
        self, callback: SiteCallback | None = None, read: Literal["output", "input"] = "output"
    ) -> Iterator[CallSites]:
        """Inside the block, call ``callback(site, tensor)`` for every watched call, with its
        output (or, with ``read="input"``, its first input) when that is a tensor (not detached).
        Reading outputs, a tensor the callback returns replaces the call's output (Grad-CAM
        differentiates from a leaf it puts there). No hook survives the block, also when it
        raises."""
        with ExitStack() as hooks:
            watched, ancestors = self._hooked_modules()
            for name, module in watched.items():
                hooks.enter_context(self._counting(name, module, callback, read))
            for module in ancestors:
                hooks.enter_context(_removing(module.register_forward_pre_hook(self._enter)))
                hooks.enter_context(
                    _removing(module.register_forward_hook(self._leave, always_call=True))
                )
            yield self

    def _hooked_modules(self) -> tuple[dict[str, nn.Module], list[nn.Module]]:
        """The watched modules and their ancestors; looked up once per state of the choice
        (a callback attaches its hooks at every step)."""
        key = (self.chosen is None, self._layouts_known)
        if self._hooked is None or self._hooked[0] != key:
            watched = self._watched()
            self._hooked = (key, watched, self._ancestors(watched))
        return self._hooked[1], self._hooked[2]

    def _watched(self) -> dict[str, nn.Module]:
        if self.rule is None and self._layouts_known:
            return self._modules
        if self.rule is None:
            probes = {
                name: module
                for name, module in self.model.named_modules()
                if name and (is_conv(module) or is_linear(module))
            }
            return {**probes, **self._modules}
        if self.chosen is None:
            return {
                name: module
                for name, module in self.model.named_modules()
                if name and self.rule.candidate(module)
            }
        chosen = {site.module for site in self.chosen}
        return {name: m for name, m in self.model.named_modules() if name in chosen}

    def _ancestors(self, watched: dict[str, nn.Module]) -> list[nn.Module]:
        modules = dict(self.model.named_modules())
        prefixes = {""}
        for name in watched:
            parts = name.split(".")
            prefixes.update(".".join(parts[:end]) for end in range(1, len(parts)))
        return [modules[prefix] for prefix in sorted(prefixes) if prefix in modules]

    @contextmanager
    def _counting(
        self,
        name: str,
        module: nn.Module,
        callback: SiteCallback | None,
        read: Literal["output", "input"],
    ) -> Iterator[None]:
        def hook(_module: nn.Module, inputs: Any, output: Any) -> Any:
            if self.collecting and in_diagnostic():
                return None
            if not self._layouts_known:
                shape = tuple(output.shape) if isinstance(output, torch.Tensor) else None
                made = map_channel_dim(_module, shape)
                if made is not None and shape is not None:
                    self._opener = (made, shape)
            if self.rule is None and name not in self._modules:
                return None  # a probe of the layout only
            if self._depth == 0:  # called on its own, outside any ancestor: a pass of its own
                self._current.pop(name, None)
            call = self._current[name] = self._current.get(name, 0) + 1
            self.calls[name] = max(self.calls.get(name, 0), call)
            site = Site(name, call)
            if self.deciding:
                assert self.rule is not None
                shape = tuple(output.shape) if isinstance(output, torch.Tensor) else None
                first = inputs[0] if inputs else None
                taken = tuple(first.shape) if isinstance(first, torch.Tensor) else None
                self._recorded.append(ModuleCall(site, _module, shape, taken))
                # the channel layout the rule gives this call so far (a rule reads the calls in
                # order), so that a callback can read the first pass right
                self.channel_dims[site] = self.rule.choose(self._recorded, None).get(site, 1)
            elif not self.keeps(site):
                return None
            else:
                self._passed.append(site)
                if not self._layouts_known:
                    self._learn_layout(site, output)
            if self._depth == 0:
                self._finish_pass()
            value = output if read == "output" else (inputs[0] if inputs else None)
            if callback is None or not isinstance(value, torch.Tensor):
                return None
            replaced = callback(site, value)
            return replaced if read == "output" and isinstance(replaced, torch.Tensor) else None

        with _removing(module.register_forward_hook(hook)):
            yield

    def _learn_layout(self, site: Site, output: Any) -> None:
        """A selected map is channels-last when the latest convolution or linear layer made a
        channels-last map of its size."""
        if self._opener is None or not isinstance(output, torch.Tensor):
            return
        dim, reference = self._opener
        if dim != 1 and same_map(reference, dim, tuple(output.shape)):
            self.channel_dims[site] = dim

    def _enter(self, _module: nn.Module, _inputs: Any) -> None:
        if self.collecting and in_diagnostic():
            return
        if self._depth == 0:
            self._current, self._recorded, self._passed = {}, [], []
            self._opener = None
        self._depth += 1

    def _leave(self, _module: nn.Module, _inputs: Any, output: Any) -> None:
        if self.collecting and in_diagnostic():
            return
        self._depth = max(self._depth - 1, 0)
        if self._depth == 0:
            self._finish_pass(tuple(output.shape) if isinstance(output, torch.Tensor) else None)

    def _finish_pass(self, output_shape: tuple[int, ...] | None = None) -> None:
        if self.deciding and self._recorded:
            assert self.rule is not None
            self.first_pass = self._recorded
            self.output_shape = output_shape
            choice = self.rule.choose(self._recorded, output_shape)
            self.chosen = list(choice)
            self.channel_dims = {site: dim for site, dim in choice.items() if dim != 1}
            self.order = list(self.chosen)
        elif not self.deciding and self._passed:
            self.order = list(dict.fromkeys(self._passed))
            self._layouts_known = True
        self._recorded, self._passed = [], []


@contextmanager
def _removing(handle: torch.utils.hooks.RemovableHandle) -> Iterator[None]:
    try:
        yield
    finally:
        handle.remove()
