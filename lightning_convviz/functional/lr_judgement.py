"""Judge a learning rate from signals measured while training: findings, verdict, suggestion.

Pure Python on recorded numbers: no torch, no Lightning, no logging. The callback
:class:`~lightning_convviz.LearningRateDoctor` measures the signals; this module reads them, so
the rules can be tested (and re-run on a recorded run) without a Trainer.

The main signal is the *effective relative step size* alpha of Cockpit (Schneider, Dangel and
Hennig, NeurIPS 2021): a parabola fitted along the update that the optimizer actually made,
from the loss before the step ``f(0)``, its directional derivative ``f'(0) = g . delta`` and the
loss after the step on the same batch ``f(1)``. ``alpha = 0``: the step landed at the parabola's
minimum; ``alpha = 1``: it overshot to the same height on the other side; ``alpha = -1``: it
barely moved. It holds for any optimizer (the update is measured, not assumed), any
architecture (no dead filters needed) and any schedule (it is read with the learning rate that
made the step).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "EpochSignals",
    "Finding",
    "Judgement",
    "JudgementRules",
    "StepSignals",
    "Verdict",
    "cockpit_alpha",
    "judge_learning_rate",
]

#: The doctor's conclusion (:func:`judge_learning_rate` gives the first three; the doctors say
#: "cannot tell" where another fault explains the signals the judgement read).
Verdict = Literal["too high", "too low", "healthy so far", "cannot tell"]


@dataclass(frozen=True)
class Finding:
    """One piece of evidence: which way it points and what was seen."""

    key: str
    points_to: Verdict
    evidence: str


@dataclass(frozen=True)
class StepSignals:
    """What one measured optimizer step showed.

    Attributes:
        step: The optimizer step (``trainer.global_step`` before it).
        lr: The learning rate that made the step (the largest param group's).
        alpha: Cockpit's alpha of the step, ``None`` where it could not be measured (a skipped
            step, an update that did not go downhill along the gradient, no replay).
        update_ratio: Median over conv and linear layers of ``||delta w|| / ||w||``.
        grad_norm: Total gradient norm before clipping (may be infinite or NaN).
        skipped: The optimizer left every weight unchanged (the fp16 GradScaler skips a step
            whose gradients overflowed, on purpose).
        clipped: Gradient clipping shortened the update.
        loss: The batch's training loss before the step (NaN if not finite).
        loss_after: The same batch's loss after the step (NaN when not measured).
        slope: The loss's directional derivative along the update, ``g . delta``.
    """

    step: int
    lr: float
    alpha: float | None
    update_ratio: float
    grad_norm: float
    skipped: bool = False
    clipped: bool = False
    loss: float = math.nan
    loss_after: float = math.nan
    slope: float = math.nan


@dataclass(frozen=True)
class EpochSignals:
    """What one training epoch showed.

    Attributes:
        epoch: The epoch index.
        step: The optimizer step at its end.
        loss: Mean finite training loss over its steps (NaN if none).
        dead: Per layer, ``(dead filters, filters)`` over the epoch's measured steps.
    """

    epoch: int
    step: int
    loss: float
    dead: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class JudgementRules:
    """The thresholds of the judgement (calibrated on ``benchmarks/lr_doctor_grid.py``).

    Attributes:
        alpha_high: A recent median alpha above this: the steps overshoot (too high).
        alpha_low: A recent median alpha below this: the steps barely move (too low).
        alpha_target: The alpha the suggestion aims at (good runs sit slightly above 0).
        window: How many of the latest alpha measurements are smoothed (their median).
        min_measurements: Fewest alpha measurements before a step-size verdict.
        peak_fraction: Only steps at a learning rate of at least this fraction of the run's
            peak are judged for step size (not a warmup's, nor an annealed tail's).
        dead_fraction_high: A layer with more than this fraction of dead filters, not
            recovering, is evidence of a learning rate that is too high.
        divergence_factor: An epoch's mean loss above this times the best earlier epoch's
            (giving back more than ``divergence_gave_back`` of the progress) is divergence.
        divergence_gave_back: The share of the progress since the first epoch that an epoch
            must give back to be divergence (a bump near zero loss, 0.008 to 0.019, is noise).
        explosion_factor: A finite gradient norm above this times the largest of earlier
            epochs is an explosion (once ``explosion_history`` norms were measured there).
        explosion_history: Fewest gradient norms of earlier epochs before a finite norm can be
            judged an explosion.
        largest_change: The suggestion moves the learning rate by at most this factor.
        smallest_change: ... and by at least this factor (a change the user will notice).
        fallback_change: The factor suggested when the parabolas cannot say (a loss that blew
            up, dead filters, steps too short to show any curvature).
        update_ratio_target: A "too low" suggestion moves the learning rate at least as far as
            brings the recent steps' update/weight ratio (median over layers) up to this: the
            CS231n notes' rule of thumb (about 1e-3). The parabolas of a slow run see only its
            own curvature, and a faster run of a BatchNorm network meets a flatter one: from
            SGD at 1e-4 on the photographs they ask for 15x where the healthy band is 30-100x.
        rise_factor: An epoch's mean loss above this times the first measured loss: the
            first steps threw the network out of its initial basin (too high).
        step_rise: A measured step that raises its own batch's loss by more than this
            fraction (while that loss is at least ``step_rise_loss_fraction`` of the first
            measured loss) overshoots (too high).
        step_rise_loss_fraction: A step's rise counts only while its batch's loss is at least
            this fraction of the first measured loss (near the start, where a relative change
            means something).
        low_loss_fraction: Short steps are "too low" only while the loss is above this
            fraction of the first measured loss (a run that already fits its data is not slow).
    """

    alpha_high: float = 1.0
    alpha_low: float = -0.8
    alpha_target: float = 0.2
    window: int = 8
    min_measurements: int = 4
    peak_fraction: float = 0.5
    dead_fraction_high: float = 0.5
    divergence_factor: float = 1.3
    explosion_factor: float = 100.0
    largest_change: float = 100.0
    smallest_change: float = 2.0
    fallback_change: float = 30.0
    update_ratio_target: float = 1e-3
    rise_factor: float = 1.2
    step_rise: float = 0.2
    step_rise_loss_fraction: float = 0.9
    low_loss_fraction: float = 0.1
    divergence_gave_back: float = 0.25
    explosion_history: int = 3


@dataclass(frozen=True)
class Judgement:
    """The judgement of a run so far.

    Attributes:
        verdict: "too high", "too low" or "healthy so far".
        findings: The evidence that holds now, high side first.
        suggested_lr: A learning rate to try (the schedule's peak for a scheduled run) when
            the verdict is not healthy, else ``None``.
        alpha: The smoothed alpha the verdict read (``None`` before enough measurements).
        notes: Context that is not a finding (warmup, clipped or skipped steps).
    """

    verdict: Verdict
    findings: tuple[Finding, ...]
    suggested_lr: float | None
    alpha: float | None
    notes: tuple[str, ...] = ()


def cockpit_alpha(loss_before: float, loss_after: float, slope: float) -> float | None:
    """Cockpit's alpha of one step from the parabola through ``f(0)``, ``f'(0)`` and ``f(1)``.

    With ``f(t) = f(0) + f'(0) t + c t^2`` along the update (``t = 1`` is the step taken),
    ``c = f(1) - f(0) - f'(0)`` and the minimum lies at ``t* = -f'(0) / (2c)``; alpha is
    ``1 / t* - 1``, that is ``1 + 2 (f(1) - f(0)) / (-f'(0))``. A concave fit (``c <= 0``: still
    going downhill where the step landed) reads -1, as in Cockpit.

    Example:
        >>> cockpit_alpha(1.0, 0.5, -1.0)  # f(t) = 1 - t + t^2 / 2: minimum at t = 1
        0.0
        >>> cockpit_alpha(1.0, 1.0, -1.0)  # back at the same height
        1.0

    Args:
        loss_before: ``f(0)``, the batch's loss before the step.
        loss_after: ``f(1)``, the same batch's loss after it.
        slope: ``f'(0)``, the gradient's dot product with the update.

    Returns:
        Alpha, or ``None`` when the update did not go downhill (``slope >= 0``) or a value is
        not finite.
    """
    if not all(math.isfinite(v) for v in (loss_before, loss_after, slope)) or slope >= 0:
        return None
    if loss_after - loss_before - slope <= 0:
        return -1.0
    return 1.0 + 2.0 * (loss_after - loss_before) / -slope


def judge_learning_rate(
    steps: Sequence[StepSignals],
    epochs: Sequence[EpochSignals],
    *,
    first_nonfinite_loss_step: int | None = None,
    peak_lr: float | None = None,
    scheduler: str | None = None,
    rules: JudgementRules | None = None,
) -> Judgement:
    """Read a run's signals and say whether its learning rate is too high, too low or healthy.

    Rules (``docs/lr_doctor.md`` has them with the grid they were calibrated on):

    * too high for good, once seen: the loss became NaN or infinite; an epoch's loss diverged
      (above ``divergence_factor`` times the best earlier epoch's, giving back more than
      ``divergence_gave_back`` of the progress); an epoch's loss above ``rise_factor`` times the
      first measured loss; a step that raised its own batch's loss by more than ``step_rise``
      while that loss was at least ``step_rise_loss_fraction`` of the first measured one; a
      gradient norm that is not finite on a step the optimizer took (on a skipped step it is the
      fp16 GradScaler at work) or ``explosion_factor`` times the largest of earlier epochs;
    * too high now: the recent median alpha above ``alpha_high`` (the steps overshoot), or
      below ``alpha_low`` with most of a layer's filters dead (the network died);
    * too low now: the recent median alpha below ``alpha_low`` (the steps barely move) while
      the loss is above ``low_loss_fraction`` of its start.

    Only steps at a learning rate of at least ``peak_fraction`` of the peak are read for alpha,
    so that a warmup (small on purpose) or the tail of a cosine schedule is not "too low".

    Example:
        >>> steps = [StepSignals(i, 0.1, 3.0, 0.05, 1.0) for i in range(8)]
        >>> judge_learning_rate(steps, []).verdict
        'too high'

    Args:
        steps: The measured steps, oldest first.
        epochs: One entry per finished epoch, oldest first.
        first_nonfinite_loss_step: The first step whose training loss was NaN or infinite.
        peak_lr: The schedule's peak learning rate, when known (else the largest measured).
        scheduler: The scheduler's class name, for the suggestion's wording.
        rules: Thresholds (the calibrated defaults when ``None``).

    Returns:
        The :class:`Judgement`.
    """
    rules = rules or JudgementRules()
    findings: list[Finding] = []
    notes: list[str] = []
    if first_nonfinite_loss_step is not None:
        findings.append(
            Finding(
                "nonfinite_loss",
                "too high",
                f"the loss became NaN or infinite at step {first_nonfinite_loss_step}",
            )
        )
    initial = next((s.loss for s in steps if math.isfinite(s.loss)), math.nan)
    findings += _divergence(epochs, rules)
    findings += _loss_rose(epochs, initial, rules)
    findings += _step_raised_loss(steps, initial, rules)
    findings += _explosion(steps, epochs, rules)
    skipped = sum(s.skipped for s in steps)
    if skipped:
        notes.append(f"{skipped} of {len(steps)} measured steps were skipped by the optimizer")
    clipped = sum(s.clipped for s in steps if not s.skipped)
    if clipped:
        notes.append(f"updates were clipped in {clipped} of {len(steps)} measured steps")

    peak = max([s.lr for s in steps] + ([peak_lr] if peak_lr else []), default=0.0)
    judged = [
        s
        for s in steps
        if s.alpha is not None and not s.skipped and s.lr >= rules.peak_fraction * peak
    ][-rules.window :]
    alphas = [s.alpha for s in judged if s.alpha is not None]
    alpha = statistics.median(alphas) if len(alphas) >= rules.min_measurements else None
    lr = statistics.median(s.lr for s in judged) if judged else (steps[-1].lr if steps else None)
    if steps and peak and steps[-1].lr < rules.peak_fraction * peak and not judged:
        notes.append(
            f"the learning rate {steps[-1].lr:.2g} is below {rules.peak_fraction:g} of its peak "
            f"{peak:.2g} (warmup or annealing): its steps are not judged for size"
        )
    dead = _dead_filters(epochs, rules)
    step_size: Finding | None = None
    if alpha is not None:
        where = f"alpha {alpha:.2f} over the last {len(alphas)} measurements at lr {lr:.2g}"
        remaining = _latest_loss(epochs, steps, rules) / initial if initial > 0 else math.nan
        if alpha > rules.alpha_high:
            step_size = Finding("overshoot", "too high", f"steps overshoot: {where}")
        elif alpha < rules.alpha_low and dead:
            # dead filters have no gradient: the steps barely move because the network died
            findings += dead
            dead = []
        elif alpha < rules.alpha_low and not remaining <= rules.low_loss_fraction:
            step_size = Finding(
                "barely_moves",
                "too low",
                f"steps barely move: {where}, with the loss still at "
                f"{100 * remaining:.0f}% of its start",
            )
        elif alpha < rules.alpha_low:
            notes.append(
                f"the steps are short ({where}), but the loss is already at "
                f"{100 * remaining:.1f}% of its start: nothing left to hurry"
            )
    if step_size is not None:
        findings.append(step_size)
    notes += [f"{f.evidence} (still learning: not a finding)" for f in dead]

    high = [f for f in findings if f.points_to == "too high"]
    low = [f for f in findings if f.points_to == "too low"]
    verdict: Verdict = "too high" if high else "too low" if low else "healthy so far"
    suggested = None
    if verdict != "healthy so far" and lr is not None:
        # the parabolas of recent steps size the change only when the step size is the whole
        # evidence: after a loss blew up, the steps measured since say nothing of the cause
        parabola = step_size is not None and [f.key for f in high or low] == [step_size.key]
        rise = math.inf if first_nonfinite_loss_step is not None else _rise(epochs, initial)
        factor, how = _factor(verdict, judged if parabola else [], rise, rules)
        suggested = (peak if peak > 0 else lr) * factor
        for_peak = scheduler is not None and peak > 0 and abs(peak - lr) > 1e-3 * peak
        target = f"a peak of about {suggested:.1g} for {scheduler}" if for_peak else None
        notes.append(f"try {target or f'about {suggested:.1g}'} ({how})")
    return Judgement(verdict, tuple(high + low), suggested, alpha, tuple(notes))


def _latest_loss(
    epochs: Sequence[EpochSignals], steps: Sequence[StepSignals], rules: JudgementRules
) -> float:
    """The latest epoch's mean loss, or before the first epoch end the median of the last
    ``window`` measured steps' losses."""
    finite = [e.loss for e in epochs if math.isfinite(e.loss)]
    if finite:
        return finite[-1]
    recent = [s.loss for s in steps[-rules.window :] if math.isfinite(s.loss)]
    return statistics.median(recent) if recent else math.nan


def _greedy_factors(judged: Sequence[StepSignals]) -> list[float]:
    """For each step with a convex fit, how much longer the step would have landed at the
    parabola's minimum: ``t* = 1 / (1 + alpha)``."""
    return [1.0 / (1.0 + s.alpha) for s in judged if s.alpha is not None and s.alpha > -1.0]


def _rise(epochs: Sequence[EpochSignals], initial: float) -> float:
    """The largest finite epoch loss over the first measured loss (0 when unknown)."""
    losses = [e.loss for e in epochs if math.isfinite(e.loss)]
    return max(losses, default=0.0) / initial if initial > 0 else 0.0


def _factor(
    verdict: Verdict, judged: Sequence[StepSignals], rise: float, rules: JudgementRules
) -> tuple[float, str]:
    """By how much to scale the learning rate: from the parabolas of the recent steps when the
    step size is the evidence (the update scales with the learning rate, so a step ``k`` times
    longer reads ``alpha' = k (1 + alpha) - 1``; the median over the steps), else a fixed
    factor (dead filters, or steps too short to show any curvature), the further down the
    higher the loss blew up (``rise``: the largest epoch loss over the first measured one);
    a "too low" factor at least as large as brings the update/weight ratio to
    ``update_ratio_target``."""
    greedy = _greedy_factors(judged)
    if greedy and len(greedy) * 2 >= len(judged):
        factor = statistics.median(greedy) * (1.0 + rules.alpha_target)
        how = f"where the parabolas of the recent steps put alpha at {rules.alpha_target:g}"
    elif verdict == "too low":
        factor = rules.fallback_change
        how = "the steps are too short to show how far"
    else:
        factor = 1.0 / (rules.fallback_change * max(rise, 1.0))
        how = "the further down the higher the loss went"
    ratios = [s.update_ratio for s in judged if math.isfinite(s.update_ratio)]
    ratio = statistics.median(ratios) if ratios else math.nan
    if verdict == "too low" and ratio > 0 and factor * ratio < rules.update_ratio_target:
        factor = rules.update_ratio_target / ratio
        how = (
            f"to bring the update/weight ratio from {ratio:.1g} to about "
            f"{rules.update_ratio_target:g}"
        )
    factor = min(max(factor, 1.0 / rules.largest_change), rules.largest_change)
    smallest = rules.smallest_change
    factor = min(factor, 1.0 / smallest) if verdict == "too high" else max(factor, smallest)
    # 100x, not 1e+02x: two significant digits without an exponent
    written = f"{factor:.0f}" if factor >= 10 else f"{factor:.2g}"
    return factor, f"{written}x the learning rate: {how}"


def _step_raised_loss(
    steps: Sequence[StepSignals], initial: float, rules: JudgementRules
) -> list[Finding]:
    """A measured step that raised the loss of the very batch it was computed on by more than
    ``step_rise``, while the loss was still high (at least ``step_rise_loss_fraction`` of the
    first measured loss, where
    a relative change means something): the update overshoots the valley it started in."""
    for s in steps:
        if s.skipped or not (math.isfinite(s.loss) and math.isfinite(s.loss_after)):
            continue
        high = s.loss >= rules.step_rise_loss_fraction * initial
        if high and s.loss_after > (1 + rules.step_rise) * s.loss:
            return [
                Finding(
                    "step_raised_loss",
                    "too high",
                    f"the update of step {s.step} raised its own batch's loss from {s.loss:.3g} "
                    f"to {s.loss_after:.3g} (+{100 * (s.loss_after / s.loss - 1):.0f}%)",
                )
            ]
    return []


def _loss_rose(
    epochs: Sequence[EpochSignals], initial: float, rules: JudgementRules
) -> list[Finding]:
    """An epoch whose mean loss is above where training started: the first steps threw the
    network out of its initial basin."""
    for epoch in epochs:
        if math.isfinite(epoch.loss) and initial > 0 and epoch.loss > rules.rise_factor * initial:
            return [
                Finding(
                    "loss_rose",
                    "too high",
                    f"epoch {epoch.epoch} mean loss {epoch.loss:.3g} is above the first measured "
                    f"loss {initial:.3g}",
                )
            ]
    return []


def _divergence(epochs: Sequence[EpochSignals], rules: JudgementRules) -> list[Finding]:
    losses = [e.loss for e in epochs if math.isfinite(e.loss)]
    for index in range(1, len(losses)):
        best = min(losses[:index])
        gave_back = (losses[index] - best) / max(losses[0] - best, 1e-12)
        # a bump near zero loss is noise: it must also give back part of the progress
        if (
            losses[index] > rules.divergence_factor * best
            and gave_back > rules.divergence_gave_back
        ):
            return [
                Finding(
                    "diverging",
                    "too high",
                    f"epoch {epochs[index].epoch} mean loss {losses[index]:.3g} is "
                    f"{losses[index] / best:.3g}x the best epoch's {best:.3g}",
                )
            ]
    return []


def _explosion(
    steps: Sequence[StepSignals], epochs: Sequence[EpochSignals], rules: JudgementRules
) -> list[Finding]:
    """A non-finite gradient norm on a step the optimizer took, or a finite one far above the
    largest of earlier epochs (once ``explosion_history`` were measured there)."""
    ends = iter(sorted(e.step for e in epochs))
    end = next(ends, None)
    earlier: list[float] = []  # finite norms of the epochs before the current one
    current: list[float] = []
    for s in steps:
        while end is not None and s.step >= end:
            earlier += current
            current = []
            end = next(ends, None)
        if s.skipped:
            continue
        if not math.isfinite(s.grad_norm):
            evidence = f"gradient norm {s.grad_norm} at step {s.step}"
            return [Finding("grad_explosion", "too high", evidence)]
        largest = max(earlier, default=math.inf)
        if (
            len(earlier) >= rules.explosion_history
            and s.grad_norm > rules.explosion_factor * largest
        ):
            return [
                Finding(
                    "grad_explosion",
                    "too high",
                    f"gradient norm {s.grad_norm:.3g} at step {s.step}, over "
                    f"{rules.explosion_factor:g}x the largest of earlier epochs ({largest:.3g})",
                )
            ]
        current.append(s.grad_norm)
    return []


def _dead_filters(epochs: Sequence[EpochSignals], rules: JudgementRules) -> list[Finding]:
    if not epochs:
        return []
    findings = []
    latest, previous = epochs[-1], epochs[-2] if len(epochs) > 1 else None
    for name, (dead, channels) in latest.dead.items():
        if dead / max(channels, 1) <= rules.dead_fraction_high:
            continue
        if previous is not None and name in previous.dead and dead < previous.dead[name][0]:
            continue  # recovering
        since = next(
            e.step
            for e in epochs
            if name in e.dead
            and e.dead[name][0] / max(e.dead[name][1], 1) > rules.dead_fraction_high
        )
        findings.append(
            Finding(
                f"dead:{name}",
                "too high",
                f"{name}: {dead} of {channels} filters dead since step {since}",
            )
        )
    return findings
