"""t-SNE embedding, alignment between maps, and the measures of a map."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_convviz.functional.embedding import (
    embed_codes,
    grid_cells,
    knn_accuracy,
    procrustes_align,
    trustworthiness,
)


def clusters(count: int = 150, width: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 3
    centres = rng.normal(size=(3, width)) * 4
    return (centres[labels] + rng.normal(size=(count, width))).astype(np.float32), labels


def test_embedding_separates_clusters_and_is_faithful() -> None:
    codes, labels = clusters()
    embedding = embed_codes(codes, n_jobs=1)
    assert embedding.shape == (150, 2) and embedding.dtype == np.float32
    assert knn_accuracy(embedding, labels) > 0.95
    assert trustworthiness(codes, embedding, n_neighbors=5) > 0.9
    assert np.array_equal(embed_codes(codes, n_jobs=1), embedding)  # fixed seed


def test_the_next_map_starts_from_the_previous_and_does_not_mirror() -> None:
    codes, _ = clusters()
    first = embed_codes(codes, n_jobs=1)
    mirrored = first * np.array([-1.0, 1.0], dtype=np.float32)  # what a fresh run may give
    following = embed_codes(codes + 0.01, previous=mirrored, n_jobs=1)
    spread = np.abs(mirrored - mirrored.mean(axis=0)).mean()
    assert np.abs(following - mirrored).mean() < 0.2 * spread
    assert np.abs(following - first).mean() > spread  # it followed the mirrored one


def test_procrustes_undoes_rotation_reflection_and_shift() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(size=(20, 2))
    angle = 1.1
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = (reference * np.array([1.0, -1.0])) @ rotation + np.array([3.0, -2.0])
    assert np.allclose(procrustes_align(moved, reference), reference)


def test_grid_cells_show_the_nearest_sample_and_leave_gaps_empty() -> None:
    points = np.array([[0.0, 0.0], [0.05, 0.0], [1.0, 1.0]])
    cells = grid_cells(points, side=4)
    assert cells[3, 0] in (0, 1) and cells[0, 3] == 2  # bottom-left and top-right corners
    assert (cells == -1).sum() >= 10


def test_bad_codes_are_refused() -> None:
    with pytest.raises(ValueError, match="codes: expected"):
        embed_codes(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="previous: expected"):
        embed_codes(np.zeros((10, 5)), previous=np.zeros((9, 2)))


def test_codes_that_overflowed_are_named() -> None:
    codes = np.ones((6, 3), dtype=np.float32)
    codes[2, 1] = np.inf
    codes[4, 0] = np.nan
    with pytest.raises(ValueError, match=r"^codes: 2 of 6 hold NaN or infinite values"):
        embed_codes(codes)
