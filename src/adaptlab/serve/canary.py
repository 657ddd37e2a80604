"""The canary: a candidate version served beside the champion, gated, split, watched, and then
rolled back or promoted (``adaptlab serve NAME@champion --canary NAME@candidate``).

1. **Gate** (:func:`gate`), before the candidate takes any traffic: both versions' run records
   (their per-item predictions on the locked eval set) are compared by the paired bootstrap
   ``compare`` uses (:func:`adaptlab.comparison.paired_difference`) on the champion's primary
   metric. It is a non-inferiority test: the candidate passes only when the lower bound of the
   candidate − champion interval is above −``margin``, i.e. the eval set shows it is not worse
   by more than the margin. "Not shown to be worse" would let any candidate through on a small
   eval set, whose interval is wide; this rule makes a small eval set refuse instead, which is
   the safe side for a model about to answer users. Runs scored on different eval sets, or on
   eval items without overlap, are refused: their scores cannot be paired.
2. **Split** (:func:`takes_candidate`): sha256 of the route key (the ``x-adaptlab-route-key``
   header, else the body) mod 100 < ``weight`` sends a request to the candidate, so a key is
   always on the same side. Clients name the champion; the candidate answers under the
   champion's name and is invisible: a request naming the candidate (``NAME@candidate`` or its
   version) is refused with a 404 that says so, since a client pinned to it would bypass the
   split and the guards.
3. **Guards** per window of ``window`` candidate requests (:func:`breaches`), against the
   champion's figures over the same requests-in-time: error rate, p99 prediction latency, mean
   confidence and, for classifiers, disagreement with the champion on shadowed requests (the
   champion predicts a candidate request's inputs again, in one background thread with a short
   queue that drops when full; the answer never waits for it). A classifier's confidence is its
   top probability; a generator's is its finished rate (the share of answers that ended by
   themselves rather than at ``max_new_tokens``: a generator gives no probability, and running
   on to the limit is how a broken one shows). Disagreement is judged against what the eval set
   expects: the share of eval items on which the two versions' labels differ.
4. **Rollback**: on a breach every new request goes to the champion at once (an in-process
   switch), and one already routed to the candidate but not yet computing is answered by the
   champion; predictions already computing on the candidate finish, and any candidate failure
   is answered by the champion (a stream only while nothing of it was sent), so no request fails
   because of the candidate. Then, in a background thread, the candidate alias rolls back in the
   registry (``Registry.rollback``, approver ``adaptlab-canary``, the guard and its figures as
   the reason). When the alias has no earlier version to return to (it has only ever pointed at
   the candidate), it is pointed at the champion's version instead, with the same approver and a
   reason that says so: an ``alias`` event the registry already records. A new event kind would
   need a schema change that older adaptlabs refuse to open; this keeps every registry readable,
   and a restarted server no longer canaries the refused version (the candidate now *is* the
   champion's version, which :func:`open_canary` refuses).
5. **Promotion**: once ``promote_after`` candidate requests passed in healthy windows, the
   champion alias is moved to the candidate's version (``set_alias``, approver
   ``adaptlab-canary``, the figures as the reason) and then all traffic goes to it. If the
   champion alias was moved by someone else meanwhile, nothing is recorded and all traffic stays
   on the champion (state ``halted``).

An error fast-tracks the window: once a window's errors exceed what the guard allows of the
whole window, it is closed at once, so a failing candidate is off traffic after a few requests,
not a window's worth.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
from annotated_types import Ge, Gt, Le, Lt
from prometheus_client import CollectorRegistry, Counter, Enum, Gauge
from pydantic import Field

from adaptlab import predict
from adaptlab.comparison import paired_difference
from adaptlab.config import CompareConfig, Section
from adaptlab.models.shared_base import SharedBases
from adaptlab.predict import Answer, LabelPrediction, LoadedModel
from adaptlab.registry import Event, Reference, Registry, RegistryError, parse_reference
from adaptlab.registry.catalog import registry_root
from adaptlab.runs import RunError, RunRecord, read_run
from adaptlab.serve.protocol import ApiError
from adaptlab.serve.routing import ModelTable, ServedModel

T = TypeVar("T")
logger = logging.getLogger("adaptlab.serve.canary")
Log = Callable[[str], None]

APPROVER = "adaptlab-canary"
"""Who the registry records as approving the canary's rollbacks and promotions."""
STATES = ("active", "promoting", "promoted", "rolled_back", "halted")
"""``active``: the split runs. ``promoting``: the registry is being told (the split goes on
meanwhile). ``promoted``: all traffic on the candidate. ``rolled_back`` (a guard tripped) and
``halted`` (the champion alias moved under the canary): all traffic on the champion."""
ON_CHAMPION = ("rolled_back", "halted")
MIN_REFERENCE = 5
"""Figures a guard needs on its reference side (champion requests, shadowed inputs) before it
judges: fewer make a p99 or a mean a coin toss."""
MAX_FIGURES = 10_000
"""Latencies and confidences a side keeps per window, the latest: the champion's requests
until the candidate's window fills are many at a small weight (endless at weight 0)."""


class CanarySettings(Section):
    """What the canary serves, how much traffic it gives the candidate, and when it stops."""

    candidate: str = Field(
        description="The candidate, a registered alias NAME@ALIAS of the same NAME as a served "
        "champion (NAME@champion)."
    )
    weight: Annotated[int, Ge(0), Le(100)] = Field(
        10, description="Percent of the champion's traffic the candidate answers (0-100)."
    )
    margin: Annotated[float, Ge(0), Le(100)] = Field(
        2.0,
        description="Non-inferiority margin in points of the primary metric: the candidate "
        "starts only when the lower bound of its paired-bootstrap difference to the champion on "
        "the eval set is above -margin.",
    )
    confidence: Annotated[float, Gt(0), Lt(1)] = Field(
        0.95, description="Confidence level of the gate's interval."
    )
    bootstrap_resamples: Annotated[int, Ge(100), Le(100_000)] = Field(
        2000, description="Paired-bootstrap resamples of the gate."
    )
    window: Annotated[int, Ge(5), Le(1_000_000)] = Field(
        50, description="Candidate requests per guard window."
    )
    promote_after: Annotated[int, Ge(1), Le(100_000_000)] = Field(
        500,
        description="Candidate requests in healthy windows after which the champion alias "
        "moves to the candidate (checked when a window closes).",
    )
    max_error_rate_increase: Annotated[float, Ge(0), Le(1)] = Field(
        0.05,
        description="A window breaches when the candidate's error rate is more than this "
        "above the champion's (a request past request_timeout_s counts as an error).",
    )
    max_p99_ratio: Annotated[float, Ge(1), Le(1000)] = Field(
        2.0,
        description="A window breaches when more than 1% of its candidate requests (and at "
        "least two) take longer than this times the champion's p99 prediction latency, plus "
        "latency_slack_s: the candidate's p99 is over that limit, and not by one outlier.",
    )
    latency_slack_s: Annotated[float, Ge(0), Le(3600)] = Field(
        0.05,
        description="Seconds added to the latency limit: millisecond models jitter by more "
        "than a ratio allows.",
    )
    max_confidence_drop: Annotated[float, Ge(0), Le(1)] = Field(
        0.10,
        description="A window breaches when the candidate's mean confidence (classifier: top "
        "probability; generator: finished rate) is more than this below the champion's.",
    )
    max_disagreement_increase: Annotated[float, Ge(0), Le(1)] = Field(
        0.15,
        description="Classifiers: a window breaches when the candidate's labels differ from "
        "the champion's on shadowed inputs more often than on the eval set, by more than this.",
    )
    shadow_queue: Annotated[int, Ge(0), Le(10_000)] = Field(
        8,
        description="Shadow predictions waiting for the champion; more are dropped (counted), "
        "never waited for.",
    )


class CanaryRefused(RuntimeError):
    """The canary cannot start: the gate refused the candidate, or it cannot be set up."""


# --------------------------------------------------------------------------- the gate


@dataclass(frozen=True)
class GateResult:
    """The candidate − champion difference on the eval set, and the margin it passed."""

    metric: str
    difference: float
    low: float
    high: float
    items: int
    margin: float
    """In the metric's units (0-1), not points."""
    confidence: float
    eval_disagreement: float | None
    """Classifiers: the share of shared eval items on which the two versions' labels differ."""

    @property
    def passed(self) -> bool:
        return self.low > -self.margin

    def describe(self) -> str:
        return (
            f"{self.metric} Δ {self.difference * 100:+.1f} points, "
            f"{self.confidence * 100:.0f}% interval [{self.low * 100:+.1f}, "
            f"{self.high * 100:+.1f}] on {self.items} eval items (margin {self.margin * 100:.1f})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "difference": self.difference,
            "low": self.low,
            "high": self.high,
            "items": self.items,
            "margin": self.margin,
            "confidence": self.confidence,
            "eval_disagreement": self.eval_disagreement,
        }


def gate(
    champion: RunRecord, candidate: RunRecord, settings: CanarySettings, names: tuple[str, str]
) -> GateResult:
    """The gate's figures; :class:`CanaryRefused` with them when the candidate is not shown to
    be within ``settings.margin`` points of the champion, or cannot be compared with it.
    ``names`` are the champion's and the candidate's as messages show them."""
    champion_name, candidate_name = names
    _require_comparable(champion, candidate, names)
    metric = champion.eval.primary_metric
    numbers = CompareConfig(
        bootstrap_resamples=settings.bootstrap_resamples, confidence=settings.confidence
    )
    found = paired_difference(candidate, champion, numbers, metric)
    if found is None:
        raise CanaryRefused(
            f"canary refused: {candidate_name} and {champion_name} have no per-item {metric} "
            "on eval items they both scored, so they cannot be paired"
        )
    result = GateResult(
        metric, found.difference, found.low, found.high, found.n, settings.margin / 100,
        settings.confidence, _label_disagreement(champion, candidate),
    )  # fmt: skip
    if not result.passed:
        raise CanaryRefused(
            f"canary refused: {candidate_name} may be worse than {champion_name} by more than "
            f"the margin: {result.describe()}; it starts only when the interval's lower bound "
            f"is above {-result.margin * 100:.1f} (--canary-margin)"
        )
    return result


def _require_comparable(champion: RunRecord, candidate: RunRecord, names: tuple[str, str]) -> None:
    champion_name, candidate_name = names
    ours, theirs = champion.manifest.eval_sha256, candidate.manifest.eval_sha256
    if ours != theirs:
        raise CanaryRefused(
            f"canary refused: {candidate_name} was scored on another eval set than "
            f"{champion_name} (eval_sha256 {theirs[:12]}… vs {ours[:12]}…): their scores "
            "cannot be compared; score both on the same locked eval set"
        )
    if champion.kind != candidate.kind or champion.eval.primary_metric != (
        candidate.eval.primary_metric
    ):
        raise CanaryRefused(
            f"canary refused: {candidate_name} is a {candidate.kind} run ranked on "
            f"{candidate.eval.primary_metric}, {champion_name} a {champion.kind} run ranked on "
            f"{champion.eval.primary_metric}"
        )
    try:
        shared = np.intersect1d(champion.indices, candidate.indices)
    except RunError as exc:
        raise CanaryRefused(f"canary refused: {exc}") from None
    if len(shared) == 0:
        raise CanaryRefused(
            f"canary refused: {candidate_name} and {champion_name} scored no eval item in "
            "common (each was scored on a different sample of the eval set)"
        )


def _label_disagreement(champion: RunRecord, candidate: RunRecord) -> float | None:
    """The share of shared eval items where the two classifiers' top labels differ."""
    if champion.kind != "classification":
        return None
    ours, theirs = champion.predictions, candidate.predictions
    _, at_ours, at_theirs = np.intersect1d(champion.indices, candidate.indices, return_indices=True)
    labels_ours = ours["probabilities"][at_ours].argmax(axis=1)
    labels_theirs = theirs["probabilities"][at_theirs].argmax(axis=1)
    return float(np.mean(labels_ours != labels_theirs))


# --------------------------------------------------------------------------- the split


def takes_candidate(key: bytes, weight: int) -> bool:
    """Whether the request with route key ``key`` goes to the candidate: sha256 of the key,
    read as a number, mod 100, below ``weight`` (percent)."""
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % 100 < weight


# --------------------------------------------------------------------------- the guards


@dataclass(frozen=True)
class Outcome:
    """One prediction as the guards see it."""

    seconds: float
    error: bool
    confidences: tuple[float, ...] = ()
    labels: tuple[str, ...] = ()

    @classmethod
    def of(cls, result: Any, seconds: float, timeout_s: float) -> Outcome:
        """A prediction's result (labels, answers, one streamed answer); one past the
        request's time limit counts as an error: its client was answered 504."""
        items = result if isinstance(result, list) else [result]
        confidences, labels = [], []
        for item in items:
            if isinstance(item, LabelPrediction):
                confidences.append(item.probability)
                labels.append(item.label)
            elif isinstance(item, Answer):
                confidences.append(1.0 if item.finished else 0.0)
        return cls(seconds, seconds > timeout_s, tuple(confidences), tuple(labels))


def _figures() -> deque[float]:
    return deque(maxlen=MAX_FIGURES)


@dataclass
class Tally:
    """One side's figures in the open window."""

    requests: int = 0
    errors: int = 0
    seconds: deque[float] = field(default_factory=_figures)
    confidences: deque[float] = field(default_factory=_figures)

    def add(self, outcome: Outcome) -> None:
        self.requests += 1
        self.errors += outcome.error
        self.seconds.append(outcome.seconds)
        if not outcome.error:
            self.confidences.extend(outcome.confidences)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def p99(self) -> float | None:
        return float(np.quantile(self.seconds, 0.99)) if self.seconds else None

    def mean_confidence(self) -> float | None:
        return float(np.mean(self.confidences)) if self.confidences else None

    def figures(self) -> dict[str, float | None]:
        return {
            "requests": self.requests,
            "error_rate": self.error_rate,
            "p99_latency_seconds": self.p99(),
            "mean_confidence": self.mean_confidence(),
        }


@dataclass
class Window:
    """The figures since the last window closed: the candidate's, the champion's (its routed
    requests and its shadow predictions), and the shadowed inputs' label comparison."""

    number: int = 1
    candidate: Tally = field(default_factory=Tally)
    champion: Tally = field(default_factory=Tally)
    compared: int = 0
    different: int = 0

    def disagreement(self) -> float | None:
        return self.different / self.compared if self.compared else None

    def figures(self) -> dict[str, Any]:
        return {
            "window": self.number,
            "candidate": self.candidate.figures(),
            "champion": self.champion.figures(),
            "shadowed_inputs": self.compared,
            "disagreement": self.disagreement(),
        }


@dataclass(frozen=True)
class Breach:
    guard: str
    """``error_rate``, ``p99_latency``, ``confidence`` or ``disagreement``."""
    message: str


def error_breach(window: Window, settings: CanarySettings) -> Breach | None:
    """The error-rate guard over the window's full length: more candidate errors than it allows
    of ``settings.window`` requests trip it as soon as they happen."""
    allowed = window.champion.error_rate + settings.max_error_rate_increase
    rate = window.candidate.errors / max(settings.window, window.candidate.requests)
    if rate <= allowed:
        return None
    return Breach(
        "error_rate",
        f"candidate error rate {rate:.3f} ({window.candidate.errors} errors of a "
        f"{settings.window}-request window, after {window.candidate.requests}) vs champion "
        f"{window.champion.error_rate:.3f} (allowed +{settings.max_error_rate_increase:.3f})",
    )


def breaches(
    window: Window, settings: CanarySettings, eval_disagreement: float | None
) -> list[Breach]:
    """Every guard the closed ``window`` breaches; a guard whose reference side has fewer than
    :data:`MIN_REFERENCE` figures does not judge."""
    found = [error_breach(window, settings), _latency_breach(window, settings)]
    found += [_confidence_breach(window, settings)]
    found += [_disagreement_breach(window, settings, eval_disagreement)]
    return [breach for breach in found if breach is not None]


def _latency_breach(window: Window, settings: CanarySettings) -> Breach | None:
    ours, theirs = window.champion, window.candidate
    reference, measured = ours.p99(), theirs.p99()
    if len(ours.seconds) < MIN_REFERENCE or reference is None or measured is None:
        return None
    limit = settings.max_p99_ratio * reference + settings.latency_slack_s
    slow = sum(seconds > limit for seconds in theirs.seconds)
    # "p99 over the limit" is "over 1% of requests over it"; a window of fewer than 200 needs
    # two, or one scheduler hiccup on a shared machine would roll a sound candidate back.
    if slow <= max(1, len(theirs.seconds) // 100):
        return None
    return Breach(
        "p99_latency",
        f"candidate p99 latency {measured:.3f} s vs champion {reference:.3f} s ({slow} of "
        f"{len(theirs.seconds)} requests over the limit {settings.max_p99_ratio:g}× + "
        f"{settings.latency_slack_s:g} s = {limit:.3f} s)",
    )


def _confidence_breach(window: Window, settings: CanarySettings) -> Breach | None:
    reference = window.champion.mean_confidence()
    measured = window.candidate.mean_confidence()
    if len(window.champion.confidences) < MIN_REFERENCE or reference is None or measured is None:
        return None
    if measured >= reference - settings.max_confidence_drop:
        return None
    return Breach(
        "confidence",
        f"candidate mean confidence {measured:.3f} vs champion {reference:.3f} (allowed "
        f"-{settings.max_confidence_drop:.3f})",
    )


def _disagreement_breach(
    window: Window, settings: CanarySettings, expected: float | None
) -> Breach | None:
    measured = window.disagreement()
    if expected is None or measured is None or window.compared < MIN_REFERENCE:
        return None
    limit = expected + settings.max_disagreement_increase
    if measured <= limit:
        return None
    return Breach(
        "disagreement",
        f"labels differ from the champion's on {measured:.3f} of {window.compared} shadowed "
        f"inputs vs {expected:.3f} of the eval set (allowed +"
        f"{settings.max_disagreement_increase:.3f})",
    )


# --------------------------------------------------------------------------- metrics


class CanaryMetrics:
    """The canary's Prometheus figures, in the server's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.state = Enum(
            "adaptlab_canary_state", "Where the canary stands.", states=list(STATES),
            registry=registry,
        )  # fmt: skip
        self.weight = Gauge(
            "adaptlab_canary_weight_percent",
            "Percent of the champion's traffic the candidate answers now (0 after a rollback, "
            "100 after a promotion).",
            registry=registry,
        )
        self.gate = Gauge(
            "adaptlab_canary_gate",
            "The gate's candidate minus champion difference in the primary metric (0-1): "
            "difference, low, high, margin; items: eval items paired.",
            ("figure",),
            registry=registry,
        )
        self.requests = Counter(
            "adaptlab_canary_requests",
            "Predictions through the canary, by the side that computed them and outcome.",
            ("side", "outcome"),
            registry=registry,
        )
        self.shadows = Counter(
            "adaptlab_canary_shadows",
            "Shadow predictions of the champion: compared, dropped (queue full), failed.",
            ("outcome",),
            registry=registry,
        )
        self.window = Gauge(
            "adaptlab_canary_window",
            "The last closed window's figures, by side (NaN: not measured).",
            ("figure", "side"),
            registry=registry,
        )
        self.windows = Counter(
            "adaptlab_canary_windows", "Guard windows closed, by verdict.", ("verdict",),
            registry=registry,
        )  # fmt: skip
        self.healthy = Gauge(
            "adaptlab_canary_healthy_requests",
            "Candidate requests in healthy windows so far.",
            registry=registry,
        )
        self.rollbacks = Counter(
            "adaptlab_canary_rollbacks", "Rollbacks, by guard.", ("guard",), registry=registry
        )
        self.promotions = Counter(
            "adaptlab_canary_promotions", "Promotions of the candidate.", registry=registry
        )

    def show_gate(self, result: GateResult) -> None:
        figures = {
            "difference": result.difference,
            "low": result.low,
            "high": result.high,
            "margin": result.margin,
            "items": float(result.items),
        }
        for name, value in figures.items():
            self.gate.labels(name).set(value)

    def show_window(self, window: Window) -> None:
        for side, tally in (("candidate", window.candidate), ("champion", window.champion)):
            for name, value in tally.figures().items():
                self.window.labels(name, side).set(math.nan if value is None else value)
        disagreement = window.disagreement()
        self.window.labels("disagreement", "candidate").set(
            math.nan if disagreement is None else disagreement
        )


# --------------------------------------------------------------------------- the canary


@dataclass(frozen=True)
class Side:
    """A served version by its registry coordinates."""

    model: ServedModel
    reference: Reference
    """The alias it was served by (``intent@champion``)."""
    version: int


class Canary:
    """The champion and the candidate of one split, the open window, and the state.

    :meth:`route` runs on the event loop; :meth:`call` in admission's worker threads, the
    shadows in a thread of their own and the registry writes in another: the window and the
    state change under one lock, and the router reads the state (one attribute) without it.
    """

    def __init__(
        self,
        champion: Side,
        candidate: Side,
        settings: CanarySettings,
        result: GateResult,
        *,
        registry: Path,
        timeout_s: float,
        metrics: CanaryMetrics,
        log: Log | None = None,
    ) -> None:
        self.champion, self.candidate = champion, candidate
        self.settings, self.gate = settings, result
        self.registry, self.timeout_s, self.metrics = registry, timeout_s, metrics
        self.log = log
        self.state = "active"
        self.reason: str | None = None
        self.recorded: Event | None = None
        self.healthy = 0
        self.first_error_at: float | None = None
        self.ended_at: float | None = None
        self._window = Window()
        self._pending_shadows = 0
        self._lock = threading.Lock()
        self._shadows = ThreadPoolExecutor(1, thread_name_prefix="adaptlab-canary-shadow")
        self._recorder = ThreadPoolExecutor(1, thread_name_prefix="adaptlab-canary-registry")
        metrics.show_gate(result)
        self._show_state()

    # -- routing (event loop)

    def route(self, key: bytes) -> ServedModel:
        """The side that answers a request for the champion with route key ``key``."""
        state = self.state
        if state == "promoted":
            return self.candidate.model
        if state in ON_CHAMPION or not takes_candidate(key, self.settings.weight):
            return self.champion.model
        return self.candidate.model

    # -- predicting (worker threads)

    def call(
        self, model: ServedModel, job: Callable[[LoadedModel], T], may_retry: Callable[[], bool]
    ) -> T:
        """``job`` on ``model`` (in a worker thread), watched while the canary is active; a
        candidate's failure is answered by the champion when ``may_retry()`` says nothing of
        the answer was sent yet (a stream's first piece)."""
        if self.state in ON_CHAMPION and model is self.candidate.model:
            model = self.champion.model  # routed before the switch, computed after it
        if self.state != "active":
            return model.call(job)
        if model is self.candidate.model:
            return self._candidate_call(job, may_retry)
        if model is self.champion.model:
            return self._champion_call(job)
        return model.call(job)

    def _champion_call(self, job: Callable[[LoadedModel], T]) -> T:
        start = time.perf_counter()
        try:
            result, seconds = self.champion.model.call(_timed(job))
        except Exception:
            self._record("champion", Outcome(time.perf_counter() - start, error=True))
            raise
        self._record("champion", Outcome.of(result, seconds, self.timeout_s))
        return result

    def _candidate_call(self, job: Callable[[LoadedModel], T], may_retry: Callable[[], bool]) -> T:
        start = time.perf_counter()
        try:
            result, seconds = self.candidate.model.call(_timed(job))
        except Exception as exc:
            self._record("candidate", Outcome(time.perf_counter() - start, error=True))
            if not may_retry():
                raise
            logger.warning(
                "the candidate failed (%s: %s); the champion answers", type(exc).__name__, exc
            )
            return self.champion.model.call(job)
        outcome = Outcome.of(result, seconds, self.timeout_s)
        self._record("candidate", outcome)
        if outcome.labels:
            self._shadow(job, outcome.labels)
        return result

    def _record(self, side: str, outcome: Outcome) -> None:
        self.metrics.requests.labels(side, "error" if outcome.error else "ok").inc()
        with self._lock:
            if self.state != "active":
                return
            window = self._window
            if side == "champion":
                window.champion.add(outcome)
                return
            window.candidate.add(outcome)
            if outcome.error and self.first_error_at is None:
                self.first_error_at = time.monotonic()
            self._judge(window)

    def _judge(self, window: Window) -> None:
        """Close the window when it is full (or its errors already breach), under the lock."""
        if window.candidate.requests < self.settings.window:
            early = error_breach(window, self.settings)
            if early is not None:
                self._close(window, [early])
            return
        self._close(window, breaches(window, self.settings, self.gate.eval_disagreement))

    def _close(self, window: Window, found: list[Breach]) -> None:
        self.metrics.show_window(window)
        self.metrics.windows.labels("breach" if found else "healthy").inc()
        self._window = Window(window.number + 1)
        if found:
            self._roll_back(window, found)
            return
        self.healthy += window.candidate.requests
        self.metrics.healthy.set(self.healthy)
        if self.healthy >= self.settings.promote_after:
            self._promote(window)

    # -- shadows (their own thread)

    def _shadow(self, job: Callable[[LoadedModel], Any], labels: tuple[str, ...]) -> None:
        with self._lock:
            full = self._pending_shadows >= self.settings.shadow_queue
            if self.state != "active" or full:
                self.metrics.shadows.labels("dropped").inc()
                return
            self._pending_shadows += 1
        self._shadows.submit(self._compare, job, labels)

    def _compare(self, job: Callable[[LoadedModel], Any], labels: tuple[str, ...]) -> None:
        try:
            result, seconds = self.champion.model.call(_timed(job))
        except Exception:
            logger.exception("a shadow prediction of the champion failed")
            with self._lock:
                self._pending_shadows -= 1
            self.metrics.shadows.labels("failed").inc()
            return
        outcome = Outcome.of(result, seconds, self.timeout_s)
        self.metrics.shadows.labels("compared").inc()
        with self._lock:
            self._pending_shadows -= 1
            if self.state != "active":
                return
            window = self._window
            window.champion.add(outcome)
            window.compared += len(labels)
            window.different += sum(a != b for a, b in zip(labels, outcome.labels, strict=False))

    # -- ending (under the lock; the registry in its own thread)

    def _roll_back(self, window: Window, found: list[Breach]) -> None:
        self.state, self.ended_at = "rolled_back", time.monotonic()
        self._show_state()
        for breach in found:
            self.metrics.rollbacks.labels(breach.guard).inc()
        guards = "; ".join(f"{breach.guard}: {breach.message}" for breach in found)
        self.reason = (
            f"canary rollback of {self.candidate.model.loaded.source}: in window "
            f"{window.number}, {guards}; gate: {self.gate.describe()}"
        )
        self._say(f"{self.reason}. All traffic is on {self.champion.reference}.")
        self._recorder.submit(self._record_rollback, self.reason)

    def _promote(self, window: Window) -> None:
        self.state = "promoting"
        self._show_state()
        figures = _window_words(window, self.gate.eval_disagreement)
        self.reason = (
            f"canary promotion of {self.candidate.model.loaded.source}: {self.healthy} healthy "
            f"candidate requests (promote after {self.settings.promote_after}); last window: "
            f"{figures}; gate: {self.gate.describe()}"
        )
        self._recorder.submit(self._record_promotion, self.reason)

    def _record_rollback(self, reason: str) -> None:
        try:
            self.recorded = record_rollback(
                Registry(self.registry), self.candidate, self.champion.version, reason
            )
        except Exception as exc:  # a registry error, a full disk: said, never lost silently
            self._say(f"the canary's rollback is not recorded in the registry: {exc}")
            return
        self._say(f"recorded in the registry: {_event_words(self.recorded)}")

    def _record_promotion(self, reason: str) -> None:
        try:
            event = record_promotion(Registry(self.registry), self.champion, self.candidate, reason)
        except Exception as exc:  # not recorded: the champion stays, as the registry says
            with self._lock:
                self.state, self.ended_at = "halted", time.monotonic()
                self.reason = f"not promoted: {exc}"
            self._show_state()
            self._say(f"canary halted, all traffic on {self.champion.reference}: {exc}")
            return
        with self._lock:
            self.state, self.ended_at, self.recorded = "promoted", time.monotonic(), event
        self._show_state()
        self.metrics.promotions.inc()
        self._say(f"{reason}. All traffic is on {self.candidate.model.loaded.source}.")

    # -- reporting

    def _show_state(self) -> None:
        self.metrics.state.state(self.state)
        weight = {"promoted": 100, "rolled_back": 0, "halted": 0}.get(
            self.state, self.settings.weight
        )
        self.metrics.weight.set(weight)

    def _say(self, message: str) -> None:
        _say(message, self.log)

    def describe(self) -> dict[str, Any]:
        """The canary's state, as ``GET /v1/models`` shows it on the champion."""
        with self._lock:
            return {
                "state": self.state,
                "candidate": str(self.candidate.reference),
                "candidate_version": self.candidate.model.loaded.source,
                "weight": self.settings.weight,
                "gate": self.gate.to_dict(),
                "open_window": self._window.figures(),
                "healthy_requests": self.healthy,
                "promote_after": self.settings.promote_after,
                "reason": self.reason,
                "recorded_event": None if self.recorded is None else self.recorded.id,
            }

    def close(self) -> None:
        """Drop the shadows not started, and wait for the registry writes (blocking)."""
        self._shadows.shutdown(wait=True, cancel_futures=True)
        self._recorder.shutdown(wait=True)


def _say(message: str, log: Log | None) -> None:
    """To ``log`` (the command's output) when given, else to the logger, where it shows."""
    if log is None:
        logger.warning("%s", message)
    else:
        logger.info("%s", message)
        log(message)


def _timed(job: Callable[[LoadedModel], T]) -> Callable[[LoadedModel], tuple[T, float]]:
    """``job`` that also returns its seconds, measured inside the model's lock: the time the
    model took, not the time it waited for another request's prediction."""

    def timed(loaded: LoadedModel) -> tuple[T, float]:
        start = time.perf_counter()
        result = job(loaded)
        return result, time.perf_counter() - start

    return timed


def _window_words(window: Window, eval_disagreement: float | None) -> str:
    def number(value: float | None, pattern: str) -> str:
        return "n/a" if value is None else pattern.format(value)

    ours, theirs = window.champion, window.candidate
    words = (
        f"error rate {theirs.error_rate:.3f} (champion {ours.error_rate:.3f}), p99 "
        f"{number(theirs.p99(), '{:.3f}')} s (champion {number(ours.p99(), '{:.3f}')} s), mean "
        f"confidence {number(theirs.mean_confidence(), '{:.3f}')} (champion "
        f"{number(ours.mean_confidence(), '{:.3f}')})"
    )
    if eval_disagreement is not None:
        words += (
            f", disagreement {number(window.disagreement(), '{:.3f}')} on {window.compared} "
            f"shadowed inputs (eval set {eval_disagreement:.3f})"
        )
    return words


def _event_words(event: Event | None) -> str:
    if event is None:
        return "nothing to change"
    moved = f"{event.from_version} → {event.to_version}"
    return f"event {event.id}: {event.kind} of {event.name}@{event.alias}, {moved}"


# --------------------------------------------------------------------------- the registry


def record_rollback(
    catalog: Registry, candidate: Side, champion_version: int, reason: str
) -> Event:
    """Roll the candidate's alias back, or, when it has no earlier version, point it at the
    champion's version with a reason that says so (see the module's docstring). Refused
    (:class:`RegistryError`) when the alias no longer points at the candidate: someone moved it,
    and undoing their move is not the canary's call."""
    reference = candidate.reference
    assert reference.alias is not None
    current = catalog.version(reference).version
    if current != candidate.version:
        raise RegistryError(
            f"{reference} points at version {current} now, not the canary's {candidate.version}: "
            "left as it is"
        )
    try:
        return catalog.rollback(reference.name, reference.alias, approver=APPROVER, reason=reason)
    except RegistryError as exc:
        why = (
            f"{reason}. {reference} cannot roll back ({exc}), so it points at the champion's "
            f"version {champion_version} instead"
        )
        event = catalog.set_alias(
            reference.name, reference.alias, champion_version, approver=APPROVER, reason=why
        )
        assert event is not None  # it pointed at the candidate, another version
        return event


def record_promotion(catalog: Registry, champion: Side, candidate: Side, reason: str) -> Event:
    """Move the champion's alias to the candidate's version; refused (:class:`RegistryError`)
    when it no longer points at the champion the canary served."""
    reference = champion.reference
    assert reference.alias is not None
    current = catalog.version(reference).version
    if current != champion.version:
        raise RegistryError(
            f"{reference} was moved to version {current} meanwhile (the canary served "
            f"{champion.version}): not promoted"
        )
    event = catalog.set_alias(
        reference.name, reference.alias, candidate.version, approver=APPROVER, reason=reason
    )
    assert event is not None  # the versions differ: open_canary refuses the same one
    return event


# --------------------------------------------------------------------------- wiring


class CanaryRouter:
    """The :class:`~adaptlab.serve.routing.Router` of a server with a canary: requests for the
    champion are split, any other model is answered directly, and the candidate's own names are
    refused."""

    def __init__(self, table: ModelTable, canary: Canary) -> None:
        self.table = table
        self.canary = canary
        candidate = canary.candidate
        self.hidden = {str(candidate.reference), candidate.model.loaded.source}

    def pick(self, requested: str, key: bytes) -> ServedModel:
        if requested in self.hidden:
            raise ApiError(
                404,
                f"The model '{requested}' is this server's canary candidate: clients reach it "
                f"only through the split; send '{self.canary.champion.model.name}'",
                param="model",
                code="model_not_found",
            )
        model = self.table.get(requested)
        return self.canary.route(key) if model is self.canary.champion.model else model


def open_canary(
    stack: ExitStack,
    served: Sequence[tuple[str, ServedModel]],
    settings: CanarySettings,
    *,
    registry: Path | None,
    timeout_s: float,
    metrics: CollectorRegistry,
    log: Log | None = None,
    bases: SharedBases | None = None,
) -> Canary:
    """Open the candidate (held until ``stack`` closes), gate it against the served champion of
    its name (``served``: each target as given with its model), and start the canary;
    :class:`CanaryRefused` naming what is wrong. ``bases``: the served models' shared bases (a
    candidate adapter of the champion's base is added to it)."""
    wanted = _alias_reference(settings.candidate, "--canary")
    champion = _champion(served, wanted)
    loaded = stack.enter_context(predict.open_model(settings.candidate, registry, bases))
    candidate = Side(ServedModel(champion.model.name, loaded), wanted, _version_of(loaded.source))
    _require_distinct(champion, candidate)
    names = (
        f"{champion.reference} ({champion.model.loaded.source})",
        f"{wanted} ({loaded.source})",
    )
    records = (read_run(champion.model.loaded.record.folder), read_run(loaded.record.folder))
    result = gate(*records, settings, names)
    message = (
        f"Canary: {names[1]} passed the gate against {names[0]}: {result.describe()}; it "
        f"answers {settings.weight}% of {champion.reference}'s traffic"
    )
    _say(message, log)
    return Canary(
        champion, candidate, settings, result, registry=registry_root(registry),
        timeout_s=timeout_s, metrics=CanaryMetrics(metrics), log=log,
    )  # fmt: skip


def _alias_reference(text: str, what: str) -> Reference:
    try:
        reference = parse_reference(text)
    except RegistryError as exc:
        raise CanaryRefused(f"{what} {text}: {exc}") from None
    if reference.alias is None:
        raise CanaryRefused(
            f"{what} {text}: name a registered alias (NAME@ALIAS): the canary rolls back or "
            "promotes aliases"
        )
    return reference


def _champion(served: Sequence[tuple[str, ServedModel]], wanted: Reference) -> Side:
    found = []
    for target, model in served:
        if Path(target).is_dir() or "@" not in target:
            continue
        reference = parse_reference(target)
        if reference.name == wanted.name:
            found.append(Side(model, reference, _version_of(model.loaded.source)))
    if len(found) != 1:
        shown = ", ".join(str(side.reference) for side in found) or "none"
        raise CanaryRefused(
            f"--canary {wanted}: the server must serve exactly one alias of {wanted.name} "
            f"(NAME@champion) to split with; it serves {shown}"
        )
    return found[0]


def _version_of(source: str) -> int:
    version = parse_reference(source).version
    assert version is not None, source  # open_model names a registered version NAME:N
    return version


def _require_distinct(champion: Side, candidate: Side) -> None:
    if champion.version == candidate.version:
        raise CanaryRefused(
            f"canary refused: {candidate.reference} and {champion.reference} are the same "
            f"version ({candidate.model.loaded.source}): nothing to canary"
        )
    ours, theirs = champion.model.loaded, candidate.model.loaded
    if ours.is_classifier != theirs.is_classifier or ours.label_names != theirs.label_names:
        raise CanaryRefused(
            f"canary refused: {candidate.reference} does not answer what {champion.reference} "
            f"answers (labels {list(theirs.label_names)} vs {list(ours.label_names)}); clients "
            "would see the answers' shape change"
        )
