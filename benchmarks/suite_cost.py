"""What the diagnostics cost on the digits demo: every callback at its defaults against none.

The digits demo model (``lightning_convviz.demo``), 10 epochs of the bundled digits, a
TensorBoard logger in both runs, alternating in one process after one warm-up fit (the first fit
of a process pays one-time costs): a plain fit, then the fit with all twelve callbacks at their
defaults, ``--rounds`` times; the ratio of each pair's fit times is reported with its median.
What each callback's drawings cost is read back from its ``cost/<callback>`` scalars (median
over the rounds of the first and of the last drawing). With ``--each``, every callback alone too
(one run each, the extra seconds over the median plain fit). With ``--worker-off``, each round
also fits every callback with the drawing worker off (``DiagnosticsBudget(background=False)``),
the ratio before the worker, on the same machine in the same run. Writes a section of
``docs/benchmarks.md``.

Usage: ``python benchmarks/suite_cost.py [--rounds 4] [--each] [--worker-off] [--epochs 10]``
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
from results import CALLBACKS, drawing_costs, write_section

import lightning_convviz as convviz
from lightning_convviz.demo import train

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def every_callback_at_defaults(background: bool | None = None) -> list[pl.Callback]:
    callbacks = [getattr(convviz, name)() for name in CALLBACKS]
    return [*callbacks, convviz.DiagnosticsBudget(background=background)]


def fit_seconds(callbacks: list[Any], epochs: int) -> tuple[float, dict[str, list[float]]]:
    """The fit's wall time and the ``cost/<callback>`` scalars it logged (seconds per drawing)."""
    with tempfile.TemporaryDirectory() as log_dir, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        trainer = train(epochs=epochs, log_dir=log_dir, callbacks=callbacks)
        seconds = time.perf_counter() - start
        assert trainer.log_dir is not None
        costs = drawing_costs(trainer.log_dir)
    return seconds, costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--each", action="store_true", help="also every callback alone")
    parser.add_argument("--no-write", action="store_true", help="do not write docs")
    parser.add_argument("--worker-off", action="store_true", help="also without drawing worker")
    args = parser.parse_args()
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    fit_seconds([], args.epochs)  # warm-up, not counted
    plain, full, costs, worker_off = [], [], [], []
    for round_index in range(args.rounds):
        plain.append(fit_seconds([], args.epochs)[0])
        if args.worker_off:
            off = fit_seconds(every_callback_at_defaults(background=False), args.epochs)[0]
            worker_off.append(off / plain[-1])
            print(f"round {round_index + 1}: worker off, ratio {worker_off[-1]:.2f}", flush=True)
        seconds, charged = fit_seconds(every_callback_at_defaults(), args.epochs)
        full.append(seconds)
        costs.append(charged)
        print(
            f"round {round_index + 1}: plain {plain[-1]:.1f} s, every callback {full[-1]:.1f} s, "
            f"ratio {full[-1] / plain[-1]:.2f}, drawings charged "
            f"{sum(map(sum, charged.values())):.1f} s",
            flush=True,
        )
    ratios = [f / p for f, p in zip(full, plain, strict=True)]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    extra = statistics.median(full) - statistics.median(plain)
    lines = [
        f"Digits demo model, {args.epochs} epochs, {device}, every callback at its defaults "
        f"against none, {args.rounds} alternating rounds after a warm-up fit: plain fit "
        f"{statistics.median(plain):.1f} s, with every callback "
        f"{statistics.median(full):.1f} s, **ratio {statistics.median(ratios):.2f}** (rounds: "
        + ", ".join(f"{r:.2f}" for r in ratios)
        + ")"
        + (
            f"; with the drawing worker off, ratio {statistics.median(worker_off):.2f}."
            if worker_off
            else "."
        ),
        "",
        "Seconds per drawing as charged to the budget (`cost/<callback>`), median over the "
        "rounds, with how many drawings each callback made:",
        "",
        "| callback | drawings | first (s) | last (s) | all (s) |",
        "|---|---|---|---|---|",
    ]
    total = 0.0
    for name in sorted({name for charged in costs for name in charged}):
        runs = [charged.get(name, []) for charged in costs]
        first = statistics.median(run[0] for run in runs if run)
        last = statistics.median(run[-1] for run in runs if run)
        whole = statistics.median(sum(run) for run in runs)
        total += whole
        drawings = statistics.median(len(run) for run in runs)
        lines.append(f"| {name} | {drawings:g} | {first:.2f} | {last:.2f} | {whole:.2f} |")
    lines += [
        f"| all drawings | | | | {total:.2f} |",
        "",
        f"Extra fit time (median with every callback minus median plain): {extra:.1f} s; what the "
        f"drawings do not account for ({extra - total:.1f} s) is the per-step work that is not "
        "a drawing (activation statistics, the doctor's norms, collecting codes and top patches "
        "during validation).",
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
        title = "The whole suite on the digits demo"
        if torch.cuda.is_available():  # the demo trains on the GPU then
            title += f" ({torch.cuda.get_device_name(0)})"
        write_section(DOCS, title, "\n".join(lines))


if __name__ == "__main__":
    main()
