"""Tensors to pictures: grids, filters, channel activity, heat-map overlays; uint8 ``H x W x 3``.

Everything here is deterministic and free of Lightning; the callbacks call it on rank zero.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "activation_map_panel",
    "cell_grid",
    "channel_activity_image",
    "colorize",
    "correspondence_pairs",
    "filter_grid",
    "heat_overlay",
    "heat_overlays",
    "image_for_display",
    "images_for_display",
    "labelled_grid",
    "normalize_per_tile",
    "scale_to_unit",
    "thumbnails",
    "to_uint8_hwc",
    "upscale",
]

#: Colour of the grid lines between tiles (a dark blue, distinct from black "dead" tiles).
GRID_COLOR = 0.15
#: Colour of a channel that never fired in the channel-activity picture.
DEAD_RGB = (0.86, 0.1, 0.1)


@lru_cache(maxsize=4)
def _lut(name: str) -> torch.Tensor:
    import matplotlib

    return torch.from_numpy(matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]).float()


def colorize(values: torch.Tensor, cmap: str = "viridis") -> torch.Tensor:
    """Map values in ``[0, 1]`` of any shape ``S`` to RGB, shape ``(3, *S)``.

    Raises:
        ValueError: A value is NaN (it has no colour; a caller that may meet one says why).
    """
    values = values.detach().float().cpu()
    if bool(values.isnan().any()):
        raise ValueError(f"colorize: {int(values.isnan().sum())} value(s) are NaN")
    index = (values.clamp(0, 1) * 255).round().long()
    return _lut(cmap)[index].movedim(-1, 0)


def normalize_per_tile(tiles: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each ``tiles[i]`` to ``[0, 1]`` on its own; constant tiles read 0.5."""
    flat = tiles.detach().float().flatten(1)
    low = flat.min(dim=1, keepdim=True).values
    high = flat.max(dim=1, keepdim=True).values
    span = high - low
    scaled = torch.where(span > 0, (flat - low) / span.clamp_min(1e-12), torch.full_like(flat, 0.5))
    return scaled.view_as(tiles)


def upscale(images: torch.Tensor, min_side: int) -> torch.Tensor:
    """Enlarge ``N x C x h x w`` (nearest) by a whole factor so the short side >= ``min_side``."""
    side = min(images.shape[-2:])
    factor = max(1, math.ceil(min_side / max(side, 1)))
    if factor == 1:
        return images
    enlarged: torch.Tensor = F.interpolate(images, scale_factor=factor, mode="nearest")
    return enlarged


def to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    """``C x H x W`` float in ``[0, 1]`` (C = 1 or 3) to a ``H x W x 3`` uint8 array."""
    image = image.detach().float().cpu().clamp(0, 1)
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    array: np.ndarray = (image * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    return array


def _grid(tiles: torch.Tensor, nrow: int, padding: int = 1) -> torch.Tensor:
    """Tiles ``N x C x h x w`` (C = 1 or 3) in rows of ``nrow`` with ``padding`` pixels of
    :data:`GRID_COLOR` around each: ``3 x H x W``. The layout of torchvision's ``make_grid``
    (a single tile comes back as it is), made with one copy instead of one per tile."""
    if tiles.shape[1] == 1:
        tiles = tiles.expand(-1, 3, -1, -1)
    count, channels, height, width = tiles.shape
    if count == 1:
        return tiles[0]
    columns = min(nrow, count)
    rows = math.ceil(count / columns)
    cells = tiles.new_full(
        (rows * columns, channels, height + padding, width + padding), GRID_COLOR
    )
    cells[:count, :, padding:, padding:] = tiles
    grid = cells.view(rows, columns, channels, height + padding, width + padding)
    grid = grid.permute(2, 0, 3, 1, 4).reshape(
        channels, rows * (height + padding), columns * (width + padding)
    )
    return F.pad(grid, (0, padding, 0, padding), value=GRID_COLOR)


def image_for_display(image: torch.Tensor) -> torch.Tensor:
    """A model input ``C x H x W`` (any scale) as a ``3 x H x W`` picture in ``[0, 1]``.

    Three channels are shown as RGB, one as grey; other channel counts show the first channel.
    """
    return images_for_display(image[None])[0]


def images_for_display(images: torch.Tensor) -> torch.Tensor:
    """:func:`image_for_display` of each model input ``N x C x H x W``, each contrast-stretched
    on its own: ``N x 3 x H x W``."""
    images = images.detach().float()
    if images.shape[1] != 3:
        images = images[:, :1]
    return normalize_per_tile(images).expand(-1, 3, -1, -1)


def activation_map_panel(
    probe: torch.Tensor, activation: torch.Tensor, tile_side: int = 24
) -> torch.Tensor:
    """One probe image beside a grid of all its channels' activation maps: ``3 x H x W``.

    The maps share one scale per layer (0 = black, the layer's largest value = white), so a dead
    channel is a black box and weak channels look dim, as in the CS231n figure.

    Args:
        probe: The input image ``C x H x W``.
        activation: The layer's output for it, ``channels x h x w``.
        tile_side: Smallest side of one channel's box, in pixels.
    """
    maps = activation.detach().float().clamp_min(0).unsqueeze(1)
    peak = maps.max()
    maps = maps / peak if peak > 0 else maps
    maps = upscale(maps, tile_side)
    grid = _grid(maps, nrow=math.ceil(math.sqrt(maps.shape[0])), padding=2)
    shown = image_for_display(probe).unsqueeze(0)
    height = grid.shape[1]
    shown = F.interpolate(
        shown, size=(height, round(height * shown.shape[3] / shown.shape[2])), mode="nearest"
    )[0]
    gap = torch.full((3, height, 4), 1.0)
    return torch.cat([shown, gap, grid], dim=2)


def filter_grid(
    weight: torch.Tensor,
    max_outputs: int = 64,
    max_inputs: int = 16,
    tile_side: int = 15,
) -> torch.Tensor:
    """Convolution filters as a picture ``3 x H x W`` with per-tile contrast normalisation.

    With 3 input channels each filter is one RGB tile; with 1 input channel one grey tile per
    filter; otherwise one grey tile per (output, input) pair, a row per output channel, capped
    at ``max_outputs`` rows and ``max_inputs`` columns.
    """
    weight = weight.detach().float().cpu()
    if weight.ndim != 4:
        raise ValueError(f"weight: expected a 2-D convolution weight, got {tuple(weight.shape)}")
    weight = weight[:max_outputs]
    outputs, inputs = weight.shape[:2]
    if inputs in (1, 3):
        tiles = normalize_per_tile(weight)
        nrow = math.ceil(math.sqrt(outputs))
    else:
        shown_inputs = min(inputs, max_inputs)
        tiles = normalize_per_tile(weight[:, :shown_inputs].flatten(0, 1)).unsqueeze(1)
        nrow = shown_inputs
    return _grid(upscale(tiles, tile_side), nrow=nrow, padding=1)


def channel_activity_image(
    activity: torch.Tensor, cell_side: int = 8, cmap: str = "viridis"
) -> torch.Tensor:
    """One cell per channel, coloured by its activity rate in ``[0, 1]``; dead channels red.

    Channels run left to right, top to bottom (channel 0 top left) in a near-square grid.

    Args:
        activity: ``(C,)`` fraction of positive elements per channel.
        cell_side: Side of one cell in pixels.
        cmap: Matplotlib colour map for live channels.
    """
    activity = activity.detach().float().cpu()
    channels = activity.numel()
    columns = math.ceil(math.sqrt(channels))
    rows = math.ceil(channels / columns)
    colours = torch.full((rows * columns, 3), GRID_COLOR)
    colours[:channels] = colorize(activity, cmap).T
    colours[:channels][activity <= 0] = torch.tensor(DEAD_RGB)
    pitch = cell_side + 1  # a cell and the grid line before it
    picture = colours.view(rows, columns, 3).permute(2, 0, 1)
    picture = picture.repeat_interleave(pitch, dim=1).repeat_interleave(pitch, dim=2)
    picture = F.pad(picture, (0, 1, 0, 1), value=GRID_COLOR)
    picture[:, ::pitch, :] = GRID_COLOR
    picture[:, :, ::pitch] = GRID_COLOR
    return picture


def scale_to_unit(maps: torch.Tensor, quantile: float = 0.99) -> torch.Tensor:
    """Scale each non-negative map ``maps[i]`` so its ``quantile`` reads 1 (then clip to 1).

    A quantile rather than the maximum keeps one extreme pixel from washing out the rest of a
    saliency map. All-zero maps stay zero.
    """
    flat = maps.detach().float().flatten(1).clamp_min(0)
    top = torch.quantile(flat, quantile, dim=1, keepdim=True)
    top = torch.where(top > 0, top, flat.max(dim=1, keepdim=True).values)
    scaled = torch.where(top > 0, flat / top.clamp_min(1e-12), torch.zeros_like(flat))
    return scaled.clamp(max=1).view_as(maps)


def heat_overlay(
    image: torch.Tensor, heat: torch.Tensor, cmap: str = "jet", alpha: float = 0.5
) -> torch.Tensor:
    """An input image ``C x H x W`` with a heat map ``h x w`` in ``[0, 1]`` laid over it.

    The heat map is resized (bilinear) to the image, coloured with ``cmap`` and blended with a
    grey copy of the image: ``3 x H x W`` in ``[0, 1]``.
    """
    return heat_overlays(image[None], heat[None], cmap, alpha)[0]


def heat_overlays(
    images: torch.Tensor, heats: torch.Tensor, cmap: str = "jet", alpha: float = 0.5
) -> torch.Tensor:
    """:func:`heat_overlay` of each image ``N x C x H x W`` with its map ``N x h x w``, made
    together: ``N x 3 x H x W``."""
    shown = images_for_display(images.cpu())
    grey = shown.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    heats = heats.detach().float().cpu()
    if heats.shape[1:] != shown.shape[2:]:
        heats = F.interpolate(
            heats[:, None], size=tuple(shown.shape[2:]), mode="bilinear", align_corners=False
        )[:, 0]
    return (1 - alpha) * grey + alpha * colorize(heats, cmap).movedim(0, 1)


def labelled_grid(
    tiles: torch.Tensor, captions: list[str], columns: int = 8, min_side: int = 96
) -> np.ndarray:
    """Tiles ``N x 3 x H x W`` in ``[0, 1]`` in a grid, each with a caption under it.

    Captions may have several lines (``"\\n"``); the strip under each tile fits the longest.
    A line wider than its tile is shortened with an ellipsis, before a closing ``" (...)"``
    when it has one (``"pred immunohisto… (0.73)"``), so that neighbours never overlap.

    Returns a ``H x W x 3`` uint8 array ready for ``SummaryWriter.add_image(...,
    dataformats="HWC")``.
    """
    from PIL import Image, ImageDraw, ImageFont

    tiles = upscale(tiles.detach().float().cpu(), min_side)
    count, _, height, width = tiles.shape
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    font = ImageFont.load_default(size=11)
    line_count = max((caption.count("\n") + 1 for caption in captions), default=1)
    caption_height = 2 + 13 * line_count
    pad = 2
    cell_w, cell_h = width + pad, height + caption_height + pad
    canvas = Image.new(
        "RGB", (columns * cell_w + pad, rows * cell_h + pad), (round(GRID_COLOR * 255),) * 3
    )
    draw = ImageDraw.Draw(canvas)
    for index in range(count):
        left = pad + (index % columns) * cell_w
        top = pad + (index // columns) * cell_h
        canvas.paste(Image.fromarray(to_uint8_hwc(tiles[index])), (left, top))
        position = (left + 2, top + height + 1)
        lines = [_fitted(draw, line, font, width - 2) for line in captions[index].split("\n")]
        draw.multiline_text(position, "\n".join(lines), fill=(255,) * 3, font=font, spacing=2)
    return np.asarray(canvas).copy()


def _fitted(draw: Any, line: str, font: Any, width: int) -> str:
    """``line``, shortened with an ellipsis until it is at most ``width`` pixels wide."""
    if draw.textlength(line, font=font) <= width:
        return line
    head, opening, tail = line.rpartition(" (")
    kept, end = (head, opening + tail) if opening and line.endswith(")") else (line, "")
    while kept and draw.textlength(kept + "\u2026" + end, font=font) > width:
        kept = kept[:-1]
    return kept + "\u2026" + end


def thumbnails(images: torch.Tensor, side: int) -> torch.Tensor:
    """Model inputs ``N x C x H x W`` as display pictures ``N x 3 x side x side`` in ``[0, 1]``.

    Each image is contrast-stretched on its own (see :func:`image_for_display`) and resized
    with area averaging (bilinear when enlarging).
    """
    shown = images_for_display(images)
    mode = "area" if min(images.shape[2:]) >= side else "bilinear"
    resized: torch.Tensor = F.interpolate(shown, size=(side, side), mode=mode)
    return resized.clamp(0, 1)


def cell_grid(pictures: torch.Tensor, cells: np.ndarray) -> torch.Tensor:
    """Pictures ``N x 3 x h x w`` placed on a grid: cell ``(i, j)`` shows
    ``pictures[cells[i, j]]``, or stays dark where ``cells[i, j] < 0``. ``3 x H x W``."""
    rows, columns = cells.shape
    _, _, height, width = pictures.shape
    canvas = torch.full((3, rows * height, columns * width), GRID_COLOR)
    for row in range(rows):
        for column in range(columns):
            index = int(cells[row, column])
            if index >= 0:
                canvas[
                    :, row * height : (row + 1) * height, column * width : (column + 1) * width
                ] = pictures[index].cpu()
    return canvas


#: Colours of a match within the tolerance and of one beyond it.
MATCH_RGB = (40, 200, 70)
MISS_RGB = (230, 40, 40)


def correspondence_pairs(
    images: torch.Tensor,
    warped: torch.Tensor,
    points: torch.Tensor,
    matched: torch.Tensor,
    scored: torch.Tensor,
    correct: torch.Tensor,
    captions: list[str],
    side: int = 160,
    max_lines: int = 48,
) -> np.ndarray:
    """Each image beside its warped copy, with a line from each scored point to its match:
    green within the tolerance, red beyond. One row per image, captioned.

    Args:
        images: ``N x C x H x W`` model inputs.
        warped: Their warped copies, the same shape.
        points: ``(P, 2)`` pixel coordinates ``(x, y)`` of the points in each image.
        matched: ``(N, P, 2)`` where each was matched in the copy.
        scored: ``(N, P)`` which points are drawn (those inside the copy).
        correct: ``(N, P)`` which matches are right.
        captions: One line per row, written under it.
        side: The longer side of each shown image, in pixels.
        max_lines: At most this many lines per row (evenly spaced among the scored points).

    Returns:
        A ``H x W x 3`` uint8 picture.
    """
    from PIL import Image, ImageDraw, ImageFont

    count, _, height, width = images.shape
    scale = side / max(height, width)
    shown_h, shown_w = max(1, round(height * scale)), max(1, round(width * scale))
    gap, caption_h = 8, 16
    font = ImageFont.load_default(size=11)
    row_h = shown_h + caption_h
    canvas = Image.new("RGB", (2 * shown_w + gap, count * row_h), (round(GRID_COLOR * 255),) * 3)
    draw = ImageDraw.Draw(canvas)
    for row in range(count):
        top = row * row_h
        for column, picture in enumerate((images[row], warped[row])):
            tile = F.interpolate(
                image_for_display(picture)[None], size=(shown_h, shown_w), mode="bilinear"
            )[0]
            canvas.paste(Image.fromarray(to_uint8_hwc(tile)), (column * (shown_w + gap), top))
        chosen = scored[row].nonzero().flatten()
        if len(chosen) > max_lines:
            chosen = chosen[torch.linspace(0, len(chosen) - 1, max_lines).round().long()]
        for index in chosen.tolist():
            start = (float(points[index, 0]) * scale, top + float(points[index, 1]) * scale)
            end = (
                shown_w + gap + float(matched[row, index, 0]) * scale,
                top + float(matched[row, index, 1]) * scale,
            )
            colour = MATCH_RGB if bool(correct[row, index]) else MISS_RGB
            draw.line([start, end], fill=colour, width=1)
            draw.ellipse(
                [start[0] - 1.5, start[1] - 1.5, start[0] + 1.5, start[1] + 1.5], fill=colour
            )
        draw.text(
            (2, top + shown_h + 1),
            _fitted(draw, captions[row], font, 2 * shown_w),
            fill=(255,) * 3,
            font=font,
        )
    return np.asarray(canvas).copy()
