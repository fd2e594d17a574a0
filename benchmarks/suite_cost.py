"""What the diagnostics cost on the digits demo: every callback at its defaults against none.

The digits demo model (``lightning_convviz.demo``), 10 epochs of the bundled digits, CPU, a
TensorBoard logger in both runs, alternating in one process: a plain fit, then the fit with all
twelve callbacks at their defaults, ``--rounds`` times; the ratio of each pair's fit times is
reported with its median. With ``--each``, every callback alone too (one run each, the extra
seconds over the median plain fit). Writes a section of ``docs/benchmarks.md``.

Usage: ``python benchmarks/suite_cost.py [--rounds 2] [--each] [--epochs 10]``
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

import lightning_convviz as convviz
from lightning_convviz.demo import train

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def every_callback_at_defaults() -> list[pl.Callback]:
    return [getattr(convviz, name)() for name in CALLBACKS]


CALLBACKS = [name for name in convviz.__all__ if name.endswith(("Monitor", "Doctor"))]


def fit_seconds(callbacks: list[Any], epochs: int) -> tuple[float, pl.Trainer]:
    with tempfile.TemporaryDirectory() as log_dir, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        trainer = train(epochs=epochs, log_dir=log_dir, callbacks=callbacks)  # waits for t-SNE
        return time.perf_counter() - start, trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--each", action="store_true", help="also every callback alone")
    parser.add_argument("--no-write", action="store_true", help="do not write docs")
    args = parser.parse_args()
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    plain, full = [], []
    for round_index in range(args.rounds):
        plain.append(fit_seconds([], args.epochs)[0])
        full.append(fit_seconds(every_callback_at_defaults(), args.epochs)[0])
        print(
            f"round {round_index + 1}: plain {plain[-1]:.1f} s, every callback {full[-1]:.1f} s, "
            f"ratio {full[-1] / plain[-1]:.2f}",
            flush=True,
        )
    ratios = [f / p for f, p in zip(full, plain, strict=True)]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    lines = [
        f"Digits demo model, {args.epochs} epochs, {device}, every callback at its defaults "
        f"against none, {args.rounds} alternating rounds: plain fit "
        f"{statistics.median(plain):.1f} s, with every callback "
        f"{statistics.median(full):.1f} s, **ratio {statistics.median(ratios):.2f}** (rounds: "
        + ", ".join(f"{r:.2f}" for r in ratios)
        + ").",
    ]
    if args.each:
        base = statistics.median(plain)
        lines += ["", "| callback alone | extra seconds over the plain fit |", "|---|---|"]
        for name in CALLBACKS:
            seconds, _ = fit_seconds([getattr(convviz, name)()], args.epochs)
            lines.append(f"| {name} | {seconds - base:+.1f} |")
            print(f"{name}: {seconds - base:+.1f} s", flush=True)
    print("\n".join(lines))
    if not args.no_write:
        from results import write_section

        title = "The whole suite on the digits demo"
        if torch.cuda.is_available():  # the demo trains on the GPU then
            title += f" ({torch.cuda.get_device_name(0)})"
        write_section(DOCS, title, "\n".join(lines))


if __name__ == "__main__":
    main()
