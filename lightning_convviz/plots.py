"""Matplotlib charts as uint8 ``H x W x 3`` arrays, drawn without pyplot (fine off the main
thread)."""

from __future__ import annotations

from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["ANNOTATED_CLASSES", "Chart", "binned_bars", "class_scatter", "confusion_chart"]


class Chart:
    """A matplotlib figure drawn again and again, for a caller that draws the same chart often.

    A matplotlib figure is a web of reference cycles: once drawn and dropped it waits for one
    of Python's full garbage collections, which come rarely in a large training process, and
    holds its pixel buffer (about 2 MiB for a 600 x 600 chart) until then. A ``Chart`` keeps
    one figure and its pixel buffer and clears it for each new drawing. Not for two threads at
    once.

    Example:
        >>> chart = Chart()
        >>> first = class_scatter(np.random.rand(30, 2), None, chart=chart)
        >>> again = class_scatter(np.random.rand(30, 2), None, chart=chart)
        >>> first.shape == again.shape == (600, 600, 3)
        True
    """

    def __init__(self) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self._figure = Figure()
        self._canvas = FigureCanvasAgg(self._figure)

    def axes(self, width_inches: float, height_inches: float, dpi: int) -> Axes:
        """Clear the figure, size it and give it one new set of axes."""
        self._figure.clear()
        self._figure.set_dpi(dpi)
        self._figure.set_size_inches(width_inches, height_inches)
        axes: Axes = self._figure.add_subplot()
        return axes

    def pixels(self) -> np.ndarray:
        """Lay the figure out tightly, draw it and return a copy of its RGB pixels."""
        self._figure.tight_layout()
        self._canvas.draw()  # type: ignore[no-untyped-call]
        rgba = np.asarray(self._canvas.buffer_rgba())  # type: ignore[no-untyped-call]
        return rgba[:, :, :3].copy()


#: Most classes drawn with distinct colours and a legend in :func:`class_scatter`.
LEGEND_CLASSES = 20


def class_scatter(
    points: np.ndarray,
    labels: np.ndarray | None,
    title: str = "",
    size_inches: float = 6.0,
    dpi: int = 100,
    chart: Chart | None = None,
    class_names: list[str] | None = None,
) -> np.ndarray:
    """A 2-D scatter plot coloured by class (grey without labels), drawn on ``chart`` (a new
    one by default). Up to :data:`LEGEND_CLASSES` classes get distinct colours and a legend
    (of ``class_names[label]`` when given, else the labels);
    more (ImageNet's 1000) are coloured along a continuous map by class index, with a colour
    bar, since a legend of hundreds of entries could not be read.

    Example:
        >>> picture = class_scatter(np.random.rand(30, 2), np.arange(30) % 3, "epoch 1")
        >>> picture.shape, picture.dtype
        ((600, 600, 3), dtype('uint8'))
    """
    from matplotlib import colormaps

    chart = chart or Chart()
    axes = chart.axes(size_inches, size_inches, dpi)
    marker = max(2.0, 12.0 - np.log10(max(len(points), 1)) * 3)
    if labels is None:
        axes.scatter(points[:, 0], points[:, 1], s=marker, c="0.4", linewidths=0)
    elif len(np.unique(labels)) > LEGEND_CLASSES:
        drawn = axes.scatter(
            points[:, 0], points[:, 1], s=marker, c=labels, cmap="turbo", linewidths=0
        )
        bar = axes.figure.colorbar(drawn, ax=axes, fraction=0.04, pad=0.01)
        bar.set_label(f"class ({len(np.unique(labels))} classes)", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    else:
        classes = np.unique(labels)
        colours = colormaps["tab10" if len(classes) <= 10 else "tab20"]
        for index, value in enumerate(classes):
            chosen = labels == value
            axes.scatter(
                points[chosen, 0],
                points[chosen, 1],
                s=marker,
                color=colours(index % colours.N),
                label=(
                    class_names[value]
                    if class_names is not None and 0 <= value < len(class_names)
                    else str(value)
                ),
                linewidths=0,
            )
        axes.legend(markerscale=2.5, fontsize=8, loc="best", title="class", framealpha=0.8)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(title, fontsize=10)
    return chart.pixels()


def binned_bars(
    edges: np.ndarray,
    accuracy: np.ndarray,
    true_probability: np.ndarray,
    counts: np.ndarray,
    attribute: str,
    title: str = "",
    chart: Chart | None = None,
) -> np.ndarray:
    """Accuracy (bars) and mean true-class probability (dots) per attribute bin, with each
    bin's range and sample count under its bar, drawn on ``chart`` (a new one by default).

    Example:
        >>> picture = binned_bars(np.array([0.0, 1.0, 2.0]), np.array([0.2, 0.9]),
        ...                       np.array([0.3, 0.8]), np.array([5, 7]), "brightness")
        >>> picture.shape
        (400, 600, 3)
    """
    chart = chart or Chart()
    axes = chart.axes(6, 4, 100)
    positions = np.arange(len(accuracy))
    axes.bar(positions, accuracy, color="tab:blue", label="accuracy")
    axes.plot(positions, true_probability, "o", color="tab:orange", label="mean p(true class)")
    ranges = _bin_ranges(edges)
    labels = [f"{text}\nn={int(count)}" for text, count in zip(ranges, counts, strict=True)]
    axes.set_xticks(positions, labels, fontsize=7, rotation=0 if len(labels) <= 6 else 30)
    axes.set_ylim(0, 1.2)  # the band above 1 holds the legend, clear of every bar
    axes.set_yticks(np.linspace(0, 1, 6))
    axes.set_xlabel(f"{attribute} (quantile bins)")
    axes.set_ylabel("accuracy")
    axes.legend(fontsize=8, loc="upper center", ncols=2, frameon=False)
    axes.set_title(title, fontsize=10)
    return chart.pixels()


def _bin_ranges(edges: np.ndarray) -> list[str]:
    """``"low \N{EN DASH} high"`` per bin, with as many significant digits (3 to 6) as it takes for
    neighbouring edges to read differently."""
    for digits in range(3, 7):
        texts = [f"{edge:.{digits}g}" for edge in edges]
        if all(a != b for a, b in pairwise(texts)):
            break
    return [f"{low} \N{EN DASH} {high}" for low, high in pairwise(texts)]


#: Most classes whose cells are written as numbers in :func:`confusion_chart`.
ANNOTATED_CLASSES = 20


def confusion_chart(
    shares: np.ndarray,
    names: list[str],
    title: str = "",
    chart: Chart | None = None,
) -> np.ndarray:
    """A confusion matrix as a heat map: ``shares[i, j]`` is the share of true class
    ``names[i]`` predicted as ``names[j]`` (rows need not sum to one: a picture of a large
    matrix keeps some classes only). Cells are written as percentages up to
    :data:`ANNOTATED_CLASSES` classes. Drawn on ``chart`` (a new one by default).

    Example:
        >>> picture = confusion_chart(np.eye(3), ["a", "b", "c"])
        >>> picture.shape
        (600, 650, 3)
    """
    chart = chart or Chart()
    classes = len(names)
    side = min(12.0, max(6.0, 0.32 * classes))
    axes = chart.axes(side + 0.5, side, 100)
    drawn = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    bar = axes.figure.colorbar(drawn, ax=axes, fraction=0.04, pad=0.02)
    bar.set_label("share of the true class", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    font = 8 if classes <= ANNOTATED_CLASSES else 6
    axes.set_xticks(np.arange(classes), names, fontsize=font, rotation=90)
    axes.set_yticks(np.arange(classes), names, fontsize=font)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    if classes <= ANNOTATED_CLASSES:
        for row in range(classes):
            for column in range(classes):
                value = shares[row, column]
                if value > 0:
                    axes.text(
                        column,
                        row,
                        f"{100 * value:.0f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if value > 0.5 else "black",
                    )
    axes.set_title(title, fontsize=10)
    return chart.pixels()
