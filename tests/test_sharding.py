"""Issue 35: under a strategy that shards the parameters across ranks, the callbacks that need
whole weights on rank zero say so once at setup and stay off; the others are not stopped."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from helpers import TinyCNN
from pytorch_lightning.strategies import DDPStrategy, FSDPStrategy

import lightning_convviz as convviz
from lightning_convviz.callbacks.sharding import sharded_parameters

#: The callbacks that read only the passes the strategy makes (hooks on training or validation).
READ_THE_STRATEGY_PASSES = {
    "ActivationStatsMonitor",
    "AttributePerformanceMonitor",
    "ConfusionMonitor",
    "EmbeddingMonitor",
}


def sharded_trainer(strategy: object, world_size: int = 2) -> SimpleNamespace:
    """As much of a Trainer as a callback reads before it decides to stay off."""
    return SimpleNamespace(strategy=strategy, world_size=world_size, fast_dev_run=False)


@pytest.mark.parametrize(
    ("strategy", "world_size", "expected"),
    [
        (FSDPStrategy(), 2, "FSDP (FULL_SHARD) over 2 ranks"),
        (FSDPStrategy(sharding_strategy="SHARD_GRAD_OP"), 8, "FSDP (SHARD_GRAD_OP) over 8 ranks"),
        (FSDPStrategy(sharding_strategy="NO_SHARD"), 2, None),
        (FSDPStrategy(), 1, None),  # one device: FSDP falls back to NO_SHARD
        (DDPStrategy(), 2, None),
    ],
)
def test_sharded_parameters(strategy: object, world_size: int, expected: str | None) -> None:
    assert sharded_parameters(sharded_trainer(strategy, world_size)) == expected


def test_which_callbacks_need_whole_weights() -> None:
    callbacks = [name for name in convviz.__all__ if name.endswith(("Monitor", "Doctor"))]
    free = {name for name in callbacks if getattr(convviz, name).whole_model_needed is None}
    assert free == READ_THE_STRATEGY_PASSES


@pytest.mark.parametrize(
    "name",
    [
        "FilterMonitor",
        "SaliencyMonitor",
        "InversionMonitor",
        "LearningRateDoctor",
        "TrainingDoctor",
    ],
)
def test_a_callback_that_needs_whole_weights_says_so_and_stays_off(name: str) -> None:
    callback = getattr(convviz, name)()
    trainer = sharded_trainer(FSDPStrategy(), world_size=4)
    with pytest.warns(UserWarning, match=rf"{name} is off for this run: under FSDP \(FULL_SHARD\)"):
        callback.setup(trainer, TinyCNN(), "fit")
    # idle: its hooks touch nothing of the (incomplete) trainer
    assert callback.on_train_epoch_end(trainer, TinyCNN()) is None
