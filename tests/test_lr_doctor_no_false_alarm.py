"""No false alarm at a good learning rate under what real training does: bf16 autocast, a
warmup schedule, gradient clipping, gradient accumulation, several param groups."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_convviz import LearningRateDoctor
from lightning_convviz.data import DigitsDataModule
from lightning_convviz.demo import DigitsConvNet

EPOCHS = 5


class Configured(DigitsConvNet):
    """The digits CNN with Adam 1e-3 (a good learning rate here), set up as ``setting`` says."""

    def __init__(self, setting: str) -> None:
        super().__init__(lr=1e-3)
        self.setting = setting

    def configure_optimizers(self) -> Any:
        if self.setting == "param_groups":  # the head at a tenth of the features' rate
            groups = [
                {"params": self.features.parameters()},
                {"params": self.classifier.parameters(), "lr": 1e-4},
            ]
            return torch.optim.Adam(groups, lr=1e-3)
        optimizer = torch.optim.Adam(self.parameters(), lr=1e-3)
        if self.setting != "warmup":
            return optimizer
        warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=46)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}


TRAINER_OPTIONS: dict[str, dict[str, Any]] = {
    "bf16": {"precision": "bf16-mixed"},
    "warmup": {},
    "clipping": {"gradient_clip_val": 0.5},
    "accumulation": {"accumulate_grad_batches": 2},
    "param_groups": {},
}


@pytest.mark.training_outcome
@pytest.mark.parametrize("setting", list(TRAINER_OPTIONS))
def test_a_good_learning_rate_is_healthy(tmp_path: Path, setting: str) -> None:
    pl.seed_everything(0)
    doctor = LearningRateDoctor()
    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        callbacks=[doctor],
        logger=TensorBoardLogger(str(tmp_path)),
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        accelerator="cpu",
        **TRAINER_OPTIONS[setting],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Configured(setting), datamodule=DigitsDataModule())
    assert float(trainer.callback_metrics["val/accuracy"]) > 0.9  # it did train well
    assert doctor.verdict == "healthy so far", [f.evidence for f in doctor.active_findings()]
    assert doctor.suggested_lr is None
    assert len(doctor.steps) >= doctor.measurements_per_epoch * EPOCHS  # evidence every epoch
    notes = " ".join(doctor.judgement.notes) if doctor.judgement else ""
    if setting == "clipping":
        assert "updates were clipped in" in notes
    if setting == "warmup":
        rising = [step.lr for step in doctor.steps][:3]
        assert rising == sorted(rising) and rising[0] < 1e-4  # measured during the warmup
