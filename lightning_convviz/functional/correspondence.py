"""How much spatial information a layer keeps: points matched between an image and a warped copy.

Long, Zhang and Darrell ("Do Convnets Learn Correspondence?", NIPS 2014) matched conv features
by nearest neighbour to locate points between two images, and found deep layers locate them
more precisely than their receptive fields would suggest. This module runs their experiment
with a known answer: each image is warped by a similarity transform (a shift, a scale, a small
rotation, optionally a mirror: :func:`random_similarity_warps`), so every point's true position
in the warped copy is known. A grid of points of the image (those that land inside the copy) is
matched to a finer grid of candidate points of the copy by cosine similarity of the layer's
features, read bilinearly at each point (:func:`match_points`); a match is right when it lies
within ``alpha`` x the image side of the true position (PCK@alpha, the keypoint literature's
score, alpha 0.1 by default).

Coordinates are pixels: ``(x, y)`` from the image's top-left corner, pixel ``j``'s centre at
``j + 0.5``. A feature map of any size is taken to cover the whole image (its cell ``i`` centred
at ``(i + 0.5) * W / w``).

:func:`pixel_features` describes each point by the image patch around it (normalised
cross-correlation), the baseline the layers are compared with.

Pure torch: no Lightning, no logging.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lightning_convviz.functional.arguments import check_images, check_int
from lightning_convviz.functional.capture import LayerSpec, capture_activations
from lightning_convviz.functional.guard import preserved_state

__all__ = [
    "Correspondence",
    "SimilarityWarp",
    "check_alpha",
    "correspondence",
    "layer_correspondence",
    "match_points",
    "pixel_features",
    "point_grid",
    "random_similarity_warps",
]


def check_alpha(alpha: object) -> float:
    """``alpha`` as a float, or ``ValueError`` unless it lies in (0, 1)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(
            f"alpha: expected a share of the image side in (0, 1) (0.1 is the keypoint "
            f"literature's PCK@0.1), got {alpha!r}"
        )
    return float(alpha)


class SimilarityWarp(NamedTuple):
    """One similarity transform per image, in pixels: ``x' = matrix @ x + offset``.

    ``matrix`` is ``(N, 2, 2)`` (scale times rotation, times a mirror), ``offset`` ``(N, 2)``.
    Points are ``(x, y)`` pixel coordinates.
    """

    matrix: torch.Tensor
    offset: torch.Tensor

    @staticmethod
    def identity(count: int) -> SimilarityWarp:
        """The transform that changes nothing, for ``count`` images."""
        return SimilarityWarp(torch.eye(2).expand(count, 2, 2).clone(), torch.zeros(count, 2))

    @staticmethod
    def shift(count: int, dx: float, dy: float) -> SimilarityWarp:
        """A shift by ``(dx, dy)`` pixels of every image (content moves right and down)."""
        offset = torch.tensor([float(dx), float(dy)]).expand(count, 2).clone()
        return SimilarityWarp(torch.eye(2).expand(count, 2, 2).clone(), offset)

    def apply(self, points: torch.Tensor) -> torch.Tensor:
        """Where ``points`` (``(P, 2)`` or ``(N, P, 2)``) land: ``(N, P, 2)``."""
        points = points.to(self.matrix)
        if points.ndim == 2:
            points = points.expand(len(self.matrix), -1, -1)
        return torch.einsum("nij,npj->npi", self.matrix, points) + self.offset[:, None]

    def warp(self, images: torch.Tensor) -> torch.Tensor:
        """The warped copies of ``images`` (bilinear; zeros where the copy shows no image)."""
        count, _, height, width = images.shape
        if count != len(self.matrix):
            raise ValueError(
                f"warp: {len(self.matrix)} transforms for {count} images; expected one per image"
            )
        matrix = self.matrix.to(images.device, torch.float32)
        offset = self.offset.to(images.device, torch.float32)
        targets = point_grid((height, width), (height, width)).to(images.device)
        sources = torch.einsum(
            "nij,npj->npi", torch.linalg.inv(matrix), targets[None] - offset[:, None]
        )
        grid = _normalised(sources, (height, width)).reshape(count, height, width, 2)
        warped = F.grid_sample(images.float(), grid, mode="bilinear", align_corners=False)
        return warped.to(images.dtype)


def random_similarity_warps(
    count: int,
    size: tuple[int, int],
    max_shift: float = 0.1,
    max_scale_change: float = 0.15,
    max_rotation_degrees: float = 10.0,
    flip: bool = False,
    seed: int = 0,
) -> SimilarityWarp:
    """Deterministic random similarity transforms about the image centre, one per image.

    Each draws a shift of up to ``max_shift`` x the image side in each direction, a scale in
    ``[1 - max_scale_change, 1 + max_scale_change]``, a rotation of up to
    ``max_rotation_degrees`` either way and, with ``flip``, a mirror (left to right) with
    probability one half. The same ``seed`` gives the same transforms.

    Example:
        >>> warps = random_similarity_warps(2, (32, 32), seed=0)
        >>> warps.apply(torch.tensor([[16.0, 16.0]])).shape
        torch.Size([2, 1, 2])
    """
    check_int("count", count)
    for name, value, upper in (
        ("max_shift", max_shift, 1.0),
        ("max_scale_change", max_scale_change, 1.0),
        ("max_rotation_degrees", max_rotation_degrees, 180.0),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < upper:
            raise ValueError(f"{name}: expected a number in [0, {upper:g}), got {value!r}")
    generator = torch.Generator().manual_seed(seed)

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, dtype=torch.float64) * 2 - 1

    height, width = size
    shift = uniform(count, 2) * max_shift * torch.tensor([width, height], dtype=torch.float64)
    scale = 1 + uniform(count) * max_scale_change
    angle = uniform(count) * math.radians(max_rotation_degrees)
    mirror = torch.rand(count, generator=generator, dtype=torch.float64) < 0.5
    cos, sin = angle.cos() * scale, angle.sin() * scale
    matrix = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    if flip:
        matrix[mirror, :, 0] = -matrix[mirror, :, 0]
    centre = torch.tensor([width / 2, height / 2], dtype=torch.float64)
    offset = centre + shift - torch.einsum("nij,j->ni", matrix, centre)
    return SimilarityWarp(matrix.float(), offset.float())


def point_grid(size: tuple[int, int], per_side: tuple[int, int] | int) -> torch.Tensor:
    """``rows x columns`` points spread evenly over an image of ``size = (H, W)``: ``(P, 2)``
    pixel coordinates ``(x, y)``, row by row, each at the centre of its cell.

    Example:
        >>> point_grid((4, 4), 2)
        tensor([[1., 1.],
                [3., 1.],
                [1., 3.],
                [3., 3.]])
    """
    rows, columns = (per_side, per_side) if isinstance(per_side, int) else per_side
    height, width = size
    ys = (torch.arange(rows, dtype=torch.float32) + 0.5) * height / rows
    xs = (torch.arange(columns, dtype=torch.float32) + 0.5) * width / columns
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.flatten(), grid_y.flatten()], dim=1)


def _normalised(points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pixel coordinates as ``grid_sample``'s ``[-1, 1]`` (``align_corners=False``)."""
    height, width = size
    scale = torch.tensor([2 / width, 2 / height], device=points.device, dtype=points.dtype)
    return points * scale - 1


def _read(features: torch.Tensor, points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``features`` (``N x C x h x w``, covering an image of ``size``) read bilinearly at
    ``points`` (``(N, P, 2)`` pixels): ``(N, P, C)``."""
    grid = _normalised(points.to(features.device, torch.float32), size)[:, None]
    read = F.grid_sample(
        features.float(), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    return read[:, :, 0].transpose(1, 2)


class Correspondence(NamedTuple):
    """Points of an image matched to its warped copy through one layer's features."""

    #: ``(P, 2)`` the grid of points of the image, pixels ``(x, y)``.
    points: torch.Tensor
    #: ``(N, P, 2)`` where each point truly lies in each warped copy.
    truth: torch.Tensor
    #: ``(N, P)`` whether that true position lies inside the copy (only those are scored).
    inside: torch.Tensor
    #: ``(N, P, 2)`` where each point was matched in the copy (see :func:`match_points`).
    matched: torch.Tensor
    #: ``(N, P)`` whether the match lies within ``alpha`` x the image side of the truth (and
    #: the point had features to match: a point whose features are all zero is a miss).
    correct: torch.Tensor
    #: PCK@alpha: the share of the points inside that are matched correctly, over all images.
    pck: float
    #: The PCK of a match drawn at random among the candidates (what no information scores).
    chance: float


def match_points(
    features: torch.Tensor,
    warped_features: torch.Tensor,
    points: torch.Tensor,
    candidates: torch.Tensor,
    size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each point, where in the warped copy its features are most similar.

    Each point is matched to the candidate whose features have the highest cosine similarity
    with its own (both read bilinearly). Where several candidates tie exactly (features that
    do not change over a region: a map's border, where reads are clamped, or a map without
    position), the match is their centroid: the place the features cannot narrow down further.

    Args:
        features: The image's feature map ``N x C x h x w`` (any ``h x w``: it covers the image).
        warped_features: The warped copy's, ``N x C x h' x w'``.
        points: ``(P, 2)`` pixel coordinates in the image.
        candidates: ``(Q, 2)`` pixel coordinates in the copy.
        size: The images' ``(H, W)`` in pixels.

    Returns:
        The matched positions ``(N, P, 2)`` in pixels of the copy, and whether each point had
        features to compare ``(N, P)`` (not all zero).
    """
    count = len(features)
    queries = _read(features, points.expand(count, -1, -1), size)
    keys = _read(warped_features, candidates.expand(count, -1, -1), size)
    similarity = torch.bmm(F.normalize(queries, dim=2), F.normalize(keys, dim=2).transpose(1, 2))
    tied = (similarity == similarity.amax(dim=2, keepdim=True)).float()
    matched = tied @ candidates.to(tied) / tied.sum(dim=2, keepdim=True)
    described = queries.abs().amax(dim=2) > 0
    return matched, described


def correspondence(
    features: torch.Tensor,
    warped_features: torch.Tensor,
    warp: SimilarityWarp,
    size: tuple[int, int],
    alpha: float = 0.1,
    points_per_side: int = 12,
) -> Correspondence:
    """Score one layer: match a grid of points of each image to its warped copy (PCK@alpha).

    The points are a ``points_per_side`` square grid; the candidates of the copy a grid three
    times as fine (it holds every point of the coarse grid: an identity transform can match
    exactly). Points whose true position falls outside the copy are not scored.

    Example:
        >>> images = torch.randn(2, 3, 16, 16)
        >>> result = correspondence(images, images, SimilarityWarp.identity(2), (16, 16))
        >>> result.pck
        1.0

    Raises:
        ValueError: For ``alpha`` outside (0, 1), or a transform that leaves no point of an
            image inside its copy.
    """
    alpha = check_alpha(alpha)
    check_int("points_per_side", points_per_side)
    count = len(features)
    points = point_grid(size, points_per_side)
    candidates = point_grid(size, 3 * points_per_side)
    truth = warp.apply(points).to(torch.float32)
    height, width = size
    inside = (
        (truth[..., 0] >= 0)
        & (truth[..., 0] < width)
        & (truth[..., 1] >= 0)
        & (truth[..., 1] < height)
    )
    empty = (~inside.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"warp: the transform of image {empty[0]} leaves none of the {len(points)} points "
            f"inside the {height} x {width} copy; expected a shift below the image side"
        )
    matched, described = match_points(features, warped_features, points, candidates, size)
    matched = matched.cpu()
    tolerance = alpha * max(height, width)
    near = (matched - truth).norm(dim=2) <= tolerance
    correct = near & described.cpu() & inside
    candidate_near = torch.cdist(truth, candidates.expand(count, -1, -1)) <= tolerance
    chance = candidate_near.float().mean(dim=2)[inside].mean()
    scored = int(inside.sum())
    return Correspondence(
        points, truth, inside, matched, correct, int(correct.sum()) / scored, float(chance)
    )


def pixel_features(images: torch.Tensor, max_side: int = 64) -> torch.Tensor:
    """Each position described by the image patch around it, centred: cosine similarity of
    two such descriptions is their normalised cross-correlation.

    The image is first shrunk (area averaging) to at most ``max_side`` pixels a side; the patch
    is an eighth of that side (odd, at least 3 pixels). ``N x (C * p * p) x h x w``.
    """
    images = check_images(images).detach().float()
    height, width = images.shape[2:]
    shrink = max(height, width) / max_side
    if shrink > 1:
        size = (max(1, round(height / shrink)), max(1, round(width / shrink)))
        images = F.interpolate(images, size=size, mode="area")
    side = max(3, max(images.shape[2:]) // 8) | 1
    padded = F.pad(images, [side // 2] * 4, mode="replicate")
    patches = F.unfold(padded, side)  # N x (C * side * side) x (h * w)
    patches = patches - patches.mean(dim=1, keepdim=True)
    return patches.reshape(len(images), -1, *images.shape[2:])


def layer_correspondence(
    model: nn.Module,
    images: torch.Tensor,
    warp: SimilarityWarp | None = None,
    layers: LayerSpec | list[LayerSpec] | None = None,
    alpha: float = 0.1,
    points_per_side: int = 12,
) -> dict[str, Correspondence]:
    """:func:`correspondence` at every selected layer of ``model``, and on raw pixels.

    Runs the model once on the images and their warped copies (in eval mode, with every
    ``.training`` flag, the RNG state and the gradients restored afterwards).

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        >>> scores = layer_correspondence(model, torch.randn(2, 3, 16, 16))
        >>> sorted(scores), 0 <= scores["1"].pck <= 1
        (['1', 'pixels'], True)

    Args:
        model: The network.
        images: ``N x C x H x W``.
        warp: One transform per image (default: :func:`random_similarity_warps` with seed 0).
        layers: The layers to score (see :func:`~lightning_convviz.functional.resolve_layers`);
            ``None``: every conv block's activation. Only maps ``N x C x h x w`` are scored.
        alpha: The share of the image side within which a match counts as right.
        points_per_side: The grid of points matched is this many points a side.

    Returns:
        ``{site name: Correspondence}`` for each selected layer with a map output, then
        ``"pixels"``.
    """
    images = check_images(images)
    alpha = check_alpha(alpha)
    size = (images.shape[2], images.shape[3])
    warp = warp or random_similarity_warps(len(images), size)
    warped = warp.warp(images)
    with preserved_state(model), torch.no_grad(), capture_activations(model, layers) as maps:
        model(torch.cat([images, warped]))
    count = len(images)
    scores = {
        name: correspondence(map_[:count], map_[count:], warp, size, alpha, points_per_side)
        for name, map_ in maps.items()
        if map_.ndim == 4
    }
    scores["pixels"] = correspondence(
        pixel_features(images), pixel_features(warped), warp, size, alpha, points_per_side
    )
    return scores
