"""CorrespondenceMonitor: how much spatial information each layer keeps, as training goes."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_info

from lightning_convviz import render
from lightning_convviz.callbacks.arguments import check_layers_argument, check_positive_int
from lightning_convviz.callbacks.batches import to_host
from lightning_convviz.callbacks.probe import ProbeCallback
from lightning_convviz.functional.arguments import check_int
from lightning_convviz.functional.capture import LayerSpec, capture_sites
from lightning_convviz.functional.correspondence import (
    Correspondence,
    SimilarityWarp,
    check_alpha,
    correspondence,
    pixel_features,
    random_similarity_warps,
)
from lightning_convviz.functional.defaults import ACTIVATION_SITES
from lightning_convviz.functional.guard import preserved_state
from lightning_convviz.functional.sites import CallSites

__all__ = ["CorrespondenceMonitor"]


class CorrespondenceMonitor(ProbeCallback):
    """Log how precisely each layer's features locate points between an image and a warped copy.

    Long, Zhang and Darrell's experiment ("Do Convnets Learn Correspondence?", 2014) with a
    known answer: each probe image is warped by a fixed random similarity transform (a shift of
    up to ``max_shift`` of the side, a scale change, a small rotation; with ``flip`` a mirror for
    about half of them), so the true position of every point in the copy is known. A
    ``points_per_side`` grid of points of the image (those that land inside the copy) is matched
    to the copy by nearest neighbour in each layer's features (cosine similarity, read
    bilinearly at the points; see :mod:`lightning_convviz.functional.correspondence`); PCK@alpha
    is the share of matches within ``alpha`` x the image side of the truth. The same score on
    raw pixels (each point described by the patch around it) and what a random match scores
    are logged once, at the first drawing, so a reader sees what the layers add.

    Probe images are chosen as for the other probe callbacks (spread over the validation set
    and its classes); drawings at the start of training and every ``every_n_epochs`` epochs, in
    eval mode, with every ``.training`` flag, the RNG state and the gradients restored.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[CorrespondenceMonitor(alpha=0.1, every_n_epochs=2)])

    Logged tags (``<layer>``: the site, as for the activation callbacks):
        * ``correspondence/pck/<layer>`` (scalar): PCK@alpha of the layer, a time-lapse.
        * ``correspondence/pck/pixels`` and ``correspondence/pck/chance`` (scalars, once): the
          raw-pixel baseline and a random match's score.
        * ``correspondence/matches/<layer>`` (image) for the deepest layer and one in the
          middle: each probe image (at most ``max_pictured_images``) beside its copy, a line
          from each point to its match, green within alpha, red beyond.

    Args:
        layers: Which modules to score: ``None`` (every conv block's activation, found from the
            calls of the forward pass), or a selection as for
            :class:`~lightning_convviz.ActivationMapMonitor`. Only map outputs
            ``N x C x H x W`` are scored; others are named once and skipped.
        alpha: A match is right within this share of the image side, in (0, 1).
        points_per_side: The grid of points matched per image (``points_per_side ** 2``).
        max_shift: The largest shift of the copy, as a share of the side, in [0, 0.5].
        max_scale_change: The copy is scaled by a factor in ``1 +- max_scale_change`` (at most
            0.5).
        max_rotation_degrees: The copy is turned by at most this many degrees either way.
        flip: Mirror about half of the copies (left to right).
        seed: The transforms' seed (the same transforms at every drawing).
        probe_images: Fixed inputs ``N x C x H x W`` instead of validation images.
        num_probe_images: How many validation images to take (ignored with ``probe_images``).
        every_n_epochs: Draw after every this many training epochs.
        batch_size: Images (each with its copy) per forward pass.
        max_pictured_images: Rows of each picture.
        tile_side: The longer side of each image in the pictures, in pixels.

    Raises:
        ValueError: At construction, for an argument outside the allowed values (``alpha``
            outside (0, 1), a shift that could leave no point inside the copy, ...).
        MisconfigurationException: In ``setup``, when the Trainer has no logger, a layer name is
            unknown, or the model has no convolution.
    """

    section = "correspondence"
    dashboard: ClassVar[dict[str, list[str]]] = {
        "PCK of each layer (share of points located within alpha)": ["correspondence/pck/"]
    }

    def __init__(
        self,
        layers: LayerSpec | list[LayerSpec] | None = None,
        alpha: float = 0.1,
        points_per_side: int = 12,
        max_shift: float = 0.1,
        max_scale_change: float = 0.15,
        max_rotation_degrees: float = 10.0,
        flip: bool = False,
        seed: int = 0,
        probe_images: torch.Tensor | None = None,
        num_probe_images: int = 8,
        every_n_epochs: int = 1,
        batch_size: int = 4,
        max_pictured_images: int = 2,
        tile_side: int = 160,
    ) -> None:
        super().__init__(probe_images, None, num_probe_images, every_n_epochs, "true", tile_side)
        check_layers_argument(layers)
        self.alpha = check_alpha(alpha)
        check_positive_int("points_per_side", points_per_side)
        check_positive_int("batch_size", batch_size)
        check_positive_int("max_pictured_images", max_pictured_images)
        check_int("seed", seed, minimum=0)
        if not isinstance(flip, bool):
            raise ValueError(f"flip: expected True or False, got {flip!r}")
        random_similarity_warps(1, (8, 8), max_shift, max_scale_change, max_rotation_degrees)
        if max_shift > 0.5 or max_scale_change > 0.5:
            raise ValueError(
                "max_shift and max_scale_change: expected at most 0.5 each (a larger shift or "
                "shrink can leave no point of an image inside its copy), got "
                f"{max_shift!r} and {max_scale_change!r}"
            )
        self.layers = layers
        self.points_per_side = points_per_side
        self.max_shift = max_shift
        self.max_scale_change = max_scale_change
        self.max_rotation_degrees = max_rotation_degrees
        self.flip = flip
        self.seed = seed
        self.batch_size = batch_size
        self.max_pictured_images = max_pictured_images
        self._sites: CallSites | None = None
        self._baseline_logged = False
        self._skipped: set[str] = set()
        #: The latest drawing's PCK per layer (and ``"pixels"``, ``"chance"``), rank zero.
        self.scores: dict[str, float] = {}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(layers=repr(self.layers), every=self.every_n_epochs)

    def _setup_model(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # its own diagnostic pass on the probe is what it watches
        self._sites = self._call_sites(pl_module, self.layers, ACTIVATION_SITES, collecting=False)

    def _warps(self, images: torch.Tensor) -> SimilarityWarp:
        size = (images.shape[2], images.shape[3])
        return random_similarity_warps(
            len(images),
            size,
            self.max_shift,
            self.max_scale_change,
            self.max_rotation_degrees,
            self.flip,
            self.seed,
        )

    def _score(
        self, pl_module: LightningModule, images: torch.Tensor, warp: SimilarityWarp
    ) -> tuple[dict[str, list[Correspondence]], torch.Tensor]:
        """Each scored layer's correspondences, one per batch of images, and the copies."""
        assert self._sites is not None
        size = (images.shape[2], images.shape[3])
        warped = warp.warp(images)
        scored: dict[str, list[Correspondence]] = {}
        for start in range(0, len(images), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            count = len(images[chunk])
            part = SimilarityWarp(warp.matrix[chunk], warp.offset[chunk])
            with preserved_state(pl_module), torch.no_grad(), capture_sites(self._sites) as maps:
                pl_module(torch.cat([images[chunk], warped[chunk]]))
            self._sites_found(self._sites)
            for name, features in maps.items():
                if features.ndim != 4 or len(features) != 2 * count:
                    self._skip(name, tuple(features.shape))
                    continue
                scored.setdefault(name, []).append(
                    correspondence(
                        features[:count],
                        features[count:],
                        part,
                        size,
                        self.alpha,
                        self.points_per_side,
                    )
                )
        return scored, warped

    def _skip(self, name: str, shape: tuple[int, ...]) -> None:
        if name not in self._skipped:
            self._skipped.add(name)
            rank_zero_info(
                f"CorrespondenceMonitor: {name} is not scored: its output {shape} is not a map "
                "N x C x H x W of the images, so its positions cannot be read as places in them."
            )

    def _draw(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = self._writer(trainer)
        probe_set = self._probe_on_device(trainer, pl_module)
        if writer is None or probe_set is None or self._sites is None:
            return
        images = probe_set[0]
        warp = self._warps(images)
        scored, warped = self._score(pl_module, images, warp)
        scores = {name: _pooled_pck(parts) for name, parts in scored.items()}
        metrics = {self._tag("pck", name): value for name, value in scores.items()}
        if not self._baseline_logged:
            size = (images.shape[2], images.shape[3])
            pixels = correspondence(
                pixel_features(images),
                pixel_features(warped),
                warp,
                size,
                self.alpha,
                self.points_per_side,
            )
            scores["pixels"], scores["chance"] = pixels.pck, pixels.chance
            metrics[self._tag("pck", "pixels")] = pixels.pck
            metrics[self._tag("pck", "chance")] = pixels.chance
            self._baseline_logged = True
        self.scores = scores
        step = trainer.global_step
        self._log_scalars(trainer, metrics, step)
        names = list(scored)
        pictured = (
            sorted({names[(len(names) - 1) // 2], names[-1]}, key=names.index) if names else []
        )
        rows = min(self.max_pictured_images, len(images), self.batch_size)
        shown = {name: _rows(scored[name][0], rows) for name in pictured}
        originals, copies = to_host(images[:rows]), to_host(warped[:rows])
        side = self.tile_side

        def render_and_write() -> None:
            for name, (points, matched, inside, correct) in shown.items():
                captions = [
                    f"{name}: {int(correct[row].sum())} of {int(inside[row].sum())} within "
                    f"alpha {self.alpha:g}; PCK {scores[name]:.2f}"
                    for row in range(len(originals))
                ]
                picture = render.correspondence_pairs(
                    originals, copies, points, matched, inside, correct, captions, side
                )
                writer.image(self._tag("matches", name), picture, step)

        self._later(trainer, pl_module, render_and_write)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "baseline_logged": self._baseline_logged}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._baseline_logged = bool(state_dict.get("baseline_logged", False))


def _pooled_pck(parts: list[Correspondence]) -> float:
    """PCK over every batch's scored points together."""
    right = sum(int(part.correct.sum()) for part in parts)
    scored = sum(int(part.inside.sum()) for part in parts)
    return right / scored


def _rows(
    result: Correspondence, rows: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """What a picture of the first ``rows`` images needs, on the host."""
    return (
        result.points.cpu(),
        result.matched[:rows].cpu(),
        result.inside[:rows].cpu(),
        result.correct[:rows].cpu(),
    )
