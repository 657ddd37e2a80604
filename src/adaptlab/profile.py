"""What a strategy *is*, as every later stage needs to know it without importing strategies.

Each strategy declares a :class:`StrategyProfile` (``profile`` on its class): its role in the
comparison, the training data it needs to be trusted, how it trains (for the cost model),
whether it can teach a distilled student, and the task kinds it handles. ``compare`` writes
the profile into the run's ``manifest.json``, so the decision rules, the cost model and the
report read it from the run folder, and a new strategy is ranked, costed and reported by what
it says of itself instead of by tables of strategy names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast, get_args

Role = Literal["base", "prompted", "tuned"]
"""``base``: the base model unchanged; ``prompted``: the base model instructed or shown
examples, without training; ``tuned``: anything that trains."""

TrainingMethod = Literal["full", "adapter", "top_blocks", "features", "none"]
"""How a strategy trains, for the cost model's FLOP formulas (:mod:`adaptlab.cost.model`)."""

TaskKind = Literal["classification", "generative", "generation"]
"""``classification``: texts with labels; ``generative``: chat records whose answers are JSON
slot frames (slot extraction); ``generation``: records whose answers are free text, scored
against one or several references."""


@dataclass(frozen=True)
class DataNeed:
    """Training data a strategy needs to be trusted, and why (the too-little-data rule)."""

    examples: int = 0
    per_class: int = 0
    why: str = ""


@dataclass(frozen=True)
class StrategyProfile:
    """What a strategy declares about itself; see the module docstring."""

    role: Role
    method: TrainingMethod
    data_need: DataNeed = field(default_factory=DataNeed)
    teaches: bool = False
    """A finished run of it can be a distillation teacher (``teacher: best`` picks among them)."""
    tasks: tuple[TaskKind, ...] = ("classification",)
    retrieves: bool = False
    """It answers from the experiment's document collection (``data.documents``): the
    collection's hash goes into its manifest, so a changed collection makes it stale."""
    multi_label: bool = False
    """It classifies records with several labels (one probability per label, independent):
    multi-label intent data runs only the strategies that say so."""

    def __post_init__(self) -> None:
        if self.role not in get_args(Role):
            raise ValueError(f"role '{self.role}' is not one of {', '.join(get_args(Role))}")
        if self.method not in get_args(TrainingMethod):
            raise ValueError(
                f"method '{self.method}' is not one of {', '.join(get_args(TrainingMethod))}"
            )
        unknown = [task for task in self.tasks if task not in get_args(TaskKind)]
        if unknown or not self.tasks:
            raise ValueError(f"tasks {list(self.tasks)}: each must be one of {get_args(TaskKind)}")

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["tasks"] = list(self.tasks)
        return payload

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> StrategyProfile:
        """The profile a manifest recorded; ``ValueError`` naming the field when it is off."""
        need = raw.get("data_need") or {}
        if not isinstance(need, Mapping):
            raise ValueError("data_need: expected an object")
        try:
            return cls(
                role=cast(Role, raw["role"]),
                method=cast(TrainingMethod, raw["method"]),
                data_need=DataNeed(
                    int(need.get("examples", 0)),
                    int(need.get("per_class", 0)),
                    str(need.get("why", "")),
                ),
                teaches=bool(raw.get("teaches", False)),
                tasks=tuple(cast(list[TaskKind], raw.get("tasks", ["classification"]))),
                retrieves=bool(raw.get("retrieves", False)),
                multi_label=bool(raw.get("multi_label", False)),
            )
        except KeyError as exc:
            raise ValueError(f"no {exc.args[0]}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from None
