"""The digits demo: a too-high learning rate kills filters; a good one shapes them."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import read_events

from lightning_convviz import ActivationStatsMonitor, FilterMonitor
from lightning_convviz.data import DigitsDataModule
from lightning_convviz.demo import train

LAYERS = ("features.1", "features.4", "features.7")


def _final_dead(log_dir: str) -> list[float]:
    events = read_events(log_dir)
    return [events.Scalars(f"activation_stats/dead_fraction/{name}")[-1].value for name in LAYERS]


def test_digits_data_is_real_and_deterministic() -> None:
    data = DigitsDataModule()
    data.setup("fit")
    assert data.train_set is not None and data.val_set is not None
    assert len(data.train_set) + len(data.val_set) == 1797
    first = next(iter(data.val_dataloader()))
    again = DigitsDataModule()
    again.setup("fit")
    assert (next(iter(again.val_dataloader()))[0] == first[0]).all()


@pytest.mark.training_outcome
def test_high_learning_rate_kills_more_filters_and_good_one_shapes_them(tmp_path: Path) -> None:
    def callbacks() -> list:
        return [
            ActivationStatsMonitor(every_n_steps=23, log_images=False, log_histograms=False),
            FilterMonitor(layers="features.0", every_n_epochs=10, log_images=False),
        ]

    good = train(lr=1e-3, epochs=10, log_dir=tmp_path, name="good", callbacks=callbacks())
    high = train(lr=3e-2, epochs=10, log_dir=tmp_path, name="high", callbacks=callbacks())
    good_dead, high_dead = _final_dead(good.log_dir), _final_dead(high.log_dir)
    assert sum(good_dead) < sum(high_dead)
    assert max(good_dead) <= 0.1, good_dead
    assert max(high_dead) >= 0.5, high_dead
    noise = read_events(good.log_dir).Scalars("filters/noise_score/features.0")
    assert noise[0].step == 0 and 0.9 < noise[0].value < 1.15  # random start reads about 1
    assert noise[-1].value < 0.7 * noise[0].value  # the first layer's filters took shape
