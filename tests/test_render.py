"""Pictures: the tile grid lays tiles out exactly as torchvision's ``make_grid``."""

from __future__ import annotations

import pytest
import torch
from torchvision.utils import make_grid

from lightning_convviz import render


@pytest.mark.parametrize(
    ("count", "channels", "nrow", "padding"),
    [(1, 3, 4, 2), (2, 1, 1, 1), (7, 3, 3, 2), (64, 1, 8, 1), (10, 3, 4, 1), (16, 1, 16, 1)],
)
def test_grid_lays_tiles_out_as_make_grid(
    count: int, channels: int, nrow: int, padding: int
) -> None:
    tiles = torch.rand(count, channels, 5, 7, generator=torch.Generator().manual_seed(count))
    expected = make_grid(
        tiles.expand(-1, 3, -1, -1), nrow=nrow, padding=padding, pad_value=render.GRID_COLOR
    )
    assert torch.equal(render._grid(tiles, nrow, padding), expected)


@pytest.mark.parametrize(("channels", "side"), [(1, 32), (3, 16), (4, 8)])
def test_overlays_made_together_equal_each_made_alone(channels: int, side: int) -> None:
    generator = torch.Generator().manual_seed(channels)
    images = torch.randn(5, channels, 32, 32, generator=generator)
    heats = torch.rand(5, side, side, generator=generator)
    together = render.heat_overlays(images, heats)
    assert together.shape == (5, 3, 32, 32)
    for image, heat, made in zip(images, heats, together, strict=True):
        # each image and map on its own scale, not the batch's
        assert torch.allclose(render.heat_overlay(image, heat), made, atol=1e-6)


def test_a_caption_wider_than_its_tile_is_shortened_not_spilled() -> None:
    from PIL import Image, ImageDraw, ImageFont

    from lightning_convviz.render import GRID_COLOR, _fitted, labelled_grid

    tiles = torch.zeros(2, 3, 48, 48)
    grid = labelled_grid(
        tiles, ["true astronaut\npred immunohistochemistry (0.73)", ""], min_side=48
    )
    background = round(GRID_COLOR * 255)
    second_cell = grid[48 + 2 :, 2 + 48 + 2 :]  # the caption strip under the second tile
    assert (second_cell == background).all()
    font = ImageFont.load_default(size=11)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    short = _fitted(draw, "pred immunohistochemistry (0.73)", font, 94)
    assert short.startswith("pred imm") and short.endswith("\u2026 (0.73)")
    assert draw.textlength(short, font=font) <= 94
    assert _fitted(draw, "pred cat (0.73)", font, 200) == "pred cat (0.73)"
    assert _fitted(draw, "a very long line without a number", font, 40).endswith("\u2026")
