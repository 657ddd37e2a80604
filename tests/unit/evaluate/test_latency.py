"""Latency measurement: batch order, warm-up, stopping rules, a real sleep within loose bounds."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest

from adaptlab.evaluate.latency import measure_latency


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
    }


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
