"""FilterMonitor: convolution filters as pictures, with a noise score and how far they moved."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning import LightningModule, Trainer
from torch import nn
from typing_extensions import override

from lightning_convviz import render
from lightning_convviz.callbacks.arguments import check_layers_argument, check_positive_int
from lightning_convviz.callbacks.base import EpochDrawingCallback
from lightning_convviz.callbacks.batches import to_host
from lightning_convviz.functional.capture import LayerSpec, conv_layers, is_conv
from lightning_convviz.functional.filters import (
    filter_chromatic_share,
    filter_noise_score,
    filter_orientedness,
    relative_change,
)

__all__ = ["FilterMonitor"]


class FilterMonitor(EpochDrawingCallback):
    """Log convolution filters as images, their noise score, and their distance from the start.

    At the start of training and every ``every_n_epochs`` epochs, for each selected convolution:

    * a picture of its filters, each tile contrast-normalised on its own (its smallest tap black,
      its largest white). A layer with 3 input channels (the first layer of an RGB model) shows
      one RGB tile per filter; one with 1 input channel one grey tile per filter; deeper layers
      one grey tile per (output, input) channel pair, a row per output channel, capped at
      ``max_outputs`` rows and ``max_inputs`` columns;
    * the **noise score** (:func:`lightning_convviz.functional.filter_noise_score`): squared
      differences between neighbouring taps relative to the kernels' variance. Random
      (untrained) kernels read about 1.0; smooth, structured kernels read well below 1.
      A score that stays flat near 1.0 means the filters are still close to their random start:
      too little training, too little regularisation, or a layer that barely matters (common for
      the first layer of a network with BatchNorm, whose loss hardly depends on its scale);
      compare ``relative_change`` before concluding anything;
    * the **relative change** ``||W - W_start|| / ||W_start||`` from the weights at the start of
      training (kept on the host, restored from checkpoints);
    * for a convolution that sees the image's channels (1 or 3 input channels, not grouped:
      usually the first), how **oriented** its filters are
      (:func:`lightning_convviz.functional.filter_orientedness`, the mean over filters: edges
      and gratings read high, blobs 0, random 5 x 5 filters about 0.12, 7 x 7 about 0.09) and,
      on RGB, their **chromatic share**
      (:func:`~lightning_convviz.functional.filter_chromatic_share`, the mean: grey filters
      read 0, random ones about 2/3). Trained first layers of ImageNet models hold both
      oriented grey edges and colour blobs.

    Only rank zero computes and writes; filters are the same on every DDP rank.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[FilterMonitor(every_n_epochs=2)])

    Logged tags (``<layer>`` is the module's ``named_modules()`` name):
        * ``filters/<layer>`` (image, TensorBoard)
        * ``filters/noise_score/<layer>`` (scalar, every logger; absent for 1x1 kernels)
        * ``filters/relative_change/<layer>`` (scalar, every logger)
        * ``filters/orientedness/<layer>``, ``filters/chromatic_share/<layer>`` (scalars, every
          logger; convolutions of the image's 1 or 3 channels only, chromatic share for 3)

    All at the Trainer's ``global_step`` (0 for the initial filters).

    Args:
        layers: Which convolutions: ``None`` (every ``nn.Conv*`` layer), a name or glob, a
            module, a module type, or a list of those; each must be a convolution.
        every_n_epochs: Log after every this many training epochs.
        log_images: Also log the filter pictures (scores are always logged).
        max_outputs: Most output channels drawn per layer.
        max_inputs: Most input channels drawn per output channel (deeper layers).
        tile_side: Smallest side of one kernel's tile, in pixels.

    Raises:
        ValueError: At construction, for an argument outside the allowed values.
        MisconfigurationException: In ``setup``, when the Trainer has no logger, a
            layer is unknown or not a convolution, or the model has no convolution.
    """

    whole_model_needed = "reads each convolution's weights"

    section = "filters"
    dashboard: ClassVar[dict[str, list[str]]] = {
        "filter noise score, every layer": ["filters/noise_score/"],
        "filter change, every layer": ["filters/relative_change/"],
        "first-layer orientedness and colour": [
            "filters/orientedness/",
            "filters/chromatic_share/",
        ],
    }

    def __init__(
        self,
        layers: LayerSpec | list[LayerSpec] | None = None,
        every_n_epochs: int = 1,
        log_images: bool = True,
        max_outputs: int = 32,
        max_inputs: int = 16,
        tile_side: int = 24,
    ) -> None:
        super().__init__()
        check_layers_argument(layers)
        check_positive_int("every_n_epochs", every_n_epochs)
        check_positive_int("max_outputs", max_outputs)
        check_positive_int("max_inputs", max_inputs)
        check_positive_int("tile_side", tile_side)
        self.layers = layers
        self.every_n_epochs = every_n_epochs
        self.log_images = log_images
        self.max_outputs = max_outputs
        self.max_inputs = max_inputs
        self.tile_side = tile_side
        self._layers: dict[str, nn.Module] = {}
        self._initial: dict[str, torch.Tensor] = {}
        self._sees_image: set[str] = set()

    @property
    def state_key(self) -> str:
        return self._generate_state_key(layers=repr(self.layers), every=self.every_n_epochs)

    def _setup_model(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._layers = self._resolve(pl_module, self.layers, default=conv_layers(pl_module))
        wrong = [name for name, m in self._layers.items() if not is_conv(m)]
        if wrong:
            raise MisconfigurationException(
                f"{type(self).__name__}: layers must be convolutions; not a convolution: "
                f"{', '.join(wrong)}"
            )
        self._sees_image = {
            name
            for name, module in self._layers.items()
            if getattr(module, "groups", 1) == 1
            and _weight(module).ndim == 4
            and _weight(module).shape[1] in (1, 3)
        }

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._enabled or not trainer.is_global_zero:
            return
        for name, module in self._layers.items():
            if name not in self._initial:
                self._initial[name] = to_host(_weight(module))  # kept on the host
        self._pending = None
        if trainer.global_step == 0:
            self._draw_first(trainer, pl_module)

    def _draw(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = self._writer(trainer)
        if writer is None:
            return
        step = trainer.global_step
        # the training loop waits for these copies only: the scores, the relative changes and
        # the pictures are made from them (in the drawing worker when there is one)
        weights = {name: to_host(_weight(module)) for name, module in self._layers.items()}
        initial = dict(self._initial)
        sees_image = set(self._sees_image)
        sizes = (self.max_outputs, self.max_inputs, self.tile_side)
        log_images = self.log_images

        def measure_render_and_write() -> None:
            metrics: dict[str, float] = {}
            for name, weight in weights.items():
                score = filter_noise_score(weight).item()
                if not math.isnan(score):
                    metrics[self._tag("noise_score", name)] = score
                if name in initial:
                    change = relative_change(weight, initial[name].to(weight.device))
                    metrics[self._tag("relative_change", name)] = change.item()
                if name in sees_image:
                    orientedness = filter_orientedness(weight).nanmean().item()
                    if not math.isnan(orientedness):
                        metrics[self._tag("orientedness", name)] = orientedness
                    if weight.shape[1] == 3:
                        share = filter_chromatic_share(weight).nanmean().item()
                        if not math.isnan(share):
                            metrics[self._tag("chromatic_share", name)] = share
                if log_images and weight.ndim == 4:
                    picture = render.filter_grid(weight, *sizes)
                    writer.image(self._tag(name), render.to_uint8_hwc(picture), step)
            self._log_scalars(trainer, metrics, step)

        self._later(trainer, pl_module, measure_render_and_write)

    @override
    def state_dict(self) -> dict[str, Any]:
        initial = {name: w.cpu() for name, w in self._initial.items()}
        return {"initial": initial, "drawn_at": self._drawn_at}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._initial = dict(state_dict.get("initial", {}))
        self._drawn_at = state_dict.get("drawn_at")


def _weight(module: nn.Module) -> torch.Tensor:
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    return weight.detach()
