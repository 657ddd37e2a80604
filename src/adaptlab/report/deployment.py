"""Each run's deployment cost, projected from what its run folder measured.

Training is priced from ``cost.json``'s ``fit_wall_s``, serving from the leaderboard row's
measured time per request (:func:`adaptlab.cost.projection.measured_serving_seconds`), both on
the hardware the :class:`~adaptlab.cost.projection.ProjectionConfig` names. Priced on another
profile than the one runs were measured on, the FLOPs the work takes are needed
(:func:`adaptlab.cost.projection.strategy_costs`); they come from the run's parameter counts,
the data report's token counts and the run's epochs. A run whose cost cannot be worked out is
named with the reason and counts as dearest in the decision (unknown cost).

A distilled student's training is its own fit: the teacher is priced as its own run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from adaptlab.cost.hardware import HardwareProfile
from adaptlab.cost.model import training_flops
from adaptlab.cost.projection import (
    BreakEven,
    CostBreakdown,
    ProjectionConfig,
    StrategyCosts,
    break_even,
    cost_curve,
    measured_serving_interval,
    measured_serving_seconds,
    strategy_costs,
    total_cost,
    total_cost_interval,
)
from adaptlab.report.inputs import ReportInputs
from adaptlab.runs import RunRecord

CURVE_POINTS = 97
"""Points per cost curve: every week or so of a 12-month horizon, so re-tune steps show."""


@dataclass(frozen=True)
class Deployment:
    """Projected costs of every run whose cost could be worked out."""

    settings: ProjectionConfig
    costs: dict[str, StrategyCosts]
    unknown: dict[str, str]
    """Run name -> why its cost is unknown."""

    def breakdown(self, name: str) -> CostBreakdown | None:
        costs = self.costs.get(name)
        return None if costs is None else total_cost(costs, self.settings)

    def totals(self) -> dict[str, float]:
        """Run name -> projected total cost over the horizon, in dollars."""
        return {name: total_cost(c, self.settings).total for name, c in self.costs.items()}

    def intervals(self) -> dict[str, tuple[float, float]]:
        """Run name -> the projected total's interval, from its serving latency's interval."""
        return {name: total_cost_interval(c, self.settings) for name, c in self.costs.items()}

    def curves(self, points: int = CURVE_POINTS) -> dict[str, list[tuple[float, float]]]:
        return {name: cost_curve(c, self.settings, points) for name, c in self.costs.items()}

    def break_evens(self, name: str) -> list[BreakEven]:
        """``name`` against every other run with a known cost."""
        if name not in self.costs:
            return []
        mine = self.costs[name]
        return [
            break_even(mine, other, self.settings)
            for other_name, other in self.costs.items()
            if other_name != name
        ]


def project(
    inputs: ReportInputs, settings: ProjectionConfig, profiles: Mapping[str, HardwareProfile]
) -> Deployment:
    """The deployment costs of every run in ``inputs``."""
    costs: dict[str, StrategyCosts] = {}
    unknown: dict[str, str] = {}
    rows = {str(row["strategy"]): row for row in inputs.comparison["rows"]}
    for name, record in inputs.runs.items():
        try:
            costs[name] = run_costs(record, rows[name], inputs, settings, profiles)
        except (KeyError, TypeError, ValueError) as exc:
            unknown[name] = str(exc.args[0]) if isinstance(exc, KeyError) else str(exc)
    return Deployment(settings, costs, unknown)


def run_costs(
    record: RunRecord,
    row: Mapping[str, Any],
    inputs: ReportInputs,
    settings: ProjectionConfig,
    profiles: Mapping[str, HardwareProfile],
) -> StrategyCosts:
    fit = record.cost.fit_wall_s
    if fit is None:
        raise ValueError(f"{record.folder / 'cost.json'}: no fit_wall_s measured")
    return strategy_costs(
        record.name,
        float(fit),
        measured_serving_seconds(row, settings.serving_mode),
        profiles,
        settings,
        training_flops=_training_flops(record, inputs),
        request_flops=_request_flops(record, inputs),
        serving_interval=measured_serving_interval(row, settings.serving_mode),
    )


def _training_flops(record: RunRecord, inputs: ReportInputs) -> float | None:
    """FLOPs of the run's training (None when a fact is missing: then only pricing on the
    measured profile works, and :func:`strategy_costs` says so for another one)."""
    method = None if record.profile is None else record.profile.method
    total, trainable = record.cost.total_params, record.cost.trainable_params
    tokens = _train_tokens(inputs)
    if method is None or total is None or trainable is None or tokens is None:
        return None
    return training_flops(method, float(total), float(trainable), tokens * _epochs(record))


def _train_tokens(inputs: ReportInputs) -> float | None:
    tokens = (inputs.data_report or {}).get("tokens") or {}
    total = (tokens.get("train") or {}).get("total")
    return None if total is None else float(total)


def _epochs(record: RunRecord) -> float:
    """Epochs the run's config asked for (1 when it names none: one pass, as embedding does)."""
    try:
        config = yaml.safe_load(record.config_yaml) or {}
    except yaml.YAMLError:
        return 1.0
    train = config.get("train") if isinstance(config, dict) else None
    epochs = train.get("num_epochs") if isinstance(train, dict) else None
    return float(epochs) if epochs else 1.0


def _request_flops(record: RunRecord, inputs: ReportInputs) -> tuple[float, float] | None:
    """(parameters, tokens computed per request) for serving on an unmeasured profile."""
    params = record.cost.total_params
    tokens = _tokens_per_request(record, inputs)
    return None if params is None or tokens is None else (float(params), tokens)


def _tokens_per_request(record: RunRecord, inputs: ReportInputs) -> float | None:
    """Tokens the model computes per request: as measured by the run (an LLM prompt with a
    cached prefix, a generator's prompt and answer), else the eval set's mean input length."""
    forward = record.cost.raw.get("forward_tokens_per_request")
    if forward is not None:
        return float(forward)
    generated = record.eval.raw.get("tokens") or {}
    prompt, answer = generated.get("prompt") or {}, generated.get("generated") or {}
    if prompt.get("mean") is not None and answer.get("mean") is not None:
        return float(prompt["mean"]) + float(answer["mean"])
    tokens = ((inputs.data_report or {}).get("tokens") or {}).get("eval") or {}
    if tokens.get("total") is None or not tokens.get("count"):
        return None
    return float(tokens["total"]) / float(tokens["count"])
