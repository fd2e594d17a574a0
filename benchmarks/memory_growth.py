"""Memory over 1000 training steps with every callback at aggressive cadences.

TinyCNN-like model on 16 x 16 colour images, 10 steps per epoch, 100 epochs (1000 steps), every
callback drawing or measuring every epoch (statistics every step). The process RSS and the
Python heap (tracemalloc) are sampled after each epoch; the growth is reported between the end
of epoch 10 (after warm-up: caches, first pictures, lazy imports) and the end of the run.
Writes a section of ``docs/benchmarks.md``.

Usage: ``python benchmarks/memory_growth.py [--epochs 100]``
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import tracemalloc
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from results import write_section
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from helpers import TinyCNN

import lightning_convviz as convviz
from lightning_convviz.callbacks.saliency import ATTRIBUTION_METHODS


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Sampler(pl.Callback):
    def __init__(self) -> None:
        self.samples: list[tuple[int, float, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        heap = tracemalloc.get_traced_memory()[0] / 2**20
        self.samples.append((trainer.global_step, rss_mib(), heap))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--output", default=str(Path(__file__).parents[1] / "docs/benchmarks.md"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(80, 3, 16, 16, generator=generator)
    labels = (images[:, 0].mean(dim=(1, 2)) > 0).long()
    loader = DataLoader(TensorDataset(images, labels), batch_size=8)
    callbacks: list[Any] = [
        convviz.ActivationStatsMonitor(every_n_steps=1, detail_every_n_logs=5),
        convviz.ActivationMapMonitor(),
        convviz.FilterMonitor(),
        convviz.SaliencyMonitor(methods=ATTRIBUTION_METHODS, num_probe_images=4),
        convviz.OcclusionMonitor(num_probe_images=4),
        convviz.MaxActivationMonitor(layers=["conv1", "conv2"], k=4),
        convviz.EmbeddingMonitor(max_samples=40, n_jobs=1),
        convviz.InversionMonitor(steps=5, every_n_epochs=1, num_probe_images=2),
        convviz.AdversarialMonitor(num_probe_images=4),
        convviz.ClassModelMonitor(steps=5, every_n_epochs=1),
        convviz.AttributePerformanceMonitor(),
        convviz.LearningRateDoctor(every_n_steps=1),
    ]
    sampler = Sampler()
    tracemalloc.start()
    with tempfile.TemporaryDirectory() as log_dir:
        trainer = pl.Trainer(
            max_epochs=args.epochs,
            logger=TensorBoardLogger(log_dir),
            callbacks=[*callbacks, sampler],
            log_every_n_steps=1,
            limit_val_batches=5,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(TinyCNN(), loader, loader)
    warm = sampler.samples[min(9, len(sampler.samples) - 1)]
    end = sampler.samples[-1]
    steps = end[0] - warm[0]
    lines = [
        f"{end[0]} training steps, every callback every epoch (10 steps), statistics every step:",
        "",
        f"| | after epoch 10 (step {warm[0]}) | end (step {end[0]}) | growth | per 1000 steps |",
        "|---|---|---|---|---|",
        f"| process RSS (MiB) | {warm[1]:.1f} | {end[1]:.1f} | {end[1] - warm[1]:+.1f} | "
        f"{1000 * (end[1] - warm[1]) / max(steps, 1):+.1f} |",
        f"| Python heap, tracemalloc (MiB) | {warm[2]:.2f} | {end[2]:.2f} | "
        f"{end[2] - warm[2]:+.2f} | {1000 * (end[2] - warm[2]) / max(steps, 1):+.2f} |",
    ]
    print("\n".join(lines))
    write_section(Path(args.output), "Memory over 1000 steps", "\n".join(lines))


if __name__ == "__main__":
    main()
