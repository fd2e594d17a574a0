"""What one drawing costs to write, per logger: TensorBoard, W&B (offline), MLflow (SQLite store)
and a CSV logger's folder.

Each logger gets the items of typical drawings of the digits demo, written through the same
writing layer the callbacks use (:mod:`lightning_convviz.writing`): a 600 x 400 picture (an
activation-map or attribution grid), a 1200 x 1200 picture (the largest: an embedding grid),
both grids of 8-pixel cells like the callbacks' pictures,
a step of 30 scalars, a histogram of 128 values, the doctor's text and a t-SNE table of 2,000
points. Median milliseconds of ``--repeats`` writes of each, measured side by side in one
process; wandb and mlflow must be installed (``pip install -e .[wandb,mlflow]``). Writes a
section of ``docs/benchmarks.md``.

Usage: ``python benchmarks/logger_cost.py [--repeats 20]``
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lightning_convviz.demo import make_loggers
from lightning_convviz.writing import Destination, EmbeddingPoints, destination_for

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def blocky(rng: np.random.Generator, height: int, width: int, cell: int = 8) -> np.ndarray:
    """A picture like the callbacks' grids: random cells, each ``cell`` pixels square."""
    cells = rng.integers(0, 255, (height // cell, width // cell, 3), dtype=np.uint8)
    return np.repeat(np.repeat(cells, cell, axis=0), cell, axis=1)


def items(rng: np.random.Generator) -> dict[str, Callable[[Destination, int], None]]:
    small = blocky(rng, 400, 600)
    large = blocky(rng, 1200, 1200)
    scalars = {f"activation_stats/sparsity/layer{i}": float(i) for i in range(30)}
    values = rng.random(128)
    text = "| layer | ratio |\n|---|---|\n" + "".join(f"| l{i} | 1e-3 |\n" for i in range(10))
    points = EmbeddingPoints(
        rng.random((2000, 64)), rng.random((2000, 2)), rng.integers(0, 10, 2000)
    )
    return {
        "picture 600 x 400": lambda d, step: d.image("bench/small", small, step),
        "picture 1200 x 1200": lambda d, step: d.image("bench/large", large, step),
        "30 scalars": lambda d, step: d.scalars(scalars, step),
        "histogram": lambda d, step: d.histogram("bench/histogram", values, step),
        "text": lambda d, step: d.text("bench/summary", text, step),
        "t-SNE points (2,000)": lambda d, step: d.points("bench/points", points, step),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    kinds = ("tensorboard", "wandb", "mlflow", "csv")
    with tempfile.TemporaryDirectory() as root:
        os.chdir(root)
        destinations = [destination_for(logger) for logger in make_loggers(kinds, root, "bench")]
        work = items(np.random.default_rng(0))
        table: dict[str, dict[str, float]] = {name: {} for name in work}  # item, logger: ms
        for name, write in work.items():
            seconds: dict[str, list[float]] = {kind: [] for kind in kinds}
            for step in range(args.repeats):  # the loggers in turn, so that they share the noise
                for kind, destination in zip(kinds, destinations, strict=True):
                    start = time.perf_counter()
                    write(destination, step)
                    seconds[kind].append(time.perf_counter() - start)
            for kind, destination in zip(kinds, destinations, strict=True):
                destination.flush()
                table[name][kind] = 1000 * statistics.median(seconds[kind])
        import wandb

        wandb.finish()
    lines = [
        f"Median ms per item over {args.repeats} writes, CPU machine, through the writing layer "
        "(`benchmarks/logger_cost.py`):",
        "",
        "| item | TensorBoard | W&B (offline) | MLflow (SQLite) | CSV folder |",
        "|---|---|---|---|---|",
    ]
    for name, row in table.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[kind]:.1f}" for kind in kinds) + " |")
    print("\n".join(lines))
    if not args.no_write:
        from results import write_section

        write_section(DOCS, "Writing a drawing to each logger", "\n".join(lines))


if __name__ == "__main__":
    main()
