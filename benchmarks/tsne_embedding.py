"""t-SNE of CNN codes: our pipeline vs scikit-learn, and the training stall of EmbeddingMonitor.

1. 10,000 synthetic codes of 512 dimensions (ten clusters, ReLU'd like penultimate CNN codes):
   ``lightning_convviz.functional.embedding.embed_codes`` (PCA to 50, openTSNE FFT, exact
   neighbours, all cores) vs ``sklearn.manifold.TSNE`` (Barnes-Hut, PCA init, all cores) on the
   same codes, side by side; trustworthiness (10 neighbours) of both maps on a 2,000-sample
   subset.
2. The digits demo (20 epochs) without and with ``EmbeddingMonitor(every_n_epochs=2)``
   embedding all 359 validation codes ten times: the training loop's stall per embedding (the
   time spent in the callback's hooks) and the wall time of the whole run.

Writes a section of ``docs/benchmarks.md``.

Usage: ``python benchmarks/tsne_embedding.py``
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from results import write_section
from sklearn.manifold import TSNE

from lightning_convviz import EmbeddingMonitor
from lightning_convviz.demo import train
from lightning_convviz.functional.embedding import available_cores, embed_codes, trustworthiness


def synthetic_codes(count: int = 10_000, width: int = 512, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count)
    centres = rng.normal(size=(10, width))
    return np.maximum(centres[labels] + rng.normal(size=(count, width)), 0).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default=str(Path(__file__).parents[1] / "docs/benchmarks.md"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    cores = available_cores()
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
    print(f"ours {ours_seconds:.1f} s ({ours_trust:.3f}), sklearn {theirs_seconds:.1f} s")

    runs = {}
    with tempfile.TemporaryDirectory() as log_dir:
        for name, callbacks in (("without", []), ("with", [EmbeddingMonitor(every_n_epochs=2)])):
            start = time.perf_counter()
            train(lr=1e-3, epochs=20, log_dir=log_dir, name=name, callbacks=callbacks)
            runs[name] = (time.perf_counter() - start, callbacks)
    monitor = runs["with"][1][0]
    assert isinstance(monitor, EmbeddingMonitor)
    stalls = monitor.stall_seconds
    lines = [
        f"10,000 x 512 synthetic codes, {cores} cores:",
        "",
        "| pipeline | seconds | trustworthiness (2,000-sample subset) |",
        "|---|---|---|",
        f"| ours: PCA 50 + openTSNE (exact kNN, FFT) | {ours_seconds:.1f} | {ours_trust:.3f} |",
        f"| scikit-learn TSNE (Barnes-Hut) | {theirs_seconds:.1f} | {theirs_trust:.3f} |",
        "",
        f"Ratio: **{theirs_seconds / ours_seconds:.1f}x** faster (target: ours at most 10 s).",
        "",
        "Digits demo, 20 epochs, `EmbeddingMonitor(every_n_epochs=2)` (359 codes, 10 embeddings):",
        "",
        f"- training-loop stall per embedding: median {1000 * float(np.median(stalls)):.1f} ms, "
        f"worst {1000 * max(stalls):.1f} ms;",
        f"- background embedding: median {float(np.median(monitor.embedding_seconds)):.2f} s;",
        f"- whole run: {runs['without'][0]:.1f} s without the monitor, {runs['with'][0]:.1f} s "
        "with it (the t-SNE threads share the 2 cores with training).",
        "",
        f"torch {torch.__version__}.",
    ]
    print("\n".join(lines))
    write_section(Path(args.output), "t-SNE of CNN codes", "\n".join(lines))


if __name__ == "__main__":
    main()
