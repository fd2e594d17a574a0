"""What the learning-rate doctor keeps and reports: a measured step's snapshot, the losses it
reads, its records of the run (kept for resume), its hyperparameters and markdown summary."""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from lightning_convviz.callbacks.arguments import check_number
from lightning_convviz.functional.lr_judgement import (
    EpochSignals,
    Finding,
    Judgement,
    JudgementRules,
    StepSignals,
    Verdict,
    judge_learning_rate,
)

__all__ = [
    "HEALTHY_UPDATE_RATIO",
    "KEPT_STEPS",
    "RECENT_RATIOS",
    "VERDICT_VALUE",
    "DoctorRecords",
    "StepSnapshot",
    "checked_rules",
    "epoch_metrics",
    "loss_of",
    "step_metrics",
    "summary_markdown",
]

#: The verdict as a number, for a scalar chart.
VERDICT_VALUE = {"too low": -1.0, "healthy so far": 0.0, "too high": 1.0}
#: Measured steps kept for the judgement (a few floats each).
KEPT_STEPS = 1024
#: Update ratios kept per layer for the summary table (the latest ones).
RECENT_RATIOS = 20
#: CS231n's healthy update/weight ratio, logged beside the ratios as a reference line.
HEALTHY_UPDATE_RATIO = 1e-3


@dataclass
class StepSnapshot:
    """The weights and gradients just before a measured optimizer step."""

    params: list[torch.Tensor]
    before: list[torch.Tensor]
    grads: list[torch.Tensor]
    lr: float
    #: Each conv and linear weight's index in ``params``, by layer name.
    weights: dict[str, int]


def checked_rules(
    alpha_high: float,
    alpha_low: float,
    dead_fraction_high: float,
    divergence_factor: float,
    explosion_factor: float,
) -> JudgementRules:
    """The doctor's thresholds as :class:`JudgementRules`; ``ValueError`` naming the argument
    for one outside its range."""
    check_number("alpha_high", alpha_high, above=-1.0)
    check_number("alpha_low", alpha_low)
    check_number("dead_fraction_high", dead_fraction_high, above=0.0, at_most=1.0)
    check_number("divergence_factor", divergence_factor, above=1.0)
    check_number("explosion_factor", explosion_factor, above=1.0)
    if not alpha_low < alpha_high:
        raise ValueError(
            f"alpha_low: expected less than alpha_high ({alpha_high}), got {alpha_low!r}"
        )
    return JudgementRules(
        alpha_high=float(alpha_high),
        alpha_low=float(alpha_low),
        dead_fraction_high=float(dead_fraction_high),
        divergence_factor=float(divergence_factor),
        explosion_factor=float(explosion_factor),
    )


def step_metrics(step: StepSignals, ratios: Mapping[str, float]) -> dict[str, float]:
    """A measured step's scalars by name without the section: each weight's update ratio with
    the healthy reference beside them, the gradient norm, the learning rate and alpha."""
    metrics = {f"update_ratio/{name}": ratio for name, ratio in ratios.items()}
    metrics["update_ratio_reference"] = HEALTHY_UPDATE_RATIO
    metrics["grad_norm"] = step.grad_norm
    metrics["lr"] = step.lr
    if step.alpha is not None:
        metrics["alpha"] = step.alpha
    return metrics


def epoch_metrics(
    dead: Mapping[str, tuple[int, int]],
    noise: tuple[str, float] | None,
    mean_loss: float,
    judgement: Judgement,
) -> dict[str, float]:
    """An epoch's scalars by name without the section: each layer's dead fraction, the first
    layer's noise score, the epoch's loss, and the judgement (where finite or known)."""
    metrics = {f"dead_fraction/{name}": d / max(n, 1) for name, (d, n) in dead.items()}
    if noise is not None and math.isfinite(noise[1]):
        metrics[f"noise_score/{noise[0]}"] = noise[1]
    if math.isfinite(mean_loss):
        metrics["epoch_loss"] = mean_loss
    metrics["verdict"] = VERDICT_VALUE[judgement.verdict]
    if judgement.alpha is not None:
        metrics["alpha_smoothed"] = judgement.alpha
    if judgement.suggested_lr is not None:
        metrics["suggested_lr"] = judgement.suggested_lr
    return metrics


def loss_of(output: Any) -> torch.Tensor | None:
    """The loss tensor of a training step's output (a tensor, or a mapping with ``loss``)."""
    loss = output.get("loss") if isinstance(output, Mapping) else output
    return loss if isinstance(loss, torch.Tensor) and loss.numel() == 1 else None


def summary_markdown(
    verdict: Verdict,
    judgement: Judgement | None,
    findings: list[Finding],
    recent_ratios: dict[str, list[float]],
    dead: dict[str, tuple[int, int]],
) -> str:
    """The doctor's report as markdown: the verdict, the findings that hold (and those seen
    earlier), the judgement's notes, and per layer the median of its latest update/weight
    ratios and its dead filters at the latest epoch end."""
    active = list(judgement.findings) if judgement is not None else []
    lines = [f"**Learning rate: {verdict}**", ""]
    lines += [f"- {f.evidence} (points to: {f.points_to})" for f in active] or [
        "- no finding holds now"
    ]
    if judgement is not None:
        lines += [f"- {note}" for note in judgement.notes]
    settled = [f for f in findings if f.key not in {a.key for a in active}]
    if settled:
        lines += ["", "Seen earlier, no longer holding:"]
        lines += [f"- {f.evidence}" for f in settled]
    lines += ["", "| layer | median update/weight (last 20) | dead filters |", "|---|---|---|"]
    for name, values in recent_ratios.items():
        lines.append(f"| {name} | {statistics.median(values):.1e} | |")
    for name, (count, channels) in dead.items():
        lines.append(f"| {name} | | {count} / {channels} |")
    return "\n".join(lines)


def _kept_steps() -> deque[StepSignals]:
    return deque(maxlen=KEPT_STEPS)


@dataclass
class DoctorRecords:
    """What the doctor has recorded of the run: the signals it judges, what it read of the
    optimizer, and the findings it has seen (kept in the callback's ``state_dict``)."""

    #: The measured steps (the latest :data:`KEPT_STEPS`).
    steps: deque[StepSignals] = field(default_factory=_kept_steps)
    #: One entry per epoch.
    epochs: list[EpochSignals] = field(default_factory=list)
    first_nonfinite_loss_step: int | None = None
    #: The schedule's highest learning rate seen (its peak), ``None`` before a step.
    peak_lr: float | None = None
    optimizer: str = ""
    scheduler: str | None = None
    #: The latest :data:`RECENT_RATIOS` update ratios per layer.
    recent_ratios: dict[str, list[float]] = field(default_factory=dict)
    #: Every finding so far, in order, with its latest evidence.
    findings: list[Finding] = field(default_factory=list)
    #: The keys of the findings already warned of (once each).
    warned: set[str] = field(default_factory=set)

    def judge(self, rules: JudgementRules) -> Judgement:
        """The judgement of the signals recorded so far (pure: warns nothing)."""
        return judge_learning_rate(
            list(self.steps),
            self.epochs,
            first_nonfinite_loss_step=self.first_nonfinite_loss_step,
            peak_lr=self.peak_lr,
            scheduler=self.scheduler,
            rules=rules,
        )

    def note_optimizer(self, peak_lr: float, optimizer: str, scheduler: str | None) -> None:
        """Keep what a measured step read of the optimizer (the highest peak so far)."""
        self.peak_lr = max(self.peak_lr or 0.0, peak_lr) or None
        self.optimizer, self.scheduler = optimizer, scheduler

    def add_ratios(self, ratios: Mapping[str, float]) -> None:
        """Keep a measured step's update ratios (the latest :data:`RECENT_RATIOS` per layer)."""
        for name, ratio in ratios.items():
            recent = self.recent_ratios.setdefault(name, [])
            recent.append(ratio)
            del recent[:-RECENT_RATIOS]

    def new_findings(self, judgement: Judgement) -> list[Finding]:
        """Keep the judgement's findings (their latest evidence) and return those not warned
        of yet, marking them warned."""
        fresh = []
        for finding in judgement.findings:
            known = next((i for i, f in enumerate(self.findings) if f.key == finding.key), None)
            if known is None:
                self.findings.append(finding)
            else:
                self.findings[known] = finding  # keep the evidence current
            if finding.key not in self.warned:
                self.warned.add(finding.key)
                fresh.append(finding)
        return fresh

    def hyperparameters(
        self, verdict: Verdict, suggested_lr: float | None
    ) -> dict[str, float | str]:
        """The run's learning rate (a schedule's peak), optimizer, scheduler, verdict and
        suggestion, by name without the section."""
        lr = self.peak_lr if self.peak_lr is not None else self.steps[-1].lr
        return {
            "lr": lr,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler or "none",
            "verdict": verdict,
            "suggested_lr": suggested_lr if suggested_lr is not None else math.nan,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": [vars(step) for step in self.steps],
            "epochs": [vars(epoch) for epoch in self.epochs],
            "first_nonfinite_loss_step": self.first_nonfinite_loss_step,
            "peak_lr": self.peak_lr,
            "scheduler": self.scheduler,
            "recent_ratios": self.recent_ratios,
            "findings": [vars(finding) for finding in self.findings],
            "warned": sorted(self.warned),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> DoctorRecords:
        return cls(
            steps=deque((StepSignals(**step) for step in state.get("steps", [])), KEPT_STEPS),
            epochs=[
                EpochSignals(**{**epoch, "dead": {k: tuple(v) for k, v in epoch["dead"].items()}})
                for epoch in state.get("epochs", [])
            ],
            first_nonfinite_loss_step=state.get("first_nonfinite_loss_step"),
            peak_lr=state.get("peak_lr"),
            scheduler=state.get("scheduler"),
            recent_ratios=dict(state.get("recent_ratios", {})),
            findings=[Finding(**item) for item in state.get("findings", [])],
            warned=set(state.get("warned", [])),
        )
