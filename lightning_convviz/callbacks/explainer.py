"""Shared machinery of the callbacks that explain the model's decision on fixed probe images.

Each subclass turns (model, images, targets) into heat maps in ``[0, 1]``; this base class picks
the probe, keeps the cadence (start of training, then every ``every_n_epochs`` epochs), predicts,
writes captions (true class, predicted class and its probability) and logs one labelled grid
per map kind, so consecutive steps form a time-lapse in TensorBoard's image slider.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pytorch_lightning import LightningModule, Trainer

from lightning_convviz import render
from lightning_convviz.callbacks.base import ConvVizCallback, check_positive_int
from lightning_convviz.callbacks.probe import ProbeSet, check_probe_images
from lightning_convviz.functional.guard import preserved_state

__all__ = ["ExplainTarget", "ProbeExplainer"]

#: Which class the maps explain: the true label (when the batch has labels) or the prediction.
ExplainTarget = Literal["true", "predicted"]


class ProbeExplainer(ConvVizCallback):
    """Base class: probe selection, cadence, captions and logging of labelled heat-map grids."""

    def __init__(
        self,
        probe_images: torch.Tensor | None,
        probe_labels: torch.Tensor | None,
        num_probe_images: int,
        every_n_epochs: int,
        target: ExplainTarget,
        tile_side: int,
    ) -> None:
        super().__init__()
        check_probe_images(probe_images)
        if probe_labels is not None and (
            probe_images is None
            or not isinstance(probe_labels, torch.Tensor)
            or probe_labels.shape != probe_images.shape[:1]
            or probe_labels.is_floating_point()
        ):
            raise ValueError(
                "probe_labels: expected None or integer labels, one per probe image (and "
                f"probe_images given), got {getattr(probe_labels, 'shape', probe_labels)!r}"
            )
        check_positive_int("num_probe_images", num_probe_images)
        check_positive_int("every_n_epochs", every_n_epochs)
        check_positive_int("tile_side", tile_side)
        if target not in ("true", "predicted"):
            raise ValueError(f"target: expected 'true' or 'predicted', got {target!r}")
        self.num_probe_images = num_probe_images
        self.every_n_epochs = every_n_epochs
        self.target = target
        self.tile_side = tile_side
        self._probe = ProbeSet(type(self).__name__, num_probe_images, probe_images, probe_labels)

    # -- what subclasses provide ---------------------------------------------------------------

    def _heat_maps(
        self, pl_module: LightningModule, images: torch.Tensor, targets: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``{tag suffix: (N, h, w) maps in [0, 1]}`` for the probe images and targets."""
        raise NotImplementedError

    # -- probe selection -----------------------------------------------------------------------

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._enabled:
            self._probe.offer_validation_batch(batch, batch_idx, dataloader_idx)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._enabled:
            self._probe.offer_training_batch(batch)

    # -- cadence -------------------------------------------------------------------------------

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._enabled and trainer.global_step == 0 and self._probe.images is not None:
            self._draw(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._enabled and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._draw(trainer, pl_module)

    # -- drawing -------------------------------------------------------------------------------

    def _draw(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = self._writer(trainer)
        probe = self._probe.get()
        if writer is None or probe is None:
            return
        images = probe[0].to(pl_module.device)
        labels = probe[1]
        with preserved_state(pl_module), torch.no_grad():
            probabilities = pl_module(images).float().softmax(dim=1).cpu()
        predicted = probabilities.argmax(dim=1)
        targets = labels if self.target == "true" and labels is not None else predicted
        maps = self._heat_maps(pl_module, images, targets.to(pl_module.device))
        captions = [
            _caption(None if labels is None else int(label), int(guess), probability)
            for label, guess, probability in zip(
                labels if labels is not None else [None] * len(images),
                predicted,
                probabilities,
                strict=True,
            )
        ]
        for name, heat in maps.items():
            tiles = torch.stack(
                [render.heat_overlay(image, map_) for image, map_ in zip(images, heat, strict=True)]
            )
            grid = render.labelled_grid(tiles, captions, min_side=self.tile_side)
            writer.add_image(self._tag(name), grid, trainer.global_step, dataformats="HWC")

    # -- checkpointing -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return self._probe.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._probe.load_state_dict(state_dict)


def _caption(label: int | None, predicted: int, probabilities: torch.Tensor) -> str:
    shown = f"pred {predicted} ({float(probabilities[predicted]):.2f})"
    return shown if label is None else f"true {label}\n{shown}"
