"""Gradient attribution maps: saliency, SmoothGrad, deconvnet, guided backprop and Grad-CAM.

Arguments follow Captum's ``attribute()`` (``model, inputs, target``) and the results equal
Captum's ``Saliency``, ``NoiseTunnel(Saliency)``, ``Deconvolution``, ``GuidedBackprop`` and
``LayerGradCam`` (the test suite checks this). Unlike them, every function here

* runs the model in eval mode and restores every module's ``.training`` flag afterwards;
* takes gradients with ``torch.autograd.grad`` w.r.t. a copy of the inputs only, so the
  parameters' ``.grad`` and the optimizer state are untouched;
* works inside Lightning's validation loop (``no_grad``) and under ``trainer.validate``
  (``inference_mode``);
* leaves the global RNG state as it was;
* covers ``F.relu`` / ``torch.relu`` / ``Tensor.relu`` in guided backprop and deconvnet, not
  only ``nn.ReLU`` modules (see :mod:`lightning_convviz.functional.relu_override`).

Pure torch: no Lightning, no logging.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
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
from lightning_convviz.functional.capture import LayerSpec, single_site_watch
from lightning_convviz.functional.defaults import last_feature_convolution
from lightning_convviz.functional.guard import grad_enabled, preserved_state
from lightning_convviz.functional.relu_override import ReluRule, modified_relu_backward
from lightning_convviz.functional.sites import Site

__all__ = [
    "GradCam",
    "deconvnet",
    "grad_cam",
    "guided_backprop",
    "saliency",
    "smoothgrad",
]


def saliency(
    model: nn.Module, inputs: torch.Tensor, target: Target, abs: bool = True
) -> torch.Tensor:
    """Gradient of the target class score w.r.t. the input pixels (Simonyan et al., 2014).

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
        >>> weight = torch.tensor([[1.0, -2.0, 3.0, -4.0], [0.0, 0.0, 0.0, 1.0]])
        >>> with torch.no_grad():
        ...     _ = model[1].weight.copy_(weight)
        >>> saliency(model, torch.zeros(1, 1, 2, 2), target=0).flatten()
        tensor([1., 2., 3., 4.])

    Args:
        model: Maps ``inputs`` to class scores ``N x classes``.
        inputs: Images ``N x C x H x W``.
        target: Class to explain: one int for all images, or one per image.
        abs: Return the absolute value of the gradient (Captum's default too).

    Returns:
        A tensor shaped like ``inputs``.

    Raises:
        ValueError: ``inputs`` is not a floating tensor ``N x C x H x W``, or ``target`` is out
            of range or of the wrong length.
    """
    gradient = _input_gradient(model, inputs, target)
    return gradient.abs() if abs else gradient


def smoothgrad(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target,
    n_samples: int = 25,
    stdev: float = 0.15,
    generator: torch.Generator | None = None,
    abs: bool = True,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Saliency averaged over noisy copies of each image (Smilkov et al., 2017).

    Each image is repeated ``n_samples`` times and Gaussian noise with standard deviation
    ``stdev`` (in input units) is added; the result is the mean of the noisy copies' saliency.
    The noise comes from ``generator`` (by default a new one seeded with 0, so the same images
    get the same noise every call); the global RNG state is unchanged.

    With a generator seeded like the global RNG, the noise, and so the result, equal Captum's
    ``NoiseTunnel(Saliency(model)).attribute(inputs, nt_type="smoothgrad", nt_samples=n_samples,
    stdevs=stdev, target=target, abs=abs)``.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> smoothgrad(model, torch.zeros(3, 1, 2, 2), target=1, n_samples=4).shape
        torch.Size([3, 1, 2, 2])

    Args:
        model: Maps ``inputs`` to class scores ``N x classes``.
        inputs: Images ``N x C x H x W``.
        target: Class to explain: one int for all images, or one per image.
        n_samples: Noisy copies per image.
        stdev: Standard deviation of the noise, in the units of ``inputs``.
        generator: Source of the noise (Captum's noise when it is on the inputs' device).
        abs: Average the absolute gradients (SmoothGrad's usual form).
        batch_size: Noisy images per forward/backward pass; ``None`` means all at once.

    Returns:
        A tensor shaped like ``inputs``.

    Raises:
        ValueError: As :func:`saliency`, or ``n_samples`` / ``batch_size`` < 1, or ``stdev`` < 0.
    """
    check_images(inputs)
    check_int("n_samples", n_samples)
    if not stdev >= 0:
        raise ValueError(f"stdev: expected a number >= 0, got {stdev!r}")
    check_int("batch_size", batch_size, allow_none=True)
    if generator is None:
        generator = torch.Generator(device=inputs.device).manual_seed(0)
    count = inputs.shape[0]
    repeated = inputs.detach().repeat_interleave(n_samples, dim=0)
    noise = torch.normal(
        0.0, float(stdev), size=repeated.shape, generator=generator, device=generator.device
    )
    noisy = repeated + noise.to(device=inputs.device, dtype=inputs.dtype)
    targets = _targets_per_image(target, count).repeat_interleave(n_samples)
    chunk = batch_size or noisy.shape[0]
    gradients = torch.cat(
        [
            _input_gradient(model, noisy[start : start + chunk], targets[start : start + chunk])
            for start in range(0, noisy.shape[0], chunk)
        ]
    )
    if abs:
        gradients = gradients.abs()
    return gradients.view(count, n_samples, *inputs.shape[1:]).sum(dim=1) / n_samples


def guided_backprop(model: nn.Module, inputs: torch.Tensor, target: Target) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al., 2015): at every ReLU, only positive gradient
    flows, and only where the ReLU's input was positive.

    Every ReLU the model calls is covered: ``nn.ReLU`` modules (also ``inplace=True``) and the
    functions ``F.relu``, ``torch.relu``, ``Tensor.relu`` and their in-place forms. Other
    activations keep their gradient, with a warning naming them.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(inplace=True),
        ...                       nn.Flatten(), nn.Linear(32, 3))
        >>> guided_backprop(model, torch.randn(2, 1, 4, 4), target=[0, 2]).shape
        torch.Size([2, 1, 4, 4])

    Args:
        model: Maps ``inputs`` to class scores ``N x classes``.
        inputs: Images ``N x C x H x W``.
        target: Class to explain: one int for all images, or one per image.

    Returns:
        A tensor shaped like ``inputs`` (signed, as Captum's ``GuidedBackprop``).

    Raises:
        ValueError: As :func:`saliency`.
    """
    return _input_gradient(model, inputs, target, relu_rule="guided")


def deconvnet(model: nn.Module, inputs: torch.Tensor, target: Target) -> torch.Tensor:
    """Deconvnet (Zeiler & Fergus, 2014): at every ReLU the gradient passes through a ReLU of
    its own, whatever the forward input was.

    Covers the same ReLU forms as :func:`guided_backprop`.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(),
        ...                       nn.Flatten(), nn.Linear(32, 3))
        >>> deconvnet(model, torch.randn(2, 1, 4, 4), target=1).shape
        torch.Size([2, 1, 4, 4])

    Args:
        model: Maps ``inputs`` to class scores ``N x classes``.
        inputs: Images ``N x C x H x W``.
        target: Class to explain: one int for all images, or one per image.

    Returns:
        A tensor shaped like ``inputs`` (signed, as Captum's ``Deconvolution``).

    Raises:
        ValueError: As :func:`saliency`.
    """
    return _input_gradient(model, inputs, target, relu_rule="deconvnet")


class GradCam(NamedTuple):
    """Grad-CAM maps: upsampled to the input and at the layer's own resolution."""

    #: ``N x 1 x H x W``, the layer map resized to the input.
    input_map: torch.Tensor
    #: ``N x 1 x h x w``, the map at the layer's resolution.
    layer_map: torch.Tensor


def grad_cam(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target,
    layer: LayerSpec | None = None,
    relu: bool = True,
    interpolate_mode: str = "bilinear",
) -> GradCam:
    """Grad-CAM (Selvaraju et al., 2017): the layer's channels weighted by their mean gradient.

    ``layer_map`` equals Captum's ``LayerGradCam(model, layer).attribute(inputs, target,
    relu_attributions=relu)``; ``input_map`` is it resized with ``F.interpolate`` in
    ``interpolate_mode`` (Captum's ``LayerAttribution.interpolate``).

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                       nn.Flatten(), nn.Linear(2, 3))
        >>> cam = grad_cam(model, torch.randn(2, 1, 8, 8), target=0)
        >>> tuple(cam.layer_map.shape), tuple(cam.input_map.shape)
        ((2, 1, 6, 6), (2, 1, 8, 8))

    Args:
        model: Maps ``inputs`` to class scores ``N x classes``.
        inputs: Images ``N x C x H x W``.
        target: Class to explain: one int for all images, or one per image.
        layer: The module whose output is weighed (a name, glob, module or type that selects
            exactly one module; ``"name:k"`` reads its k-th call); ``None`` means the last
            convolution that the eval-mode forward pass calls with a map larger than 1x1, not a
            1x1-conv classifier (found by a first pass of ``inputs[:1]``, see
            :func:`~lightning_convviz.functional.last_feature_convolution`). A module called
            more than once, named without a call number, is read at its last call.
        relu: Keep only the positive evidence (the paper's ReLU).
        interpolate_mode: ``F.interpolate`` mode for ``input_map``.

    Returns:
        :class:`GradCam` with ``input_map`` and ``layer_map``.

    Raises:
        ValueError: As :func:`saliency`; ``layer`` is unknown or selects several modules, or
            names a call that is not made; no convolution with a spatial map is called (with
            ``layer=None``); the layer's output is not ``N x C x h x w``.
    """
    check_images(inputs)
    if layer is None:
        layer = last_feature_convolution(model, inputs)
    sites, name, wanted_call = single_site_watch(model, layer)
    module = sites.model.get_submodule(name)
    captured: list[torch.Tensor] = []

    def keep_output(_site: Site, output: torch.Tensor) -> torch.Tensor:
        if not output.requires_grad:  # a frozen layer on the raw input: differentiate from here
            output = output.detach().requires_grad_(True)
        captured.append(output)
        return output.clone()  # a later in-place op (ReLU) must not change what we read

    with preserved_state(model), grad_enabled():
        with sites.attached(keep_output):
            outputs = model(inputs.detach().clone())
        if not captured:
            calls = sites.calls.get(name, 0)
            made = f"called {calls} times per forward pass" if calls else "not called"
            raise ValueError(
                f"layer: {layer!r} ({type(module).__name__}) was {made} in the forward pass"
                + (f", no call {wanted_call}" if wanted_call else " or did not return a tensor")
            )
        activation = captured[-1]
        if activation.ndim != 4:
            raise ValueError(
                f"layer: expected an output N x C x h x w, got shape {tuple(activation.shape)}"
            )
        scores = _target_scores(outputs, target, inputs.shape[0])
        (gradient,) = torch.autograd.grad(scores.sum(), activation, allow_unused=True)
        if gradient is None:  # the layer does not reach the scores
            gradient = torch.zeros_like(activation)
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    layer_map = (weights * activation.detach()).sum(dim=1, keepdim=True)
    if relu:
        layer_map = F.relu(layer_map)
    align = False if interpolate_mode in ("bilinear", "bicubic") else None
    input_map = F.interpolate(
        layer_map, size=tuple(inputs.shape[2:]), mode=interpolate_mode, align_corners=align
    )
    return GradCam(input_map=input_map, layer_map=layer_map)


# -- shared --------------------------------------------------------------------------------------


def _input_gradient(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target,
    relu_rule: ReluRule | None = None,
) -> torch.Tensor:
    check_images(inputs)
    relu_mode: AbstractContextManager[None] = (
        nullcontext() if relu_rule is None else modified_relu_backward(relu_rule)
    )
    with preserved_state(model), grad_enabled():
        images = inputs.detach().clone().requires_grad_(True)
        with relu_mode:
            outputs = model(images)
        scores = _target_scores(outputs, target, inputs.shape[0])
        (gradient,) = torch.autograd.grad(scores.sum(), images)
    return gradient


def _target_scores(outputs: object, target: Target, batch_size: int) -> torch.Tensor:
    outputs = check_class_scores(outputs, batch_size)
    indices = target_indices(target, batch_size, outputs.shape[1]).to(outputs.device)
    return outputs.gather(1, indices.unsqueeze(1)).squeeze(1)


def _targets_per_image(target: Target, batch_size: int) -> torch.Tensor:
    """One target per image, range-checked later against the model's output."""
    return target_indices(target, batch_size, num_classes=torch.iinfo(torch.long).max)
