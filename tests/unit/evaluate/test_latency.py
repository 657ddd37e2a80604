"""Latency measurement: batch order, warm-up, stopping rules, a real sleep within loose bounds;
interleaved rounds over several runs, their summary with a cluster-bootstrap interval, and the
inference-graph fingerprint."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from adaptlab.evaluate.latency import (
    graph_fingerprint,
    measure_interleaved,
    measure_latency,
    summarise_rounds,
)


class FakeClock:
    """A clock that only moves when the fake model "works", by a scripted amount per call."""

    def __init__(self, call_seconds: Sequence[float]) -> None:
        self.now = 0.0
        self.call_seconds = list(call_seconds)
        self.batches: list[list[str]] = []

    def __call__(self) -> float:
        return self.now

    def predict(self, batch: Sequence[str]) -> list[int]:
        self.now += self.call_seconds[len(self.batches) % len(self.call_seconds)]
        self.batches.append(list(batch))
        return [len(text) for text in batch]


def test_batches_are_consecutive_cycle_and_skip_warmup() -> None:
    clock = FakeClock([0.001])
    texts = ["t0", "t1", "t2", "t3", "t4"]
    latency = measure_latency(
        clock.predict, texts, batch_size=2, max_batches=5, warmup=2, clock=clock
    )
    assert clock.batches == [
        ["t0", "t1"],
        ["t2", "t3"],  # the two warm-up batches
        ["t4", "t0"],
        ["t1", "t2"],
        ["t3", "t4"],
        ["t0", "t1"],
        ["t2", "t3"],
    ]
    assert latency.samples == 5


def test_percentiles_and_per_example_time_come_from_measured_calls_only() -> None:
    # The warm-up call takes 5 s and must not count; then 1..20 ms, once each.
    clock = FakeClock([5.0] + [ms / 1000 for ms in range(1, 21)])
    latency = measure_latency(
        clock.predict, ["x"] * 7, batch_size=4, max_batches=20, warmup=1, clock=clock
    )
    assert latency.samples == 20
    assert latency.p50_ms == pytest.approx(10.5)
    assert latency.p95_ms == pytest.approx(19.05)
    assert latency.per_example_ms == pytest.approx(10.5 / 4)
    assert latency.to_dict() == {
        "batch_size": 4,
        "p50_ms": latency.p50_ms,
        "p95_ms": latency.p95_ms,
        "per_example_ms": latency.per_example_ms,
        "samples": 20,
        "p50_ci": list(latency.p50_ci),
        "per_example_ci": list(latency.per_example_ci),
    }
    low, high = latency.p50_ci
    assert low <= latency.p50_ms <= high and high - low < 19  # the median's, not the range's
    assert latency.per_example_ci == pytest.approx((low / 4, high / 4))


def test_time_budget_stops_early_but_not_before_five_calls() -> None:
    clock = FakeClock([0.4])
    latency = measure_latency(
        clock.predict, ["x"], batch_size=1, warmup=0, time_budget_s=1.0, clock=clock
    )
    assert latency.samples == 5  # 1 s is spent after 3 calls; the floor of 5 still holds
    clock = FakeClock([0.125])
    latency = measure_latency(
        clock.predict, ["x"], batch_size=1, warmup=0, time_budget_s=1.0, clock=clock
    )
    assert latency.samples == 8
    clock = FakeClock([0.4])
    latency = measure_latency(
        clock.predict, ["x"], batch_size=1, max_batches=2, warmup=0, time_budget_s=0.1, clock=clock
    )
    assert latency.samples == 2  # max_batches below the floor wins


def test_a_model_sleeping_two_milliseconds_measures_about_two_milliseconds() -> None:
    def predict(batch: Sequence[str]) -> None:
        time.sleep(0.002)

    latency = measure_latency(predict, ["a", "b", "c"], batch_size=8, max_batches=10, warmup=1)
    assert latency.samples == 10
    # Sleep never returns early; a loaded machine may oversleep, so the upper bound is loose.
    assert 1.9 <= latency.p50_ms <= latency.p95_ms < 100
    assert latency.per_example_ms == pytest.approx(latency.p50_ms / 8)


@pytest.mark.parametrize(
    ("texts", "settings", "message"),
    [
        ([], {}, "texts is empty"),
        (["x"], {"batch_size": 0}, "batch_size = 0: must be >= 1"),
        (["x"], {"max_batches": 0}, "max_batches = 0: must be >= 1"),
        (["x"], {"warmup": -1}, "warmup = -1: must be >= 0"),
        (["x"], {"time_budget_s": 0.0}, "time_budget_s = 0.0: must be > 0"),
    ],
)
def test_bad_settings_are_refused(
    texts: list[str], settings: dict[str, float], message: str
) -> None:
    arguments = {"batch_size": 2, **settings}
    with pytest.raises(ValueError, match=message):
        measure_latency(lambda batch: None, texts, **arguments)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- interleaved rounds


class SharedClock:
    """One clock for several fake runs: each call of run ``name`` moves it by that run's next
    scripted duration, and is logged as (run, batch)."""

    def __init__(self, durations: dict[str, Sequence[float]]) -> None:
        self.now = 0.0
        self.durations = {name: list(seconds) for name, seconds in durations.items()}
        self.calls: list[tuple[str, list[str]]] = []

    def __call__(self) -> float:
        return self.now

    def predictor(self, name: str) -> Callable[[Sequence[str]], None]:
        def predict(batch: Sequence[str]) -> None:
            done = sum(1 for run, _ in self.calls if run == name)
            script = self.durations[name]
            self.now += script[min(done, len(script) - 1)]
            self.calls.append((name, list(batch)))

        return predict

    def predictors(self) -> dict[str, Callable[[Sequence[str]], None]]:
        return {name: self.predictor(name) for name in self.durations}


def test_rounds_rotate_the_run_order_after_unmeasured_warmup() -> None:
    # Each run's first call (the warm-up) takes 5 s; then run a takes 1 ms, b 2 ms, c 3 ms.
    clock = SharedClock({"a": [5.0, 0.001], "b": [5.0, 0.002], "c": [5.0, 0.003]})
    timed = measure_interleaved(
        clock.predictors(),
        ["t0", "t1", "t2"],
        batch_sizes=[1],
        rounds=3,
        warmup=1,
        max_calls=6,
        clock=clock,
    )
    order = "".join(run for run, _ in clock.calls)
    assert order == "abc" + "aabbcc" + "bbccaa" + "ccaabb"  # warm-up, then rounds 0, 1, 2
    assert timed["a"] == {1: [[pytest.approx(0.001)] * 2] * 3}
    assert timed["c"] == {1: [[pytest.approx(0.003)] * 2] * 3}  # no 5 s warm-up in it


def test_every_run_gets_the_same_consecutive_batches_at_each_batch_size() -> None:
    clock = SharedClock({"a": [0.001], "b": [0.001]})
    measure_interleaved(
        clock.predictors(),
        ["t0", "t1", "t2"],
        batch_sizes=[1, 2],
        rounds=2,
        warmup=1,
        max_calls=2,
        clock=clock,
    )
    sequence = [(run, batch) for run, batch in clock.calls]
    assert sequence == [
        ("a", ["t0"]),  # warm-up: every (run, batch size)
        ("a", ["t0", "t1"]),
        ("b", ["t0"]),
        ("b", ["t0", "t1"]),
        ("a", ["t1"]),  # round 0: batch 1 for each run, then batch 2
        ("b", ["t1"]),
        ("a", ["t2", "t0"]),
        ("b", ["t2", "t0"]),
        ("b", ["t2"]),  # round 1 starts at run b
        ("a", ["t2"]),
        ("b", ["t1", "t2"]),
        ("a", ["t1", "t2"]),
    ]


def test_the_budget_is_spread_over_the_rounds_and_keeps_five_calls_in_all() -> None:
    clock = SharedClock({"a": [0.125]})
    timed = measure_interleaved(
        clock.predictors(),
        ["x"],
        batch_sizes=[1],
        rounds=2,
        warmup=0,
        time_budget_s=1.0,
        clock=clock,
    )
    assert [len(calls) for calls in timed["a"][1]] == [4, 4]  # 0.5 s per round
    clock = SharedClock({"a": [0.4]})
    timed = measure_interleaved(
        clock.predictors(),
        ["x"],
        batch_sizes=[1],
        rounds=2,
        warmup=0,
        time_budget_s=1.0,
        clock=clock,
    )
    assert [len(calls) for calls in timed["a"][1]] == [3, 3]  # spent after 2; ceil(5 / 2) kept
    clock = SharedClock({"a": [0.4]})
    timed = measure_interleaved(
        clock.predictors(), ["x"], batch_sizes=[1], rounds=10, warmup=0, max_calls=4, clock=clock
    )
    assert [len(calls) for calls in timed["a"][1]] == [1] * 10  # at least one call a round


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"predictors": {}}, "predictors is empty"),
        ({"requests": []}, "requests is empty"),
        ({"batch_sizes": [1, 0]}, r"batch_sizes\[1\] = 0: must be >= 1"),
        ({"rounds": 0}, "rounds = 0: must be >= 1"),
        ({"max_calls": 0}, "max_calls = 0: must be >= 1"),
        ({"warmup": -1}, "warmup = -1: must be >= 0"),
        ({"time_budget_s": 0.0}, "time_budget_s = 0.0: must be > 0"),
    ],
)
def test_bad_interleaved_settings_are_refused(changes: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {
        "predictors": {"a": lambda batch: None},
        "requests": ["x"],
        "batch_sizes": [1],
        **changes,
    }
    predictors, requests = arguments.pop("predictors"), arguments.pop("requests")
    with pytest.raises(ValueError, match=message):
        measure_interleaved(predictors, requests, **arguments)


def test_summary_of_rounds_gives_percentiles_over_every_call_and_a_median_interval() -> None:
    rounds = [[0.001, 0.002, 0.003], [0.004, 0.005], [0.006, 0.007, 0.008, 0.009]]
    latency = summarise_rounds(rounds, 4, resamples=500)
    assert latency.samples == 9 and latency.batch_size == 4
    assert latency.p50_ms == pytest.approx(5.0)
    assert latency.p95_ms == pytest.approx(8.6)
    assert latency.per_example_ms == pytest.approx(5.0 / 4)
    low, high = latency.p50_ci
    assert low <= latency.p50_ms <= high
    assert latency.per_example_ci == pytest.approx((low / 4, high / 4))
    assert summarise_rounds(rounds, 4, resamples=500) == latency  # seeded: deterministic
    assert summarise_rounds(rounds, 4, resamples=500, seed=1).p50_ci != latency.p50_ci


def test_a_load_change_between_rounds_widens_the_interval() -> None:
    # The same 40 calls: in the first case half the rounds ran on a loaded machine (2 ms a
    # call), in the second every round saw both; resampling rounds must tell them apart.
    shifted = [[0.001] * 10, [0.002] * 10, [0.001] * 10, [0.002] * 10]
    mixed = [[0.001] * 5 + [0.002] * 5 for _ in range(4)]
    wide, narrow = summarise_rounds(shifted, 1), summarise_rounds(mixed, 1)
    assert wide.p50_ms == narrow.p50_ms == pytest.approx(1.5)
    assert wide.p50_ci == pytest.approx((1.0, 2.0))
    assert narrow.p50_ci == pytest.approx((1.5, 1.5))


def test_pooled_runs_are_summarised_as_one() -> None:
    a = [[0.001, 0.003], [0.002, 0.002]]
    b = [[0.004, 0.002], [0.003, 0.001]]
    pooled = summarise_rounds(a + b, 1, resamples=200)
    assert pooled.samples == 8
    assert pooled.p50_ms == pytest.approx(2.0)
    assert pooled.p50_ci[0] <= 2.0 <= pooled.p50_ci[1]


def test_one_round_resamples_its_calls() -> None:
    latency = summarise_rounds([[ms / 1000 for ms in range(1, 21)]], 1, resamples=500)
    low, high = latency.p50_ci
    assert low < latency.p50_ms < high


def test_summary_refuses_an_empty_round() -> None:
    with pytest.raises(ValueError, match="each with a timed call"):
        summarise_rounds([[0.001], []], 1)
    with pytest.raises(ValueError, match="batch_size = 0"):
        summarise_rounds([[0.001]], 0)


# --------------------------------------------------------------------------- graph fingerprints


@dataclass
class Described:
    graph: dict[str, Any]

    def inference_graph(self) -> dict[str, Any]:
        return self.graph


def test_graph_fingerprint_is_canonical_and_none_without_a_description() -> None:
    first = graph_fingerprint(Described({"runtime": "torch", "head": [32, 3]}))
    same = graph_fingerprint(Described({"head": [32, 3], "runtime": "torch"}))
    other = graph_fingerprint(Described({"runtime": "onnx", "head": [32, 3]}))
    assert first == same and first != other
    assert first is not None and len(first) == 16 and int(first, 16) >= 0
    assert graph_fingerprint(object()) is None
