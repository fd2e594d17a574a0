"""OcclusionMonitor: how the target's probability drops when a grey patch hides each region."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from pytorch_lightning import LightningModule, Trainer

from lightning_convviz import render
from lightning_convviz.callbacks.explainer import ProbeExplainer
from lightning_convviz.callbacks.probe import ExplainTarget
from lightning_convviz.functional.arguments import check_int
from lightning_convviz.functional.occlusion import occluded_score_map, occlusion_scores

__all__ = ["OcclusionMonitor", "Size"]

#: A window or stride: a fraction of the image side (float in (0, 1]), pixels (int >= 1), or a
#: pair ``(h, w)`` of either.
Size = int | float | Sequence[int | float]


class OcclusionMonitor(ProbeExplainer):
    """Log the Zeiler-Fergus occlusion heat map of fixed probe images as training goes.

    A patch filled with ``baseline`` slides over each probe image (the first
    ``num_probe_images`` validation images, or ``probe_images``); at every position the model's
    probability for the target class is recorded (:func:`~lightning_convviz.functional.
    occlusion_scores`). Each pixel then shows the mean probability over the positions that hide
    it. The picture shows the drop from the unoccluded probability, on a fixed scale so that
    consecutive steps compare: red = hiding this region takes the probability from 1 to 0 (the
    model's evidence is there), blue = no change. A model that has learnt the digit's strokes
    lights up on them; a model that is robust to one missing patch stays blue.

    Window and stride default to a quarter and an eighth of the image side, so the same setting
    gives a 7 x 7 grid of positions on 32 x 32 digits and on 224 x 224 photos. Tiles are
    captioned with the true class (when known), the predicted class and its probability.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> monitor = OcclusionMonitor(window=0.25, stride=0.125, baseline=0.0)
        >>> trainer = Trainer(callbacks=[monitor])

    Logged tags:
        * ``occlusion/probability_drop`` (image, TensorBoard) at ``global_step``; with
          ``score="logit"`` the tag is ``occlusion/logit_drop`` and each map is scaled to its
          largest drop.

    Args:
        window: Patch size: a fraction of the image side (float in (0, 1]), pixels (int), or a
            pair ``(h, w)`` of those.
        stride: Step between patches, given like ``window``; at most the window.
        baseline: Value the patch fills the image with (0 is the mean of standardised inputs).
        score: ``"probability"`` (softmax) or ``"logit"``.
        probe_images: Fixed inputs ``N x C x H x W`` instead of validation images.
        probe_labels: Their integer labels (optional).
        num_probe_images: How many validation images to take (ignored with ``probe_images``).
        every_n_epochs: Draw after every this many training epochs.
        target: Explain the ``"true"`` class (when known) or the ``"predicted"`` one.
        batch_size: Occluded images per forward pass (``None``: memory-bounded default).
        tile_side: Smallest side of one tile, in pixels.

    Raises:
        ValueError: At construction, for an argument outside the allowed values; at the first
            drawing, when the window is larger than the probe images.
        MisconfigurationException: In ``setup``, when the Trainer has no logger.
    """

    section = "occlusion"

    def __init__(
        self,
        window: Size = 0.25,
        stride: Size = 0.125,
        baseline: float = 0.0,
        score: str = "probability",
        probe_images: torch.Tensor | None = None,
        probe_labels: torch.Tensor | None = None,
        num_probe_images: int = 8,
        every_n_epochs: int = 1,
        target: ExplainTarget = "true",
        batch_size: int | None = None,
        tile_side: int = 96,
    ) -> None:
        super().__init__(
            probe_images, probe_labels, num_probe_images, every_n_epochs, target, tile_side
        )
        _check_size("window", window)
        _check_size("stride", stride)
        if score not in ("probability", "logit"):
            raise ValueError(f"score: expected 'probability' or 'logit', got {score!r}")
        check_int("batch_size", batch_size, allow_none=True)
        self.window = window
        self.stride = stride
        self.baseline = float(baseline)
        self.score = score
        self.batch_size = batch_size

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            window=repr(self.window), stride=repr(self.stride), every=self.every_n_epochs
        )

    def _setup_model(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Any classifier can be occluded: nothing to resolve."""

    def _heat_maps(
        self, pl_module: LightningModule, images: torch.Tensor, targets: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        size = tuple(images.shape[2:])
        window = pixels(self.window, size)
        scores = occlusion_scores(
            pl_module,
            images,
            targets,
            window=window,
            stride=pixels(self.stride, size),
            baseline=self.baseline,
            score="logit" if self.score == "logit" else "probability",
            batch_size=self.batch_size,
        )
        drop = scores.base[:, None, None] - occluded_score_map(scores, window, size)
        if self.score == "logit":
            drop = render.scale_to_unit(drop, quantile=1.0)
        return {f"{self.score}_drop": drop.clamp(0, 1)}


def pixels(size: Size, image_size: tuple[int, ...]) -> tuple[int, int]:
    """A window or stride in pixels ``(h, w)`` for an image of ``image_size = (H, W)``.

    Example:
        >>> pixels(0.25, (32, 224)), pixels((3, 0.5), (32, 32))
        ((8, 56), (3, 16))
    """
    items = list(size) if isinstance(size, Sequence) else [size, size]
    return (_to_pixels(items[0], image_size[0]), _to_pixels(items[1], image_size[1]))


def _to_pixels(value: float | int, side: int) -> int:
    if isinstance(value, float):
        return max(1, min(side, math.floor(value * side + 0.5)))
    return value


def _check_size(name: str, value: object) -> None:
    items = list(value) if isinstance(value, Sequence) else [value, value]

    def valid(item: object) -> bool:
        if isinstance(item, bool):
            return False
        if isinstance(item, float):
            return 0 < item <= 1
        return isinstance(item, int) and item >= 1

    if len(items) != 2 or not all(valid(item) for item in items):
        raise ValueError(
            f"{name}: expected a fraction of the image side in (0, 1], a number of pixels >= 1, "
            f"or a pair (h, w) of those; got {value!r}"
        )
