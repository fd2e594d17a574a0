"""The attribution callbacks' base: :class:`ProbeExplainer` adds heat-map grids to a
:class:`~lightning_convviz.callbacks.probe.ProbeCallback`. Each subclass turns (model, images,
targets) into maps in ``[0, 1]``, logged as one labelled grid per map kind, so consecutive steps
form a time-lapse in TensorBoard's image slider.
"""

from __future__ import annotations

import torch
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_warn

from lightning_convviz import render
from lightning_convviz.callbacks.batches import to_host
from lightning_convviz.callbacks.probe import ProbeCallback

__all__ = ["ProbeExplainer"]


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
