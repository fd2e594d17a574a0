"""How the learning-rate doctor measures: which steps, the optimizer's facts and weights before a
step, the step's numbers in one host copy (averaged over ranks), the replayed loss after it,
and each epoch's dead filters and mean loss (reduced over ranks).

Every function here is called on every rank at the same points (the doctor's schedule decides),
so that each collective is joined by all.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pytorch_lightning import LightningModule, Trainer

from lightning_convviz.callbacks.lr_records import StepSnapshot, loss_of
from lightning_convviz.functional.guard import (
    RandomState,
    preserved_state,
    replayed_random_state,
    silent_replay,
)
from lightning_convviz.functional.loss_tally import LossTally
from lightning_convviz.functional.lr_judgement import StepSignals, cockpit_alpha
from lightning_convviz.functional.sites import CallSites, Site
from lightning_convviz.functional.step_update import update_statistics

__all__ = [
    "OptimizerFacts",
    "dead_filters",
    "epoch_mean_loss",
    "measure_step",
    "measuring_interval",
    "optimizer_facts",
    "replayed_loss",
    "snapshot_step",
    "step_signals",
]


def measuring_interval(
    trainer: Trainer, every_n_steps: int | None, measurements_per_epoch: int
) -> tuple[int, int]:
    """``(every, offset)``: measure the optimizer steps ``offset + k * every``.

    ``every_n_steps``, or the Trainer's ``log_every_n_steps``; in epochs shorter than
    ``measurements_per_epoch`` times that, that many evenly spaced steps of each epoch
    (counted from the epoch's first step).
    """
    if every_n_steps is not None:
        return every_n_steps, 0
    every, offset = int(getattr(trainer, "log_every_n_steps", 50)), 0
    batches = trainer.num_training_batches
    if isinstance(batches, int) or math.isfinite(batches):
        steps = int(batches) // max(int(trainer.accumulate_grad_batches), 1)
        if steps < every * measurements_per_epoch:
            every = max(1, math.ceil(steps / measurements_per_epoch))
            offset = trainer.global_step
    return max(1, every), offset


@dataclass(frozen=True)
class OptimizerFacts:
    """What the doctor reads of the optimizer at a step."""

    #: The learning rate of the largest param group (the one that moves most weights).
    lr: float
    #: That group's schedule peak (``max_lr``, ``initial_lr``), or ``lr``; 0 when unknown.
    peak_lr: float
    optimizer: str
    #: The first scheduler's class name, ``None`` without one.
    scheduler: str | None


def optimizer_facts(trainer: Trainer, optimizer: Any) -> OptimizerFacts:
    """The learning rate, its schedule's peak, and the optimizer's and scheduler's names."""
    groups = getattr(optimizer, "param_groups", [])
    largest: dict[str, Any] = max(
        groups, key=lambda g: sum(p.numel() for p in g["params"]), default={}
    )
    peak = max(float(largest.get(key) or 0.0) for key in ("max_lr", "initial_lr", "lr"))
    configs = getattr(trainer, "lr_scheduler_configs", [])
    return OptimizerFacts(
        lr=float(largest.get("lr", math.nan)),
        peak_lr=peak,
        optimizer=type(optimizer).__name__,
        scheduler=type(configs[0].scheduler).__name__ if configs else None,
    )


def snapshot_step(
    pl_module: LightningModule, lr: float, weights: dict[str, torch.Tensor]
) -> StepSnapshot | None:
    """The trainable weights and their gradients just before the optimizer steps (``None``
    when no weight has a gradient); ``weights`` names the conv and linear weights whose
    update ratios are measured."""
    params: list[torch.Tensor] = [
        p for p in pl_module.parameters() if p.requires_grad and p.grad is not None
    ]
    if not params:
        return None
    index = {id(p): i for i, p in enumerate(params)}
    return StepSnapshot(
        params=params,
        before=[p.detach().clone() for p in params],
        grads=[p.grad.detach().clone() for p in params],  # type: ignore[union-attr]
        lr=lr,
        weights={name: index[id(w)] for name, w in weights.items() if id(w) in index},
    )


def replayed_loss(
    trainer: Trainer,
    pl_module: LightningModule,
    batch: Any,
    batch_idx: int,
    random_state: RandomState,
) -> torch.Tensor | None:
    """The same batch's loss after the step: ``training_step`` once more under
    ``torch.no_grad()``, in training mode, from the random state the step started from, with
    the module's state, ``self.log`` and metric states put back as they were. Raises what
    ``training_step`` raises."""
    precision = trainer.strategy.precision_plugin
    with (
        preserved_state(pl_module, eval_mode=False, buffers=True),
        replayed_random_state(random_state),
        silent_replay(pl_module),
        precision.train_step_context(),
        torch.no_grad(),
    ):
        output = pl_module.training_step(batch, batch_idx)
    loss = loss_of(output)
    return None if loss is None else loss.detach().float()


def measure_step(
    trainer: Trainer,
    snapshot: StepSnapshot,
    outputs: Any,
    loss_after: torch.Tensor | None,
    extras: Sequence[torch.Tensor] = (),
) -> list[float]:
    """Every number of the step on the device, averaged over ranks, in one host copy:
    loss before, loss after, slope, gradient norm, clipped norm, update norm, one update
    ratio per weight of ``snapshot.weights``, then the values of ``extras`` (1-D tensors
    another reader joins to the copy), flattened in order."""
    slope, grad_norm, moved, ratios = update_statistics(
        snapshot.grads,
        snapshot.before,
        [p.detach() for p in snapshot.params],
        list(snapshot.weights.values()),
    )
    now = [p.grad for p in snapshot.params]
    clipped = getattr(trainer, "gradient_clip_val", None) and all(g is not None for g in now)
    clipped_norm = (
        torch.stack([g.detach().float().norm() for g in now if g is not None]).norm()
        if clipped
        else grad_norm
    )
    nan = torch.full((), math.nan, device=slope.device)
    loss_before = loss_of(outputs)
    scale = float(max(int(getattr(trainer, "accumulate_grad_batches", 1)), 1))
    loss_before = nan if loss_before is None else loss_before.detach().float() * scale
    after = nan if loss_after is None else loss_after
    stacked = torch.stack(
        [
            value.to(slope.device, torch.float64)
            for value in (loss_before, after, slope, grad_norm, clipped_norm, moved)
        ]
        + [ratio.to(slope.device, torch.float64) for ratio in ratios]
    )
    if extras:
        joined = [e.flatten().to(slope.device, torch.float64) for e in extras]
        stacked = torch.cat([stacked, *joined])
    if trainer.world_size > 1:
        stacked = trainer.strategy.reduce(stacked, reduce_op="mean")
    values: list[float] = stacked.tolist()  # the one host copy of this measured step
    return values


def step_signals(
    step: int, snapshot: StepSnapshot, values: list[float], clip: float | None
) -> tuple[StepSignals, dict[str, float]]:
    """The step's signals from :func:`measure_step`'s numbers, and its update ratios by layer.
    A step that moved nothing was skipped (the GradScaler on overflow) and has no alpha."""
    loss_before, loss_after, slope, grad_norm, clipped_norm, moved = values[:6]
    ratios = dict(zip(snapshot.weights, values[6 : 6 + len(snapshot.weights)], strict=True))
    skipped = moved == 0.0
    finite_ratios = [r for r in ratios.values() if math.isfinite(r)]
    signals = StepSignals(
        step=step,
        lr=snapshot.lr,
        alpha=None if skipped else cockpit_alpha(loss_before, loss_after, slope),
        update_ratio=statistics.median(finite_ratios) if finite_ratios else math.nan,
        grad_norm=grad_norm,
        skipped=skipped,
        clipped=bool(clip) and clipped_norm < grad_norm * (1 - 1e-6),
        loss=loss_before,
        loss_after=loss_after,
        slope=slope,
    )
    return signals, ratios


def dead_filters(
    trainer: Trainer, sites: CallSites | None, counts: dict[Site, tuple[torch.Tensor, int]]
) -> dict[str, tuple[int, int]]:
    """``{site name: (dead filters, filters)}`` from the epoch's presence counts summed over
    ranks, in call order (the same on every rank): one collective, one host copy."""
    measured = [] if sites is None else [site for site in sites.order if site in counts]
    if not measured:
        return {}
    assert sites is not None
    flat = [counts[site][0].flatten().long() for site in measured]
    totals = trainer.strategy.reduce(torch.cat(flat), reduce_op="sum")
    parts = totals.split([len(c) for c in flat])
    zeros: list[int] = torch.stack([(part == 0).sum() for part in parts]).tolist()
    return {
        sites.name(site): (dead, int(part.numel()))
        for site, part, dead in zip(measured, parts, zeros, strict=True)
    }


def epoch_mean_loss(trainer: Trainer, losses: LossTally) -> tuple[float, int | None]:
    """The epoch's mean finite loss over every rank (NaN without one), and the first step
    whose loss was not finite (``None``: none; under DDP the mean of the steps of the ranks
    that saw one). One collective."""
    total, count, bad_step = losses.totals(trainer.strategy.root_device)
    sums = torch.stack([total, count, (bad_step >= 0).double(), bad_step.clamp_min(0)])
    if trainer.world_size > 1:
        sums = trainer.strategy.reduce(sums, reduce_op="sum")
    loss_sum, finite, ranks_bad, bad_steps = sums.tolist()
    first_bad = round(bad_steps / ranks_bad) if ranks_bad else None
    return (loss_sum / finite if finite else math.nan), first_bad
