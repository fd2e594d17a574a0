"""InversionMonitor: what the codes of a few depths still know about the probe images."""

from __future__ import annotations

import torch
from pytorch_lightning import LightningModule, Trainer
from torch import nn

from lightning_convviz import render
from lightning_convviz.callbacks.base import check_layers_argument, check_positive_int
from lightning_convviz.callbacks.explainer import ProbeCallback
from lightning_convviz.functional.capture import (
    ACTIVATION_TYPES,
    LayerSpec,
    default_activation_layers,
)
from lightning_convviz.functional.inversion import invert

__all__ = ["InversionMonitor"]


class InversionMonitor(ProbeCallback):
    """Reconstruct the probe images from their codes at a few depths (Mahendran & Vedaldi).

    Every ``every_n_epochs`` epochs (and at the start), for each probe image (the first
    ``num_probe_images`` validation images, or ``probe_images``), an image is optimised from
    noise until its code at each chosen layer matches the probe's
    (:func:`~lightning_convviz.functional.inversion.invert`, with total-variation and norm
    priors). Shallow codes give the image back almost exactly; deep codes keep what the network
    keeps and lose the rest: on the digits demo the conv blocks' codes (wider than the image)
    still give the digit back (PSNR above 27 dB), while the 128-d penultimate code gives a blurry
    blob of roughly the digit's shape (12-19 dB), the paper's finding.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[InversionMonitor(num_probe_images=4, every_n_epochs=5)])

    Logged tags:
        * ``inversion/reconstructions`` (image): a row per probe image: the input, then its
          reconstruction from each layer, captioned with the layer and the code error.
        * ``inversion/code_error/<layer>`` (scalar): mean relative code error of the
          reconstructions, ``||code(x) - code(probe)|| / ||code(probe)||``.

    Args:
        layers: Which codes: ``None`` takes the first and the last conv block's activation and
            the activation feeding the last ``nn.Linear`` (the penultimate code); or names,
            modules or types (each selecting one module).
        probe_images: Fixed inputs ``N x C x H x W`` instead of validation images.
        num_probe_images: How many validation images to take.
        every_n_epochs: Draw after every this many training epochs.
        steps: Optimisation steps per reconstruction (all probe images at once).
        tile_side: Smallest side of one picture, in pixels.

    Raises:
        ValueError: At construction, for an argument outside the allowed values.
        MisconfigurationException: In ``setup``, for a missing TensorBoard logger, an unknown
            layer, or a model without convolutions.
    """

    section = "inversion"

    def __init__(
        self,
        layers: LayerSpec | list[LayerSpec] | None = None,
        probe_images: torch.Tensor | None = None,
        num_probe_images: int = 4,
        every_n_epochs: int = 5,
        steps: int = 200,
        tile_side: int = 64,
    ) -> None:
        super().__init__(probe_images, None, num_probe_images, every_n_epochs, "true", tile_side)
        check_layers_argument(layers)
        check_positive_int("steps", steps)
        self.layers = layers
        self.steps = steps
        self._layers: dict[str, nn.Module] = {}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(layers=repr(self.layers), every=self.every_n_epochs)

    def _setup_model(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.layers is None:
            blocks = list(default_activation_layers(pl_module).items())
            default = dict([blocks[0], blocks[-1]]) if blocks else {}
            default.update(_penultimate(pl_module))
            self._layers = self._resolve(pl_module, None, default)
        else:
            self._layers = self._resolve(pl_module, self.layers)

    def _draw(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = self._writer(trainer)
        probe = self._probe_on_device(trainer, pl_module)
        if writer is None or probe is None:
            return
        images = probe[0]
        columns = [render.thumbnails(images, self.tile_side)]
        captions = [["input"] for _ in images]
        errors = {}
        for name, module in self._layers.items():
            result = invert(pl_module, module, images, steps=self.steps)
            columns.append(render.thumbnails(result.images, self.tile_side))
            for row, error in enumerate(result.code_error.tolist()):
                captions[row].append(f"{name}\nerror {error:.3f}")
            errors[self._tag("code_error", name)] = float(result.code_error.mean())
        tiles = torch.stack(columns, dim=1).flatten(0, 1)
        texts = [text for row in captions for text in row]
        picture = render.labelled_grid(tiles, texts, columns=len(columns), min_side=self.tile_side)
        writer.add_image(
            self._tag("reconstructions"), picture, trainer.global_step, dataformats="HWC"
        )
        self._log_scalars(trainer, errors, trainer.global_step)


def _penultimate(model: nn.Module) -> dict[str, nn.Module]:
    """The last activation module before the last ``nn.Linear``, in ``named_modules()`` order."""
    found: dict[str, nn.Module] = {}
    candidate: tuple[str, nn.Module] | None = None
    for name, module in model.named_modules():
        if isinstance(module, ACTIVATION_TYPES):
            candidate = (name, module)
        elif isinstance(module, nn.Linear) and candidate is not None:
            found = dict([candidate])
    return found
