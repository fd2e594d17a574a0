"""Step-time overhead of ActivationStatsMonitor logging every step, on a ResNet-18 (CPU).

ResNet-18 from torchvision (random init, 10 classes), 64x64 inputs, batch 32, plain SGD. The
baseline and the monitored run alternate in the same process (ABAB...), each a short real
``Trainer.fit`` with a TensorBoard logger that logs every step. Each run's step time is the
median of its timed steps (the first steps are warm-up); each round gives one paired ratio
(monitored / baseline), and the result is the median ratio over rounds with its spread, since
single runs on a shared 2-core machine wander by several percent. Writes a table to
``docs/benchmarks.md``.

Usage: ``python benchmarks/activation_stats_overhead.py [--rounds 6] [--steps 30]``
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
import torch.nn.functional as F
import torchvision
from pytorch_lightning.loggers import TensorBoardLogger
from results import write_section
from torch.utils.data import DataLoader, TensorDataset

from lightning_convviz import ActivationStatsMonitor

WARMUP = 3


class ResNetModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torchvision.models.resnet18(num_classes=10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


class StepTimer(pl.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self.times.append(time.perf_counter() - self._start)


def run(monitored: bool, steps: int, log_dir: str) -> list[float]:
    pl.seed_everything(0)
    data = TensorDataset(torch.randn(32 * steps, 3, 64, 64), torch.randint(0, 10, (32 * steps,)))
    timer = StepTimer()
    callbacks: list[pl.Callback] = [timer]
    if monitored:
        callbacks.insert(0, ActivationStatsMonitor(every_n_steps=1))
    trainer = pl.Trainer(
        max_epochs=1,
        logger=TensorBoardLogger(log_dir),
        log_every_n_steps=1,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(ResNetModule(), DataLoader(data, batch_size=32))
    return timer.times[WARMUP:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--output", default=str(Path(__file__).parents[1] / "docs/benchmarks.md"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    medians: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as log_dir:
        for round_index in range(args.rounds):
            for monitored in (False, True):
                medians[monitored].append(statistics.median(run(monitored, args.steps, log_dir)))
            ratio = medians[True][-1] / medians[False][-1]
            print(f"round {round_index + 1}/{args.rounds}: ratio {ratio:.3f}", flush=True)
    ratios = sorted(m / b for m, b in zip(medians[True], medians[False], strict=True))
    ratio = statistics.median(ratios)
    lines = [
        "| run | median step time (s), median over rounds | rounds x timed steps |",
        "|---|---|---|",
        f"| baseline (TensorBoard logger, no callback) | {statistics.median(medians[False]):.4f} "
        f"| {args.rounds} x {args.steps - WARMUP} |",
        f"| ActivationStatsMonitor(every_n_steps=1) | {statistics.median(medians[True]):.4f} "
        f"| {args.rounds} x {args.steps - WARMUP} |",
        "",
        f"Paired ratio, median over rounds: **{ratio:.3f}** (overhead {100 * (ratio - 1):+.1f} %); "
        f"rounds ranged {ratios[0]:.3f} to {ratios[-1]:.3f}. "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads.",
    ]
    print("\n".join(lines))
    write_section(Path(args.output), "ActivationStatsMonitor overhead", "\n".join(lines))


if __name__ == "__main__":
    main()
