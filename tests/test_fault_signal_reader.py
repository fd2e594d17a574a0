"""The doctors' device-side sums of class scores: summed a few batches at a time, they add up to
the epoch's scores read one batch at a time."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, cast

import pytest
import torch
import torch.nn.functional as F
from pytorch_lightning import Trainer

from lightning_convviz.callbacks.fault_signals import SCORE_BATCHES_PER_SUM, FaultSignalReader
from lightning_convviz.functional.sites import Site

CLASSES = 5
SITE = Site("", 1)
ONE_RANK = cast(Trainer, SimpleNamespace(world_size=1))


def batches(count: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    sizes = [7 + (i % 3) for i in range(count)]  # uneven batches, as a last batch is
    return [
        (
            torch.randn(size, CLASSES, generator=generator) * 3,
            torch.randint(0, CLASSES, (size,), generator=generator),
        )
        for size in sizes
    ]


def read(
    reader: FaultSignalReader, data: list[tuple[torch.Tensor, torch.Tensor]], training: bool
) -> None:
    for scores, labels in data:
        output = scores.clone()
        reader.keep_scores(SITE, output)
        reader.read_batch((torch.zeros(len(labels), 1), labels), training=training)
        output.fill_(-1e3)  # a compiled model may overwrite its outputs on its next call


def expected(data: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    scores = torch.cat([s for s, _ in data])
    labels = torch.cat([y for _, y in data])
    return {
        "count": len(labels),
        "correct": int((scores.argmax(1) == labels).sum()),
        "loss": float(F.cross_entropy(scores, labels)),
        "rms": float(scores.square().mean().sqrt()),
        "labels": torch.bincount(labels, minlength=CLASSES).tolist(),
    }


def check(sums: list[float] | None, data: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    assert sums is not None
    want = expected(data)
    count, correct, loss_sum, square_sum = sums[:4]
    assert count == want["count"] and correct == want["correct"]
    assert loss_sum / count == pytest.approx(want["loss"], rel=1e-6)
    assert math.sqrt(square_sum / count) == pytest.approx(want["rms"], rel=1e-6)
    assert sums[4:] == want["labels"]


def test_scores_summed_a_few_batches_at_a_time_add_up_to_every_batch() -> None:
    train = batches(2 * SCORE_BATCHES_PER_SUM + 5, seed=0)  # two full sums and a remainder
    val = batches(SCORE_BATCHES_PER_SUM - 3, seed=1)  # never a full sum: read at the epoch end
    reader = FaultSignalReader()
    reader.start_run(first_step=True)
    read(reader, train[:10], training=True)
    read(reader, val, training=False)
    read(reader, train[10:], training=True)
    totals = reader.epoch_totals(ONE_RANK, torch.device("cpu"))
    check(totals.train, train)
    check(totals.val, val)
    first_scores, first_labels = train[0]
    assert totals.first_batch is not None
    loss, rms = totals.first_batch
    assert loss == pytest.approx(float(F.cross_entropy(first_scores, first_labels)), rel=1e-6)
    assert rms == pytest.approx(float(first_scores.square().mean().sqrt()), rel=1e-6)


def test_the_next_epoch_and_the_next_fit_start_from_nothing() -> None:
    reader = FaultSignalReader()
    reader.start_run(first_step=True)
    read(reader, batches(20, seed=2), training=True)
    reader.epoch_totals(ONE_RANK, torch.device("cpu"))
    second = batches(3, seed=3)
    read(reader, second, training=True)
    check(reader.epoch_totals(ONE_RANK, torch.device("cpu")).train, second)

    read(reader, batches(4, seed=4), training=True)  # a fit that stopped within an epoch
    reader.start_run(first_step=False)  # the next fit, resumed: no first batch to read
    third = batches(2, seed=5)
    read(reader, third, training=True)
    totals = reader.epoch_totals(ONE_RANK, torch.device("cpu"))
    check(totals.train, third)
    assert totals.first_batch is None and totals.val is None
