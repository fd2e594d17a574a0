"""Charts: a reused Chart draws the same pixels as a fresh figure and leaves no figure behind."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import numpy as np
import pytest

from lightning_convviz import plots


def scatter(chart: plots.Chart | None, seed: int = 0) -> np.ndarray:
    points = np.random.default_rng(seed).random((40, 2))
    return plots.class_scatter(points, np.arange(40) % 3, f"seed {seed}", chart=chart)


def bars(chart: plots.Chart | None) -> np.ndarray:
    return plots.binned_bars(
        np.arange(4.0), np.array([0.2, 0.5, 0.9]), np.array([0.3, 0.6, 0.8]),
        np.array([5, 7, 9]), "brightness", "epoch 1", chart=chart,
    )  # fmt: skip


def test_a_reused_chart_draws_what_a_fresh_figure_draws() -> None:
    chart = plots.Chart()
    scatter(chart, seed=1)
    bars(chart)  # another size and kind in between
    np.testing.assert_array_equal(scatter(chart), scatter(None))
    np.testing.assert_array_equal(bars(chart), bars(None))
    assert scatter(chart).shape == (600, 600, 3) and bars(chart).shape == (400, 600, 3)


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_a_reused_chart_keeps_one_figure_alive(collector_off: None) -> None:
    """Fresh figures stay alive (reference cycles) until a full collection; a Chart keeps one."""
    from matplotlib.figure import Figure

    figures: list[weakref.ref[Figure]] = []
    original = Figure.__init__

    def tracked(self: Figure, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        figures.append(weakref.ref(self))

    Figure.__init__ = tracked  # type: ignore[method-assign]
    try:
        for _ in range(3):
            scatter(None)
        alive_fresh = sum(ref() is not None for ref in figures)
        figures.clear()
        chart = plots.Chart()
        for _ in range(3):
            scatter(chart)
        alive_reused = sum(ref() is not None for ref in figures)
    finally:
        Figure.__init__ = original  # type: ignore[method-assign]
    assert alive_fresh == 3  # waiting for the collector
    assert alive_reused == 1  # the chart's own figure


def test_bin_ranges_take_the_digits_needed_to_tell_neighbouring_edges_apart() -> None:
    assert plots._bin_ranges(np.array([0.0, 0.5, 1.0])) == [
        "0 \N{EN DASH} 0.5",
        "0.5 \N{EN DASH} 1",
    ]
    assert plots._bin_ranges(np.array([1.0451, 1.0454, 1.048])) == [
        "1.0451 \N{EN DASH} 1.0454",
        "1.0454 \N{EN DASH} 1.048",
    ]


def test_many_classes_get_a_colour_bar_instead_of_a_legend() -> None:
    chart = plots.Chart()
    points = np.random.default_rng(0).random((2000, 2))
    picture = plots.class_scatter(points, np.arange(2000) % 1000, "ImageNet-sized", chart=chart)
    figure = chart._figure
    assert picture.shape == (600, 600, 3)
    assert len(figure.axes) == 2 and figure.axes[0].get_legend() is None  # scatter + colour bar
    assert "1000 classes" in figure.axes[1].get_ylabel()
    plots.class_scatter(points[:30], np.arange(30) % 10, "digits", chart=chart)
    assert len(figure.axes) == 1 and figure.axes[0].get_legend() is not None
    # the reused chart draws what a fresh figure draws, after a colour bar too
    np.testing.assert_array_equal(scatter(chart), scatter(None))
