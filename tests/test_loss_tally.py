"""LossTally: an epoch's mean finite loss and its first non-finite step, without a sync per step."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_convviz.functional import loss_tally
from lightning_convviz.functional.loss_tally import LossTally


def _totals(tally: LossTally) -> tuple[float, float, float]:
    total, count, first_bad = tally.totals(torch.device("cpu")).tolist()
    return total, count, first_bad


def test_empty_tally_reads_zero_losses_and_no_bad_step() -> None:
    assert _totals(LossTally()) == (0.0, 0.0, -1.0)


@pytest.mark.parametrize("fold_every", [1, 3, 256])
def test_sums_and_first_bad_step_across_folds(
    monkeypatch: pytest.MonkeyPatch, fold_every: int
) -> None:
    monkeypatch.setattr(loss_tally, "FOLD_EVERY", fold_every)
    losses = [2.0, 1.0, 4.0, math.inf, 3.0, math.nan, 0.5]
    steps = [10, 10, 11, 11, 12, 13, 14]  # accumulation: two batches per step
    tally = LossTally()
    for loss, step in zip(losses, steps, strict=True):
        tally.add(torch.tensor(loss, dtype=torch.bfloat16), step)
    assert len(tally) == len(losses)
    total, count, first_bad = _totals(tally)
    assert (total, count, first_bad) == (10.5, 5.0, 11.0)


def test_the_first_bad_step_stays_when_finite_losses_follow() -> None:
    tally = LossTally()
    tally.add(torch.tensor(float("nan")), 7)
    tally.add(torch.tensor(1.0), 8)
    assert _totals(tally) == (1.0, 1.0, 7.0)
