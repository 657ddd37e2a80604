"""Measured inference latency: per-call p50/p95 over consecutive batches of real eval texts.

Latency is measured, never estimated: a strategy's ``predict`` is called on fixed-size batches
after a few unmeasured warm-up calls (the first calls pay for lazy initialisation, caches and
kernel selection, which a serving process pays once). The median describes the typical call;
p95 shows the tail a user waits for.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TypeVar

import numpy as np

Request = TypeVar("Request")
"""What ``predict`` takes a batch of: texts for a classifier, token-id prompts for a generator."""

MIN_MEASURED_CALLS = 5
"""The time budget never cuts measurement below this many calls: fewer make p95 meaningless."""


@dataclass(frozen=True)
class Latency:
    """Per-call latency percentiles at one batch size."""

    batch_size: int
    p50_ms: float
    p95_ms: float
    per_example_ms: float
    """Median per-call latency divided by the batch size."""
    samples: int
    """How many calls were measured."""

    def to_dict(self) -> dict[str, float | int]:
        """A JSON-ready copy."""
        return asdict(self)


def measure_latency(
    predict: Callable[[Sequence[Request]], object],
    texts: Sequence[Request],
    *,
    batch_size: int,
    max_batches: int = 50,
    warmup: int = 3,
    time_budget_s: float = 30.0,
    clock: Callable[[], float] = time.perf_counter,
) -> Latency:
    """Time ``predict`` on consecutive batches of ``texts``, cycling through them as needed.

    Batch i holds ``texts[i * batch_size : (i + 1) * batch_size]`` (wrapping around), so the
    order is the same on every run. The first ``warmup`` batches are predicted unmeasured; the
    next ones are timed one call each with ``clock`` until ``max_batches`` calls are measured or
    the measured calls have taken ``time_budget_s`` in all, whichever is first, but never fewer
    than ``min(5, max_batches)`` calls. ``predict`` must return only when its work is done (on a
    GPU, after synchronising).
    """
    _check_settings(texts, batch_size, max_batches, warmup, time_budget_s)
    batches = _batches(texts, batch_size)
    for batch in itertools.islice(batches, warmup):
        predict(batch)
    seconds = _timed_calls(predict, batches, max_batches, time_budget_s, clock)
    milliseconds = np.asarray(seconds) * 1000.0
    p50, p95 = np.percentile(milliseconds, [50, 95])
    return Latency(
        batch_size=batch_size,
        p50_ms=float(p50),
        p95_ms=float(p95),
        per_example_ms=float(p50) / batch_size,
        samples=len(seconds),
    )


def _timed_calls(
    predict: Callable[[Sequence[Request]], object],
    batches: Iterator[list[Request]],
    max_batches: int,
    time_budget_s: float,
    clock: Callable[[], float],
) -> list[float]:
    """Seconds per call, stopping at ``max_batches`` or when the budget is spent."""
    minimum = min(MIN_MEASURED_CALLS, max_batches)
    seconds: list[float] = []
    while True:
        batch = next(batches)
        start = clock()
        predict(batch)
        seconds.append(clock() - start)
        if len(seconds) >= max_batches or (
            len(seconds) >= minimum and sum(seconds) >= time_budget_s
        ):
            return seconds


def _batches(texts: Sequence[Request], batch_size: int) -> Iterator[list[Request]]:
    """Endless consecutive batches of ``batch_size`` texts, wrapping around the end."""
    positions = itertools.cycle(range(len(texts)))
    while True:
        yield [texts[position] for position in itertools.islice(positions, batch_size)]


def _check_settings(
    texts: Sequence[object], batch_size: int, max_batches: int, warmup: int, time_budget_s: float
) -> None:
    if len(texts) == 0:
        raise ValueError("texts is empty: latency needs at least one text to predict")
    if batch_size < 1:
        raise ValueError(f"batch_size = {batch_size}: must be >= 1")
    if max_batches < 1:
        raise ValueError(f"max_batches = {max_batches}: must be >= 1")
    if warmup < 0:
        raise ValueError(f"warmup = {warmup}: must be >= 0")
    if not time_budget_s > 0:
        raise ValueError(f"time_budget_s = {time_budget_s}: must be > 0")
