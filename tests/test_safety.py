"""Each callback's work leaves training bit-identical: a snapshot taken by a callback just before
ours in the same hook is compared with the state seen by a callback just after it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from helpers import TinyCNN, every_callback, loaders, make_trainer

HOOKS = ("on_train_start", "on_train_batch_end", "on_train_epoch_end", "on_validation_batch_end")


def snapshot(trainer: pl.Trainer, model: pl.LightningModule) -> dict[str, Any]:
    optimizer = trainer.optimizers[0]
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},  # params + BN buffers
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "optimizer": {
            i: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
            for i, s in enumerate(optimizer.state.values())
        },
        "rng": torch.get_rng_state(),
        "training": [m.training for m in model.modules()],
        "grad_mode": (torch.is_grad_enabled(), torch.is_inference_mode_enabled()),
    }


def assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key
    for old, new in zip(before["grads"], after["grads"], strict=True):
        assert (old is None and new is None) or torch.equal(old, new)
    assert before["optimizer"].keys() == after["optimizer"].keys()
    for index, state in before["optimizer"].items():
        for key, value in state.items():
            other = after["optimizer"][index][key]
            assert torch.equal(value, other) if torch.is_tensor(value) else value == other
    assert torch.equal(before["rng"], after["rng"])
    assert before["training"] == after["training"]
    assert before["grad_mode"] == after["grad_mode"]


class Before(pl.Callback):
    def __init__(self) -> None:
        self.taken: dict[str, dict[str, Any]] = {}


class After(pl.Callback):
    def __init__(self, before: Before) -> None:
        self.before = before
        self.checked: list[str] = []


def _install(hook: str) -> None:
    def take(self: Before, trainer: pl.Trainer, model: pl.LightningModule, *args: Any) -> None:
        if trainer.optimizers:
            self.taken[hook] = snapshot(trainer, model)

    def check(self: After, trainer: pl.Trainer, model: pl.LightningModule, *args: Any) -> None:
        if hook in self.before.taken:
            assert_same(self.before.taken.pop(hook), snapshot(trainer, model))
            self.checked.append(hook)

    setattr(Before, hook, take)
    setattr(After, hook, check)


for _hook in HOOKS:
    _install(_hook)


@pytest.mark.parametrize("callback", every_callback(), ids=lambda callback: type(callback).__name__)
def test_callback_leaves_training_untouched(tmp_path: Path, callback: pl.Callback) -> None:
    model = TinyCNN()
    before = Before()
    after = After(before)
    trainer = make_trainer(
        tmp_path,
        [before, callback, after],
        max_epochs=2,
        limit_train_batches=3,
        limit_val_batches=2,
    )
    train, val = loaders()
    trainer.fit(model, train, val)
    assert set(after.checked) == set(HOOKS)  # train mode and validation hooks were all compared
