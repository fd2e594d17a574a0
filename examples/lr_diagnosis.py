"""Let LearningRateDoctor diagnose a good, a too-high and a too-low learning rate.

Trains the digits CNN three times, writing three TensorBoard runs side by side, and prints the
doctor's verdict and evidence for each:

* good: Adam, lr 1e-3;
* too high: Adam, lr 3e-2 (most filters of the deeper layers die);
* too low: SGD with momentum, lr 1e-4 (the weights barely move).

``--grid`` instead sweeps 7 Adam and 6 SGD learning rates and prints a table of verdicts with
the validation accuracy, for judging the doctor.

Usage::

    python examples/lr_diagnosis.py [--epochs 5] [--logdir runs/lr_diagnosis] [--grid]
    .venv/bin/tensorboard --logdir runs/lr_diagnosis
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
GRID = {
    "adam": (1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
    "sgd": (1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1),
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
    figure = Figure(figsize=(11, 3.6), dpi=100)
    canvas = FigureCanvasAgg(figure)
    dead_axes, ratio_axes = figure.subplots(1, 2)
    for label, log_dir in runs.items():
        events = EventAccumulator(log_dir, size_guidance={"scalars": 0, "images": 0})
        events.Reload()
        dead = events.Scalars("lr_doctor/dead_fraction/features.7")
        dead_axes.plot([e.step for e in dead], [e.value for e in dead], "o-", label=label)
        ratio = events.Scalars("lr_doctor/update_ratio/features.3")
        ratio_axes.semilogy([e.step for e in ratio], [e.value for e in ratio], label=label)
        image = events.Images("filters/features.0")[-1].encoded_image_string
        (folder / f"lr_filters_{label.split(' (')[0].replace(' ', '_')}.png").write_bytes(image)
    dead_axes.set(title="dead filters, third conv block", xlabel="step", ylim=(-0.05, 1.05))
    ratio_axes.axhline(1e-3, color="grey", linestyle=":", label="1e-3 (rule of thumb)")
    ratio_axes.set(title="update/weight ratio, second conv", xlabel="step")
    dead_axes.legend(fontsize=8)
    ratio_axes.legend(fontsize=8)
    figure.tight_layout()
    canvas.print_png(str(folder / "lr_signals.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--logdir", default="runs/lr_diagnosis")
    parser.add_argument("--grid", action="store_true", help="sweep learning rates instead")
    parser.add_argument("--figures", default=None, help="also write comparison PNGs here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    if args.grid:
        print("| optimizer | lr | val accuracy | verdict | evidence |")
        print("|---|---|---|---|---|")
        for optimizer, rates in GRID.items():
            for lr in rates:
                verdict, accuracy, doctor = diagnose(
                    optimizer, lr, args.epochs, args.logdir, f"grid_{optimizer}_{lr:g}"
                )
                active = "; ".join(f.evidence for f in doctor.findings if f.key in doctor._active)
                print(
                    f"| {optimizer} | {lr:g} | {accuracy:.3f} | {verdict} | {active} |", flush=True
                )
        return
    runs = {}
    for name, (optimizer, lr) in SETTINGS.items():
        run = name.split(" (")[0].replace(" ", "_")
        verdict, accuracy, doctor = diagnose(optimizer, lr, args.epochs, args.logdir, run)
        runs[f"{name}: {verdict}"] = f"{args.logdir}/{run}/version_0"
        print(f"\n== {name}: validation accuracy {accuracy:.3f}")
        print(doctor.summary())
    if args.figures:
        write_figures(runs, Path(args.figures))
    print(f"\nOpen the three runs side by side: .venv/bin/tensorboard --logdir {args.logdir}")


if __name__ == "__main__":
    main()
