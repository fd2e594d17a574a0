"""Default layers, found from the calls of a real forward pass rather than from module order.

``named_modules()`` lists what a model owns, not what its forward pass does: GoogLeNet's
auxiliary heads are listed but not called in eval mode, a ResNet block's one ``relu`` is called
two or three times, SqueezeNet classifies with a 1x1 convolution. The rules here read the
calls of one forward pass, in the order they happen (see
:class:`~lightning_convviz.functional.sites.CallSites`):

* :data:`ACTIVATION_SITES`: every conv block's activation, the first activation call after
  each convolution call (or the convolution's own output, or the normalisation after it, when
  no activation module follows before the next convolution or linear layer: models that call
  ``F.relu``);
* :func:`feature_convolutions`: the convolution calls with a spatial output (larger than 1x1),
  without the classifier (a 1x1 convolution producing the class scores);
* :func:`classifier_call`: the last linear layer or convolution called that produces the
  model's classes, whose input is the network's code (its penultimate representation).

Pure torch: no Lightning, no logging.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from lightning_convviz.functional.guard import preserved_state
from lightning_convviz.functional.kinds import (
    ACTIVATION_TYPES,
    NORM_TYPES,
    is_classifier_layer,
    is_conv,
    is_linear,
    map_channel_dim,
    same_map,
)
from lightning_convviz.functional.sites import CallSites, ModuleCall, Site, SiteRule, site_name

__all__ = [
    "ACTIVATION_SITES",
    "CLASSIFIER",
    "FEATURE_CONVOLUTIONS",
    "Survey",
    "choose_activation_sites",
    "classifier_call",
    "feature_convolutions",
    "last_feature_convolution",
    "per_image",
    "selector",
    "survey",
]


def per_image(
    calls: Sequence[ModuleCall], output_shape: tuple[int, ...] | None
) -> Sequence[ModuleCall]:
    """The calls whose output has one row per image: its first dimension is the batch size,
    read from the model's output (``output_shape[0]``). Tensors that do not follow the batch,
    such as the position-bias table that Swin V2 computes with a small MLP from coordinates,
    are not maps of the images and are left out. With ``output_shape=None`` (not known yet,
    or not a tensor), every call. A pass of a single image cannot tell the two apart:
    :func:`survey` passes it twice."""
    if not output_shape:
        return calls
    batch = output_shape[0]
    return [
        call for call in calls if call.output_shape is None or call.output_shape[:1] == (batch,)
    ]


def _activation_candidate(module: nn.Module) -> bool:
    return (
        is_conv(module) or is_linear(module) or isinstance(module, (*NORM_TYPES, *ACTIVATION_TYPES))
    )


def choose_activation_sites(
    calls: Sequence[ModuleCall], output_shape: tuple[int, ...] | None = None
) -> dict[Site, int]:
    """Every conv block's activation: for each convolution call, the first activation call
    after it on a map of the same size, with the dimension of its channels.

    A convolution, or a linear layer applied to a channels-last map (ConvNeXt's pointwise
    layers), opens a block. When the model calls activation modules, the block is closed by the
    next activation module called on a map of the block's size; convolutions called before that
    (a residual branch's downsampling, a linear bottleneck) share it. Normalisation or
    activation modules on maps of another size or layout (a channels-last ``LayerNorm`` after a
    convolution) are passed over, and so are the convolutions of a squeeze-and-excitation gate
    (a convolution reading a 1x1 map pooled from a larger one). When the model calls no
    activation module (it calls ``F.relu``), each convolution's own output, or the
    normalisation after it, is taken: a channel with no positive value there is one that a
    following ReLU zeroes everywhere.
    """
    calls = per_image(calls, output_shape)
    with_modules = any(isinstance(call.layer, ACTIVATION_TYPES) for call in calls)
    selected: dict[Site, int] = {}
    opener: ModuleCall | None = None  # the block's latest convolution
    pending: ModuleCall | None = None  # without activation modules: what stands for the block
    previous: tuple[int, ...] | None = None  # the latest map
    for call in calls:
        module, shape = call.layer, call.output_shape
        if shape is None:
            continue
        gate = _reads_pooled_map(call, previous)
        if len(shape) == 4:
            previous = shape
        if gate:
            continue
        if _opens_block(module, shape):
            if pending is not None and opener is not None and not with_modules:
                selected.setdefault(pending.site, _channel_dim(opener))
            opener = pending = call
        elif opener is not None and _same_map(opener, shape):
            if isinstance(module, ACTIVATION_TYPES):
                selected.setdefault(call.site, _channel_dim(opener))
                opener = pending = None
            elif isinstance(module, NORM_TYPES):
                pending = call
        elif opener is not None and is_linear(module):  # a classifier: the block has ended
            if pending is not None and not with_modules:
                selected.setdefault(pending.site, _channel_dim(opener))
            opener = pending = None
    if pending is not None and opener is not None and not with_modules:
        selected.setdefault(pending.site, _channel_dim(opener))
    return selected


def _reads_pooled_map(call: ModuleCall, previous: tuple[int, ...] | None) -> bool:
    """A convolution on a 1x1 map right after a larger map: a gate's global branch."""
    taken = call.input_shape
    return (
        is_conv(call.layer)
        and taken is not None
        and len(taken) == 4
        and taken[2] * taken[3] == 1
        and previous is not None
        and previous[2] * previous[3] > 1
    )


def _opens_block(module: nn.Module, shape: tuple[int, ...]) -> bool:
    return map_channel_dim(module, shape) is not None


def _channel_dim(opener: ModuleCall) -> int:
    return map_channel_dim(opener.layer, opener.output_shape) or 1


def _same_map(opener: ModuleCall, shape: tuple[int, ...]) -> bool:
    """Whether a map of ``shape`` has the block's size and layout (channels may differ)."""
    assert opener.output_shape is not None
    return same_map(opener.output_shape, _channel_dim(opener), shape)


#: Every conv block's activation.
ACTIVATION_SITES = SiteRule(
    "every conv block's activation", _activation_candidate, choose_activation_sites
)


def feature_convolutions(
    calls: Sequence[ModuleCall], output_shape: tuple[int, ...] | None = None
) -> list[ModuleCall]:
    """The convolution calls whose output is a feature map larger than 1x1, in call order,
    leaving out the classifier: convolutions after which no linear layer is called and which
    produce as many channels as the model has classes (SqueezeNet's ``classifier.1``, timm's
    DLA ``head.fc``; the classes are the model's output width, ``output_shape[-1]``, or else the
    last convolution's channels)."""
    calls = per_image(calls, output_shape)
    layers = [call for call in calls if is_classifier_layer(call.layer) and call.output_shape]
    if layers and is_conv(layers[-1].layer):
        classes = output_shape[-1] if output_shape else _channels(layers[-1])
        while layers and is_conv(layers[-1].layer) and _channels(layers[-1]) == classes:
            layers.pop()
    return [
        call
        for call in layers
        if is_conv(call.layer)
        and call.output_shape is not None
        and len(call.output_shape) == 4
        and call.output_shape[2] * call.output_shape[3] > 1
    ]


def _channels(call: ModuleCall) -> int:
    return call.output_shape[1] if call.output_shape and len(call.output_shape) > 1 else -1


def _last_and_middle(
    calls: Sequence[ModuleCall], output_shape: tuple[int, ...] | None
) -> dict[Site, int]:
    found = feature_convolutions(calls, output_shape)
    if not found:
        return {}
    return dict.fromkeys([found[len(found) // 2].site, found[-1].site], 1)


#: A middle and the last feature convolution (see :func:`feature_convolutions`).
FEATURE_CONVOLUTIONS = SiteRule(
    "a middle and the last convolution with a spatial output",
    is_classifier_layer,  # the linear layers too: they tell a 1x1-conv classifier apart
    _last_and_middle,
)


def classifier_call(
    calls: Sequence[ModuleCall], output_shape: tuple[int, ...] | None = None
) -> ModuleCall | None:
    """The classifier, whose input is the code: the last call of a linear layer or a
    convolution that produces the model's classes (as many features or channels as
    ``output_shape[-1]``; with ``output_shape=None``, the last call of either). ``None`` when
    there is none."""
    calls = per_image(calls, output_shape)
    layers = [call for call in calls if is_classifier_layer(call.layer) and call.output_shape]
    if output_shape:
        layers = [call for call in layers if _features(call) == output_shape[-1]]
    return layers[-1] if layers else None


def _features(call: ModuleCall) -> int:
    """Output features of a linear layer (last dimension) or channels of a convolution."""
    assert call.output_shape is not None
    return call.output_shape[-1] if is_linear(call.layer) else _channels(call)


#: The classifier (see :func:`classifier_call`).
CLASSIFIER = SiteRule(
    "the input of the classifier (the last linear layer or convolution producing the classes)",
    is_classifier_layer,
    lambda calls, shape: {found.site: 1} if (found := classifier_call(calls, shape)) else {},
)


class Survey(NamedTuple):
    """What one forward pass did: every module call, and the shape of the model's output."""

    calls: list[ModuleCall]
    output_shape: tuple[int, ...] | None


def survey(model: nn.Module, inputs: torch.Tensor) -> Survey:
    """Every module call of one eval-mode forward pass of ``inputs``, in the order the calls end.

    A single image is passed twice, so that tensors that follow the batch can be told from those
    that do not (see :func:`per_image`). Runs without gradients and leaves every ``.training`` flag,
    the RNG and the gradients as they were (:func:`~lightning_convviz.functional.preserved_state`).

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(18, 3))
        >>> found = survey(model, torch.zeros(1, 1, 5, 5))
        >>> [(call.site.module, call.output_shape) for call in found.calls], found.output_shape
        ([('0', (2, 2, 3, 3)), ('1', (2, 2, 3, 3)), ('2', (2, 18)), ('3', (2, 3))], (2, 3))
    """
    everything = SiteRule("every call", lambda module: True, lambda calls, shape: {})
    sites = CallSites(model, None, everything)
    if len(inputs) == 1:
        inputs = torch.cat([inputs, inputs])
    with preserved_state(model), torch.no_grad(), sites.attached():
        model(inputs)
    return Survey(sites.first_pass, sites.output_shape)


def selector(calls: Sequence[ModuleCall], site: Site) -> str:
    """The selector string of ``site``: its module's name, with ``:<k>`` when the module is
    called several times in ``calls``."""
    count = sum(1 for call in calls if call.site.module == site.module)
    return site_name(site.module, site.call, count)


def last_feature_convolution(model: nn.Module, inputs: torch.Tensor) -> str:
    """Grad-CAM's default layer: the last convolution that the eval-mode forward pass of
    ``inputs`` calls with a map larger than 1x1, not a 1x1-conv classifier (as a selector,
    ``"name"`` or ``"name:k"``).

    Raises:
        ValueError: No such convolution is called.
    """
    calls, output_shape = survey(model, inputs[:2])
    found = feature_convolutions(calls, output_shape)
    if not found:
        raise ValueError(
            f"layer: the forward pass of {type(model).__name__} calls no convolution with a map "
            "larger than 1x1; pass layer=..."
        )
    return selector(calls, found[-1].site)
