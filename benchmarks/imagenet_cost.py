"""What one drawing of each callback costs on an ImageNet-shaped workload, in training steps.

torchvision's ResNet-18 with random weights and 1000 classes, 112 x 112 random images, batch 32,
SGD, on the CPU (or ``--accelerator cuda``); a validation set of one image per class listed class by
class (as ``ImageFolder`` lists ImageNet). First the median time of a training step without
callbacks (8 steps, the first two left out as warm-up; the device synchronised around each); then,
for each callback at its defaults, a short fit (2 training steps, the whole validation set once)
whose ``cost/<callback>`` scalars give the seconds of each drawing; the largest, divided by the step
time, is the drawing's cost in training-step equivalents. Writes a section of
``docs/benchmarks.md``.

Usage: ``python benchmarks/imagenet_cost.py [--side 112] [--classes 1000] [--accelerator cuda]
[--callbacks NAME ...]`` (``--callbacks``: only these, side by side in one process; the table is
printed, not written)
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
import torchvision
from pytorch_lightning.loggers import TensorBoardLogger
from results import CALLBACKS, drawing_costs, write_section
from torch.utils.data import DataLoader, TensorDataset
from workloads import Classifier

import lightning_convviz as convviz

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


class ImageNetShaped(Classifier):
    """The zoo's plain LightningModule around ResNet-18, timing its training steps."""

    def __init__(self, classes: int) -> None:
        super().__init__(torchvision.models.resnet18(num_classes=classes))
        self.step_seconds: list[float] = []
        self._start = 0.0

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        _synchronize(self.device)
        self._start = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        _synchronize(self.device)
        self.step_seconds.append(time.perf_counter() - self._start)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def data(classes: int, side: int) -> tuple[DataLoader[Any], DataLoader[Any]]:
    generator = torch.Generator().manual_seed(0)
    train = TensorDataset(
        torch.randn(32 * 4, 3, side, side, generator=generator),
        torch.randint(0, classes, (32 * 4,), generator=generator),
    )
    val = TensorDataset(  # one image per class, class by class
        torch.randn(classes, 3, side, side, generator=generator), torch.arange(classes)
    )
    return DataLoader(train, batch_size=32), DataLoader(val, batch_size=64)


def fit(
    callbacks: list[Any], classes: int, side: int, log_dir: str, steps: int, accelerator: str
) -> Any:
    model = ImageNetShaped(classes)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=steps,
        num_sanity_val_steps=0,
        logger=TensorBoardLogger(log_dir, name="run", version=0),
        callbacks=[*callbacks, convviz.DiagnosticsBudget(max_share=None)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator=accelerator,
        devices=1,
        log_every_n_steps=1,
    )
    train, val = data(classes, side)
    trainer.fit(model, train, val)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=112)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--accelerator", default="cpu", help="cpu, or cuda for a GPU")
    parser.add_argument(
        "--callbacks", nargs="+", choices=CALLBACKS, help="only these (the table is not written)"
    )
    args = parser.parse_args()
    on = "CPU" if args.accelerator == "cpu" else torch.cuda.get_device_name(0)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as log_dir:
        plain = fit([], args.classes, args.side, log_dir, steps=8, accelerator=args.accelerator)
    step = statistics.median(plain.step_seconds[2:])
    print(f"training step: {step:.4f} s", flush=True)
    rows = []
    for name in args.callbacks or CALLBACKS:
        with tempfile.TemporaryDirectory() as log_dir:
            start = time.perf_counter()
            callback = getattr(convviz, name)()
            fit([callback], args.classes, args.side, log_dir, steps=2, accelerator=args.accelerator)
            wall = time.perf_counter() - start
            costs = drawing_costs(log_dir + "/run/version_0").get(name, [])
        worst = max(costs, default=0.0)
        rows.append((name, len(costs), worst, worst / step, wall))
        print(f"{name}: {len(costs)} drawings, worst {worst:.1f} s = {worst / step:.1f} steps")
    lines = [
        f"torchvision ResNet-18, random weights, {args.classes} classes, {args.side} px, batch 32, "
        f"{on}; validation: one image per class, class by class. One training step: "
        f"{step:.3g} s. Each callback alone at its defaults, 2 training steps and one validation "
        "epoch; its most expensive drawing:",
        "",
        "| callback | drawings | seconds | training steps | fit wall time (s) |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {n} | {c} | {s:.1f} | {e:.1f} | {w:.0f} |" for n, c, s, e, w in rows]
    print("\n".join(lines))
    if not args.no_write and not args.callbacks:
        title = "One drawing on an ImageNet-shaped workload"
        if args.accelerator != "cpu":
            title += f" ({on})"
        write_section(DOCS, title, "\n".join(lines))


if __name__ == "__main__":
    main()
