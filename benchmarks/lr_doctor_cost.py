"""What the doctors cost at their defaults, timed inside their own hooks, as a share of fit.

Two workloads on this machine's CPU (or ``--accelerator cuda``):

* the digits CNN of the demo (23 steps per epoch, 5 epochs, batch 64, Adam 1e-3), training
  only and with the validation epochs of a default fit;
* an ImageNet-shaped one: torchvision's ResNet-18, 1000 classes, random ``--side`` px images,
  ``--steps`` steps per epoch of batch ``--batch``, SGD with momentum.

Each doctor's hooks are wrapped with a timer (the device synchronised around each on a GPU), and
so is what it does inside the forward pass (its dead-filter counting on measured steps, the
class scores it keeps every batch, the saturated shares); their seconds are divided by the
fit's (both in the same run; of the 2-second digits fits, the one with the median share of
``--repeats``). Writes a section of ``docs/benchmarks.md``.

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

from lightning_convviz import LearningRateDoctor, TrainingDoctor
from lightning_convviz.callbacks.activity_counter import ActivityCounter
from lightning_convviz.callbacks.fault_signals import FaultSignalReader
from lightning_convviz.callbacks.step_doctor import StepDoctor
from lightning_convviz.data import DigitsDataModule
from lightning_convviz.demo import DigitsConvNet

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"

HOOKS = (
    "on_train_start",
    "on_train_epoch_start",
    "on_train_batch_start",
    "on_before_optimizer_step",
    "on_train_batch_end",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_train_epoch_end",
    "on_train_end",
)
#: Work a doctor does inside the model's forward pass (hooks on its modules), timed too.
IN_FORWARD = (
    (ActivityCounter, "counts"),
    (FaultSignalReader, "keep_scores"),
    (FaultSignalReader, "keep_saturation"),
)

_timing: list[Any] = []  # the doctor of the fit in progress


def timed_doctor(kind: type[StepDoctor]) -> type[StepDoctor]:
    """``kind`` at its defaults, adding up the seconds spent inside its hooks in ``seconds``."""

    def timed(name: str) -> Any:
        hook = getattr(kind, name)

        def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            return _time(self, hook, self, *args, **kwargs)

        return run

    return type(
        f"Timed{kind.__name__}",
        (kind,),
        {"seconds": 0.0, "device": None, **{name: timed(name) for name in HOOKS}},
    )


def _time(doctor: Any, function: Any, *args: Any, **kwargs: Any) -> Any:
    _synchronize(doctor.device)
    start = time.perf_counter()
    try:
        return function(*args, **kwargs)
    finally:
        _synchronize(doctor.device)
        doctor.seconds += time.perf_counter() - start


def _timed_in_forward(function: Any) -> Any:
    def run(*args: Any, **kwargs: Any) -> Any:
        if not _timing:
            return function(*args, **kwargs)
        return _time(_timing[-1], function, *args, **kwargs)

    return run


for _owner, _name in IN_FORWARD:
    setattr(_owner, _name, _timed_in_forward(getattr(_owner, _name)))


def _synchronize(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


class ImageNetShaped(Classifier):
    def __init__(self) -> None:
        super().__init__(torchvision.models.resnet18(num_classes=1000))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


def share(
    kind: type[StepDoctor],
    model: pl.LightningModule,
    data: Any,
    epochs: int,
    accelerator: str,
    validate: bool = False,
) -> tuple[float, float, int]:
    """(doctor seconds, fit seconds, measured steps) of one fit with the timed doctor."""
    doctor: Any = timed_doctor(kind)()
    doctor.device = torch.device("cuda") if accelerator == "cuda" else None
    _timing.append(doctor)
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
    _timing.pop()
    return doctor.seconds, fit, len(doctor.steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", type=int, default=112)
    parser.add_argument("--steps", type=int, default=200, help="ImageNet-shaped steps per epoch")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument(
        "--repeats", type=int, default=5, help="digits fits per row (the median share is kept)"
    )
    parser.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    pl.seed_everything(0)
    images = torch.randn(args.steps * args.batch, 3, args.side, args.side)
    labels = torch.randint(0, 1000, (len(images),))
    loader = DataLoader(TensorDataset(images, labels), batch_size=args.batch, shuffle=True)
    rows = []
    for kind in (LearningRateDoctor, TrainingDoctor):
        for validate, name in ((False, "training only"), (True, "with validation, as the demo")):
            fits = []
            for _ in range(args.repeats):  # 2-second fits: the median of a few
                pl.seed_everything(0)
                fits.append(
                    share(
                        kind,
                        DigitsConvNet(),
                        DigitsDataModule(batch_size=64),
                        5,
                        args.accelerator,
                        validate,
                    )
                )
            fits.sort(key=lambda fit: fit[0] / fit[1])
            doctor, fit, measured = fits[len(fits) // 2]
            workload = f"digits CNN, 23 steps per epoch, 5 epochs, {name}"
            rows.append((kind.__name__, workload, doctor, fit, measured))
        pl.seed_everything(0)
        doctor, fit, measured = share(kind, ImageNetShaped(), (loader,), 1, args.accelerator)
        workload = (
            f"ResNet-18, 1000 classes, {args.side} px, batch {args.batch}, {args.steps} steps"
        )
        rows.append((kind.__name__, workload, doctor, fit, measured))
    device = torch.cuda.get_device_name() if args.accelerator == "cuda" else "CPU (2 cores)"
    lines = [
        f"`python benchmarks/lr_doctor_cost.py` on {device}: the seconds spent inside each "
        "doctor's hooks and in what it does inside the forward pass (dead-filter counting, the "
        "class scores kept, saturated shares) at its defaults (alpha's replayed forward pass "
        "included), against the whole fit's, in the same run; for the digits, the fit with the "
        f"median share of {args.repeats}.",
        "",
        "| doctor | workload | measured steps | doctor (s) | fit (s) | share |",
        "|---|---|---|---|---|---|",
    ]
    for kind, name, doctor, fit, measured in rows:
        lines.append(
            f"| {kind} | {name} | {measured} | {doctor:.2f} | {fit:.1f} | "
            f"{100 * doctor / fit:.1f} % |"
        )
    text = "\n".join(lines)
    print(text)
    write_section(args.out, "The doctors' own cost", text)


if __name__ == "__main__":
    main()
