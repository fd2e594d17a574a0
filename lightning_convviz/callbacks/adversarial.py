"""AdversarialMonitor: how small a step fools the model on the probe images, over training."""

from __future__ import annotations

import torch
from pytorch_lightning import LightningModule, Trainer

from lightning_convviz import render
from lightning_convviz.callbacks.arguments import check_positive_int
from lightning_convviz.callbacks.batches import to_host
from lightning_convviz.callbacks.probe import ExplainTarget, ProbeCallback, caption
from lightning_convviz.functional.adversarial import fgsm_direction, min_fooling_epsilon

__all__ = ["AdversarialMonitor"]


class AdversarialMonitor(ProbeCallback):
    """Track the smallest fast-gradient-sign step that changes each probe image's prediction.

    Every ``every_n_epochs`` epochs (and at the start), for each probe image the smallest
    L-infinity step along the FGSM direction (Goodfellow et al.) that makes the model change its
    mind about the target class (the true one when known), searched up to ``max_epsilon`` times
    the probe's value range (:func:`~lightning_convviz.functional.adversarial.
    min_fooling_epsilon`). Robustness usually falls as a network fits its training data; this
    shows it happening.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[AdversarialMonitor(num_probe_images=8)])

    Logged tags:
        * ``adversarial/examples`` (image): per probe image the original (with prediction),
          the perturbation (amplified to the full grey range) with its epsilon, and the
          adversarial image with the new prediction.
        * ``adversarial/mean_min_epsilon`` (scalar): mean smallest fooling epsilon over the
          probe images that could be fooled, as a fraction of the probe's value range.
        * ``adversarial/fooled_fraction`` (scalar): share of probe images fooled within
          ``max_epsilon``.

    Args:
        probe_images: Fixed inputs ``N x C x H x W`` instead of validation images.
        probe_labels: Their integer labels (optional).
        num_probe_images: How many validation images to take.
        every_n_epochs: Draw after every this many training epochs.
        target: Fool the ``"true"`` class (when known) or the ``"predicted"`` one.
        max_epsilon: Largest step searched, as a fraction of the probe's value range.
        tile_side: Smallest side of one picture, in pixels.

    Raises:
        ValueError: At construction, for an argument outside the allowed values.
        MisconfigurationException: In ``setup``, when the Trainer has no logger.
    """

    section = "adversarial"

    def __init__(
        self,
        probe_images: torch.Tensor | None = None,
        probe_labels: torch.Tensor | None = None,
        num_probe_images: int = 8,
        every_n_epochs: int = 1,
        target: ExplainTarget = "true",
        max_epsilon: float = 0.25,
        tile_side: int = 64,
    ) -> None:
        super().__init__(
            probe_images, probe_labels, num_probe_images, every_n_epochs, target, tile_side
        )
        if isinstance(max_epsilon, bool) or not 0 < max_epsilon <= 1:
            raise ValueError(f"max_epsilon: expected a number in (0, 1], got {max_epsilon!r}")
        check_positive_int("tile_side", tile_side)
        self.max_epsilon = float(max_epsilon)

    def _setup_model(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Any classifier can be attacked: nothing to resolve."""

    def _draw(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = self._writer(trainer)
        probe = self._probe_on_device(trainer, pl_module)
        if writer is None or probe is None:
            return
        images, labels = probe
        probabilities, captions = self._predict(pl_module, images, labels)
        targets = self._targets(labels, probabilities)
        value_range = float(images.max() - images.min()) or 1.0
        direction = fgsm_direction(pl_module, images, targets.to(images.device))
        epsilon = min_fooling_epsilon(
            pl_module,
            images,
            targets.to(images.device),
            self.max_epsilon * value_range,
            direction=direction,
        )
        finite = torch.isfinite(epsilon)
        step = torch.where(finite, epsilon, torch.zeros_like(epsilon)).view(-1, 1, 1, 1)
        adversarial = images + step * direction
        adversarial_probabilities, _ = self._predict(pl_module, adversarial, None)
        texts = []
        for index in range(len(images)):
            found = bool(finite[index])
            fraction = float(epsilon[index]) / value_range
            texts += [
                captions[index],
                f"eps {fraction:.3f}" if found else f"eps > {self.max_epsilon:.2f}",
                caption(
                    None,
                    self._class_name(int(adversarial_probabilities[index].argmax())),
                    float(adversarial_probabilities[index].max()),
                ),
            ]
        # one row per image: the image, the attack's direction, the adversarial image
        rows = to_host(torch.stack([images, direction, adversarial], dim=1))
        at, tile_side = trainer.global_step, self.tile_side

        def render_and_write() -> None:
            tiles = [render.image_for_display(tile) for row in rows for tile in row]
            picture = render.labelled_grid(torch.stack(tiles), texts, columns=3, min_side=tile_side)
            writer.image(self._tag("examples"), picture, at)

        self._later(trainer, pl_module, render_and_write)
        fooled = epsilon[finite] / value_range
        metrics = {self._tag("fooled_fraction"): float(finite.float().mean())}
        if len(fooled):
            metrics[self._tag("mean_min_epsilon")] = float(fooled.mean())
        self._log_scalars(trainer, metrics, trainer.global_step)
