"""The strategy protocol and its registry.

A strategy says only what is special about it: its config, which parameters it trains, its
loss, and what it saves. Everything else (data, batching, the training loop, evaluation, the
run directory) is shared. Adding one is one file in this package that ends in
``register(XStrategy)``, one import line in ``strategies/__init__.py`` and one row in the shared
test matrix (``tests/unit/strategies/test_matrix.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from adaptlab.config import ExperimentConfig, TrainConfig

Track = Callable[[Iterable[Any], str, int], Iterable[Any]]


def no_progress(items: Iterable[Any], description: str, total: int) -> Iterable[Any]:
    return items


class StrategyConfig(BaseModel):
    """Base of every strategy's config: unknown keys are errors; ``train`` overrides the
    experiment's training settings for this strategy only (same keys as the ``train`` section).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    train: dict[str, Any] = Field(
        default_factory=dict,
        description="Training settings for this strategy only (keys of the train section).",
    )

    def default_train(self) -> dict[str, Any]:
        """Settings that suit this strategy better than the loop's generic defaults."""
        return {}

    def other_models(self) -> list[str]:
        """Models the run uses besides the experiment's base model (an LLM to prompt, a
        retriever): their content fingerprints go into the run's manifest, so replacing one
        makes the run stale, and serving counts their size."""
        return []


@dataclass(frozen=True)
class ClassificationTask:
    """Texts and integer labels of the prepared train and locked eval sets."""

    label_names: tuple[str, ...]
    train_texts: list[str]
    train_labels: np.ndarray
    eval_texts: list[str]
    eval_labels: np.ndarray
    train_sha256: str
    eval_sha256: str

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


@runtime_checkable
class Classifier(Protocol):
    """A fitted model that maps texts to a probability for every label."""

    label_names: Sequence[str]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), num_labels)`` probabilities, rows summing to one."""
        ...


@dataclass
class RunContext:
    """Everything a strategy may use while fitting, and the folder it writes to."""

    name: str
    folder: Path
    task: ClassificationTask
    experiment: ExperimentConfig
    config: StrategyConfig
    train: TrainConfig
    runs_root: Path
    track: Track = no_progress
    resume: bool = False  # an interrupted run with the same config left a checkpoint
    facts: dict[str, Any] = field(default_factory=dict)  # measured by the strategy: params, steps

    @property
    def base_model(self) -> str:
        return self.experiment.model.base_model

    @property
    def max_length(self) -> int:
        return self.experiment.model.sequence_len

    def record(self, **facts: Any) -> None:
        """Facts the strategy measured (trainable/total parameters, steps) for cost.json."""
        self.facts.update(facts)


class Strategy(Protocol):
    """What every strategy implements."""

    name: ClassVar[str]
    config_type: ClassVar[type[StrategyConfig]]
    trains: ClassVar[bool]  # whether it runs the shared training loop

    def requires(self, config: StrategyConfig) -> list[str]:
        """Names of runs that must exist before this one (a distillation teacher)."""
        ...

    def fit(self, run: RunContext) -> Classifier:
        """Fit on ``run.task`` and write the artefacts into ``run.folder``."""
        ...

    def load(self, run: RunContext) -> Classifier:
        """Rebuild the fitted classifier from ``run.folder`` alone."""
        ...


StrategyT = TypeVar("StrategyT")
REGISTRY: dict[str, type[Any]] = {}


def register(strategy: type[StrategyT]) -> type[StrategyT]:
    """Make a strategy available under its ``name`` (one call at the end of its file)."""
    name = strategy.name  # type: ignore[attr-defined]
    if name in REGISTRY and REGISTRY[name] is not strategy:
        raise ValueError(f"strategy '{name}' is registered twice")
    REGISTRY[name] = strategy
    return strategy


def get_strategy(name: str) -> Strategy:
    """An instance of the registered strategy ``name``, or a clear error listing them."""
    from adaptlab import strategies  # noqa: F401  (importing the package registers them all)

    if name not in REGISTRY:
        raise KeyError(f"unknown strategy '{name}'; available: {', '.join(sorted(REGISTRY))}")
    instance: Strategy = REGISTRY[name]()
    return instance


def resolve_run(name: str, raw: dict[str, Any] | None) -> tuple[Strategy, StrategyConfig]:
    """The strategy and validated config behind a run name.

    A run is usually named after its strategy; ``strategies.<run>.strategy: <name>`` runs a
    strategy under another name, so one experiment can hold e.g. ``setfit_k8`` and
    ``setfit_k10``, or ``lora`` and ``dora``.
    """
    settings = dict(raw or {})
    strategy = get_strategy(str(settings.pop("strategy", name)))
    return strategy, strategy.config_type.model_validate(settings)


def strategy_config(name: str, raw: dict[str, Any] | None) -> StrategyConfig:
    """Validate ``raw`` (the YAML under ``strategies.<name>``) into the strategy's config."""
    return resolve_run(name, raw)[1]


def merged_train_config(
    base: TrainConfig, explicit: set[str], config: StrategyConfig
) -> TrainConfig:
    """Training settings for one strategy.

    Precedence, lowest first: the loop's defaults, the strategy's own defaults, what the user set
    in the experiment's ``train`` section, what the user set under ``strategies.<name>.train``.
    """
    values = base.model_dump()
    values.update(config.default_train())
    values.update({key: getattr(base, key) for key in explicit})
    values.update(config.train)
    return TrainConfig.model_validate(values)
