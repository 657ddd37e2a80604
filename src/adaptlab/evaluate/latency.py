"""Measured inference latency: per-call p50/p95 over consecutive batches of real eval texts.

Latency is measured, never estimated: a strategy's ``predict`` is called on fixed-size batches
after a few unmeasured warm-up calls (the first calls pay for lazy initialisation, caches and
kernel selection, which a serving process pays once). The median describes the typical call;
p95 shows the tail a user waits for; the median's interval says how far it can be trusted.

One run timed alone (:func:`measure_latency`) is timed at its own moment: on a shared machine
two runs with the same inference graph, timed minutes apart, measured 6.1 vs 6.9 ms in one
comparison and 7.9 vs 7.5 ms in the next. Runs compared with each other are therefore timed
together (:func:`measure_interleaved`): in rounds, each run getting its share of calls in every
round, in an order that rotates, so a load change hits them all alike; :func:`summarise_rounds`
gives the median with an interval that resamples whole rounds, so a load change between rounds
widens it. Runs that compute the same thing (:func:`graph_fingerprint`) can then be priced on
their pooled rounds.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from adaptlab.evaluate.bootstrap import (
    DEFAULT_RESAMPLES,
    cluster_median_interval,
    median_interval,
)

Request = TypeVar("Request")
"""What ``predict`` takes a batch of: texts for a classifier, token-id prompts for a generator."""

MIN_MEASURED_CALLS = 5
"""The time budget never cuts measurement below this many calls: fewer make p95 meaningless."""

Predict = Callable[[Sequence[Request]], object]


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
    p50_ci: tuple[float, float]
    """Percentile-bootstrap interval of :attr:`p50_ms` (ms)."""
    per_example_ci: tuple[float, float]
    """:attr:`p50_ci` divided by the batch size."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy; the intervals as ``[low, high]``."""
        return {
            "batch_size": self.batch_size,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "per_example_ms": self.per_example_ms,
            "samples": self.samples,
            "p50_ci": list(self.p50_ci),
            "per_example_ci": list(self.per_example_ci),
        }


def _latency(
    seconds: Sequence[float], batch_size: int, p50_ci_seconds: tuple[float, float]
) -> Latency:
    """Percentiles of ``seconds`` and the median's interval, in milliseconds."""
    milliseconds = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p95 = np.percentile(milliseconds, [50, 95])
    low, high = (bound * 1000.0 for bound in p50_ci_seconds)
    return Latency(
        batch_size=batch_size,
        p50_ms=float(p50),
        p95_ms=float(p95),
        per_example_ms=float(p50) / batch_size,
        samples=len(milliseconds),
        p50_ci=(low, high),
        per_example_ci=(low / batch_size, high / batch_size),
    )


def measure_latency(
    predict: Callable[[Sequence[Request]], object],
    texts: Sequence[Request],
    *,
    batch_size: int,
    max_batches: int = 50,
    warmup: int = 3,
    time_budget_s: float = 30.0,
    clock: Callable[[], float] = time.perf_counter,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> Latency:
    """Time ``predict`` on consecutive batches of ``texts``, cycling through them as needed.

    Batch i holds ``texts[i * batch_size : (i + 1) * batch_size]`` (wrapping around), so the
    order is the same on every run. The first ``warmup`` batches are predicted unmeasured; the
    next ones are timed one call each with ``clock`` until ``max_batches`` calls are measured or
    the measured calls have taken ``time_budget_s`` in all, whichever is first, but never fewer
    than ``min(5, max_batches)`` calls. ``predict`` must return only when its work is done (on a
    GPU, after synchronising). The median's interval is a seeded percentile bootstrap over the
    measured calls (``resamples`` at level ``confidence``).
    """
    _check_settings(texts, batch_size, max_batches, warmup, time_budget_s)
    batches = _batches(texts, batch_size)
    for batch in itertools.islice(batches, warmup):
        predict(batch)
    minimum = min(MIN_MEASURED_CALLS, max_batches)
    seconds = _timed_calls(predict, batches, max_batches, minimum, time_budget_s, clock)
    interval = median_interval(seconds, resamples=resamples, confidence=confidence, seed=seed)
    return _latency(seconds, batch_size, interval)


RoundsSeconds = list[list[float]]
"""Seconds per measured call, one list per round."""


def measure_interleaved(
    predictors: Mapping[str, Predict[Request]],
    requests: Sequence[Request],
    *,
    batch_sizes: Sequence[int],
    rounds: int = 5,
    warmup: int = 3,
    max_calls: int = 50,
    time_budget_s: float = 30.0,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, dict[int, RoundsSeconds]]:
    """Time several predictors together, in rounds: run -> batch size -> seconds per round.

    First every (run, batch size) gets ``warmup`` unmeasured calls. Then, in each of
    ``rounds`` rounds and for each batch size, every run gets its share of timed calls,
    ``max_calls // rounds`` (at least 1), stopping early within the round once that run has
    spent ``time_budget_s / rounds`` there, though never before ``ceil(5 / rounds)`` calls (so
    that ``max_calls`` allowing, there are 5 in all, as :func:`measure_latency` keeps). The order
    of the runs rotates: round r starts at the r-th run, so none is always first (after a
    cache-cold gap) or last. Every run is given the same batches in the same order:
    consecutive slices of ``requests``, wrapping around, warm-up ones first.
    """
    _check_interleaved(predictors, requests, batch_sizes, rounds, max_calls, warmup, time_budget_s)
    names = list(predictors)
    batches = {(name, size): _batches(requests, size) for name in names for size in batch_sizes}
    for (name, _), stream in batches.items():
        for batch in itertools.islice(stream, warmup):
            predictors[name](batch)
    calls = max(1, max_calls // rounds)
    one_round = functools.partial(
        _timed_calls,
        calls=calls,
        floor=min(calls, math.ceil(MIN_MEASURED_CALLS / rounds)),
        budget_s=time_budget_s / rounds,
        clock=clock,
    )
    timed: dict[str, dict[int, RoundsSeconds]] = {n: {s: [] for s in batch_sizes} for n in names}
    for round_index in range(rounds):
        start = round_index % len(names)
        for size in batch_sizes:
            for name in names[start:] + names[:start]:
                timed[name][size].append(one_round(predictors[name], batches[name, size]))
    return timed


def _timed_calls(
    predict: Predict[Request],
    batches: Iterator[list[Request]],
    calls: int,
    floor: int,
    budget_s: float,
    clock: Callable[[], float],
) -> list[float]:
    """Seconds per call on the next ``batches``: ``calls`` of them, or fewer once ``budget_s``
    is spent, though never fewer than ``floor`` (one run alone, or one run's round)."""
    seconds: list[float] = []
    while len(seconds) < calls and (len(seconds) < floor or sum(seconds) < budget_s):
        batch = next(batches)
        start = clock()
        predict(batch)
        seconds.append(clock() - start)
    return seconds


def summarise_rounds(
    rounds_seconds: Sequence[Sequence[float]],
    batch_size: int,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> Latency:
    """Median and p95 over every call of every round, and the median's interval by a cluster
    bootstrap over rounds (whole rounds resampled; :func:`cluster_median_interval`): the load
    of the machine changes between rounds, and such a change widens the interval instead of
    passing for precision. Several runs are pooled by passing all their rounds. With a single
    round there is nothing to resample between rounds: the interval resamples its calls.
    """
    if not rounds_seconds or not all(len(calls) for calls in rounds_seconds):
        raise ValueError("rounds_seconds: expected at least one round, each with a timed call")
    if batch_size < 1:
        raise ValueError(f"batch_size = {batch_size}: must be >= 1")
    pooled = [seconds for calls in rounds_seconds for seconds in calls]
    if len(rounds_seconds) == 1:
        interval = median_interval(pooled, resamples=resamples, confidence=confidence, seed=seed)
    else:
        interval = cluster_median_interval(
            list(rounds_seconds), resamples=resamples, confidence=confidence, seed=seed
        )
    return _latency(pooled, batch_size, interval)


def graph_fingerprint(classifier: object) -> str | None:
    """Which inference graph a classifier runs: the first 16 hex digits of the sha256 of its
    ``inference_graph()`` as canonical JSON, ``None`` when it cannot describe itself.

    Two runs with the same fingerprint compute the same thing per request (the same encoder
    architecture on the same runtime, the same truncation, pooling and head shape) and differ
    only in their weights' values, which do not change the time a call takes.
    """
    describe = getattr(classifier, "inference_graph", None)
    if not callable(describe):
        return None
    graph = describe()
    canonical = json.dumps(graph, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


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
    _check_warmup_and_budget(warmup, time_budget_s)


def _check_interleaved(
    predictors: Mapping[str, object],
    requests: Sequence[object],
    batch_sizes: Sequence[int],
    rounds: int,
    max_calls: int,
    warmup: int,
    time_budget_s: float,
) -> None:
    if not predictors:
        raise ValueError("predictors is empty: expected at least one run to time")
    if len(requests) == 0:
        raise ValueError("requests is empty: latency needs at least one request to predict")
    if not batch_sizes:
        raise ValueError("batch_sizes is empty: expected at least one batch size")
    for position, size in enumerate(batch_sizes):
        if size < 1:
            raise ValueError(f"batch_sizes[{position}] = {size}: must be >= 1")
    for name, value in (("rounds", rounds), ("max_calls", max_calls)):
        if value < 1:
            raise ValueError(f"{name} = {value}: must be >= 1")
    _check_warmup_and_budget(warmup, time_budget_s)


def _check_warmup_and_budget(warmup: int, time_budget_s: float) -> None:
    if warmup < 0:
        raise ValueError(f"warmup = {warmup}: must be >= 0")
    if not time_budget_s > 0:
        raise ValueError(f"time_budget_s = {time_budget_s}: must be > 0")
