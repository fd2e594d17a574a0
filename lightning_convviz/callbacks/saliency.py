"""SaliencyMonitor: gradient attribution maps of fixed probe images, as a training time-lapse."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_info

from lightning_convviz import render
from lightning_convviz.callbacks.arguments import check_layers_argument, check_positive_int
from lightning_convviz.callbacks.explainer import ProbeExplainer
from lightning_convviz.callbacks.probe import ExplainTarget
from lightning_convviz.functional import attribution
from lightning_convviz.functional.capture import (
    LayerSpec,
    resolve_single_layer,
    resolve_single_site,
)
from lightning_convviz.functional.defaults import last_feature_convolution

__all__ = ["ATTRIBUTION_METHODS", "SaliencyMonitor"]

#: Methods :class:`SaliencyMonitor` can draw, by name.
ATTRIBUTION_METHODS = ("saliency", "smoothgrad", "deconvnet", "guided_backprop", "grad_cam")


class SaliencyMonitor(ProbeExplainer):
    """Log, per attribution method, the probe images with the method's map laid over them.

    Where does the model look? Saliency (Simonyan et al.), SmoothGrad, deconvnet (Zeiler & Fergus),
    guided backprop (Springenberg et al.) and Grad-CAM, computed with
    :mod:`lightning_convviz.functional` for a fixed probe set: ``num_probe_images`` validation
    images spread over the set and its classes (one per class first), or ``probe_images``. They are
    drawn at the start of training and every ``every_n_epochs`` epochs, so TensorBoard's step slider
    plays the maps as a time-lapse: noisy at first, then settling on the strokes that decide the
    class.

    Each tile is one probe image in grey with the map in heat-map colours (blue = little, red =
    most evidence; each map scaled to its 99th percentile), captioned with the true class (when
    the batch has labels), the predicted class and its probability. The maps explain the true
    class, or the prediction with ``target="predicted"`` or without labels. Pixel-space maps
    show the largest absolute value over the input channels.

    Everything runs in eval mode on the probe; every module's ``.training`` flag, the parameters'
    ``.grad``, BatchNorm statistics and the RNG state are as before afterwards.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> monitor = SaliencyMonitor(methods=("saliency", "grad_cam"), num_probe_images=8)
        >>> trainer = Trainer(callbacks=[monitor])

    Logged tags:
        * ``attribution/<method>`` (image, TensorBoard), one per entry of ``methods``, at
          ``global_step``.

    Args:
        methods: Any of ``"saliency"``, ``"smoothgrad"``, ``"deconvnet"``,
            ``"guided_backprop"``, ``"grad_cam"``.
        probe_images: Fixed inputs ``N x C x H x W`` instead of validation images.
        probe_labels: Their integer labels (optional).
        num_probe_images: How many validation images to take (ignored with ``probe_images``).
        every_n_epochs: Draw after every this many training epochs.
        target: Explain the ``"true"`` class (when known) or the ``"predicted"`` one.
        grad_cam_layer: Layer for Grad-CAM (name, with ``:<k>`` for its k-th call, module or
            type); ``None``: the last convolution that the eval-mode forward pass of the probe
            calls with a map larger than 1x1, leaving out a 1x1-conv classifier (found at the
            first drawing; an info message names it).
        smoothgrad_samples: Noisy copies per image for SmoothGrad.
        smoothgrad_noise: SmoothGrad's noise standard deviation as a fraction of the probe's
            value range (0.15 in the paper's experiments).
        tile_side: Smallest side of one tile, in pixels.

    Raises:
        ValueError: At construction, for an argument outside the allowed values.
        MisconfigurationException: In ``setup``, when the Trainer has no logger or
            ``grad_cam_layer`` does not select exactly one module (or the model has no conv).
    """

    section = "attribution"

    def __init__(
        self,
        methods: Sequence[str] = ("saliency", "guided_backprop", "grad_cam"),
        probe_images: torch.Tensor | None = None,
        probe_labels: torch.Tensor | None = None,
        num_probe_images: int = 8,
        every_n_epochs: int = 1,
        target: ExplainTarget = "true",
        grad_cam_layer: LayerSpec | None = None,
        smoothgrad_samples: int = 16,
        smoothgrad_noise: float = 0.15,
        tile_side: int = 96,
    ) -> None:
        super().__init__(
            probe_images, probe_labels, num_probe_images, every_n_epochs, target, tile_side
        )
        chosen = [methods] if isinstance(methods, str) else list(methods)
        unknown = [method for method in chosen if method not in ATTRIBUTION_METHODS]
        if not chosen or unknown or len(set(chosen)) != len(chosen):
            raise ValueError(
                f"methods: expected a non-empty list without repeats from {ATTRIBUTION_METHODS}, "
                f"got {methods!r}"
            )
        if grad_cam_layer is not None:
            check_layers_argument(grad_cam_layer)
        check_positive_int("smoothgrad_samples", smoothgrad_samples)
        if isinstance(smoothgrad_noise, bool) or not smoothgrad_noise >= 0:
            raise ValueError(f"smoothgrad_noise: expected a number >= 0, got {smoothgrad_noise!r}")
        self.methods = tuple(chosen)
        self.grad_cam_layer = grad_cam_layer
        self.smoothgrad_samples = smoothgrad_samples
        self.smoothgrad_noise = float(smoothgrad_noise)
        self._grad_cam_site: LayerSpec | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(methods=self.methods, every=self.every_n_epochs)

    def _setup_model(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._grad_cam_site = None
        if "grad_cam" not in self.methods:
            return
        try:
            if self.grad_cam_layer is None:
                resolve_single_layer(pl_module, None)  # "no convolution" fails here
            else:
                resolve_single_site(pl_module, self.grad_cam_layer)
                self._grad_cam_site = self.grad_cam_layer
        except (ValueError, TypeError) as error:
            raise MisconfigurationException(f"{type(self).__name__}: {error}") from None

    def _grad_cam_layer(self, pl_module: LightningModule, images: torch.Tensor) -> LayerSpec:
        """The layer Grad-CAM reads: given, or found once from the probe's forward pass."""
        if self._grad_cam_site is None:
            try:
                self._grad_cam_site = last_feature_convolution(pl_module, images)
            except ValueError as error:
                raise MisconfigurationException(f"{type(self).__name__}: {error}") from None
            rank_zero_info(
                f"{type(self).__name__}: Grad-CAM reads {self._grad_cam_site!r}, the last "
                "convolution of the eval-mode forward pass with a map larger than 1x1"
            )
        return self._grad_cam_site

    def _heat_maps(
        self, pl_module: LightningModule, images: torch.Tensor, targets: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        compute: dict[str, Callable[[], torch.Tensor]] = {
            "saliency": lambda: attribution.saliency(pl_module, images, targets),
            "smoothgrad": lambda: attribution.smoothgrad(
                pl_module,
                images,
                targets,
                n_samples=self.smoothgrad_samples,
                stdev=self.smoothgrad_noise * float(images.max() - images.min()),
            ),
            "deconvnet": lambda: attribution.deconvnet(pl_module, images, targets),
            "guided_backprop": lambda: attribution.guided_backprop(pl_module, images, targets),
            "grad_cam": lambda: (
                attribution.grad_cam(
                    pl_module, images, targets, layer=self._grad_cam_layer(pl_module, images)
                ).input_map
            ),
        }
        return {
            method: render.scale_to_unit(compute[method]().abs().amax(dim=1))
            for method in self.methods
        }
