"""What the training loop waits for when drawings are rendered and written in the background.

Each callback alone at its defaults on the ImageNet-shaped workload of ``imagenet_cost.py``
(torchvision's ResNet-18, random weights, ``--classes`` classes, ``--side`` px, batch 32; 2
training steps and one validation epoch), fitted twice in one process: with the drawing worker
off (the whole drawing on the training thread) and on. Its ``cost/<callback>`` scalars are the
seconds the loop waited, ``cost/<callback>/background`` the worker's seconds. On a CPU, training
is pinned to one thread (``torch.set_num_threads(1)``) so that a core is free for the worker, as
beside a GPU. Writes a section of ``docs/benchmarks.md``.

Usage: ``python benchmarks/background_drawing.py [--side 64] [--classes 100] [--accelerator cuda]``
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import warnings
from typing import Any

import pytorch_lightning as pl
import torch
from imagenet_cost import DOCS, ImageNetShaped, data
from pytorch_lightning.loggers import TensorBoardLogger
from results import CALLBACKS, drawing_costs, write_section

import lightning_convviz as convviz

#: Callbacks that draw (the per-step statistics of the doctor and of ActivationStatsMonitor are
#: not drawings: nothing of theirs is charged to the budget).
DRAWING = [n for n in CALLBACKS if n not in ("LearningRateDoctor", "ActivationStatsMonitor")]


def fit(name: str, background: bool, classes: int, side: int, accelerator: str) -> Any:
    """``(seconds the loop waited, seconds in the worker, drawings)`` of one fit."""
    with tempfile.TemporaryDirectory() as log_dir:
        budget = convviz.DiagnosticsBudget(max_share=None, background=background, max_queued=16)
        trainer = pl.Trainer(
            max_epochs=1,
            limit_train_batches=2,
            num_sanity_val_steps=0,
            logger=TensorBoardLogger(log_dir, name="run", version=0),
            callbacks=[getattr(convviz, name)(), budget],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            accelerator=accelerator,
            devices=1,
            log_every_n_steps=1,
        )
        train, val = data(classes, side)
        trainer.fit(ImageNetShaped(classes), train, val)
        costs = drawing_costs(log_dir + "/run/version_0")
    waited = costs.get(name, [])
    return sum(waited), sum(costs.get(f"{name}/background", [])), len(waited)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--accelerator", default="cpu", help="cpu, or cuda for a GPU")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    if args.accelerator == "cpu":
        torch.set_num_threads(1)  # a free core for the worker, as beside a GPU
        on = "CPU, training on 1 thread of 2 cores"
    else:
        on = torch.cuda.get_device_name(0)
    rows = []
    for name in DRAWING:
        alone, _, drawings = fit(name, False, args.classes, args.side, args.accelerator)
        waited, background, _ = fit(name, True, args.classes, args.side, args.accelerator)
        share = waited / alone if alone else float("nan")
        rows.append((name, drawings, alone, waited, background, share))
        print(
            f"{name}: {drawings} drawings, {alone:.2f} s on the training thread; with the "
            f"worker the loop waited {waited:.2f} s ({100 * share:.0f} %), the worker "
            f"{background:.2f} s",
            flush=True,
        )
    lines = [
        f"`python benchmarks/background_drawing.py` on {on}: torchvision ResNet-18, random "
        f"weights, {args.classes} classes, {args.side} px, batch 32, 2 training steps and one "
        "validation epoch, each callback alone at its defaults; the seconds of all its drawings "
        "with the drawing worker off (the whole drawing on the training thread) and on (what "
        "the loop waited, `cost/<callback>`, and the worker's own, `cost/<callback>/background`):",
        "",
        "| callback | drawings | worker off: loop waited (s) | worker on: loop waited (s) "
        "| worker (s) | waited, share of worker off |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {n} | {d} | {a:.2f} | {w:.2f} | {b:.2f} | {100 * s:.0f} % |"
        for n, d, a, w, b, s in rows
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        title = "Drawing in the background"
        if args.accelerator != "cpu":
            title += f" ({on})"
        write_section(DOCS, title, text)


if __name__ == "__main__":
    main()
