"""LearningRateDoctor against outcomes: a grid of architectures, optimizers, learning rates.

Each run trains a model for ``--epochs`` on the digits (32 px; the ``resnet18_photos`` part on
the photographs, SGD only) with the doctor at its defaults and records the final validation
accuracy, the doctor's verdict and suggestion, and every signal it measured (so that
``--table`` can judge the recorded signals again, without training).
Beside it, Lightning's ``Tuner.lr_find`` at its defaults for each architecture and optimizer.

Labels come from the outcomes only: per architecture and optimizer, the best final accuracy;
a run within ``HEALTHY_POINTS`` of it is healthy; more than ``MISSED_POINTS`` below it is "too
low" or "too high" by the side of the best learning rate it lies on; in between it is not
scored. A suggestion is right when it lands in the healthy band (the smallest to the largest
learning rate labelled healthy) widened by a factor of 1.5 either side. With ``--seeds``, the
same rule also labels each setting by its mean final accuracy over the initialisations, and
every initialisation's verdicts are scored against both labels.

Usage (``make lr-doctor-grid`` runs three seeds, two processes each, about 1.75 hours on 2 cores)::

    python benchmarks/lr_doctor_grid.py --runs [--shard 0/2] [--seed 0]  # the runs not recorded
    python benchmarks/lr_doctor_grid.py --table [--seed 0] [--out docs/lr_doctor.md]
    python benchmarks/lr_doctor_grid.py --table --seeds 0 1 2 [--out docs/lr_doctor.md]

The records (``lr_doctor_grid.jsonl``, ``lr_doctor_grid_seed<N>.jsonl``) keep every signal,
so ``--table`` judges them again with the rules of the code at hand.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lr_doctor_scoring import report, report_seeds
from torch import nn

RECORDS = Path(__file__).parent / "lr_doctor_grid.jsonl"
EPOCHS = 5
ARCHITECTURES = ("digits_cnn", "resnet18", "convnext_atto", "resnet18_photos")
#: torchvision's ResNet-18 on the photographs (48 px RGB crops, 14 classes), with SGD and
#: momentum alone: the setting whose suggestions the digits did not test (a BatchNorm ResNet
#: whose healthy SGD band lies higher than on the digits).
PHOTO_ARCHITECTURES = ("resnet18_photos",)
PHOTO_OPTIMIZERS = ("sgd",)
LEARNING_RATES = {
    "adam": (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
    "adamw": (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
    "sgd": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0),
}
#: Warmup (one epoch) then cosine, with AdamW, at a good and a too-high peak.
SCHEDULE_PEAKS = (1e-3, 3e-2, 3e-1)


@dataclass(frozen=True)
class Setting:
    architecture: str
    optimizer: str
    lr: float
    schedule: str = "constant"  # or "warmup_cosine"

    @property
    def key(self) -> str:
        return f"{self.architecture}/{self.optimizer}/{self.schedule}/{self.lr:g}"


def optimizers(architecture: str) -> tuple[str, ...]:
    """The optimizers an architecture is trained with."""
    if architecture in PHOTO_ARCHITECTURES:
        return PHOTO_OPTIMIZERS
    return tuple(LEARNING_RATES)


def settings() -> list[Setting]:
    grid = [
        Setting(arch, optimizer, lr)
        for arch in ARCHITECTURES
        for optimizer in optimizers(arch)
        for lr in LEARNING_RATES[optimizer]
    ]
    grid += [
        Setting(arch, "adamw", peak, "warmup_cosine")
        for arch in ARCHITECTURES
        if arch not in PHOTO_ARCHITECTURES
        for peak in SCHEDULE_PEAKS
    ]
    return grid


def network(architecture: str) -> nn.Module:
    """A freshly initialised classifier of 1 x 32 x 32 digits (or of the photographs' 3 x 48 x
    48 crops, 14 classes; seeded by the caller)."""
    if architecture == "resnet18_photos":
        import torchvision

        return torchvision.models.resnet18(num_classes=14)
    if architecture == "digits_cnn":
        from lightning_convviz.demo import DigitsConvNet

        return DigitsConvNet()
    if architecture == "resnet18":
        import torchvision

        model = torchvision.models.resnet18(num_classes=10)
        model.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
        return model
    if architecture == "convnext_atto":
        import timm

        return timm.create_model("convnext_atto", pretrained=False, in_chans=1, num_classes=10)
    raise ValueError(f"architecture: expected one of {ARCHITECTURES}, got {architecture!r}")


def module_for(setting: Setting, epochs: int, steps_per_epoch: int) -> Any:
    import pytorch_lightning as pl

    class GridModule(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = network(setting.architecture)
            self.lr = setting.lr

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.net(x)
            return out

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            images, labels = batch
            loss = F.cross_entropy(self(images), labels)
            self.log("train/loss", loss)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            images, labels = batch
            self.log("val/accuracy", (self(images).argmax(1) == labels).float().mean())

        def configure_optimizers(self) -> Any:
            params = self.parameters()
            if setting.optimizer == "sgd":
                optimizer: torch.optim.Optimizer = torch.optim.SGD(params, self.lr, momentum=0.9)
            elif setting.optimizer == "adamw":
                optimizer = torch.optim.AdamW(params, self.lr, weight_decay=0.05)
            else:
                optimizer = torch.optim.Adam(params, self.lr)
            if setting.schedule == "constant":
                return optimizer
            warmup, total = steps_per_epoch, epochs * steps_per_epoch

            def factor(step: int) -> float:
                if step < warmup:
                    return (step + 1) / warmup
                return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))

            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
            }

    return GridModule()


def quiet() -> None:
    warnings.simplefilter("ignore")
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)


def train(setting: Setting, epochs: int, log_dir: Path, seed: int = 0) -> dict[str, Any]:
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import TensorBoardLogger

    from lightning_convviz import LearningRateDoctor

    quiet()
    pl.seed_everything(seed)  # the initialisation; the data split stays
    data, steps_per_epoch = data_for(setting.architecture)
    model = module_for(setting, epochs, steps_per_epoch)
    doctor = LearningRateDoctor()
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=[doctor],
        logger=TensorBoardLogger(str(log_dir), name=f"seed{seed}_" + setting.key.replace("/", "_")),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    trainer.fit(model, data)
    accuracy = float(trainer.callback_metrics.get("val/accuracy", math.nan))
    return {
        **asdict(setting),
        "accuracy": accuracy,
        "verdict": doctor.verdict,
        "suggested_lr": doctor.suggested_lr,
        "evidence": [f.evidence for f in doctor.active_findings()],
        "seconds": time.perf_counter() - start,
        "steps": [vars(s) for s in doctor.steps],
        "epochs": [vars(e) for e in doctor.epochs],
        "first_nonfinite_loss_step": doctor.records.first_nonfinite_loss_step,
        "peak_lr": doctor.records.peak_lr,
        "scheduler": doctor.records.scheduler,
        # the other faults' signals: the verdict is withheld where one explains its signals
        "faults": doctor.fault_records.state_dict(),
        "withheld": doctor.withheld,
    }


def data_for(architecture: str) -> tuple[Any, int]:
    """The data module an architecture trains on, and its training steps per epoch."""
    if architecture in PHOTO_ARCHITECTURES:
        from lightning_convviz.data.photos import PhotoCropsDataModule
        from lightning_convviz.demo import DATASETS

        photos = PhotoCropsDataModule(
            batch_size=64, train_crops_per_photo=100, **DATASETS["photos"].data
        )
        return photos, math.ceil(14 * 100 / 64)
    from lightning_convviz.data import DigitsDataModule

    return DigitsDataModule(batch_size=64, image_size=32), 23


def lr_find(architecture: str, optimizer: str, seed: int = 0) -> dict[str, Any]:
    """Lightning's learning-rate finder at its defaults (100 steps from 1e-8 to 1)."""
    import pytorch_lightning as pl
    from pytorch_lightning.tuner import Tuner

    quiet()
    pl.seed_everything(seed)
    setting = Setting(architecture, optimizer, 1e-3)
    data, steps_per_epoch = data_for(architecture)
    model = module_for(setting, EPOCHS, steps_per_epoch)
    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    found = Tuner(trainer).lr_find(model, datamodule=data)
    suggestion = found.suggestion() if found is not None else None
    return {
        "lr_find": True,
        "architecture": architecture,
        "optimizer": optimizer,
        "suggested_lr": suggestion,
    }


def records_path(seed: int) -> Path:
    """Where the runs of one initialisation are recorded."""
    return RECORDS if seed == 0 else RECORDS.with_name(f"lr_doctor_grid_seed{seed}.jsonl")


def records(path: Path) -> Iterator[dict[str, Any]]:
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                yield json.loads(line)


def run_grid(
    path: Path,
    shard: int,
    shards: int,
    epochs: int,
    log_dir: Path,
    seed: int,
    only: str | None = None,
) -> None:
    done = {
        Setting(r["architecture"], r["optimizer"], r["lr"], r["schedule"]).key
        for r in records(path)
        if not r.get("lr_find")
    }
    found = {(r["architecture"], r["optimizer"]) for r in records(path) if r.get("lr_find")}
    torch.set_num_threads(1)
    jobs: list[Any] = [
        s for s in settings() if s.key not in done and only in (None, s.architecture)
    ]
    jobs += [
        (arch, optimizer)
        for arch in ARCHITECTURES
        if only in (None, arch)
        for optimizer in optimizers(arch)
        if (arch, optimizer) not in found
    ]
    for index, job in enumerate(jobs):
        if index % shards != shard:
            continue
        if isinstance(job, Setting):
            record = train(job, epochs, log_dir, seed)
        else:
            record = lr_find(*job, seed=seed)
        with path.open("a") as out:
            out.write(json.dumps(record) + "\n")
        print(
            {
                k: record.get(k)
                for k in (
                    "architecture",
                    "optimizer",
                    "schedule",
                    "lr",
                    "accuracy",
                    "verdict",
                    "suggested_lr",
                    "seconds",
                )
            },
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", action="store_true", help="train the runs not yet recorded")
    parser.add_argument("--shard", default="0/1", help="i/n: this process trains every n-th run")
    parser.add_argument("--table", action="store_true", help="label, judge again and score")
    parser.add_argument("--records", type=Path, default=None, help="default: per seed, here")
    parser.add_argument("--seed", type=int, default=0, help="the models' initialisation")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="with --table: score these initialisations together, labels from their mean too",
    )
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--only", choices=ARCHITECTURES, default=None, help="one architecture")
    parser.add_argument("--logdir", type=Path, default=Path("runs/lr_doctor_grid"))
    parser.add_argument("--out", type=Path, default=None, help="write the tables into this doc")
    args = parser.parse_args()
    if args.records is None:
        args.records = records_path(args.seed)
    if args.runs:
        shard, shards = (int(part) for part in args.shard.split("/"))
        run_grid(args.records, shard, shards, args.epochs, args.logdir, args.seed, args.only)
    if args.table and args.seeds:
        by_seed = {seed: list(records(records_path(seed))) for seed in args.seeds}
        print(report_seeds(by_seed, args.out, "The grid over initialisations"))
    elif args.table:
        title = f"The grid, initialisation seed {args.seed} (benchmarks/lr_doctor_grid.py)"
        print(report(list(records(args.records)), args.out, title))


if __name__ == "__main__":
    main()
