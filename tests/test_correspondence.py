"""The correspondence core: points matched between an image and a warped copy (Long et al.)."""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers import fit, logged_image, read_events
from torch import nn
from workloads import Classifier

from lightning_convviz import CorrespondenceMonitor
from lightning_convviz.functional.correspondence import (
    SimilarityWarp,
    correspondence,
    layer_correspondence,
    match_points,
    pixel_features,
    point_grid,
    random_similarity_warps,
)

LOG = Path("run") / "version_0"


def conv_net(padding_mode: str = "zeros") -> nn.Sequential:
    """Conv-only, total stride 4: two stride-2 blocks, then a stride-1 block."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1, padding_mode=padding_mode),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, 2, 1, padding_mode=padding_mode),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, 1, 1, padding_mode=padding_mode),
        nn.ReLU(),
    ).eval()


class Broadcast(nn.Module):
    """Every position gets the map's mean: features that ignore position."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).contiguous()


def test_an_identity_transform_scores_one_at_every_layer() -> None:
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    scores = layer_correspondence(conv_net(), images, SimilarityWarp.identity(3))
    assert sorted(scores) == ["1", "3", "5", "pixels"]
    for name, result in scores.items():
        assert result.pck == 1.0, name


def test_a_shift_by_a_multiple_of_the_total_stride_is_matched_exactly() -> None:
    """Circular padding and a circular shift keep the network exactly equivariant: each point's
    features in the copy lie at its true position, two map cells away at the deepest layer."""
    net = conv_net("circular")
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    shifted = torch.roll(images, shifts=(8, 8), dims=(2, 3))  # 2 x the total stride of 4
    with torch.no_grad():
        features, shifted_features = net(images), net(shifted)
    assert features.shape[2:] == (8, 8)
    result = correspondence(features, shifted_features, SimilarityWarp.shift(2, 8, 8), (32, 32))
    assert result.pck == 1.0
    assert int(result.inside.sum()) == 2 * 9 * 9  # points right of / below 24 px land outside
    # exact but where reads are clamped at the border (within half a cell of the edge: 2 px)
    errors = (result.matched - result.truth).norm(dim=2)[result.inside]
    assert errors.max() <= 2.0


def test_a_warped_shift_with_zero_padding_keeps_most_points_at_a_shallow_layer() -> None:
    """The real warp (zeros where the copy shows no image) on a zero-padded network: the
    stride-4 layer locates nearly every point (only those within its receptive field of the cut
    edge see other pixels in the copy)."""
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    scores = layer_correspondence(conv_net(), images, SimilarityWarp.shift(4, 8, 4))
    assert scores["3"].pck >= 0.95
    assert scores["pixels"].pck >= 0.95


def test_features_that_ignore_position_score_near_chance() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), Broadcast(), nn.Conv2d(8, 8, 1), nn.ReLU()
    ).eval()
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    scores = layer_correspondence(net, images, SimilarityWarp.shift(4, 8, 8), layers=["1", "4"])
    assert scores["1"].chance < 0.05
    assert scores["4"].pck <= scores["4"].chance + 0.05  # no better than a random match
    assert scores["1"].pck > 0.9  # the layer before the pool locates points


def test_matching_equals_a_brute_force_nearest_neighbour() -> None:
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(2, 5, 4, 6, generator=generator)
    warped = torch.randn(2, 5, 3, 5, generator=generator)
    size = (8, 12)
    points = point_grid(size, 3)
    candidates = point_grid(size, 4)
    matched, described = match_points(features, warped, points, candidates, size)
    assert described.all()
    ties = torch.zeros(1, 3, 2, 2)  # every position alike: the match is the candidates' centroid
    centre, _ = match_points(ties + 1, ties + 1, points, candidates, size)
    assert torch.allclose(centre, torch.tensor([6.0, 4.0]).expand(1, len(points), 2))

    def read(map_: torch.Tensor, x: float, y: float) -> torch.Tensor:
        """Bilinear, border-clamped: the map's cell i is centred at (i + 0.5) * side / cells."""
        _, rows, columns = map_.shape
        u = min(max(x * columns / size[1] - 0.5, 0.0), columns - 1.0)
        v = min(max(y * rows / size[0] - 0.5, 0.0), rows - 1.0)
        u0, v0 = math.floor(u), math.floor(v)
        u1, v1 = min(u0 + 1, columns - 1), min(v0 + 1, rows - 1)
        a, b = u - u0, v - v0
        return (
            map_[:, v0, u0] * (1 - a) * (1 - b)
            + map_[:, v0, u1] * a * (1 - b)
            + map_[:, v1, u0] * (1 - a) * b
            + map_[:, v1, u1] * a * b
        )

    for image in range(2):
        for index, (x, y) in enumerate(points.tolist()):
            query = read(features[image], x, y)
            similarities = [
                float(F.cosine_similarity(query, read(warped[image], cx, cy), dim=0))
                for cx, cy in candidates.tolist()
            ]
            best = max(range(len(similarities)), key=similarities.__getitem__)
            assert torch.allclose(matched[image, index], candidates[best])


def test_the_warp_moves_each_point_where_the_transform_says() -> None:
    """A bright dot at a point of the image appears, in the copy, at the transformed point."""
    warp = random_similarity_warps(3, (40, 48), max_shift=0.1, flip=True, seed=7)
    images = torch.zeros(3, 1, 40, 48)
    images[:, :, 19:22, 23:26] = 1.0  # a 3 x 3 dot around pixel (24, 20) (x, y)
    truth = warp.apply(torch.tensor([[24.5, 20.5]]))[:, 0]
    copies = warp.warp(images)
    for image in range(3):
        row, column = divmod(int(copies[image, 0].flatten().argmax()), 48)
        assert abs(column + 0.5 - float(truth[image, 0])) <= 1.5
        assert abs(row + 0.5 - float(truth[image, 1])) <= 1.5


def test_the_warps_are_deterministic_and_mirror_when_asked() -> None:
    first = random_similarity_warps(8, (32, 32), flip=True, seed=3)
    again = random_similarity_warps(8, (32, 32), flip=True, seed=3)
    assert torch.equal(first.matrix, again.matrix) and torch.equal(first.offset, again.offset)
    determinants = torch.linalg.det(first.matrix)
    assert (determinants < 0).any() and (determinants > 0).any()
    assert (torch.linalg.det(random_similarity_warps(8, (32, 32), seed=3).matrix) > 0).all()


def test_zero_features_are_a_miss_not_a_match() -> None:
    features = torch.zeros(1, 4, 8, 8)
    result = correspondence(features, features, SimilarityWarp.identity(1), (32, 32))
    assert result.pck == 0.0


def test_pixel_features_describe_a_patch_by_its_normalised_cross_correlation() -> None:
    images = torch.randn(2, 3, 128, 96)
    described = pixel_features(images)
    assert described.shape == (2, 3 * 9 * 9, 64, 48)  # shrunk to 64 a side, patches of 9
    assert described.mean(dim=1).abs().max() < 1e-5  # each patch centred


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda f, w: correspondence(f, f, w, (16, 16), alpha=0.0), "alpha"),
        (lambda f, w: correspondence(f, f, w, (16, 16), alpha=1.0), "alpha"),
        (lambda f, w: correspondence(f, f, SimilarityWarp.shift(2, 40, 0), (16, 16)), "none of"),
        (lambda f, w: random_similarity_warps(2, (16, 16), max_shift=1.0), "max_shift"),
    ],
)
def test_bad_arguments_fail_clearly(call: object, message: str) -> None:
    features = torch.randn(2, 4, 8, 8)
    with pytest.raises(ValueError, match=message):
        call(features, SimilarityWarp.identity(2))  # type: ignore[operator]


# -- the callback -----------------------------------------------------------------------------


def wide_cnn() -> Classifier:
    """Three conv blocks (strides 1, 2, 2) wide enough that no point's features are all zero."""
    return Classifier(
        nn.Sequential(
            OrderedDict(
                block1=nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU()),
                block2=nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU()),
                block3=nn.Sequential(nn.Conv2d(32, 32, 3, 2, 1), nn.ReLU()),
                pool=nn.AdaptiveAvgPool2d(1),
                flat=nn.Flatten(),
                head=nn.Linear(32, 2),
            )
        )
    )


LAYERS = ("net.block1.1", "net.block2.1", "net.block3.1")


def test_the_monitor_logs_pck_per_layer_the_baseline_once_and_two_pictures(
    tmp_path: Path,
) -> None:
    """Without a transform (no shift, scale or rotation) every layer scores 1.0, as the core
    does; the pixels' and a random match's scores come once; pictures of the middle and the
    deepest layer at every drawing."""
    torch.manual_seed(0)
    monitor = CorrespondenceMonitor(
        max_shift=0, max_scale_change=0, max_rotation_degrees=0, num_probe_images=3, batch_size=2
    )
    fit(tmp_path, [monitor], model=wide_cnn(), max_epochs=2)
    events = read_events(tmp_path / LOG)
    for layer in LAYERS:
        values = [event.value for event in events.Scalars(f"correspondence/pck/{layer}")]
        assert values == [1.0, 1.0, 1.0], layer  # the start, and after each of 2 epochs
    assert [e.value for e in events.Scalars("correspondence/pck/pixels")] == [1.0]
    chance = events.Scalars("correspondence/pck/chance")
    assert len(chance) == 1 and 0 < chance[0].value < 0.1
    pictured = {tag for tag in events.Tags()["images"] if tag.startswith("correspondence/")}
    assert pictured == {
        "correspondence/matches/net.block2.1",
        "correspondence/matches/net.block3.1",
    }
    picture = logged_image(events, "correspondence/matches/net.block3.1")
    assert picture.shape == (2 * (160 + 16), 2 * 160 + 8, 3)  # two pairs of 160 px images
    green = (picture[..., 1] > 150) & (picture[..., 0] < 100) & (picture[..., 2] < 120)
    red = (picture[..., 0] > 200) & (picture[..., 1] < 80)
    assert green.sum() > 1000 and red.sum() < green.sum() / 100  # every line green (the images
    # themselves hold a few red pixels)
    assert set(monitor.scores) == set(LAYERS)


def test_a_warp_scores_each_layer_between_chance_and_one(tmp_path: Path) -> None:
    monitor = CorrespondenceMonitor(num_probe_images=4, flip=True)
    fit(tmp_path, [monitor], model=wide_cnn())
    events = read_events(tmp_path / LOG)
    chance = events.Scalars("correspondence/pck/chance")[0].value
    for layer in (*LAYERS, "pixels"):
        for event in events.Scalars(f"correspondence/pck/{layer}"):
            assert 0.0 <= event.value <= 1.0
    assert events.Scalars("correspondence/pck/pixels")[0].value > chance


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"alpha": -0.1}, "alpha"),
        ({"max_shift": 0.7}, "max_shift"),
        ({"max_scale_change": 0.6}, "max_scale_change"),
        ({"max_rotation_degrees": 200}, "max_rotation_degrees"),
        ({"points_per_side": 0}, "points_per_side"),
        ({"flip": "yes"}, "flip"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_monitor_arguments_are_named(kwargs: dict[str, Any], argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        CorrespondenceMonitor(**kwargs)
