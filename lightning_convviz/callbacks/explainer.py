"""Shared machinery of the callbacks that work on fixed probe images.

:class:`ProbeCallback` picks the probe (validation images spread over the set and its classes, with
their labels, a user tensor, or the first training batch), keeps the cadence (start of training,
then every ``every_n_epochs`` epochs) and predicts with captions; activation maps, inversion,
adversarial examples and class models build on it. :class:`ProbeExplainer` adds the heat-map grids
of the attribution callbacks: each subclass turns (model, images, targets) into maps in ``[0, 1]``,
logged as one labelled grid per map kind, so consecutive steps form a time-lapse in TensorBoard's
image slider.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_warn
from typing_extensions import override

from lightning_convviz import render
from lightning_convviz.callbacks.arguments import check_positive_int
from lightning_convviz.callbacks.base import EpochDrawingCallback
from lightning_convviz.callbacks.batches import to_host
from lightning_convviz.callbacks.probe import ProbeSet, check_probe_images
from lightning_convviz.functional.guard import preserved_state

__all__ = ["ExplainTarget", "ProbeCallback", "ProbeExplainer", "caption"]

#: Which class the maps explain: the true label (when the batch has labels) or the prediction.
ExplainTarget = Literal["true", "predicted"]


class ProbeCallback(EpochDrawingCallback):
    """Base class: a fixed probe set (with labels when known), drawn at the start of training
    and every ``every_n_epochs`` epochs on global rank zero. Subclasses implement :meth:`_draw`.
    """

    whole_model_needed = "runs the model on its probe images on global rank zero alone"

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

    # -- probe selection -----------------------------------------------------------------------

    @override
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
            self._probe.offer_validation_batch(trainer, batch, batch_idx, dataloader_idx)

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._enabled:
            self._probe.end_validation_epoch(trainer)

    @override
    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._enabled:
            self._probe.offer_training_batch(batch)

    # -- cadence -------------------------------------------------------------------------------

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._pending = None
        if self._enabled and trainer.global_step == 0 and self._probe.images is not None:
            self._draw_first(trainer, pl_module)

    def _probe_on_device(
        self, trainer: Trainer, pl_module: LightningModule
    ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """The probe images on the model's device and their labels, on global rank zero."""
        probe = self._probe.get()
        if not trainer.is_global_zero or probe is None:
            return None
        return probe[0].to(pl_module.device), probe[1]

    def _targets(self, labels: torch.Tensor | None, probabilities: torch.Tensor) -> torch.Tensor:
        """The class each probe image is explained for: its label when ``target="true"`` and
        labels are known, otherwise the predicted class."""
        if self.target == "true" and labels is not None:
            return labels
        return probabilities.argmax(dim=1)

    def _predict(
        self, pl_module: LightningModule, images: torch.Tensor, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, list[str]]:
        """Class probabilities ``(N, classes)`` on the CPU, and captions: true class (when
        known), predicted class and its probability."""
        with preserved_state(pl_module), torch.no_grad():
            probabilities = pl_module(images).float().softmax(dim=1).cpu()
        predicted = probabilities.argmax(dim=1)
        captions = [
            caption(
                None if label is None else self._class_name(int(label)),
                self._class_name(int(guess)),
                float(probability[guess]),
            )
            for label, guess, probability in zip(
                labels if labels is not None else [None] * len(images),
                predicted,
                probabilities,
                strict=True,
            )
        ]
        return probabilities, captions

    # -- checkpointing -------------------------------------------------------------------------

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**self._probe.state_dict(), "drawn_at": self._drawn_at}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._probe.load_state_dict(state_dict)
        self._drawn_at = state_dict.get("drawn_at")


class ProbeExplainer(ProbeCallback):
    """Base class of the heat-map callbacks: labelled grids of the probe with a map overlaid."""

    #: Whether this run was told that the model's scores are not finite.
    _told_not_finite = False

    def _heat_maps(
        self, pl_module: LightningModule, images: torch.Tensor, targets: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``{tag suffix: (N, h, w) maps in [0, 1]}`` for the probe images and targets."""
        raise NotImplementedError

    def _draw(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = self._writer(trainer)
        probe = self._probe_on_device(trainer, pl_module)
        if writer is None or probe is None:
            return
        images, labels = probe
        probabilities, captions = self._predict(pl_module, images, labels)
        if not bool(probabilities.isfinite().all()):
            self._say_outputs_not_finite(trainer)
            return
        targets = self._targets(labels, probabilities)
        maps = self._heat_maps(pl_module, images, targets.to(pl_module.device))
        shown = to_host(images)
        heats = {name: to_host(heat) for name, heat in maps.items()}
        step, tile_side = trainer.global_step, self.tile_side

        def render_and_write() -> None:
            for name, heat in heats.items():
                tiles = render.heat_overlays(shown, heat)
                grid = render.labelled_grid(tiles, captions, min_side=tile_side)
                writer.image(self._tag(name), grid, step)

        self._later(trainer, pl_module, render_and_write)

    def _say_outputs_not_finite(self, trainer: Trainer) -> None:
        """Once a run: the model's class scores for the probe images are NaN or infinite, so
        there is nothing to explain (a map of them would be noise or zeros, not evidence)."""
        if self._told_not_finite:
            return
        self._told_not_finite = True
        rank_zero_warn(
            f"{type(self).__name__}: the model's class scores for the probe images are NaN or "
            f"infinite at step {trainer.global_step} (did training diverge?): nothing to "
            "explain, no picture until they are finite again."
        )


def caption(label: str | None, predicted: str, probability: float) -> str:
    """``true <label>`` (when known) over ``pred <predicted> (<probability>)``."""
    shown = f"pred {predicted} ({probability:.2f})"
    return shown if label is None else f"true {label}\n{shown}"
