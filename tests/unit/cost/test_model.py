"""Cost arithmetic: FLOPs per training method, utilisation, scaling a run to other hardware or
model sizes, and serving cost per million requests, each checked against numbers worked by
hand."""

from __future__ import annotations

from typing import get_args

import pytest

from adaptlab.cost.hardware import BUILTIN_PROFILES, MEASURED_PROFILE
from adaptlab.cost.model import (
    MeasuredRun,
    api_cost_per_million,
    cost_of,
    inference_flops,
    scale_run,
    seconds_for,
    seconds_per_request,
    serving_cost_per_million,
    training_flops,
    utilisation,
)
from adaptlab.profile import StrategyProfile, TrainingMethod

CPU = BUILTIN_PROFILES[MEASURED_PROFILE]  # 0.32 TFLOP/s, $0.096/h
A100 = BUILTIN_PROFILES["a100_40gb"]  # 312 TFLOP/s, $4.0966/h


def test_full_training_is_six_flops_per_parameter_per_token() -> None:
    assert training_flops("full", 22e6, 22e6, 1e6) == pytest.approx(6 * 22e6 * 1e6)


def test_adapter_training_skips_the_frozen_weight_gradients() -> None:
    # forward 2N + backward through activations 2N + weight gradients 2 N_t, per token
    assert training_flops("adapter", 100e6, 1e6, 1e3) == pytest.approx((400e6 + 2e6) * 1e3)
    # with every weight trainable it is full fine-tuning
    assert training_flops("adapter", 100e6, 100e6, 1e3) == training_flops("full", 100e6, 0, 1e3)


def test_feature_extraction_is_one_forward_pass_and_nothing_trains_for_none() -> None:
    assert training_flops("features", 22e6, 30_000, 1e6) == pytest.approx(2 * 22e6 * 1e6)
    assert training_flops("none", 135e6, 0, 1e6) == 0


def test_training_flops_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="exceeds total_params"):
        training_flops("adapter", 10, 11, 1)
    with pytest.raises(ValueError, match="tokens = -1"):
        training_flops("full", 10, 10, -1)


def test_every_registered_strategy_declares_a_training_method() -> None:
    import adaptlab.strategies  # noqa: F401  (importing the package registers every strategy)
    from adaptlab.strategies.base import REGISTRY

    assert REGISTRY
    for name, strategy in REGISTRY.items():
        assert isinstance(strategy.profile, StrategyProfile), name
        assert strategy.profile.method in get_args(TrainingMethod), name


def test_measured_cost_is_hours_times_price() -> None:
    assert cost_of(3600, CPU) == pytest.approx(0.096)
    assert cost_of(90, A100) == pytest.approx(90 / 3600 * 4.0966)


def test_utilisation_is_achieved_over_peak() -> None:
    # 9.6e12 FLOPs in 100 s = 9.6e10 FLOP/s of a 3.2e11 peak
    assert utilisation(9.6e12, 100, CPU) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="seconds = 0"):
        utilisation(1.0, 0, CPU)


def test_scaling_on_the_measured_profile_uses_the_measured_utilisation() -> None:
    run = MeasuredRun(seconds=100, flops=9.6e12, profile=CPU)
    bigger = scale_run(run, CPU, target_flops=2 * 9.6e12)  # a model twice the size
    assert bigger.utilisation_source == "measured"
    assert bigger.utilisation == pytest.approx(0.3)
    assert bigger.seconds == pytest.approx(200)
    assert bigger.cost == pytest.approx(200 / 3600 * 0.096)


def test_scaling_to_another_profile_uses_its_assumed_or_a_given_utilisation() -> None:
    run = MeasuredRun(seconds=100, flops=6e15, profile=CPU)
    on_a100 = scale_run(run, A100)
    # 6e15 / (312e12 x 0.3) = 64.10 s
    assert on_a100.utilisation_source == "assumed"
    assert on_a100.seconds == pytest.approx(6e15 / (312e12 * 0.3))
    assert on_a100.cost == pytest.approx(on_a100.seconds / 3600 * 4.0966)
    given = scale_run(run, A100, fraction_of_peak=0.5)
    assert given.utilisation_source == "given"
    assert given.seconds == pytest.approx(6e15 / 156e12)
    assert "50.0% of peak (given utilisation)" in given.assumption()
    with pytest.raises(ValueError, match="utilisation = 0"):
        seconds_for(1.0, A100, 0)


def test_serving_cost_per_million_from_measured_latency() -> None:
    # 10 ms each: 1e6 requests occupy the 2-core machine 10,000 s = 2.78 h x $0.096
    assert serving_cost_per_million(0.010, CPU) == pytest.approx(10_000 / 3600 * 0.096)


def test_a_few_shot_prompt_costs_more_per_request_than_a_short_fine_tuned_input() -> None:
    # SmolLM2-135M reading a 487-token prompt vs MiniLM (22.7M) reading a 15-token text
    prompt = inference_flops(134.5e6, 487)
    tuned = inference_flops(22.7e6, 15)
    assert prompt == pytest.approx(2 * 134.5e6 * 487)
    assert prompt / tuned == pytest.approx((134.5 * 487) / (22.7 * 15))
    on_l4 = BUILTIN_PROFILES["l4"]
    seconds = seconds_per_request(134.5e6, 487, on_l4, 0.3)
    assert seconds == pytest.approx(prompt / (121e12 * 0.3))


def test_hosted_api_cost_pays_for_every_prompt_token() -> None:
    # 500 input tokens at $0.15/1M tokens and 1 output token at $0.60/1M tokens, 1M times
    assert api_cost_per_million(500, 1, 0.15, 0.60) == pytest.approx(75.60)
