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
