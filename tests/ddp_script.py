"""Run by test_ddp.py: two CPU processes (gloo) with every callback; rank 0 prints a summary.

Rank r gets samples r, r + 2, ... (Lightning's DistributedSampler without shuffling). Even
samples are negative images, odd ones positive, and the ``sign`` branch is a ReLU of the pixel
sum: dead on rank 0's data, alive on rank 1's, so it is not dead once counts are reduced, and
its strongest images all live on rank 1.

With ``faults`` as third argument, only the callbacks that call collectives run, each made to
fail on rank 1 in the second epoch; every rank writes which callbacks are still on and the
warnings it saw.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from helpers import TinyCNN
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_convviz as convviz
from lightning_convviz.callbacks.saliency import ATTRIBUTION_METHODS
from lightning_convviz.functional import Site


class SignNet(TinyCNN):
    def __init__(self) -> None:
        super().__init__()
        self.sign = nn.Conv2d(3, 1, 1)
        self.sign_relu = nn.ReLU()
        with torch.no_grad():
            self.sign.weight.fill_(1.0)
            self.sign.bias.zero_()
        self.sign.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + 0 * self.sign_relu(self.sign(x)).mean()


def data(count: int = 32) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(count, 3, 16, 16, generator=generator) + 0.1
    images[0::2] *= -1  # even samples (rank 0) negative, odd ones (rank 1) positive
    return TensorDataset(images, torch.arange(count) % 2)


def failing_on_rank_one(callback_type: type[Any], hook: str) -> type[Any]:
    """A subclass whose ``hook`` raises on rank 1 in the second epoch."""
    parent_hook = getattr(callback_type, hook)

    def fail(self: Any, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> Any:
        if trainer.global_rank == 1 and trainer.current_epoch == 1:
            raise RuntimeError("injected failure")
        return parent_hook(self, trainer, *args, **kwargs)

    return type(f"Failing{callback_type.__name__}", (callback_type,), {hook: fail})


def every_monitor() -> dict[str, Any]:
    return {
        "stats": convviz.ActivationStatsMonitor(layers=["relu1", "sign_relu"], every_n_steps=1),
        "maps": convviz.ActivationMapMonitor(),
        "filters": convviz.FilterMonitor(),
        "saliency": convviz.SaliencyMonitor(methods=ATTRIBUTION_METHODS, num_probe_images=2),
        "occlusion": convviz.OcclusionMonitor(num_probe_images=2),
        "top": convviz.MaxActivationMonitor(layers=["sign"], channels=[0], k=6),
        "embedding": convviz.EmbeddingMonitor(max_samples=16, n_jobs=1),
        "inversion": convviz.InversionMonitor(steps=3, every_n_epochs=1, num_probe_images=2),
        "adversarial": convviz.AdversarialMonitor(num_probe_images=2),
        "class_model": convviz.ClassModelMonitor(steps=3, every_n_epochs=1),
        "performance": convviz.AttributePerformanceMonitor(),
        "correspondence": convviz.CorrespondenceMonitor(num_probe_images=2, points_per_side=6),
        "confusion": convviz.ConfusionMonitor(top_losses=6),
        "doctor": convviz.LearningRateDoctor(every_n_steps=1),
        "training_doctor": convviz.TrainingDoctor(every_n_steps=1),
    }


def faulty_monitors() -> dict[str, Any]:
    return {
        "stats": failing_on_rank_one(convviz.ActivationStatsMonitor, "on_train_batch_start")(
            every_n_steps=1
        ),
        "top": failing_on_rank_one(convviz.MaxActivationMonitor, "on_validation_batch_end")(),
        "embedding": failing_on_rank_one(convviz.EmbeddingMonitor, "on_validation_batch_end")(
            max_samples=16, n_jobs=1
        ),
        "performance": failing_on_rank_one(
            convviz.AttributePerformanceMonitor, "on_validation_batch_end"
        )(),
        "confusion": failing_on_rank_one(convviz.ConfusionMonitor, "on_validation_batch_end")(),
        "doctor": failing_on_rank_one(convviz.LearningRateDoctor, "on_before_optimizer_step")(
            every_n_steps=1
        ),
    }


def main(
    out: str,
    devices: int,
    faults: bool = False,
    share: float | None = None,
    background: bool | None = None,
) -> None:
    warnings.filterwarnings("ignore")
    pl.seed_everything(0)
    monitors = faulty_monitors() if faults else every_monitor()
    trainer = pl.Trainer(
        max_epochs=3 if faults else 2,
        limit_train_batches=2,
        limit_val_batches=2,
        log_every_n_steps=1,
        logger=TensorBoardLogger(out, name="run", version=0),
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            *monitors.values(),
            convviz.DiagnosticsBudget(max_share=share, background=background),
        ],
    )
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(SignNet(), DataLoader(data(), batch_size=4), DataLoader(data(), batch_size=4))
    seconds = time.perf_counter() - start
    if faults:
        report = {
            "on": sorted(name for name, monitor in monitors.items() if monitor._enabled),
            "warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)],
        }
        Path(out, f"faults_rank{trainer.global_rank}.json").write_text(json.dumps(report))
        return
    doctor = monitors["training_doctor"]
    Path(out, f"doctor_rank{trainer.global_rank}.json").write_text(
        json.dumps(
            {
                "kinds": doctor.diagnosis.kinds,
                "notes": list(doctor.diagnosis.notes),
                "label_counts": doctor.fault_records.signals.label_counts,
                "epochs": [vars(e) for e in doctor.fault_records.signals.epochs],
                "measured": len(doctor.fault_records.signals.measured_steps),
            }
        )
    )
    if trainer.global_rank == 0:
        top = monitors["top"]._states[Site("sign", 1)]
        summary = {
            "seconds": seconds,
            "world_size": trainer.world_size,
            "top_ids": top.ids[0].tolist(),
            "embedded": monitors["embedding"].embedded_samples,
            "confused_images": int(monitors["confusion"].matrix.sum()),
            "top_loss_positions": monitors["confusion"].top["positions"].tolist(),
            "verdict": monitors["doctor"].verdict,
            "drawing_threads": [t.name for t in threading.enumerate() if "convviz" in t.name],
            "postponed": {
                name: account.postponed
                for name, account in convviz.callbacks.context.context_of(
                    trainer
                ).budget.accounts.items()
                if account.postponed
            },
        }
        Path(out, "summary.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    extra = sys.argv[3:]
    main(
        sys.argv[1],
        int(sys.argv[2]),
        faults=extra == ["faults"],
        share=float(extra[1]) if extra[:1] == ["share"] else None,
        background=True if extra == ["background"] else None,
    )
