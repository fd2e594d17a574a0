"""ActivationMapMonitor: every channel's activation map for fixed probe images, as training goes."""

from __future__ import annotations

import torch
from pytorch_lightning import LightningModule, Trainer

from lightning_convviz import render
from lightning_convviz.callbacks.arguments import check_layers_argument, check_positive_int
from lightning_convviz.callbacks.batches import to_host
from lightning_convviz.callbacks.probe import ProbeCallback
from lightning_convviz.functional.capture import LayerSpec, capture_sites
from lightning_convviz.functional.defaults import ACTIVATION_SITES
from lightning_convviz.functional.guard import preserved_state
from lightning_convviz.functional.sites import CallSites

__all__ = ["ActivationMapMonitor"]


class ActivationMapMonitor(ProbeCallback):
    """Log, per layer, a grid with every channel's activation map for fixed probe images.

    The probe images are ``num_probe_images`` validation images spread over the validation set
    and its classes (read by index at the first validation batch, the sanity check's included,
    so they are the same for the whole run; see :mod:`lightning_convviz.callbacks.probe`), or
    the ``probe_images`` tensor you pass. Without validation data the first
    training batch serves, and an info message says so. Maps are drawn at the start of training
    and every ``every_n_epochs`` epochs, in eval mode on a probe batch, with every module's
    ``.training`` flag, the RNG state and the gradients restored afterwards.

    Each picture has a row per probe image: the image, then one box per channel (channel 0 top
    left). Boxes share one scale per layer, from 0 (black) to the layer's largest value (white),
    so a dead channel is a black box.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[ActivationMapMonitor(num_probe_images=2)])

    Logged tags (``<layer>`` is the site: the module's ``named_modules()`` name, with ``:<k>`` for
    the k-th call of a module called several times per forward pass):
        * ``activation_maps/<layer>`` (image, TensorBoard), at ``global_step``.

    Args:
        layers: Which modules to show: ``None`` (every conv block's activation, found from the
            calls of the forward pass), a name or glob (with ``:<k>`` for one call), a module, a
            module type, or a list of those. Every call of a selected module is drawn on its own;
            only 4-D outputs (``N x C x H x W``) are drawn.
        probe_images: Fixed inputs ``N x C x H x W`` to use instead of validation images.
        num_probe_images: How many validation images to take (ignored with ``probe_images``).
        every_n_epochs: Draw after every this many training epochs.
        max_channels: Draw at most this many channels per layer (the first ones).
        tile_side: Smallest side of one channel's box, in pixels.

    Raises:
        ValueError: At construction, for an argument outside the allowed values.
        MisconfigurationException: In ``setup``, when the Trainer has no logger, a
            layer name is unknown, or the model has no convolution; on the first batch, when no
            image tensor can be found in it (pass ``probe_images``).
    """

    section = "activation_maps"

    def __init__(
        self,
        layers: LayerSpec | list[LayerSpec] | None = None,
        probe_images: torch.Tensor | None = None,
        num_probe_images: int = 1,
        every_n_epochs: int = 1,
        max_channels: int = 64,
        tile_side: int = 24,
    ) -> None:
        super().__init__(probe_images, None, num_probe_images, every_n_epochs, "true", tile_side)
        check_layers_argument(layers)
        check_positive_int("max_channels", max_channels)
        self.layers = layers
        self.max_channels = max_channels
        self._sites: CallSites | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(layers=repr(self.layers), every=self.every_n_epochs)

    def _setup_model(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # its own diagnostic pass on the probe is what it watches
        self._sites = self._call_sites(pl_module, self.layers, ACTIVATION_SITES, collecting=False)

    # -- drawing (at the start of training and every ``every_n_epochs``, see ProbeCallback) ----

    def _draw(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = self._writer(trainer)
        probe_set = self._probe_on_device(trainer, pl_module)
        if writer is None or probe_set is None or self._sites is None:
            return
        probe = probe_set[0]
        with (
            preserved_state(pl_module),
            torch.no_grad(),
            capture_sites(self._sites) as activations,
        ):
            pl_module(probe)
        self._sites_found(self._sites)
        images = to_host(probe)
        maps = {
            name: to_host(activation[:, : self.max_channels])
            for name, activation in activations.items()
            if activation.ndim == 4
        }
        step, tile_side = trainer.global_step, self.tile_side

        def render_and_write() -> None:
            for name, layer_maps in maps.items():
                rows = [
                    render.activation_map_panel(image, channel_maps, tile_side)
                    for image, channel_maps in zip(images, layer_maps, strict=True)
                ]
                picture = torch.cat(rows, dim=1)
                writer.image(self._tag(name), render.to_uint8_hwc(picture), step)

        self._later(trainer, pl_module, render_and_write)
