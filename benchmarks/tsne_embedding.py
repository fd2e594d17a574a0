"""t-SNE of CNN codes: our pipeline vs scikit-learn, and the training stall of EmbeddingMonitor.

1. 10,000 synthetic codes of 512 dimensions (ten clusters, ReLU'd like penultimate CNN codes):
   ``lightning_convviz.functional.embedding.embed_codes`` (PCA to 50, openTSNE FFT, exact
   neighbours, all cores) vs ``sklearn.manifold.TSNE`` (Barnes-Hut, PCA init, all cores) on the
   same codes, side by side; trustworthiness (10 neighbours) of both maps on a 2,000-sample
   subset.
2. The digits demo (20 epochs) without and with ``EmbeddingMonitor(every_n_epochs=2)``
   embedding all 359 validation codes ten times, where the monitor chooses (on a CPU that
   training keeps busy: at once) and forced into the background beside training: the training
   loop's stall per embedding (the time spent in the callback's hooks), the embedding's own
   time and the wall time of the whole run, one after the other after a warm-up fit.

Writes two sections of ``docs/benchmarks.md``.

Usage: ``python benchmarks/tsne_embedding.py [--part synthetic|digits|both]``
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from results import write_section
from sklearn.manifold import TSNE

from lightning_convviz import DiagnosticsBudget, EmbeddingMonitor
from lightning_convviz.demo import train
from lightning_convviz.functional.embedding import available_cores, embed_codes, trustworthiness


def synthetic_codes(count: int = 10_000, width: int = 512, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count)
    centres = rng.normal(size=(10, width))
    return np.maximum(centres[labels] + rng.normal(size=(count, width)), 0).astype(np.float32)


def synthetic_part(cores: int) -> str:
    """Part 1: ours against scikit-learn on 10,000 synthetic codes."""
    codes = synthetic_codes()
    subset = np.random.default_rng(1).choice(len(codes), 2000, replace=False)
    start = time.perf_counter()
    ours = embed_codes(codes)
    ours_seconds = time.perf_counter() - start
    start = time.perf_counter()
    theirs = TSNE(n_components=2, init="pca", random_state=0, n_jobs=cores).fit_transform(codes)
    theirs_seconds = time.perf_counter() - start
    ours_trust = trustworthiness(codes[subset], ours[subset], n_neighbors=10)
    theirs_trust = trustworthiness(codes[subset], theirs[subset], n_neighbors=10)
    lines = [
        f"10,000 x 512 synthetic codes, {cores} cores:",
        "",
        "| pipeline | seconds | trustworthiness (2,000-sample subset) |",
        "|---|---|---|",
        f"| ours: PCA 50 + openTSNE (exact kNN, FFT) | {ours_seconds:.1f} | {ours_trust:.3f} |",
        f"| scikit-learn TSNE (Barnes-Hut) | {theirs_seconds:.1f} | {theirs_trust:.3f} |",
        "",
        f"Ratio: **{theirs_seconds / ours_seconds:.1f}x** faster (target: ours at most 10 s).",
    ]
    return "\n".join(lines)


def digits_part(cores: int) -> str:
    """Part 2: the digits demo without the monitor, with it, and with it forced into the
    background; no budget, so that every embedding is made when it is due."""

    runs: dict[str, tuple[float, EmbeddingMonitor | None]] = {}
    with tempfile.TemporaryDirectory() as log_dir:
        train(epochs=2, log_dir=log_dir, name="warm-up", callbacks=[])
        for name in ("without", "chosen", "background"):
            monitor = None if name == "without" else EmbeddingMonitor(every_n_epochs=2)
            callbacks: list[Any] = [] if monitor is None else [monitor]
            start = time.perf_counter()
            train(
                lr=1e-3,
                epochs=20,
                log_dir=log_dir,
                name=name,
                # "background": the t-SNE beside training whatever the machine's cores
                callbacks=[
                    *callbacks,
                    DiagnosticsBudget(
                        max_share=None, background=True if name == "background" else None
                    ),
                ],
            )
            runs[name] = (time.perf_counter() - start, monitor)
    lines = [
        "Digits demo, 20 epochs, `EmbeddingMonitor(every_n_epochs=2)` (359 codes), no budget, "
        f"{cores} cores, one run each after a warm-up fit:",
        "",
        "| run | whole run (s) | embeddings | training-loop stall per embedding, median (s) | "
        "embedding, median (s) |",
        "|---|---|---|---|---|",
        f"| without the monitor | {runs['without'][0]:.1f} | | | |",
    ]
    for name, label in (
        ("chosen", "the monitor's choice (here: at once, training keeps every core busy)"),
        ("background", "forced into the background beside training"),
    ):
        seconds, monitor = runs[name]
        assert monitor is not None
        lines.append(
            f"| {label} | {seconds:.1f} | {len(monitor.embedding_seconds)} | "
            f"{float(np.median(monitor.stall_seconds)):.3f} | "
            f"{float(np.median(monitor.embedding_seconds)):.2f} |"
        )
    lines += ["", f"torch {torch.__version__}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default=str(Path(__file__).parents[1] / "docs/benchmarks.md"))
    parser.add_argument("--part", choices=("synthetic", "digits", "both"), default="both")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    cores = available_cores()
    if args.part in ("synthetic", "both"):
        text = synthetic_part(cores)
        print(text)
        write_section(Path(args.output), "t-SNE of CNN codes", text)
    if args.part in ("digits", "both"):
        text = digits_part(cores)
        print(text)
        write_section(Path(args.output), "EmbeddingMonitor beside training", text)


if __name__ == "__main__":
    main()
