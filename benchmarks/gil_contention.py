"""How much a Python thread that draws slows a training loop whose host side is busy, on a CPU.

Beside a fast GPU, an eager training step's host side (Python and the launch of some 500
kernels) takes about as long as the GPU's work, and it holds Python's global interpreter lock
(GIL) most of that time. The drawing worker is a thread of the same process: while it renders
(matplotlib, colour maps, PNG encoding), the two threads share the GIL. This measures that
share without a GPU: a loop of many small torch operations (host-bound, as a GPU step's launch
is) timed alone and beside a thread that renders and PNG-encodes figures without pause, in one
process, alternating. The threads run on different cores: what is lost is the GIL, not a core.

Usage: ``python benchmarks/gil_contention.py [--seconds 3] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import io
import statistics
import threading
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image


def host_bound_steps(seconds: float) -> float:
    """Steps per second of a loop of small torch operations (200 per step)."""
    x = torch.zeros(16)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(200):
            x = x + 1.0
        steps += 1
    return steps / (time.perf_counter() - start)


def draw_until(stop: threading.Event) -> None:
    """Render a chart and encode a 512 x 512 picture as PNG, again and again."""
    rng = np.random.default_rng(0)
    while not stop.is_set():
        figure, axes = plt.subplots(figsize=(4, 3), dpi=100)
        axes.plot(rng.standard_normal(200).cumsum())
        figure.canvas.draw()
        plt.close(figure)
        picture = Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8))
        picture.save(io.BytesIO(), format="PNG")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    host_bound_steps(0.5)  # warm-up
    ratios = []
    for _ in range(args.rounds):
        alone = host_bound_steps(args.seconds)
        stop = threading.Event()
        drawer = threading.Thread(target=draw_until, args=(stop,))
        drawer.start()
        beside = host_bound_steps(args.seconds)
        stop.set()
        drawer.join()
        ratios.append(alone / beside)
        print(f"alone {alone:.0f} steps/s, beside a drawing thread {beside:.0f} steps/s")
    print(
        f"the loop is {statistics.median(ratios):.2f} times slower beside a drawing thread "
        f"(median of {args.rounds} rounds: " + ", ".join(f"{r:.2f}" for r in ratios) + ")"
    )


if __name__ == "__main__":
    main()
