"""InversionMonitor: what the codes of a few depths still know about the probe images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_info

from lightning_convviz import render
from lightning_convviz.callbacks.arguments import check_layers_argument, check_positive_int
from lightning_convviz.callbacks.batches import to_host
from lightning_convviz.callbacks.probe import ProbeCallback
from lightning_convviz.functional.capture import LayerSpec, conv_layers
from lightning_convviz.functional.defaults import (
    choose_activation_sites,
    classifier_call,
    selector,
    survey,
)
from lightning_convviz.functional.inversion import invert_codes
from lightning_convviz.functional.sites import SITE_SEPARATOR

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
          reconstructions, ``||code(x) - code(probe)|| / ||code(probe)||``. ``<layer>`` is the
          site name (``:<k>`` for the k-th call of a module called several times), and
          ``<classifier>:input`` for the classifier's input.

    Args:
        layers: Which codes: ``None`` takes the first and the last conv block's activation and
            the input of the classifier (the last linear layer or convolution called that
            produces the classes: the penultimate code), found from the calls of the probe's
            forward pass; or names (with ``:<k>`` for one call; a module called several times
            is read at its last call), modules or types (each selecting one module).
        probe_images: Fixed inputs ``N x C x H x W`` instead of validation images.
        num_probe_images: How many validation images to take.
        every_n_epochs: Draw after every this many training epochs.
        steps: Most optimisation steps (every code and probe image at once, in one batch). 150
            by default: on a GPU one step costs about one training step of a small network, so
            a drawing stays under 200 training steps; the digits' pictures at 150 look as at
            200 (``docs/images/inversion_steps_100_150_200.png``).
        tolerance: Stop once no image's objective fell by more than this fraction over the last
            20 steps (0: run every step).
        tile_side: Smallest side of one picture, in pixels.

    Raises:
        ValueError: At construction, for an argument outside the allowed values.
        MisconfigurationException: In ``setup``, for a Trainer without a logger, an unknown
            layer, or a model without convolutions.
    """

    section = "inversion"
    dashboard: ClassVar[dict[str, list[str]]] = {
        "code error of the reconstruction, every depth": ["inversion/code_error/"],
    }

    def __init__(
        self,
        layers: LayerSpec | list[LayerSpec] | None = None,
        probe_images: torch.Tensor | None = None,
        num_probe_images: int = 4,
        every_n_epochs: int = 5,
        steps: int = 150,
        tolerance: float = 0.01,
        tile_side: int = 64,
    ) -> None:
        super().__init__(probe_images, None, num_probe_images, every_n_epochs, "true", tile_side)
        check_layers_argument(layers)
        check_positive_int("steps", steps)
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
            raise ValueError(f"tolerance: expected a number >= 0, got {tolerance!r}")
        self.layers = layers
        self.steps = steps
        self.tolerance = float(tolerance)
        self._codes: list[_Code] = []

    @property
    def state_key(self) -> str:
        return self._generate_state_key(layers=repr(self.layers), every=self.every_n_epochs)

    def _setup_model(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.layers is None:
            self._resolve(pl_module, None, conv_layers(pl_module))  # "no convolution" error
            self._codes = []
        else:
            selected = self._resolve(pl_module, self.layers)
            self._codes = [_Code(name, name, "output") for name in selected]

    def _default_codes(self, pl_module: LightningModule, images: torch.Tensor) -> list[_Code]:
        """The first and the last conv block's activation and the classifier's input, found
        from the calls of the probe's forward pass (once)."""
        calls, output_shape = survey(pl_module, images[:2])
        blocks = list(choose_activation_sites(calls, output_shape))
        codes = [
            _Code(selector(calls, site), selector(calls, site), "output")
            for site in dict.fromkeys([blocks[0], blocks[-1]] if blocks else [])
        ]
        classifier = classifier_call(calls, output_shape)
        if classifier is not None:
            chosen = selector(calls, classifier.site)
            codes.append(_Code(f"{chosen}{SITE_SEPARATOR}input", chosen, "input"))
        if not codes:
            raise MisconfigurationException(
                f"InversionMonitor: the forward pass of {type(pl_module).__name__} calls no "
                "convolution or linear layer; pass layers=[...]"
            )
        rank_zero_info(
            "InversionMonitor: reconstructing from " + ", ".join(code.label for code in codes)
        )
        return codes

    def _draw(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = self._writer(trainer)
        probe = self._probe_on_device(trainer, pl_module)
        if writer is None or probe is None:
            return
        images = probe[0]
        if not self._codes:
            self._codes = self._default_codes(pl_module, images)
        captions = [["input"] for _ in images]
        errors = {}
        found = invert_codes(
            pl_module,
            [(code.layer, code.read) for code in self._codes],
            images,
            steps=self.steps,
            tolerance=self.tolerance,
        )  # every code in one optimisation: one forward and backward pass per step for all
        columns = [to_host(images)]
        for code, result in zip(self._codes, found, strict=True):
            columns.append(to_host(result.images))
            for row, error in enumerate(result.code_error.tolist()):
                captions[row].append(f"{code.caption}\nerror {error:.3f}")
            errors[self._tag("code_error", code.label)] = float(result.code_error.mean())
        texts = [text for row in captions for text in row]
        step, tile_side = trainer.global_step, self.tile_side

        def render_and_write() -> None:
            shown = [render.thumbnails(column, tile_side) for column in columns]
            tiles = torch.stack(shown, dim=1).flatten(0, 1)
            picture = render.labelled_grid(tiles, texts, columns=len(shown), min_side=tile_side)
            writer.image(self._tag("reconstructions"), picture, step)

        self._later(trainer, pl_module, render_and_write)
        self._log_scalars(trainer, errors, trainer.global_step)


@dataclass(frozen=True)
class _Code:
    """One code to reconstruct from: its label in tags and captions, the layer selector, and
    whether the layer's output or its input is the code."""

    label: str
    layer: str
    read: Literal["output", "input"]

    @property
    def caption(self) -> str:
        """The label as the picture shows it (an input's on two lines, to fit a tile)."""
        return f"input of\n{self.layer}" if self.read == "input" else self.label
