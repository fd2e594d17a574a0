"""Train the digits CNN at a good and a too-high learning rate and compare the dead filters.

Usage: ``python examples/learning_rate_comparison.py`` then
``tensorboard --logdir runs --samples_per_plugin images=1000``.
"""

from __future__ import annotations

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_convviz.demo import train

LAYERS = ("features.1", "features.4", "features.7")


def dead_channels(log_dir: str) -> list[int]:
    events = EventAccumulator(log_dir, size_guidance={"scalars": 0})
    events.Reload()
    return [
        int(events.Scalars(f"activation_stats/dead_channels/{layer}")[-1].value) for layer in LAYERS
    ]


def main() -> None:
    for lr in (1e-3, 3e-2):
        trainer = train(lr=lr, epochs=20, log_dir="runs", name=f"compare_lr{lr:g}")
        assert trainer.log_dir is not None
        print(f"lr={lr:g}: dead channels per conv block {dead_channels(trainer.log_dir)}")


if __name__ == "__main__":
    main()
