"""Faults seen layer by layer: vanishing or exploding gradients, saturated or dead units, and
parameters that never change. Pure Python on recorded numbers
(:mod:`~lightning_convviz.functional.faults`)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from lightning_convviz.functional.faults import (
    Fault,
    FaultRules,
    listed_names,
    trailing_run_start,
)

__all__ = [
    "check_dead_units",
    "check_exploding_gradients",
    "check_frozen_parameters",
    "check_saturation",
    "check_vanishing_gradients",
    "first_to_last_ratios",
    "gradients_flowed_at_first",
]


def check_vanishing_gradients(
    steps: Sequence[int],
    relative_gradients: Sequence[Mapping[str, float]],
    rules: FaultRules | None = None,
) -> list[Fault]:
    """The first layer's gradients orders of magnitude below the last layer's, each relative
    to its weights (``||grad w|| / ||w||``; layers in the order the forward pass calls them,
    frozen layers left out).

    Example:
        >>> layers = [{"conv1": 1e-7, "conv2": 1e-5, "fc": 1e-2}] * 8
        >>> [f.kind for f in check_vanishing_gradients(range(8), layers)]
        ['vanishing_gradients']

    Args:
        steps: The measured steps, oldest first.
        relative_gradients: For each measured step, each layer's relative gradient.
        rules: Thresholds (the defaults when ``None``).

    Returns:
        One ``vanishing_gradients`` fault, or none.
    """
    rules = rules or FaultRules()
    ratios = first_to_last_ratios(relative_gradients)
    recent = [r for r in ratios[-rules.gradient_window :] if math.isfinite(r)]
    if (
        len(recent) < min(rules.gradient_window, 3)
        or statistics.median(recent) >= rules.vanishing_ratio
    ):
        return []
    flags = [math.isfinite(r) and r < rules.vanishing_ratio for r in ratios]
    since = trailing_run_start(list(steps), flags)
    names = list(relative_gradients[-1])
    ratio = statistics.median(recent)
    return [
        Fault(
            "vanishing_gradients",
            f"the first layer {names[0]}'s gradient is {ratio:.2g} of the last layer "
            f"{names[-1]}'s, each relative to its weights (median of the last {len(recent)} "
            "measurements)",
            "ReLU-family activations instead of sigmoid or tanh, BatchNorm, residual "
            "connections, or an initialisation with the nonlinearity's gain (kaiming)",
            since,
        )
    ]


def first_to_last_ratios(relative_gradients: Sequence[Mapping[str, float]]) -> list[float]:
    """At each measured step, the first layer's relative gradient over the last layer's (NaN
    where it cannot be read: fewer than two layers, a non-finite value, or a layer with no
    gradient at all, which is dead or frozen, not vanishing).

    Example:
        >>> first_to_last_ratios([{"conv1": 0.5, "fc": 2.0}, {"conv1": 0.0, "fc": 2.0}])
        [0.25, nan]
    """
    ratios: list[float] = []
    for layers in relative_gradients:
        values = list(layers.values())
        if (
            len(values) < 2
            or not all(math.isfinite(v) for v in values)
            or min(values[0], values[-1]) <= 0
        ):
            ratios.append(math.nan)
        else:
            ratios.append(values[0] / values[-1])
    return ratios


def gradients_flowed_at_first(
    relative_gradients: Sequence[Mapping[str, float]], rules: FaultRules | None = None
) -> bool:
    """Whether the first readable measurement showed the gradient reaching the first layer
    (a first-to-last ratio of at least ``vanishing_ratio``): gradients that vanish later were
    lost in training, not by the network's build or initialisation.

    Example:
        >>> gradients_flowed_at_first([{"conv1": 1e-2, "fc": 1e-2}, {"conv1": 1e-9, "fc": 1e-2}])
        True
    """
    rules = rules or FaultRules()
    first = next((r for r in first_to_last_ratios(relative_gradients) if math.isfinite(r)), None)
    return first is not None and first >= rules.vanishing_ratio


def check_exploding_gradients(
    steps: Sequence[int],
    grad_norms: Sequence[float],
    skipped: Sequence[bool] | None = None,
    rules: FaultRules | None = None,
) -> list[Fault]:
    """Gradient norms that are not finite on a step the optimizer took (a skipped step is the
    fp16 GradScaler at work), or that grew without bound (the latest ones' median over
    ``explosion_growth`` times the first ones').

    Example:
        >>> norms = [1.0] * 8 + [1e4] * 8
        >>> [f.kind for f in check_exploding_gradients(range(16), norms)]
        ['exploding_gradients']

    Args:
        steps: The measured steps, oldest first.
        grad_norms: The total gradient norm of each (before clipping).
        skipped: Whether the optimizer skipped each step (``None``: none skipped).
        rules: Thresholds (the defaults when ``None``).

    Returns:
        One ``exploding_gradients`` fault, or none.
    """
    rules = rules or FaultRules()
    advice = (
        "clip the gradients (Trainer(gradient_clip_val=1.0)), lower the learning rate, and "
        "check for a loss that can reach infinity (a log of zero)"
    )
    taken = [
        (step, norm)
        for step, norm, skip in zip(
            steps, grad_norms, skipped or [False] * len(grad_norms), strict=True
        )
        if not skip
    ]
    for step, norm in taken:
        if not math.isfinite(norm):
            return [
                Fault("exploding_gradients", f"gradient norm {norm} at step {step}", advice, step)
            ]
    window = rules.gradient_window
    if len(taken) < 2 * window:
        return []
    first = statistics.median(n for _, n in taken[:window])
    latest = statistics.median(n for _, n in taken[-window:])
    if first > 0 and latest > rules.explosion_growth * first:
        return [
            Fault(
                "exploding_gradients",
                f"the gradient norm grew {latest / first:.3g}x, from a median of {first:.3g} "
                f"over the first {window} measurements to {latest:.3g} over the last {window}",
                advice,
                taken[-window][0],
            )
        ]
    return []


def check_saturation(
    steps: Sequence[int],
    saturated_shares: Sequence[Mapping[str, float]],
    rules: FaultRules | None = None,
) -> list[Fault]:
    """Sigmoid or tanh layers whose outputs sit at their asymptotes (where the gradient
    vanishes) in each of the latest measurements.

    Example:
        >>> shares = [{"sigmoid1": 0.9, "sigmoid2": 0.1}] * 3
        >>> [f.evidence.split(":")[0] for f in check_saturation(range(3), shares)]
        ['sigmoid1']

    Args:
        steps: The measured steps, oldest first.
        saturated_shares: For each, each layer's share of outputs near an asymptote.
        rules: Thresholds (the defaults when ``None``).

    Returns:
        One ``saturated_activations`` fault naming the saturated layers, or none.
    """
    rules = rules or FaultRules()
    recent = list(saturated_shares)[-rules.saturated_measurements :]
    if len(recent) < rules.saturated_measurements:
        return []
    saturated = [
        name
        for name in recent[-1]
        if all(m.get(name, 0.0) >= rules.saturated_share for m in recent)
    ]
    if not saturated:
        return []
    flags = [
        any(m.get(n, 0.0) >= rules.saturated_share for n in saturated) for m in saturated_shares
    ]
    since = trailing_run_start(list(steps), flags)
    shares = ", ".join(f"{n} {100 * recent[-1][n]:.0f}%" for n in saturated[:4])
    return [
        Fault(
            "saturated_activations",
            f"{listed_names(saturated)}: outputs at their asymptotes ({shares}) in the last "
            f"{len(recent)} measurements",
            "a ReLU-family activation, BatchNorm before the sigmoid or tanh, or smaller "
            "initial weights and inputs",
            since,
        )
    ]


def check_dead_units(
    initial: Mapping[str, tuple[int, int]],
    latest: Mapping[str, tuple[int, int]],
    *,
    step: int = 0,
    rules: FaultRules | None = None,
) -> list[Fault]:
    """ReLU units dead from the first measurement on (an initialisation or bias that puts every
    input below zero), told apart from units that die later (a learning rate that is too high
    kills units that were alive: that is the learning-rate judgement's evidence).

    Example:
        >>> [f.kind for f in check_dead_units({"relu1": (32, 32)}, {"relu1": (30, 32)})]
        ['dead_units']
        >>> check_dead_units({"relu1": (0, 32)}, {"relu1": (30, 32)})
        []

    Args:
        initial: Per layer, ``(dead units, units)`` at the first measurement.
        latest: The same at the latest measurement.
        step: The step of the first measurement.
        rules: Thresholds (the defaults when ``None``).

    Returns:
        One ``dead_units`` fault naming the layers, or none.
    """
    rules = rules or FaultRules()

    def dead(counts: tuple[int, int]) -> bool:
        return counts[0] > rules.dead_fraction * max(counts[1], 1)

    layers = [n for n, c in initial.items() if dead(c) and n in latest and dead(latest[n])]
    if not layers:
        return []
    counts = ", ".join(f"{n} {initial[n][0]} of {initial[n][1]}" for n in layers[:4])
    return [
        Fault(
            "dead_units",
            f"units dead from step {step}, before training could kill them ({counts}), and "
            "still dead",
            "initialise the biases at zero (or slightly positive), check the inputs' scale "
            "and sign, or use LeakyReLU",
            step,
        )
    ]


def check_frozen_parameters(
    outside_optimizer: Sequence[str],
    unchanged_steps: Mapping[str, int] | None = None,
    *,
    step: int = 0,
    rules: FaultRules | None = None,
) -> list[Fault]:
    """Parameters that require a gradient but never change: not given to the optimizer, or in
    a group whose steps leave them where they are (a learning rate of zero).

    Parameters with ``requires_grad=False`` are frozen on purpose and are not listed.

    Example:
        >>> [f.kind for f in check_frozen_parameters(["backbone.0.weight"])]
        ['frozen_layers']

    Args:
        outside_optimizer: Names of trainable parameters in no param group of any optimizer.
        unchanged_steps: Per parameter, how many measured steps (in a row, up to now) left it
            unchanged although it had a gradient and others moved.
        step: The step at which this was seen.
        rules: Thresholds (the defaults when ``None``).

    Returns:
        One ``frozen_layers`` fault, or none.
    """
    rules = rules or FaultRules()
    outside = set(outside_optimizer)  # said once, not again as unchanged
    unchanged = [
        n
        for n, count in (unchanged_steps or {}).items()
        if count >= rules.frozen_steps and n not in outside
    ]
    parts = []
    if outside_optimizer:
        parts.append(
            f"{len(outside_optimizer)} trainable parameters are in no optimizer param group "
            f"({listed_names(list(outside_optimizer))})"
        )
    if unchanged:
        parts.append(
            f"{listed_names(unchanged)} had gradients but did not change in "
            f"{rules.frozen_steps} or more measured steps"
        )
    if not parts:
        return []
    return [
        Fault(
            "frozen_layers",
            "; ".join(parts),
            "give every trainable parameter to the optimizer (model.parameters()), or set "
            "requires_grad=False on what you mean to freeze",
            step,
        )
    ]
