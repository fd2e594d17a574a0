"""Receptive fields from the layer geometry, checked against a gradient probe."""

from __future__ import annotations

import pytest
import torch
import torchvision
from receptive_oracle import gradient_support
from torch import nn

from lightning_convviz.functional import (
    ReceptiveField,
    capture_activations,
    crop_receptive_field,
    receptive_field,
)


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


#: Published receptive fields of whole blocks (Araujo et al., Distill 2019;
#: google-research/receptive_field): model, block, input side, field, jump.
PUBLISHED = [
    ("alexnet", "features", 224, 195, 32),
    ("vgg11", "features", 224, 150, 32),
    ("vgg16", "features", 224, 212, 32),
    ("inception_v3", "Mixed_7c", 299, 1311, 32),
    ("resnet18", "layer4", 224, 435, 32),
    # torchvision's ResNet-50 strides in the first unit's 3x3 conv (v1.5): 427, checked with the
    # gradient oracle at 480 px; the published 483 is TF-slim's v1, which strides at the end
    ("resnet50", "layer4", 224, 427, 32),
]


def build(name: str) -> nn.Module:
    extra = {"init_weights": False} if name in ("googlenet", "inception_v3") else {}
    return torchvision.models.get_model(name, weights=None, **extra)


@pytest.mark.parametrize(("name", "layer", "side", "size", "jump"), PUBLISHED)
def test_published_fields_of_whole_blocks(
    name: str, layer: str, side: int, size: int, jump: int
) -> None:
    field = receptive_field(build(name), layer, torch.zeros(1, 3, side, side))
    assert (field.size, field.jump) == ((size, size), (jump, jump))


#: Blocks through what the issue listed: containers, torch.cat, functional pooling,
#: squeeze-and-excitation gates, channel shuffle, channels-last blocks. Field sizes are checked
#: against the gradient oracle, at the centre unit and at the corner unit (whose field is cut by
#: the image border, which checks where the field starts).
ORACLE = [
    ("resnet50", "layer2", 160),
    ("resnet50", "layer1.2.relu:3", 96),
    ("densenet121", "features.denseblock1", 128),  # torch.cat
    ("googlenet", "inception3b", 128),  # branches with pooling modules
    ("inception_v3", "Mixed_5b", 160),  # F.avg_pool2d inside the block
    ("mobilenet_v3_large", "features.6", 160),  # squeeze-and-excitation, Hardswish
    ("efficientnet_b0", "features.3", 128),  # squeeze-and-excitation, SiLU
    ("regnet_y_400mf", "trunk_output.block2", 96),  # squeeze-and-excitation
    ("shufflenet_v2_x0_5", "stage2", 96),  # chunk, channel shuffle (view / transpose)
    ("convnext_tiny", "features.1", 128),  # 4x4 stem, permute, LayerNorm, Linear, GELU
]


@pytest.mark.parametrize(("name", "layer", "side"), ORACLE)
def test_block_fields_equal_the_gradient_oracle(name: str, layer: str, side: int) -> None:
    model = build(name)
    shape = (side, side)
    field = receptive_field(model, layer, torch.zeros(1, 3, *shape))
    assert field.size[0] < side  # the centre unit's field lies inside the image
    with torch.no_grad():
        out_h, out_w = _output_size(model, layer, shape)
    units = [(out_h // 2, out_w // 2), (0, 0)]
    expected = gradient_support(model, layer, shape, units)
    assert [clipped(field.region(*unit), shape) for unit in units] == expected


def _output_size(model: nn.Module, layer: str, shape: tuple[int, int]) -> tuple[int, int]:
    with capture_activations(model.eval(), layer) as acts:
        model(torch.zeros(1, 3, *shape))
    height, width = next(iter(acts.values())).shape[2:]
    return int(height), int(width)


class UpsampleFuse(nn.Module):
    """HRNet's fusion in small: a branch at a quarter of the resolution, upsampled and added to
    the branch at half the resolution, then a convolution."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.down = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.low = nn.Conv2d(4, 4, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode=mode)
        self.fuse = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        high = self.stem(x)
        return self.fuse(high + self.up(self.low(self.down(high))))


@pytest.mark.parametrize(("mode", "widen"), [("nearest", 1), ("bilinear", 2)])
def test_upsampled_fields_hold_every_pixel_that_counts(mode: str, widen: int) -> None:
    model, shape = UpsampleFuse(mode), (32, 32)
    field = receptive_field(model, "fuse", torch.zeros(1, 3, *shape))
    # the low branch: 3 + 2*2 + 2*4 = 15 px at a jump of 4, widened by `widen` steps of 4; the
    # convolution after the sum adds 2 * 2
    assert field.jump == (2, 2) and field.size == (15 + 4 * widen + 4,) * 2
    units = [(row, column) for row in range(8) for column in (0, 5, 15)]
    oracle = gradient_support(model, "fuse", shape, units)
    for unit, (top, left, bottom, right) in zip(units, oracle, strict=True):
        mine = clipped(field.region(*unit), shape)
        assert mine[0] <= top and mine[1] <= left and mine[2] >= bottom and mine[3] >= right, unit
        # at most the widening larger than the pixels that count
        assert (mine[2] - mine[0]) - (bottom - top) <= 4 * widen, unit
        assert (mine[3] - mine[1]) - (right - left) <= 4 * widen, unit


def test_unknown_operations_are_named_and_what_is_not_on_the_way_does_not_matter() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 1, 3), nn.Upsample(scale_factor=2, mode="bicubic"), nn.Conv2d(1, 1, 3)
    )
    with pytest.raises(
        ValueError, match=r"interpolate \(mode 'bicubic'\) from \d+ to \d+ pixels on the way to '2'"
    ):
        receptive_field(model, "2")
    assert receptive_field(model, "0").size == (3, 3)  # the upsampling comes after
    pooled = nn.Sequential(nn.Conv2d(1, 1, 3), nn.AdaptiveAvgPool2d(4), nn.Conv2d(1, 1, 3))
    with pytest.raises(ValueError, match=r"adaptive_avg_pool2d to \(4, 4\), whose windows"):
        receptive_field(pooled, "2")
    with pytest.raises(ValueError, match="global pooling of the map; each sees the whole image"):
        receptive_field(torchvision.models.resnet18(), "avgpool")
    with pytest.raises(ValueError, match="layers: "):
        receptive_field(model, "conv9")
    # a module called twice must be named with its call
    with pytest.raises(ValueError, match=r"called 2 times .* layer1.0.relu:1, layer1.0.relu:2"):
        receptive_field(torchvision.models.resnet18(), "layer1.0.relu")
    # GoogLeNet in train mode calls its auxiliary heads (adaptive pooling, linear layers); the
    # field is measured in eval mode, where they are not called, and the mode is kept
    googlenet = build("googlenet")
    assert receptive_field(googlenet, "inception4e").jump == (16, 16) and googlenet.training


def test_data_dependent_models_are_followed_eagerly() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)
            self.wide = nn.Conv2d(1, 1, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) if x.sum() >= 0 else self.wide(x)

    assert receptive_field(Branchy(), "conv", torch.zeros(1, 1, 8, 8)).size == (3, 3)
    with pytest.raises(ValueError, match="'wide' is not reached"):
        receptive_field(Branchy(), "wide", torch.zeros(1, 1, 8, 8))


def test_crops_follow_the_unit_and_fill_outside_with_the_minimum() -> None:
    images = torch.arange(2 * 64.0).view(2, 1, 8, 8)
    field = ReceptiveField(size=(3, 3), jump=(2, 2), start=(0.0, 0.0))
    crops = crop_receptive_field(images, field, torch.tensor([1, 0]), torch.tensor([2, 0]))
    assert torch.equal(crops[0, 0], images[0, 0, 1:4, 3:6])
    assert torch.equal(crops[1, 0, 1:, 1:], images[1, 0, :2, :2])
    assert (crops[1, 0, 0] == 64.0).all() and (crops[1, 0, :, 0] == 64.0).all()


def test_rules_for_element_wise_maxima_norms_and_channel_reductions() -> None:
    class Ops(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(1, 2, 3, padding=1)
            self.b = nn.Conv2d(1, 2, 5, padding=2)
            self.merged = nn.Identity()
            self.attention = nn.Identity()
            self.normed = nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            merged = self.merged(torch.max(self.a(x), self.b(x)))  # element-wise: the union
            # CBAM-style spatial attention: a mean over the channels, per pixel
            attention = self.attention(merged * merged.mean(dim=1, keepdim=True).sigmoid())
            return self.normed(attention / attention.norm(2, dim=(2, 3), keepdim=True))

    model, image = Ops(), torch.zeros(1, 1, 12, 12)
    assert receptive_field(model, "merged", image).size == (5, 5)
    assert receptive_field(model, "attention", image).size == (5, 5)
    # dividing by a norm over the whole map is a global rescale, like a gate
    assert receptive_field(model, "normed", image).size == (5, 5)
