"""Occlusion sensitivity (Zeiler & Fergus, 2014): slide a patch over the image, watch the score.

:func:`occlusion_scores` evaluates the model on every (image, window position) pair in
memory-bounded batches and returns the target's score per position: the heat map of the
CS231n notes. :func:`occlusion` turns those scores into a per-pixel attribution equal to
Captum's ``Occlusion``: each pixel gets the mean drop in score over the windows that cover it.

Speed, compared with evaluating each window separately (Captum's default) or in batches:

* all windows of all images go through the model in large batches, under
  ``torch.inference_mode``, in ``channels_last`` layout for 2-D convolutions;
* reuse: the first layers are computed only where the patch changes them, on top of the
  unoccluded image's activations, with BatchNorm folded into the convolutions
  (:mod:`lightning_convviz.functional.incremental`); checked against the plain forward pass on
  the first batch;
* skipping: a window whose pixels already equal the baseline (a black patch on a black
  background) cannot change the score, so it is not evaluated.

Pure torch: no Lightning, no logging.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
from torch import nn

from lightning_convviz.functional.arguments import (
    Target,
    check_class_scores,
    check_images,
    check_int,
    pair,
    target_indices,
)
from lightning_convviz.functional.guard import preserved_state
from lightning_convviz.functional.incremental import IncrementalForward

__all__ = [
    "OcclusionScores",
    "Score",
    "occluded_score_map",
    "occlusion",
    "occlusion_scores",
    "window_starts",
]

#: What is compared: the softmax probability of the target, or its raw score (logit).
Score = Literal["probability", "logit"]

#: Default budget for one batch of occluded images: this many input elements (16 MiB float32).
_BATCH_ELEMENTS = 1 << 22


class OcclusionScores(NamedTuple):
    """The target's score without occlusion and with the patch at each window position."""

    #: ``(N,)`` score of the target for the unoccluded images.
    base: torch.Tensor
    #: ``(N, rows, columns)`` score with the patch's top-left corner at
    #: ``(row_starts[i], column_starts[j])``.
    occluded: torch.Tensor
    #: Top edge of each window row, in pixels.
    row_starts: list[int]
    #: Left edge of each window column, in pixels.
    column_starts: list[int]


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start of each window along one side, as Captum places them.

    Windows start every ``stride`` pixels; when the last full window would leave pixels
    uncovered, one more window starts there and is cut at the border.

    Example:
        >>> window_starts(10, 4, 3)
        [0, 3, 6]
        >>> window_starts(10, 4, 4)
        [0, 4, 8]
    """
    count = math.ceil((size - window) / stride) + 1
    return [index * stride for index in range(count)]


def occlusion_scores(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target,
    window: int | Sequence[int],
    stride: int | Sequence[int],
    baseline: float = 0.0,
    score: Score = "probability",
    batch_size: int | None = None,
    incremental: bool = True,
) -> OcclusionScores:
    """The target's score with a ``baseline`` patch at every window position of every image.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveMaxPool2d(1), nn.Flatten())
        >>> result = occlusion_scores(model, torch.rand(3, 1, 8, 8), 0, window=4, stride=2)
        >>> tuple(result.occluded.shape), result.row_starts
        ((3, 3, 3), [0, 2, 4])

    Args:
        model: Maps ``inputs`` to class scores ``N x classes``.
        inputs: Images ``N x C x H x W``.
        target: Class to score: one int for all images, or one per image.
        window: Patch size ``(h, w)``, or one int for a square; covers every channel.
        stride: Step between patches ``(h, w)``, or one int; at most the window size.
        baseline: The value the patch fills the image with.
        score: ``"probability"`` (softmax of the output) or ``"logit"`` (the output itself).
        batch_size: Occluded images per forward pass; ``None`` keeps each batch near 4 M input
            elements (1 M without ``incremental``), memory-bounded whatever the image size.
        incremental: Compute the first layers only where the patch changes them
            (:class:`~lightning_convviz.functional.incremental.IncrementalForward`); the
            result is the same up to float rounding. ``False`` evaluates whole images.

    Returns:
        :class:`OcclusionScores` with the base and per-position scores, on the inputs' device.

    Raises:
        ValueError: ``inputs`` is not a floating tensor ``N x C x H x W``; the window is larger
            than the image; a stride is < 1 or larger than the window; ``target`` is out of
            range or of the wrong length; ``score`` or ``batch_size`` is not allowed.
    """
    check_images(inputs)
    height, width = inputs.shape[2:]
    window_h, window_w = pair("window", window)
    stride_h, stride_w = pair("stride", stride)
    if window_h > height or window_w > width:
        raise ValueError(
            f"window: ({window_h}, {window_w}) is larger than the image ({height}, {width})"
        )
    for name, step, size, side in (
        ("height", stride_h, window_h, height),
        ("width", stride_w, window_w, width),
    ):
        if step > size and size < side:
            raise ValueError(
                f"stride: the {name} stride {step} is larger than the window's {size}, which "
                "would leave pixels never occluded"
            )
    if score not in ("probability", "logit"):
        raise ValueError(f"score: expected 'probability' or 'logit', got {score!r}")
    check_int("batch_size", batch_size, allow_none=True)

    rows = window_starts(height, window_h, stride_h)
    columns = window_starts(width, window_w, stride_w)
    row_cover = _cover(rows, window_h, height, inputs.device)
    column_cover = _cover(columns, window_w, width, inputs.device)
    images = inputs.detach()
    fill = torch.as_tensor(baseline, dtype=images.dtype, device=images.device)
    count = images.shape[0]
    per_image = len(rows) * len(columns)
    budget = _BATCH_ELEMENTS if incremental else _BATCH_ELEMENTS // 4
    chunk = batch_size or max(1, budget // images[0].numel())

    with preserved_state(model), torch.inference_mode():
        base_outputs = check_class_scores(model(_layout(images)), count)
        indices = target_indices(target, count, base_outputs.shape[1]).to(images.device)
        base = _select(base_outputs, indices, score)
        # Skip what cannot change: a window already equal to the baseline everywhere.
        differs = (images != fill).any(dim=1).to(images.dtype)
        changed = torch.einsum("nhw,rh,cw->nrc", differs, row_cover, column_cover) > 0
        occluded = base[:, None, None].expand(count, len(rows), len(columns)).clone()
        pending = changed.flatten().nonzero().squeeze(1).cpu()
        forward = _OccludedForward(model, images, fill, rows, columns, (window_h, window_w))
        if incremental:
            forward.use_incremental()
        for start in range(0, pending.numel(), chunk):
            pairs = pending[start : start + chunk]
            outputs = forward(pairs // per_image, pairs % per_image)
            image_index = (pairs // per_image).to(images.device)
            occluded.view(-1)[pairs.to(images.device)] = _select(
                outputs, indices[image_index], score
            )
    return OcclusionScores(base=base, occluded=occluded, row_starts=rows, column_starts=columns)


class _OccludedForward:
    """Model outputs for (image, window position) pairs.

    Full occluded images through the model, or, after :meth:`use_incremental`, only what the
    patch changes (:class:`IncrementalForward`). A few windows of the first incremental batch
    are checked against the full computation; a disagreement (a layer whose semantics the
    incremental pass misreads) switches back to full images with a warning.
    """

    def __init__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        fill: torch.Tensor,
        row_starts: list[int],
        column_starts: list[int],
        window: tuple[int, int],
    ) -> None:
        self.model = model
        self.images = images
        self.fill = fill
        self.row_starts = torch.tensor(row_starts)
        self.column_starts = torch.tensor(column_starts)
        self.window = window
        height, width = images.shape[2:]
        row_cover = _cover(row_starts, window[0], height, images.device) > 0
        column_cover = _cover(column_starts, window[1], width, images.device) > 0
        #: (positions, H, W): True under the patch
        self.masks = (row_cover[:, None, :, None] & column_cover[None, :, None, :]).flatten(0, 1)
        self.incremental: IncrementalForward | None = None
        self.verified = False

    def use_incremental(self) -> None:
        self.incremental = IncrementalForward.try_build(self.model, _layout(self.images))

    def __call__(self, image: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Outputs for ``images[image[b]]`` occluded at window ``position[b]`` (CPU indices)."""
        device = self.images.device
        image = image.to(device)
        if self.incremental is None:
            return self._full(image, position)
        height, width = self.images.shape[2:]
        row_start = self.row_starts[position // len(self.column_starts)]
        column_start = self.column_starts[position % len(self.column_starts)]
        # a window cut at the border is handled as the full-size block ending at the border
        top = row_start.clamp(max=height - self.window[0])
        left = column_start.clamp(max=width - self.window[1])
        rows = top[:, None] + torch.arange(self.window[0])
        columns = left[:, None] + torch.arange(self.window[1])
        occluded = (rows >= row_start[:, None])[:, :, None] & (columns >= column_start[:, None])[
            :, None, :
        ]
        block = self.images[
            image[:, None, None], :, rows.to(device)[:, :, None], columns.to(device)[:, None, :]
        ]
        block = torch.where(occluded.to(device)[..., None], self.fill, block).permute(0, 3, 1, 2)
        if self.verified:
            fast: torch.Tensor = self.incremental(image, top, left, block)
            return fast
        try:
            fast = self.incremental(image, top, left, block)
        except Exception as error:  # the traced graph does not run as the model does
            return self._give_up(f"failed ({type(error).__name__}: {error})", image, position)
        # check a few windows, the first and the last of the batch, against the plain pass
        sample = torch.unique(torch.tensor([0, 1, 2, 3, -4, -3, -2, -1]) % len(position))
        expected = self._full(image[sample.to(image.device)], position[sample])
        found = fast[sample.to(fast.device)]
        if torch.allclose(found, expected, rtol=1e-3, atol=1e-4):
            self.verified = True
            return fast
        difference = float((found - expected).abs().max())
        return self._give_up(
            f"disagrees with the model's own output (largest difference {difference:.3g})",
            image,
            position,
        )

    def _give_up(self, why: str, image: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Warn, stop using the incremental pass, and compute whole occluded images."""
        warnings.warn(
            f"occlusion: the incremental forward pass {why}; evaluating whole occluded images "
            "instead. Pass incremental=False to skip the attempt.",
            RuntimeWarning,
            stacklevel=5,
        )
        self.incremental = None
        return self._full(image, position)

    def _full(self, image: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        masks = self.masks[position.to(self.images.device)][:, None]
        outputs: torch.Tensor = self.model(
            _layout(torch.where(masks, self.fill, self.images[image]))
        )
        return outputs


def occlusion(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target,
    window: int | Sequence[int],
    stride: int | Sequence[int],
    baseline: float = 0.0,
    score: Score = "probability",
    batch_size: int | None = None,
    incremental: bool = True,
) -> torch.Tensor:
    """Per-pixel occlusion attribution: the mean drop of the target's score over the windows
    that cover the pixel.

    Equals Captum's ``Occlusion(f).attribute(inputs, target=target,
    sliding_window_shapes=(C, h, w), strides=(C, sh, sw), baselines=baseline)`` with ``f`` the
    model followed by a softmax (``score="probability"``) or the model itself (``"logit"``).
    The scores per window position (the heat map) come from :func:`occlusion_scores`.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> occlusion(model, torch.rand(2, 1, 4, 4), [0, 1], window=2, stride=2).shape
        torch.Size([2, 1, 4, 4])

    Args:
        model: Maps ``inputs`` to class scores ``N x classes``.
        inputs: Images ``N x C x H x W``.
        target: Class to explain: one int for all images, or one per image.
        window: Patch size ``(h, w)``, or one int for a square; covers every channel.
        stride: Step between patches ``(h, w)``, or one int; at most the window size.
        baseline: The value the patch fills the image with.
        score: ``"probability"`` or ``"logit"``.
        batch_size: Occluded images per forward pass (``None``: memory-bounded default).
        incremental: Compute the first layers only where the patch changes them.

    Returns:
        A tensor shaped like ``inputs`` (the same value in every channel of a pixel).

    Raises:
        ValueError: As :func:`occlusion_scores`.
    """
    scores = occlusion_scores(
        model, inputs, target, window, stride, baseline, score, batch_size, incremental
    )
    drop = scores.base[:, None, None] - occluded_score_map(scores, window, inputs.shape[2:])
    return drop.to(inputs.dtype)[:, None].expand_as(inputs).clone()


def occluded_score_map(
    scores: OcclusionScores, window: int | Sequence[int], size: Sequence[int]
) -> torch.Tensor:
    """Per pixel, the mean target score over the window positions that occlude it.

    This is the CS231n heat map aligned to the image: dark where hiding the pixel hurts.

    Example:
        >>> scores = OcclusionScores(torch.ones(1), torch.tensor([[[0.2, 0.6]]]), [0], [0, 2])
        >>> occluded_score_map(scores, window=(2, 3), size=(2, 5))
        tensor([[[0.2000, 0.2000, 0.4000, 0.6000, 0.6000],
                 [0.2000, 0.2000, 0.4000, 0.6000, 0.6000]]])

    Args:
        scores: From :func:`occlusion_scores`.
        window: The window used there.
        size: ``(H, W)`` of the images.

    Returns:
        ``(N, H, W)`` float32.
    """
    window_h, window_w = pair("window", window)
    height, width = int(size[0]), int(size[1])
    device = scores.occluded.device
    row_cover = _cover(scores.row_starts, window_h, height, device)
    column_cover = _cover(scores.column_starts, window_w, width, device)
    total = torch.einsum("nrc,rh,cw->nhw", scores.occluded.float(), row_cover, column_cover)
    return total / torch.einsum("rh,cw->hw", row_cover, column_cover)


def _cover(starts: list[int], window: int, size: int, device: torch.device) -> torch.Tensor:
    """``(len(starts), size)`` float: 1 where a window covers a pixel, cut at the border."""
    positions = torch.arange(size, device=device)
    first = torch.tensor(starts, device=device)[:, None]
    return ((positions >= first) & (positions < first + window)).float()


def _layout(batch: torch.Tensor) -> torch.Tensor:
    """``channels_last``: oneDNN runs convolutions on it about 1.5x faster on CPU."""
    return batch.contiguous(memory_format=torch.channels_last)


def _select(outputs: torch.Tensor, indices: torch.Tensor, score: Score) -> torch.Tensor:
    if score == "probability":
        outputs = outputs.softmax(dim=1)
    return outputs.gather(1, indices[:, None]).squeeze(1)
