"""Memory over 1000 training steps with every callback at aggressive cadences.

TinyCNN-like model on 16 x 16 colour images, 10 steps per epoch, 100 epochs (1000 steps), every
callback drawing or measuring every epoch (statistics every step). The process RSS and the
Python heap (tracemalloc) are sampled after each epoch in two runs side by side (separate
processes, one thread each): one as the memory is found, one after a full garbage collection at
each sample, which leaves out unreachable reference cycles waiting for Python's collector
(matplotlib figures are such cycles). With one PyTorch thread a core is spare, so the
EmbeddingMonitor's t-SNE runs in a background thread and may be in flight at a sample (about
1 MiB of heap and 20 MiB of RSS come and go with it), so the growth is reported between medians of
ten epochs: epochs 11-20 (after warm-up: caches, first pictures, lazy imports) and the last ten;
the least-squares slope over the same epochs and the largest sample are reported too. Writes a
section of ``docs/benchmarks.md``.

Usage: ``python benchmarks/memory_growth.py [--epochs 100]``
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import resource
import statistics
import subprocess
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
from workloads import TinyCNN

import lightning_convviz as convviz
from lightning_convviz.callbacks.saliency import ATTRIBUTION_METHODS


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Sampler(pl.Callback):
    def __init__(self, collect: bool) -> None:
        self.collect = collect
        self.samples: list[tuple[int, float, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.collect:
            gc.collect()
        heap = tracemalloc.get_traced_memory()[0] / 2**20
        self.samples.append((trainer.global_step, rss_mib(), heap))


def train(epochs: int, collect: bool) -> list[tuple[int, float, float]]:
    """One run with every callback; (step, RSS MiB, heap MiB) after each epoch."""
    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    torch.set_num_threads(1)
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
    sampler = Sampler(collect)
    tracemalloc.start()
    with tempfile.TemporaryDirectory() as log_dir:
        trainer = pl.Trainer(
            max_epochs=epochs,
            logger=TensorBoardLogger(log_dir),
            callbacks=[*callbacks, sampler],
            log_every_n_steps=1,
            limit_val_batches=5,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(TinyCNN(), loader, loader)
    return sampler.samples


def table_rows(label: str, all_samples: list[list[float]]) -> list[str]:
    samples = all_samples[10:] if len(all_samples) >= 30 else all_samples
    first, last = samples[:10], samples[-10:]
    steps = statistics.median(s[0] for s in last) - statistics.median(s[0] for s in first)
    rows = []
    for column, name, digits in ((1, "RSS (MiB)", 1), (2, "Python heap (MiB)", 2)):
        start = statistics.median(s[column] for s in first)
        end = statistics.median(s[column] for s in last)
        slope = statistics.linear_regression([s[0] for s in samples], [s[column] for s in samples])
        rows.append(
            f"| {label} | {name} | {start:.{digits}f} | {end:.{digits}f} | "
            f"{end - start:+.{digits}f} (over {steps:.0f} steps) | "
            f"{1000 * slope.slope:+.{digits}f} | {max(s[column] for s in samples):.{digits}f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--output", default=str(Path(__file__).parents[1] / "docs/benchmarks.md"))
    parser.add_argument("--child", choices=["as-found", "collected"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(train(args.epochs, collect=args.child == "collected")))
        return
    modes = {"as found": "as-found", "after gc.collect()": "collected"}
    children = {
        label: subprocess.Popen(
            [sys.executable, __file__, "--epochs", str(args.epochs), "--child", mode],
            stdout=subprocess.PIPE,
            text=True,
        )
        for label, mode in modes.items()
    }
    results = {label: json.loads(child.communicate()[0]) for label, child in children.items()}
    steps = results["as found"][-1][0]
    lines = [
        f"{steps} training steps, every callback every epoch (10 steps), statistics every step; "
        "medians of ten epochs:",
        "",
        "| sampled | memory | epochs 11-20 | last ten epochs | growth | slope per 1000 steps | "
        "largest sample |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, samples in results.items():
        lines += table_rows(label, samples)
    print("\n".join(lines))
    write_section(Path(args.output), "Memory over 1000 steps", "\n".join(lines))


if __name__ == "__main__":
    main()
