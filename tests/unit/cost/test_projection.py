"""Deployment projection: totals over months with re-tuning, cost curves, and break-even points
worked by hand, including the cases where one strategy never catches up."""

from __future__ import annotations

import pytest

from adaptlab.config import ConfigError, parse_config
from adaptlab.cost.hardware import BUILTIN_PROFILES
from adaptlab.cost.projection import (
    DAYS_PER_MONTH,
    ProjectionConfig,
    StrategyCosts,
    break_even,
    cost_curve,
    cumulative_cost,
    effective_per_request,
    measured_serving_seconds,
    retune_count,
    strategy_costs,
    total_cost,
)

# Fine-tuning: $50 to train, $0.20 per 1M requests. Few-shot prompting: nothing to train,
# $5.20 per 1M requests (every request carries the long prompt).
TUNED = StrategyCosts("fine_tuned", training=50.0, per_request=0.20e-6)
FEW_SHOT = StrategyCosts("few_shot", training=0.0, per_request=5.20e-6)
NO_RETUNE = ProjectionConfig(months=12, requests_per_day=10_000, retune_every_months=None)
QUARTERLY = ProjectionConfig(months=12, requests_per_day=10_000, retune_every_months=3)


@pytest.mark.parametrize(
    ("months", "every", "expected"),
    [(12, 3, 3), (12, 5, 2), (12, 12, 0), (12, 24, 0), (12, None, 0), (12, 2.4, 4), (1, 0.5, 1)],
)
def test_retunes_happen_strictly_before_the_horizon(
    months: float, every: float | None, expected: int
) -> None:
    assert retune_count(months, every) == expected


def test_total_cost_worked_by_hand() -> None:
    breakdown = total_cost(TUNED, QUARTERLY)
    # re-tunes at months 3, 6, 9: 3 x $50; 10,000/day x 365.25 days = 3,652,500 requests
    assert breakdown.retunes == 3
    assert breakdown.retuning == pytest.approx(150.0)
    assert breakdown.requests == pytest.approx(3_652_500)
    assert breakdown.serving == pytest.approx(3_652_500 * 0.20e-6)
    assert breakdown.total == pytest.approx(50 + 150 + 0.7305)


def test_a_separate_retune_cost_is_used() -> None:
    cheap_retune = StrategyCosts("t", training=50.0, per_request=0.0, retune=5.0)
    assert total_cost(cheap_retune, QUARTERLY).retuning == pytest.approx(15.0)


def test_cost_curve_starts_at_training_and_ends_at_the_total() -> None:
    curve = cost_curve(TUNED, QUARTERLY, points=13)
    assert curve[0] == (0.0, 50.0)
    assert curve[-1][1] == pytest.approx(total_cost(TUNED, QUARTERLY).total)
    costs = [cost for _, cost in curve]
    assert costs == sorted(costs)
    # the re-tune at month 3 is paid at month 3, not before
    assert cumulative_cost(TUNED, 3, QUARTERLY) - cumulative_cost(TUNED, 2.99, QUARTERLY) > 49
    with pytest.raises(ValueError, match="month = 13"):
        cumulative_cost(TUNED, 13, QUARTERLY)


def test_break_even_worked_by_hand() -> None:
    # 50 + 0.2e-6 X = 0 + 5.2e-6 X  =>  X = 50 / 5e-6 = 10,000,000 requests = 1,000 days
    result = break_even(TUNED, FEW_SHOT, NO_RETUNE)
    assert result.requests == pytest.approx(10_000_000)
    assert result.days == pytest.approx(1_000)
    assert (result.cheaper_before, result.cheaper_after) == ("few_shot", "fine_tuned")
    assert result.describe() == (
        "fine_tuned pays for itself after 10,000,000 requests (1,000 days at 10,000/day) "
        "versus few_shot."
    )
    x = result.requests
    assert TUNED.training + x * TUNED.per_request == pytest.approx(FEW_SHOT.per_request * x)


def test_break_even_within_a_day_is_said_in_hours() -> None:
    # $0.05 to train against $5/1M saved: 10,000 requests = 1 day at 10,000/day; at 40,000/day
    # the same traffic is 6 hours, not "0 days"
    cheap = StrategyCosts("tuned", training=0.05, per_request=0.0)
    prompt = StrategyCosts("prompt", training=0.0, per_request=5e-6)
    busy = ProjectionConfig(requests_per_day=40_000, retune_every_months=None)
    assert "(6.0 hours at 40,000/day)" in break_even(cheap, prompt, busy).describe()


def test_break_even_does_not_depend_on_argument_order() -> None:
    forward, backward = (
        break_even(TUNED, FEW_SHOT, NO_RETUNE),
        break_even(FEW_SHOT, TUNED, NO_RETUNE),
    )
    assert forward.requests == backward.requests
    assert forward.cheaper_after == backward.cheaper_after == "fine_tuned"


def test_retuning_spread_over_traffic_moves_the_break_even() -> None:
    busy = ProjectionConfig(months=12, requests_per_day=1_000_000, retune_every_months=3)
    # each $50 re-tune spread over 1e6/day x 3 x 30.4375 days = 91,312,500 requests
    per_cycle = 1_000_000 * 3 * DAYS_PER_MONTH
    assert per_cycle == pytest.approx(91_312_500)
    rate = 0.20e-6 + 50 / per_cycle
    assert effective_per_request(TUNED, busy) == pytest.approx(rate)
    result = break_even(TUNED, FEW_SHOT, busy)
    assert result.requests == pytest.approx(50 / (5.20e-6 - rate))  # about 11.23M
    assert result.cheaper_after == "fine_tuned"


def test_fine_tuning_never_pays_for_itself_when_retunes_outweigh_the_savings() -> None:
    # at 10,000/day a quarterly $50 re-tune adds 50 / 913,125 = $54.8 per 1M requests,
    # more than the $5.00 per 1M that fine-tuning saves on serving
    result = break_even(TUNED, FEW_SHOT, QUARTERLY)
    assert result.requests is None and result.days is None
    assert result.cheaper_before == result.cheaper_after == "few_shot"
    assert result.describe().startswith("fine_tuned never catches up with few_shot")


def test_one_cheaper_on_both_counts_is_cheaper_at_every_volume() -> None:
    dearer = StrategyCosts("dearer", training=10.0, per_request=2e-6)
    cheaper = StrategyCosts("cheaper", training=1.0, per_request=1e-6)
    result = break_even(dearer, cheaper, NO_RETUNE)
    assert result.requests is None
    assert result.cheaper_before == result.cheaper_after == "cheaper"
    same_rate = StrategyCosts("same_rate", training=5.0, per_request=2e-6)
    assert break_even(dearer, same_rate, NO_RETUNE).cheaper_after == "same_rate"
    twin = StrategyCosts("twin", training=10.0, per_request=2e-6)
    assert break_even(dearer, twin, NO_RETUNE).describe() == (
        "dearer and twin cost the same at every volume."
    )


def test_costs_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="x: per_request = -1"):
        StrategyCosts("x", training=0.0, per_request=-1)


def test_projection_settings_are_validated_with_the_line() -> None:
    with pytest.raises(ConfigError, match=r"p.yaml:2: months = 0 is not allowed"):
        parse_config("requests_per_day: 5\nmonths: 0\n", source="p.yaml", model=ProjectionConfig)
    assert parse_config("retune_every_months: null\n", "p.yaml", ProjectionConfig).months == 12


def test_strategy_costs_on_the_measured_machine_use_measured_times() -> None:
    settings = ProjectionConfig()
    costs = strategy_costs("knn", 72.0, 0.012, BUILTIN_PROFILES, settings)
    assert costs.training == pytest.approx(72 / 3600 * 0.096)
    assert costs.per_request == pytest.approx(0.012 / 3600 * 0.096)


def test_strategy_costs_elsewhere_need_flops_and_say_so() -> None:
    on_gpu = ProjectionConfig(training_hardware="a10g", serving_hardware="l4")
    with pytest.raises(ValueError, match="training on 'a10g' needs its training FLOPs"):
        strategy_costs("full", 600.0, 0.012, BUILTIN_PROFILES, on_gpu)
    with pytest.raises(ValueError, match="serving on 'l4' needs its parameters and tokens"):
        strategy_costs("full", 600.0, 0.012, BUILTIN_PROFILES, on_gpu, training_flops=1e15)
    costs = strategy_costs(
        "full",
        600.0,
        0.012,
        BUILTIN_PROFILES,
        on_gpu,
        training_flops=1e15,
        request_flops=(22.7e6, 15),
    )
    assert costs.training == pytest.approx(1e15 / (70e12 * 0.3) / 3600 * 1.006)
    assert costs.per_request == pytest.approx(2 * 22.7e6 * 15 / (121e12 * 0.3) / 3600 * 0.8048)
    with pytest.raises(KeyError, match="unknown hardware profile 'tpu'"):
        strategy_costs("full", 1.0, 0.1, BUILTIN_PROFILES, ProjectionConfig(serving_hardware="tpu"))


def test_serving_seconds_come_from_the_row_field_of_the_serving_mode() -> None:
    row = {"strategy": "knn", "latency_batch1_p50_ms": 12.0, "latency_batch32_per_example_ms": None}
    assert measured_serving_seconds(row, "batch_1") == pytest.approx(0.012)
    with pytest.raises(ValueError, match="knn: no latency_batch32_per_example_ms measured"):
        measured_serving_seconds(row, "batched")
