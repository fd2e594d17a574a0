"""Receptive fields from the layer geometry, checked against a gradient probe."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from lightning_convviz.functional import ReceptiveField, crop_receptive_field, receptive_field


def probe_support(
    model: nn.Module, shape: tuple[int, int], row: int, column: int
) -> tuple[int, ...]:
    """Bounding box (top, left, bottom, right) of the input pixels whose gradient reaches unit
    (row, column) of the model's output. Weights are made positive so nothing cancels."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.abs() + 0.1)
    image = torch.ones(1, 1, *shape, requires_grad=True)
    output = model(image)
    (gradient,) = torch.autograd.grad(output[0, :, row, column].sum(), image)
    rows, columns = gradient[0, 0].nonzero(as_tuple=True)
    return int(rows.min()), int(columns.min()), int(rows.max()) + 1, int(columns.max()) + 1


def clipped(region: tuple[int, int, int, int], shape: tuple[int, int]) -> tuple[int, ...]:
    top, left, bottom, right = region
    return max(top, 0), max(left, 0), min(bottom, shape[0]), min(right, shape[1])


STACKS = {
    "three 3x3 convs": (
        lambda pool: nn.Sequential(*(nn.Conv2d(1, 1, 3) for _ in range(3))),
        (7, 7),
        (1, 1),
    ),
    "conv-pool-conv": (
        lambda pool: nn.Sequential(
            nn.Conv2d(1, 2, 5, stride=2, padding=2), pool(3, 2, 1), nn.Conv2d(2, 1, 3, padding=1)
        ),
        (5 + 2 * 2 + 2 * 4, 5 + 2 * 2 + 2 * 4),
        (4, 4),
    ),
    "dilated, strided, 1x1": (
        lambda pool: nn.Sequential(
            nn.Conv2d(1, 2, 3, padding=2, dilation=2),
            nn.BatchNorm2d(2),
            nn.ReLU(),
            nn.Conv2d(2, 2, (4, 2), stride=2, padding=1),
            nn.Conv2d(2, 1, 1),
        ),
        (5 + 3, 5 + 1),
        (2, 2),
    ),
}


@pytest.mark.parametrize("name", sorted(STACKS))
def test_known_stacks_match_the_gradient_probe(name: str) -> None:
    build, size, jump = STACKS[name]
    model = build(nn.MaxPool2d)
    last = str(len(model) - 1)
    field = receptive_field(model, last)
    assert field.size == size and field.jump == jump
    # the probe: the same stack with average pooling (max pooling routes the gradient to one
    # pixel) and without the ReLU (eval-mode BatchNorm and ReLU are per pixel anyway)
    twin = build(nn.AvgPool2d).eval()
    if name == "dilated, strided, 1x1":
        twin[2] = nn.Identity()
    shape = (29, 31)
    out_h, out_w = twin(torch.zeros(1, 1, *shape)).shape[2:]
    for row, column in [(0, 0), (out_h // 2, out_w // 2), (out_h - 1, out_w - 1)]:
        expected = probe_support(twin, shape, row, column)
        assert clipped(field.region(row, column), shape) == expected, (row, column)


def test_resnet18_fields_are_the_published_ones() -> None:
    model = torchvision.models.resnet18()
    sizes = {
        name: receptive_field(model, name).size[0]
        for name in ("conv1", "maxpool", "layer1.1.conv2", "layer2.1.conv2", "layer4.1.conv2")
    }
    assert sizes == {
        "conv1": 7,
        "maxpool": 11,
        "layer1.1.conv2": 43,
        "layer2.1.conv2": 99,
        "layer4.1.conv2": 435,  # ResNet-18's well-known receptive field
    }
    assert receptive_field(model, "layer4.1.conv2").jump == (32, 32)


def test_unknown_operations_and_untraceable_models_are_named() -> None:
    model = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Upsample(scale_factor=2), nn.Conv2d(1, 1, 3))
    with pytest.raises(ValueError, match="no receptive-field rule for Upsample"):
        receptive_field(model, "2")

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) if x.sum() > 0 else x

    with pytest.raises(ValueError, match="cannot trace Branchy"):
        receptive_field(Branchy(), "conv")
    with pytest.raises(ValueError, match="layers: "):
        receptive_field(model, "conv9")


def test_crops_follow_the_unit_and_fill_outside_with_the_minimum() -> None:
    images = torch.arange(2 * 64.0).view(2, 1, 8, 8)
    field = ReceptiveField(size=(3, 3), jump=(2, 2), start=(0.0, 0.0))
    crops = crop_receptive_field(images, field, torch.tensor([1, 0]), torch.tensor([2, 0]))
    assert torch.equal(crops[0, 0], images[0, 0, 1:4, 3:6])
    assert torch.equal(crops[1, 0, 1:, 1:], images[1, 0, :2, :2])
    assert (crops[1, 0, 0] == 64.0).all() and (crops[1, 0, :, 0] == 64.0).all()
