"""Let LearningRateDoctor diagnose a good, a too-high and a too-low learning rate.

Trains the digits CNN three times, writing three TensorBoard runs side by side, and prints the
doctor's verdict and evidence for each:

* good: Adam, lr 1e-3;
* too high: Adam, lr 3e-2 (most filters of the deeper layers die);
* too low: SGD with momentum, lr 1e-4 (the weights barely move).

The grid of architectures, optimizers and learning rates that the doctor is judged on is
``benchmarks/lr_doctor_grid.py``.

Usage::

    python examples/lr_diagnosis.py [--epochs 5] [--logdir runs/lr_diagnosis] [--figures DIR]
    .venv/bin/tensorboard --logdir runs/lr_diagnosis --samples_per_plugin images=1000
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

from lightning_convviz import ActivationStatsMonitor, FilterMonitor, LearningRateDoctor
from lightning_convviz.demo import train

SETTINGS = {
    "good (Adam 1e-3)": ("adam", 1e-3),
    "too high (Adam 3e-2)": ("adam", 3e-2),
    "too low (SGD 1e-4)": ("sgd", 1e-4),
}


def diagnose(
    optimizer: str, lr: float, epochs: int, log_dir: str, name: str
) -> tuple[str, float, LearningRateDoctor]:
    doctor = LearningRateDoctor()
    callbacks = [
        doctor,
        ActivationStatsMonitor(every_n_steps=10, log_histograms=False),
        FilterMonitor(every_n_epochs=max(1, epochs // 2)),
    ]
    trainer = train(
        lr=lr, epochs=epochs, log_dir=log_dir, name=name, callbacks=callbacks, optimizer=optimizer
    )
    accuracy = float(trainer.callback_metrics.get("val/accuracy", float("nan")))
    return doctor.verdict, accuracy, doctor


def write_figures(runs: dict[str, str], folder: Path) -> None:
    """Dead fractions and update ratios of the runs side by side, and their first filters."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(13, 3.6), dpi=100)
    canvas = FigureCanvasAgg(figure)
    alpha_axes, ratio_axes, dead_axes = figure.subplots(1, 3)
    for label, log_dir in runs.items():
        events = EventAccumulator(log_dir, size_guidance={"scalars": 0, "images": 0})
        events.Reload()
        alpha = events.Scalars("lr_doctor/alpha")
        alpha_axes.plot([e.step for e in alpha], [e.value for e in alpha], "o-", label=label)
        ratio = events.Scalars("lr_doctor/update_ratio/features.3")
        ratio_axes.semilogy([e.step for e in ratio], [e.value for e in ratio], "o-", label=label)
        dead = events.Scalars("lr_doctor/dead_fraction/features.7")
        dead_axes.plot([e.step for e in dead], [e.value for e in dead], "o-", label=label)
        image = events.Images("filters/features.0")[-1].encoded_image_string
        (folder / f"lr_filters_{label.split(' (')[0].replace(' ', '_')}.png").write_bytes(image)
    alpha_axes.axhline(0, color="grey", linestyle=":")
    alpha_axes.set_yscale("symlog", linthresh=1.0)  # a first step of a too-high rate: 10-100
    alpha_axes.set(title="alpha (0: lands at the minimum, 1: overshoots)", xlabel="step")
    ratio_axes.axhline(1e-3, color="grey", linestyle=":", label="1e-3 (rule of thumb)")
    ratio_axes.set(title="update/weight ratio, second conv", xlabel="step")
    dead_axes.set(title="dead filters, third conv block", xlabel="step", ylim=(-0.05, 1.05))
    for axes in (alpha_axes, ratio_axes, dead_axes):
        axes.legend(fontsize=7)
    figure.tight_layout()
    canvas.print_png(str(folder / "lr_signals.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--logdir", default="runs/lr_diagnosis")
    parser.add_argument("--figures", default=None, help="also write comparison PNGs here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    runs = {}
    for name, (optimizer, lr) in SETTINGS.items():
        run = name.split(" (")[0].replace(" ", "_")
        verdict, accuracy, doctor = diagnose(optimizer, lr, args.epochs, args.logdir, run)
        runs[f"{name}: {verdict}"] = f"{args.logdir}/{run}/version_0"
        print(
            f"\n== {name}: validation accuracy {accuracy:.3f}, suggested lr {doctor.suggested_lr}"
        )
        print(doctor.summary())
    if args.figures:
        write_figures(runs, Path(args.figures))
    print(
        "\nOpen the three runs side by side: .venv/bin/tensorboard --logdir "
        f"{args.logdir} --samples_per_plugin images=1000"
    )


if __name__ == "__main__":
    main()
