"""Deployment projection: what each strategy costs over months of traffic, and when one pays
for itself against another.

Total cost over a horizon of M months at R requests per day, re-tuning every K months::

    total = training + retunes x retune cost + R x days(M) x serving cost per request
    retunes = ceil(M / K) - 1      (re-tunes at K, 2K, ... strictly before M; none without K)
    days(M) = M x 365.25 / 12

Training is one-off; a re-tune repeats it on fresh data (by default at the same cost);
serving is charged per request at the marginal rate of :mod:`adaptlab.cost.model`.

Break-even between strategies A and B (:func:`break_even`): each is a fixed cost F (training)
plus a cost v per request. With re-tuning, each re-tune is spread over the requests served
until the next one, adding ``retune cost / (R x days(K))`` to v — the step function of
re-tunes is replaced by its average slope, exact just after each re-tune. Then the totals
are equal after ``X = (F_A - F_B) / (v_B - v_A)`` requests: A pays for itself after X
requests when it costs more up front and less per request. When it costs more both up front
and per request it never catches up; when it costs less on both it is cheaper from the start.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le
from pydantic import Field

from adaptlab.config import Section
from adaptlab.cost.hardware import MEASURED_PROFILE, HardwareProfile, get_profile
from adaptlab.cost.model import MeasuredRun, cost_of, scale_run, seconds_per_request

ServingMode = Literal["batch_1", "batched"]

DAYS_PER_MONTH = 365.25 / 12
"""An average month, so 12 months are a year of traffic."""


class ProjectionConfig(Section):
    """Deployment assumptions the cost projection and the break-even points use."""

    months: Annotated[float, Gt(0), Le(240)] = Field(
        12, description="How long the deployment is projected, in months."
    )
    requests_per_day: Annotated[float, Ge(0)] = Field(
        10_000, description="Requests served per day."
    )
    retune_every_months: Annotated[float, Gt(0)] | None = Field(
        3,
        description="Re-train on fresh data every this many months (quarterly by default); "
        "empty: never.",
    )
    training_hardware: str = Field(
        MEASURED_PROFILE, description="Hardware profile training is priced on."
    )
    serving_hardware: str = Field(
        MEASURED_PROFILE, description="Hardware profile serving is priced on."
    )
    serving_mode: ServingMode = Field(
        "batch_1",
        description="batch_1: each request alone (measured median batch-1 latency); batched: "
        "requests share batches (measured per-example time at batch 32).",
    )


@dataclass(frozen=True)
class StrategyCosts:
    """One strategy's costs: one-off training, each re-tune, and each request served."""

    name: str
    training: float
    per_request: float
    retune: float | None = None
    """Cost of one re-tune; ``None``: the same as ``training``."""
    per_request_range: tuple[float, float] | None = None
    """The interval of :attr:`per_request` that the measured latency's interval gives
    (``None``: known as a point, e.g. scaled by FLOPs to a profile nothing was measured on)."""

    def __post_init__(self) -> None:
        for field in ("training", "per_request", "retune"):
            value = getattr(self, field)
            if value is not None and not value >= 0:
                raise ValueError(f"{self.name}: {field} = {value}: must be >= 0")
        if self.per_request_range is not None:
            low, high = self.per_request_range
            if not 0 <= low <= high:
                raise ValueError(
                    f"{self.name}: per_request_range = {self.per_request_range}: must be "
                    "0 <= low <= high"
                )

    @property
    def retune_cost(self) -> float:
        return self.training if self.retune is None else self.retune


@dataclass(frozen=True)
class CostBreakdown:
    name: str
    training: float
    retuning: float
    serving: float
    retunes: int
    requests: float

    @property
    def total(self) -> float:
        return self.training + self.retuning + self.serving


def retune_count(months: float, every_months: float | None) -> int:
    """Re-tunes at K, 2K, ... strictly before the end of the horizon (none without K)."""
    if every_months is None:
        return 0
    # The epsilon keeps 12 / 2.4 = 5.000000000000001 from counting a re-tune at month 12.
    return max(math.ceil(months / every_months - 1e-9) - 1, 0)


def total_cost(costs: StrategyCosts, settings: ProjectionConfig) -> CostBreakdown:
    """Training + re-tuning + serving over ``settings.months`` months."""
    retunes = retune_count(settings.months, settings.retune_every_months)
    requests = settings.requests_per_day * settings.months * DAYS_PER_MONTH
    return CostBreakdown(
        costs.name,
        costs.training,
        retunes * costs.retune_cost,
        requests * costs.per_request,
        retunes,
        requests,
    )


def total_cost_interval(costs: StrategyCosts, settings: ProjectionConfig) -> tuple[float, float]:
    """The projected total at the ends of the serving cost's interval: timing noise carried
    into dollars. Training is one measurement (its contention is flagged, not modelled), so
    it shifts both ends alike; a cost known as a point has an interval of width zero."""
    point = total_cost(costs, settings)
    if costs.per_request_range is None:
        return point.total, point.total
    fixed = point.training + point.retuning
    low, high = costs.per_request_range
    return fixed + point.requests * low, fixed + point.requests * high


def cumulative_cost(costs: StrategyCosts, month: float, settings: ProjectionConfig) -> float:
    """Money spent by ``month`` (0 <= month <= horizon): the curve the report plots."""
    if not 0 <= month <= settings.months:
        raise ValueError(f"month = {month}: must be in [0, {settings.months}]")
    every = settings.retune_every_months
    done = 0 if every is None else math.floor(month / every + 1e-9)
    retunes = min(done, retune_count(settings.months, every))
    serving = settings.requests_per_day * month * DAYS_PER_MONTH * costs.per_request
    return costs.training + retunes * costs.retune_cost + serving


def cost_curve(
    costs: StrategyCosts, settings: ProjectionConfig, points: int = 13
) -> list[tuple[float, float]]:
    """``(month, cumulative cost)`` at ``points`` evenly spaced months from 0 to the horizon."""
    if points < 2:
        raise ValueError(f"points = {points}: must be >= 2")
    months = [settings.months * i / (points - 1) for i in range(points)]
    return [(month, cumulative_cost(costs, month, settings)) for month in months]


# --------------------------------------------------------------------------- break-even


@dataclass(frozen=True)
class BreakEven:
    """Where two strategies' total costs cross, as a request count and in days."""

    a: str
    b: str
    requests: float | None
    """Requests after which the totals are equal; None when they never cross."""
    cheaper_before: str | None
    """The cheaper one below ``requests`` (at every volume when they never cross; None when
    they cost the same)."""
    cheaper_after: str | None
    """The cheaper one above ``requests``."""
    requests_per_day: float

    @property
    def days(self) -> float | None:
        if self.requests is None or self.requests_per_day <= 0:
            return None
        return self.requests / self.requests_per_day

    def describe(self) -> str:
        """The sentence a report prints."""
        before, after = self.cheaper_before, self.cheaper_after
        if after is None:
            return f"{self.a} and {self.b} cost the same at every volume."
        other = self.b if after == self.a else self.a
        if self.requests is None:
            return (
                f"{other} never catches up with {after}: it costs at least as much up front "
                "and per request."
            )
        days = self.days
        when = "" if days is None else f" ({_duration(days)} at {self.requests_per_day:,.0f}/day)"
        return f"{after} pays for itself after {self.requests:,.0f} requests{when} versus {before}."


def _duration(days: float) -> str:
    # Under a day, whole days would read "0 days": say hours instead.
    return f"{days:,.0f} days" if days >= 1 else f"{days * 24:.1f} hours"


def effective_per_request(costs: StrategyCosts, settings: ProjectionConfig) -> float:
    """Serving cost per request plus each re-tune spread over the requests until the next."""
    every = settings.retune_every_months
    if every is None or settings.requests_per_day <= 0:
        return costs.per_request
    requests_per_cycle = settings.requests_per_day * every * DAYS_PER_MONTH
    return costs.per_request + costs.retune_cost / requests_per_cycle


def break_even(a: StrategyCosts, b: StrategyCosts, settings: ProjectionConfig) -> BreakEven:
    """The request count at which ``a`` and ``b`` cost the same (see the module docstring)."""
    per_day = settings.requests_per_day
    # (cost per request, fixed cost, name) of each, the one dearer per request second.
    low, high = sorted(
        [(effective_per_request(c, settings), c.training, c.name) for c in (a, b)],
        key=lambda item: item[0],
    )
    (rate_low, fixed_low, name_low), (rate_high, fixed_high, name_high) = low, high
    if _same(rate_low, rate_high) and _same(fixed_low, fixed_high):
        return BreakEven(a.name, b.name, None, None, None, per_day)
    if _same(rate_low, rate_high):
        cheaper = name_low if fixed_low < fixed_high else name_high
        return BreakEven(a.name, b.name, None, cheaper, cheaper, per_day)
    if fixed_low <= fixed_high:  # cheaper per request and not dearer up front
        return BreakEven(a.name, b.name, None, name_low, name_low, per_day)
    requests = (fixed_low - fixed_high) / (rate_high - rate_low)
    return BreakEven(a.name, b.name, requests, name_high, name_low, per_day)


def _same(x: float, y: float) -> bool:
    return math.isclose(x, y, rel_tol=1e-12, abs_tol=0.0)


# --------------------------------------------------------------------------- from measurements


SERVING_FIELDS: dict[ServingMode, str] = {
    "batch_1": "latency_batch1_p50_ms",
    "batched": "latency_batch32_per_example_ms",
}
"""The ``comparison.json`` row field that holds each serving mode's time per request."""


def measured_serving_interval(
    row: Mapping[str, Any], mode: ServingMode
) -> tuple[float, float] | None:
    """The interval of :func:`measured_serving_seconds` (seconds), from the row's
    ``<field>_ci`` (``latency_batch1_p50_ci``...); ``None`` where none was measured."""
    value = row.get(SERVING_FIELDS[mode].removesuffix("_ms") + "_ci")
    if not isinstance(value, list | tuple) or len(value) != 2 or None in value:
        return None
    low, high = sorted(float(bound) / 1000 for bound in value)
    return low, high


def measured_serving_seconds(row: Mapping[str, Any], mode: ServingMode) -> float:
    """Seconds per request in serving ``mode`` from a ``comparison.json`` row."""
    key = SERVING_FIELDS[mode]
    value = row.get(key)
    if value is None:
        raise ValueError(f"{row.get('strategy', '?')}: no {key} measured for {mode} serving")
    return float(value) / 1000


def strategy_costs(
    name: str,
    fit_seconds: float,
    serving_seconds: float,
    profiles: Mapping[str, HardwareProfile],
    settings: ProjectionConfig,
    *,
    measured_on: str = MEASURED_PROFILE,
    training_flops: float | None = None,
    request_flops: tuple[float, float] | None = None,
    serving_interval: tuple[float, float] | None = None,
) -> StrategyCosts:
    """One strategy's costs from what was measured on ``measured_on``.

    ``serving_seconds`` is the measured time per request in ``settings.serving_mode``. Priced
    on the measured profile, measured times are used as they are. On another profile training
    is scaled by ``training_flops`` (:func:`adaptlab.cost.model.training_flops`) and serving by
    ``request_flops`` = (parameters, tokens computed per request); without them a clear error
    says what is missing. ``serving_interval`` (seconds, the measured latency's interval)
    becomes the per-request cost's interval where serving is priced on the measured profile.
    """
    measured = get_profile(profiles, measured_on)
    train_on = get_profile(profiles, settings.training_hardware)
    serve_on = get_profile(profiles, settings.serving_hardware)
    if train_on == measured:
        training = cost_of(fit_seconds, train_on)
    elif training_flops is None:
        raise ValueError(
            f"{name}: pricing training on '{settings.training_hardware}' needs its training "
            f"FLOPs (it was measured on '{measured_on}')"
        )
    else:
        run = MeasuredRun(fit_seconds, training_flops, measured)
        training = scale_run(run, train_on).cost if training_flops > 0 else 0.0
    serving_range = None
    if serve_on == measured:
        serving = cost_of(serving_seconds, serve_on)
        if serving_interval is not None:
            low, high = serving_interval
            # the point lies inside its own interval, whatever rounding did to the bounds
            serving_range = (
                cost_of(min(low, serving_seconds), serve_on),
                cost_of(max(high, serving_seconds), serve_on),
            )
    elif request_flops is None:
        raise ValueError(
            f"{name}: pricing serving on '{settings.serving_hardware}' needs its parameters and "
            f"tokens per request (it was measured on '{measured_on}')"
        )
    else:
        params, tokens = request_flops
        seconds = seconds_per_request(params, tokens, serve_on, serve_on.assumed_utilisation)
        serving = cost_of(seconds, serve_on)
    return StrategyCosts(name, training, serving, per_request_range=serving_range)
