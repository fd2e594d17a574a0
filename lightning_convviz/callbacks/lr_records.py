"""What the learning-rate doctor keeps and reports: a measured step's snapshot, the losses it
reads, how many records it keeps, and its markdown summary."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from lightning_convviz.functional.lr_judgement import Finding, Judgement, Verdict

__all__ = [
    "HEALTHY_UPDATE_RATIO",
    "KEPT_STEPS",
    "RECENT_RATIOS",
    "VERDICT_VALUE",
    "StepSnapshot",
    "loss_of",
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
