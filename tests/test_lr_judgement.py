"""The learning-rate judgement as a pure function: alpha against exact parabolas and a real
quadratic model, and the rules on recorded signal histories (no Trainer)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from lightning_convviz.functional.lr_judgement import (
    EpochSignals,
    JudgementRules,
    StepSignals,
    cockpit_alpha,
    judge_learning_rate,
)


@pytest.mark.parametrize("minimum", [0.25, 0.5, 1.0, 2.0, 10.0])
def test_alpha_reads_where_the_step_lands_on_a_parabola(minimum: float) -> None:
    # f(t) = (t - minimum)^2: the step t = 1 lands at 1 / minimum of the way to the minimum
    def f(t: float) -> float:
        return (t - minimum) ** 2

    assert cockpit_alpha(f(0), f(1), -2 * minimum) == pytest.approx(1 / minimum - 1)


def test_alpha_of_a_gradient_step_on_a_quadratic_model_matches_the_line_search() -> None:
    """The oracle: on f(w) = 1/2 w'Aw the exact minimum along -g lies at lr* = g'g / g'Ag."""
    generator = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(20, 20, generator=generator, dtype=torch.float64))[0]
    hessian = basis @ torch.diag(torch.logspace(-2, 1, 20, dtype=torch.float64)) @ basis.T
    weights = torch.randn(20, generator=generator, dtype=torch.float64, requires_grad=True)
    loss = 0.5 * weights @ hessian @ weights
    (gradient,) = torch.autograd.grad(loss, weights)
    best_lr = float(gradient @ gradient / (gradient @ hessian @ gradient))
    for lr in (0.3 * best_lr, best_lr, 1.7 * best_lr):
        update = -lr * gradient
        after = weights.detach() + update
        loss_after = float(0.5 * after @ hessian @ after)
        alpha = cockpit_alpha(float(loss.detach()), loss_after, float(gradient @ update))
        assert alpha == pytest.approx(lr / best_lr - 1, abs=1e-9)


def test_alpha_is_minus_one_when_still_going_downhill_and_none_when_uphill() -> None:
    assert cockpit_alpha(1.0, 0.0, -0.5) == -1.0  # fell more than the slope predicts: concave
    assert cockpit_alpha(1.0, 1.2, 0.1) is None  # the update did not point downhill
    assert cockpit_alpha(1.0, math.nan, -0.1) is None


def steps(
    alpha: float | None, lr: float = 1e-3, count: int = 12, **fields: object
) -> list[StepSignals]:
    return [
        StepSignals(step=5 * i, lr=lr, alpha=alpha, update_ratio=1e-3, grad_norm=1.0, **fields)  # type: ignore[arg-type]
        for i in range(count)
    ]


def epochs(losses: list[float]) -> list[EpochSignals]:
    return [EpochSignals(i, 20 * (i + 1), loss) for i, loss in enumerate(losses)]


def test_good_steps_are_healthy_with_no_suggestion() -> None:
    judgement = judge_learning_rate(steps(0.0), epochs([2.0, 1.0, 0.5]))
    assert judgement.verdict == "healthy so far" and judgement.suggested_lr is None
    assert judgement.findings == ()


def test_overshooting_steps_are_too_high_and_the_suggestion_is_lower() -> None:
    judgement = judge_learning_rate(steps(3.0, lr=0.03), epochs([2.0, 1.9]))
    assert judgement.verdict == "too high"
    assert judgement.suggested_lr is not None and judgement.suggested_lr < 0.03
    assert "alpha 3.00 over the last 8 measurements at lr 0.03" in judgement.findings[0].evidence


def test_barely_moving_steps_are_too_low_and_the_suggestion_is_higher() -> None:
    judgement = judge_learning_rate(steps(-0.99, lr=1e-5), epochs([2.3, 2.29, 2.28]))
    assert judgement.verdict == "too low"
    assert judgement.suggested_lr is not None and judgement.suggested_lr > 1e-5


def test_a_slow_run_s_suggestion_brings_its_update_ratio_up_to_the_target() -> None:
    """The parabolas at alpha -0.9 ask for 12x; updates of 2e-5 of the weights need 50x to
    reach 1e-3: the larger factor is suggested, and the note says why."""
    slow = [dataclasses.replace(s, update_ratio=2e-5) for s in steps(-0.9, lr=1e-4)]
    judgement = judge_learning_rate(slow, epochs([2.3, 2.29, 2.28]))
    assert judgement.verdict == "too low"
    assert judgement.suggested_lr == pytest.approx(1e-4 * 50)
    assert any(
        "(50x the learning rate: to bring the update/weight ratio from 2e-05 to about 0.001)" in n
        for n in judgement.notes
    )


def test_the_factor_is_written_without_an_exponent() -> None:
    """The largest change reads 100x, not 1e+02x."""
    stuck = [dataclasses.replace(s, update_ratio=1e-7) for s in steps(-0.99, lr=1e-5)]
    judgement = judge_learning_rate(stuck, epochs([2.3, 2.29, 2.28]))
    assert any("(100x the learning rate: " in n for n in judgement.notes), judgement.notes


def test_the_parabolas_stand_where_they_ask_for_more_than_the_update_ratio() -> None:
    judgement = judge_learning_rate(steps(-0.9, lr=1e-4), epochs([2.3, 2.29, 2.28]))
    assert judgement.suggested_lr == pytest.approx(1e-4 * 1.2 / 0.1)
    assert judgement.suggested_lr == pytest.approx(
        judge_learning_rate(
            steps(-0.9, lr=1e-4),
            epochs([2.3, 2.29, 2.28]),
            rules=JudgementRules(update_ratio_target=0.0),
        ).suggested_lr
    )


def test_a_too_high_suggestion_ignores_the_update_ratio_target() -> None:
    fast = [dataclasses.replace(s, update_ratio=1e-6) for s in steps(3.0, lr=0.03)]
    judgement = judge_learning_rate(fast, epochs([2.3, 2.29, 2.28]))
    assert judgement.verdict == "too high"
    assert judgement.suggested_lr is not None and judgement.suggested_lr < 0.03


def test_too_few_measurements_give_no_step_size_verdict() -> None:
    rules = JudgementRules()
    few = steps(-1.0, count=rules.min_measurements - 1)
    assert judge_learning_rate(few, []).verdict == "healthy so far"


def test_a_warmup_is_not_too_low() -> None:
    """During a warmup the learning rate is far below the schedule's peak, on purpose."""
    warming = [
        StepSignals(step=i, lr=1e-3 * (i + 1) / 40, alpha=-1.0, update_ratio=1e-5, grad_norm=1.0)
        for i in range(0, 16)
    ]
    judgement = judge_learning_rate(warming, [], peak_lr=1e-3, scheduler="LambdaLR")
    assert judgement.verdict == "healthy so far"
    assert any("warmup or annealing" in note for note in judgement.notes)


def test_the_annealed_tail_of_a_schedule_is_not_judged() -> None:
    at_peak = [StepSignals(i, 1e-3, 0.1, 1e-3, 1.0) for i in range(12)]
    annealed = [StepSignals(12 + i, 1e-5, -1.0, 1e-5, 1.0) for i in range(12)]
    judgement = judge_learning_rate(at_peak + annealed, epochs([2.0, 1.0]), peak_lr=1e-3)
    assert judgement.verdict == "healthy so far"


def test_a_scheduled_run_gets_a_suggestion_for_its_peak() -> None:
    overshooting = [StepSignals(i, 0.05, 3.0, 1e-2, 1.0) for i in range(12)]
    judgement = judge_learning_rate(overshooting, [], peak_lr=0.1, scheduler="OneCycleLR")
    assert judgement.verdict == "too high"
    assert judgement.suggested_lr is not None and judgement.suggested_lr < 0.1
    assert any("peak of about" in note and "OneCycleLR" in note for note in judgement.notes)


def test_steps_skipped_by_the_fp16_grad_scaler_are_no_finding() -> None:
    """Every measured step skipped with an infinite gradient norm: the GradScaler at work."""
    skipped = steps(None, count=12, skipped=True)
    skipped = [StepSignals(s.step, s.lr, None, 0.0, math.inf, skipped=True) for s in skipped]
    judgement = judge_learning_rate(skipped, epochs([2.0, 1.5]))
    assert judgement.verdict == "healthy so far", judgement.findings
    assert any("12 of 12 measured steps were skipped" in note for note in judgement.notes)


def test_an_infinite_gradient_on_a_step_taken_is_too_high() -> None:
    taken = [StepSignals(0, 1e-3, 0.0, 1e-3, 1.0), StepSignals(5, 1e-3, None, 1e-3, math.inf)]
    judgement = judge_learning_rate(taken, [])
    assert judgement.verdict == "too high"
    assert "gradient norm inf at step 5" in judgement.findings[0].evidence


def test_clipped_updates_are_said() -> None:
    clipped = steps(0.0, clipped=True)
    judgement = judge_learning_rate(clipped, epochs([2.0, 1.0]))
    assert judgement.verdict == "healthy so far"
    assert any("clipped in 12 of 12" in note for note in judgement.notes)


def test_a_nan_loss_is_too_high_for_good() -> None:
    judgement = judge_learning_rate(steps(0.0), epochs([2.0, 1.0]), first_nonfinite_loss_step=7)
    assert judgement.verdict == "too high"
    assert judgement.findings[0].evidence == "the loss became NaN or infinite at step 7"
    assert judgement.suggested_lr is not None and judgement.suggested_lr < 1e-3


def test_divergence_needs_to_give_back_progress() -> None:
    assert judge_learning_rate([], epochs([2.0, 0.008, 0.019])).verdict == "healthy so far"
    diverged = judge_learning_rate([], epochs([2.0, 0.5, 1.8]))
    assert diverged.verdict == "too high" and diverged.findings[0].key == "diverging"
