"""What LearningRateDoctor costs at its defaults, timed inside its own hooks, as a share of fit.

Two workloads on this machine's CPU (or ``--accelerator cuda``):

* the digits CNN of the demo (23 steps per epoch, 5 epochs, batch 64, Adam 1e-3), training
  only and with the validation epochs of a default fit;
* an ImageNet-shaped one: torchvision's ResNet-18, 1000 classes, random ``--side`` px images,
  ``--steps`` steps per epoch of batch ``--batch``, SGD with momentum.

The doctor's hooks are wrapped with a timer (the device synchronised around each on a GPU), and
so is its dead-filter counting, which runs inside the training forward pass on measured steps;
their seconds are divided by the fit's (both in the same run). Writes a section of
``docs/benchmarks.md``.

Usage: ``python benchmarks/lr_doctor_cost.py [--side 112] [--steps 200] [--accelerator cuda]``
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torchvision
from pytorch_lightning.loggers import TensorBoardLogger
from results import write_section
from torch.utils.data import DataLoader, TensorDataset
from workloads import Classifier

from lightning_convviz import LearningRateDoctor
from lightning_convviz.callbacks import lr_doctor as lr_doctor_module
from lightning_convviz.data import DigitsDataModule
from lightning_convviz.demo import DigitsConvNet

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"

HOOKS = (
    "on_train_epoch_start",
    "on_train_batch_start",
    "on_before_optimizer_step",
    "on_train_batch_end",
    "on_train_epoch_end",
    "on_train_end",
)


class TimedDoctor(LearningRateDoctor):
    """The doctor at its defaults, adding up the seconds spent inside its hooks."""

    seconds = 0.0
    device: torch.device | None = None


def _timed(name: str) -> Any:
    hook = getattr(LearningRateDoctor, name)

    def run(self: TimedDoctor, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> Any:
        _synchronize(self.device)
        start = time.perf_counter()
        try:
            return hook(self, trainer, *args, **kwargs)
        finally:
            _synchronize(self.device)
            self.seconds += time.perf_counter() - start

    return run


for _name in HOOKS:
    setattr(TimedDoctor, _name, _timed(_name))

_count = lr_doctor_module.accumulate_positive_counts
_counting: list[TimedDoctor] = []  # the doctor of the fit in progress


def _timed_count(*args: Any, **kwargs: Any) -> None:
    doctor = _counting[-1]
    _synchronize(doctor.device)
    start = time.perf_counter()
    try:
        _count(*args, **kwargs)
    finally:
        _synchronize(doctor.device)
        doctor.seconds += time.perf_counter() - start


lr_doctor_module.accumulate_positive_counts = _timed_count  # type: ignore[assignment]


def _synchronize(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


class ImageNetShaped(Classifier):
    def __init__(self) -> None:
        super().__init__(torchvision.models.resnet18(num_classes=1000))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


def share(
    model: pl.LightningModule, data: Any, epochs: int, accelerator: str, validate: bool = False
) -> tuple[float, float, int]:
    """(doctor seconds, fit seconds, measured steps) of one fit with the timed doctor."""
    doctor = TimedDoctor()
    doctor.device = torch.device("cuda") if accelerator == "cuda" else None
    _counting.append(doctor)
    with tempfile.TemporaryDirectory() as folder:
        trainer = pl.Trainer(
            max_epochs=epochs,
            accelerator=accelerator,
            callbacks=[doctor],
            logger=TensorBoardLogger(folder),
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            num_sanity_val_steps=2 if validate else 0,
            limit_val_batches=1.0 if validate else 0,
        )
        start = time.perf_counter()
        if isinstance(data, tuple):
            trainer.fit(model, *data)
        else:
            trainer.fit(model, datamodule=data)
        fit = time.perf_counter() - start
    return doctor.seconds, fit, len(doctor.steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", type=int, default=112)
    parser.add_argument("--steps", type=int, default=200, help="ImageNet-shaped steps per epoch")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    pl.seed_everything(0)
    rows = []
    for validate, name in ((False, "training only"), (True, "with validation, as the demo")):
        pl.seed_everything(0)
        doctor, fit, measured = share(
            DigitsConvNet(), DigitsDataModule(batch_size=64), 5, args.accelerator, validate
        )
        rows.append((f"digits CNN, 23 steps per epoch, 5 epochs, {name}", doctor, fit, measured))
    images = torch.randn(args.steps * args.batch, 3, args.side, args.side)
    labels = torch.randint(0, 1000, (len(images),))
    loader = DataLoader(TensorDataset(images, labels), batch_size=args.batch, shuffle=True)
    doctor, fit, measured = share(ImageNetShaped(), (loader,), 1, args.accelerator)
    rows.append(
        (
            f"ResNet-18, 1000 classes, {args.side} px, batch {args.batch}, {args.steps} steps",
            doctor,
            fit,
            measured,
        )
    )
    device = torch.cuda.get_device_name() if args.accelerator == "cuda" else "CPU (2 cores)"
    lines = [
        f"`python benchmarks/lr_doctor_cost.py` on {device}: the seconds spent inside the "
        "doctor's hooks and its dead-filter counting at its defaults (alpha's replayed forward "
        "pass included), against the "
        "whole fit's, in the same run.",
        "",
        "| workload | measured steps | doctor (s) | fit (s) | share |",
        "|---|---|---|---|---|",
    ]
    for name, doctor, fit, measured in rows:
        lines.append(
            f"| {name} | {measured} | {doctor:.2f} | {fit:.1f} | {100 * doctor / fit:.1f} % |"
        )
    text = "\n".join(lines)
    print(text)
    write_section(args.out, "LearningRateDoctor's own cost", text)


if __name__ == "__main__":
    main()
