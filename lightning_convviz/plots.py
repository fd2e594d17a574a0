"""Matplotlib charts as uint8 ``H x W x 3`` arrays, drawn without pyplot (fine off the main
thread)."""

from __future__ import annotations

import numpy as np

__all__ = ["class_scatter"]


def class_scatter(
    points: np.ndarray,
    labels: np.ndarray | None,
    title: str = "",
    size_inches: float = 6.0,
    dpi: int = 100,
) -> np.ndarray:
    """A 2-D scatter plot, one colour per class with a legend (grey without labels).

    Example:
        >>> picture = class_scatter(np.random.rand(30, 2), np.arange(30) % 3, "epoch 1")
        >>> picture.shape, picture.dtype
        ((600, 600, 3), dtype('uint8'))
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(size_inches, size_inches), dpi=dpi)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    marker = max(2.0, 12.0 - np.log10(max(len(points), 1)) * 3)
    if labels is None:
        axes.scatter(points[:, 0], points[:, 1], s=marker, c="0.4", linewidths=0)
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
                label=str(value),
                linewidths=0,
            )
        axes.legend(markerscale=2.5, fontsize=8, loc="best", title="class", framealpha=0.8)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    canvas.draw()  # type: ignore[no-untyped-call]
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()  # type: ignore[no-untyped-call]
