"""The strategy protocol and its registry.

A strategy says only what is special about it: its config, which parameters it trains, its
loss, and what it saves. Everything else (data, batching, the training loop, evaluation, the
run directory) is shared. Adding one is one file in this package that ends in
``register(XStrategy)`` (the package imports every module in it, so nothing else lists it) and
one row in the shared test matrix (``tests/unit/strategies/test_matrix.py``). Its ``profile``
(:class:`~adaptlab.profile.StrategyProfile`) says what it is: role, data need, training
method, whether it teaches, the task kinds it handles; later stages read that from the run's
manifest.

Three kinds of task reach a strategy, decided by the prepared data: ``classification`` (texts
and labels; the strategy returns a :class:`Classifier`), ``generative`` (chat records whose
answers are JSON slot frames) and ``generation`` (records whose answers are free text); for
both of the last the strategy returns a :class:`Generator`. A strategy
names the kinds it handles in ``profile.tasks``, and ``compare`` refuses to run a strategy on a
kind it does not name (:func:`require_supported`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypeVar

from adaptlab.config import (
    ConfigError,
    DataConfig,
    ExperimentConfig,
    TrainConfig,
    _describe,
    _nearest_line,
    load_config,
    parse_config,
)
from adaptlab.data.report import TASK_SPECIFIC
from adaptlab.profile import DataNeed, StrategyProfile, TaskKind

if TYPE_CHECKING:
    from adaptlab.data.documents import PreparedCollection
    from adaptlab.evaluate.generation import DecodingConfig
    from adaptlab.models.causal_lm import CausalLM
    from adaptlab.models.encoder import ClassifierParts
    from adaptlab.models.shared_base import SharedBases

Messages = list[dict[str, Any]]
"""A chat conversation: ``{"role", "content", ...}`` messages, as in chat JSONL records."""

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
    """Texts and integer labels of the prepared train and locked eval sets.

    Multi-label data (``multi_label``: each record a list of labels, possibly empty) holds
    label *sets* instead: ``train_labels``, ``eval_labels`` and ``validation_labels`` are
    ``(n, num_labels)`` 0/1 matrices, and a classifier's ``predict_proba`` gives each label its
    own probability (they need not sum to 1)."""

    kind: ClassVar[TaskKind] = "classification"
    label_names: tuple[str, ...]
    train_texts: list[str]
    train_labels: np.ndarray
    eval_texts: list[str]
    eval_labels: np.ndarray
    train_sha256: str
    eval_sha256: str
    out_of_scope_label: str | None = None
    """``data.out_of_scope_label``: its eval (and validation) records have label
    :data:`~adaptlab.evaluate.open_set.OUT_OF_SCOPE` (-1); when train has some, they are also
    a class of their own (a column named after it) that strategies learn like any other."""
    multi_label: bool = False
    validation_texts: list[str] = field(default_factory=list)
    """Held out of train (out-of-scope and multi-label modes) to choose the rejection
    threshold, or the per-label thresholds, on."""
    validation_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def out_of_scope_column(self) -> int | None:
        """The probability column of the out-of-scope class, when train taught one."""
        label = self.out_of_scope_label
        return self.label_names.index(label) if label in self.label_names else None

    @property
    def eval_size(self) -> int:
        return len(self.eval_texts)


@dataclass(frozen=True)
class GenerativeTask:
    """Chat records of the prepared train and locked eval sets, and what their answers are
    scored against.

    A record is its whole conversation, the reference answer (the last assistant message)
    included; what a model is asked is :attr:`eval_requests`. Two kinds of answers:

    - slot extraction (``kind`` ``generative``): each answer is a JSON object of slot -> value
      (restaurant8k), so ``eval_frames[i]`` is eval record i's answer parsed and ``slots``
      every slot the answers name;
    - free text (``kind`` ``generation``): ``eval_references[i]`` holds eval record i's
      references (its answer, or the record's ``references`` list: E2E has several per
      input); ``slots`` and ``eval_frames`` are empty.
    """

    slots: tuple[str, ...]
    """Every slot the train and eval answers name, in the data's canonical order."""
    train_records: list[Messages]
    eval_records: list[Messages]
    eval_frames: list[dict[str, str]]
    train_sha256: str
    eval_sha256: str
    eval_references: list[list[str]] | None = None
    """Free text: each eval record's references; ``None`` for slot extraction."""
    collection: PreparedCollection | None = None
    """The document collection (``data.documents``) retrieval strategies answer from."""
    train_documents: list[list[str]] | None = None
    """Each training record's gold document ids (its ``documents`` list; empty: none named)."""
    eval_documents: list[list[str]] | None = None
    """Each eval record's gold document ids, which retrieval is scored against."""

    @property
    def kind(self) -> TaskKind:
        return "generative" if self.eval_references is None else "generation"

    @property
    def eval_size(self) -> int:
        return len(self.eval_records)

    @property
    def eval_requests(self) -> list[Messages]:
        """Each eval record's messages before its reference answer."""
        from adaptlab.evaluate.generation import request_messages  # torch: load on use

        return [request_messages({"messages": record}) for record in self.eval_records]


Task = ClassificationTask | GenerativeTask


@runtime_checkable
class Classifier(Protocol):
    """A fitted model that maps texts to a probability for every label."""

    label_names: Sequence[str]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), num_labels)`` probabilities, rows summing to one."""
        ...


@runtime_checkable
class PooledClassifier(Classifier, Protocol):
    """A classifier that is an encoder, mean pooling, L2 normalisation and a head on the
    normalised embedding, softmaxed: what ``adaptlab export`` writes for other tools (plain
    transformers, ONNX Runtime). Its ``predict_proba`` must equal that graph's output."""

    label_names: Sequence[str]

    @property
    def max_length(self) -> int:
        """Tokens per text; longer texts are truncated."""
        ...

    def export_parts(self) -> ClassifierParts:
        """The tokenizer, the encoder as a torch ``PreTrainedModel``, and the head mapping the
        normalised embedding to logits (a scale or temperature folded into its weights)."""
        ...


@runtime_checkable
class Generator(Protocol):
    """A fitted model that answers chat requests: the LM that decodes (greedy, with these
    settings) and the conversation it is given for each request."""

    @property
    def lm(self) -> CausalLM: ...

    @property
    def decoding(self) -> DecodingConfig: ...

    def conversations(self, requests: Sequence[Messages]) -> list[Messages]:
        """What the model continues for each request (an eval record's messages before its
        answer), with whatever the strategy adds: an instruction, examples."""
        ...


TaskT = TypeVar("TaskT", bound=Task, default=ClassificationTask)


ConfigT = TypeVar("ConfigT", bound=StrategyConfig, default=StrategyConfig, covariant=True)


@dataclass(frozen=True)
class RunContext(Generic[TaskT, ConfigT]):
    """Everything a strategy may use while fitting, and the folder it writes to.

    ``RunContext`` alone is a classification run with any config; a strategy names its task
    and config, ``RunContext[GenerativeTask, SftLoraConfig]``, so ``run.config`` has its own
    type and nothing re-asserts it.
    """

    name: str
    folder: Path
    task: TaskT
    experiment: ExperimentConfig
    config: ConfigT
    train: TrainConfig
    runs_root: Path
    track: Track = no_progress
    resume: bool = False  # an interrupted run with the same config left a checkpoint
    facts: dict[str, Any] = field(default_factory=dict)  # measured by the strategy: params, steps
    bases: SharedBases | None = None
    """Loading only: base models already loaded, which an adapter run loads its adapter onto
    (unmerged) rather than loading its base again (several runs served by one process)."""

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
    """What every strategy implements.

    ``profile.tasks`` names the task kinds it handles; ``fit`` and ``load`` then get a run of
    one of those kinds and return a :class:`Classifier` for a classification task, a
    :class:`Generator` for a generative one. One that needs what a machine may lack (CUDA)
    sets ``unavailable_reason`` (see :func:`unavailable_here`). One whose training cost the
    default (its ``profile.method`` over the training data) does not describe defines
    ``workload(run)`` (see :mod:`adaptlab.estimate`).
    """

    name: ClassVar[str]
    config_type: ClassVar[type[StrategyConfig]]
    trains: ClassVar[bool]  # whether it runs the shared training loop
    profile: ClassVar[StrategyProfile]

    def requires(self, config: StrategyConfig) -> list[str]:
        """Names of runs that must exist before this one (a distillation teacher)."""
        ...

    def fit(self, run: RunContext[Any]) -> Classifier | Generator:
        """Fit on ``run.task`` and write the artefacts into ``run.folder``."""
        ...

    def load(self, run: RunContext[Any]) -> Classifier | Generator:
        """Rebuild the fitted model from ``run.folder`` alone."""
        ...


class StrategyUnavailableError(ConfigError):
    """A strategy asked for by name that this machine cannot run (no CUDA for qlora)."""


def unavailable_here(strategy: Strategy | type[Any], config: StrategyConfig) -> str | None:
    """Why ``strategy`` cannot run on this machine (no GPU, a missing library), or None.

    A strategy with such needs defines ``unavailable_reason(config) -> str | None``; ``compare``
    asks before running anything, so a run that cannot work here fails at once rather than
    after the strategies before it, and a default list leaves it out.
    """
    check = getattr(strategy, "unavailable_reason", None)
    return None if check is None else check(config)


def supported_tasks(strategy: Strategy | type[Any]) -> tuple[TaskKind, ...]:
    """The task kinds a strategy handles (its ``profile.tasks``)."""
    tasks: tuple[TaskKind, ...] = strategy.profile.tasks
    return tasks


def teachers_for(task_kind: TaskKind) -> tuple[str, ...]:
    """Registered strategies that can teach a student on ``task_kind``, sorted by name: the
    runs ``teacher: best`` chooses among."""
    _import_all()
    return tuple(
        sorted(
            name
            for name, s in REGISTRY.items()
            if s.profile.teaches and task_kind in s.profile.tasks
        )
    )


TASK_WORDS: dict[TaskKind, str] = {
    "classification": " (texts with labels)",
    "generative": " (chat records whose answers are JSON slot frames)",
    "generation": " (records whose answers are free text)",
}


class UnsupportedTaskError(ConfigError):
    """A strategy asked to run on a task kind it does not handle; the message names both."""


def require_supported(name: str, strategy: Strategy | type[Any], task_kind: TaskKind) -> None:
    """Raise :class:`UnsupportedTaskError` unless ``strategy`` (run ``name``) handles
    ``task_kind``."""
    supported = supported_tasks(strategy)
    if task_kind not in supported:
        strategy_name = getattr(strategy, "name", name)
        run = f"'{name}'" if strategy_name == name else f"'{name}' (strategy '{strategy_name}')"
        raise UnsupportedTaskError(
            f"strategy {run} handles {' and '.join(supported)} tasks, but this experiment's "
            f"data makes a {task_kind} task"
            + TASK_WORDS[task_kind]
            + f"; choose strategies for {task_kind} tasks: "
            + ", ".join(strategies_for(task_kind))
        )


def strategies_for(task_kind: TaskKind) -> list[str]:
    """Registered strategies that handle ``task_kind``, sorted by name."""
    _import_all()
    return sorted(name for name, s in REGISTRY.items() if task_kind in supported_tasks(s))


StrategyT = TypeVar("StrategyT")
REGISTRY: dict[str, type[Any]] = {}


def register(strategy: type[StrategyT]) -> type[StrategyT]:
    """Make a strategy available under its ``name`` (one call at the end of its file)."""
    name = strategy.name  # type: ignore[attr-defined]
    if not isinstance(getattr(strategy, "profile", None), StrategyProfile):
        raise TypeError(
            f"strategy '{name}' ({strategy.__module__}) declares no profile: set "
            "profile = StrategyProfile(role=..., method=..., data_need=..., tasks=...)"
        )
    if name in REGISTRY and REGISTRY[name] is not strategy:
        raise ValueError(f"strategy '{name}' is registered twice")
    REGISTRY[name] = strategy
    return strategy


def _import_all() -> None:
    """Import every module of the strategies package (each registers its strategy)."""
    from adaptlab.strategies import discover

    discover()


def get_strategy(name: str) -> Strategy:
    """An instance of the registered strategy ``name``, or a clear error listing them."""
    _import_all()
    if name not in REGISTRY:
        raise KeyError(f"unknown strategy '{name}'; available: {', '.join(sorted(REGISTRY))}")
    instance: Strategy = REGISTRY[name]()
    return instance


def strategy_name(run: str, raw: dict[str, Any] | None) -> str:
    """The registered strategy a run name stands for: ``strategies.<run>.strategy`` when the
    experiment sets it, else the run name itself. The one place that resolves it."""
    return str((raw or {}).get("strategy", run))


def resolve_run(name: str, raw: dict[str, Any] | None) -> tuple[Strategy, StrategyConfig]:
    """The strategy and validated config behind a run name.

    A run is usually named after its strategy; ``strategies.<run>.strategy: <name>`` runs a
    strategy under another name, so one experiment can hold e.g. ``setfit_k8`` and
    ``setfit_k10``, or ``lora`` and ``dora``.
    """
    settings = dict(raw or {})
    settings.pop("strategy", None)
    strategy = get_strategy(strategy_name(name, raw))
    return strategy, strategy.config_type.model_validate(settings)


def check_strategy_blocks(config: ExperimentConfig, source: str, lines: dict[Any, int]) -> None:
    """Each ``strategies.<run>`` block against its strategy's own config model; an error
    names the file, line and key."""
    from pydantic import ValidationError

    named = set(config.strategies) | set(config.compare.strategies or [])
    for name in sorted(named):
        try:
            resolve_run(name, config.strategies.get(name))
        except KeyError as exc:
            where = (
                _nearest_line(lines, ("strategies", name, "strategy"))
                or _nearest_line(lines, ("strategies", name))
                or _nearest_line(lines, ("compare", "strategies"))
            )
            raise ConfigError(f"{source}:{where or 1}: {exc.args[0]}") from None
        except ValidationError as exc:
            kind = get_strategy(strategy_name(name, config.strategies.get(name))).config_type
            raise ConfigError(
                _describe(exc, kind, source, lines, prefix=("strategies", name))
            ) from None


def load_experiment(path: str | Path) -> ExperimentConfig:
    """An experiment config file, validated, its strategy blocks included."""
    return load_config(path, ExperimentConfig, check=check_strategy_blocks)


def parse_experiment(text: str, source: str) -> ExperimentConfig:
    """Experiment YAML ``text`` (named ``source`` in errors), its strategy blocks included."""
    return parse_config(text, source, ExperimentConfig, check=check_strategy_blocks)


_FINE_TUNE_EXAMPLES = TASK_SPECIFIC[0], TASK_SPECIFIC[1]
_MIN_PER_CLASS = int(DataConfig.model_fields["min_examples_per_class"].default)

FINE_TUNING_NEED = DataNeed(
    _FINE_TUNE_EXAMPLES[0],
    _MIN_PER_CLASS,
    f"task-specific fine-tuning usually needs {_FINE_TUNE_EXAMPLES[0]:,}–"
    f"{_FINE_TUNE_EXAMPLES[1]:,} examples (the data report's size guidance)",
)
"""What fine-tuning a pretrained classifier needs to be trusted."""

EXTRACTION_NEED = DataNeed(
    _FINE_TUNE_EXAMPLES[0],
    0,
    f"task-specific extraction usually needs {_FINE_TUNE_EXAMPLES[0]:,}–"
    f"{_FINE_TUNE_EXAMPLES[1]:,} examples (the data report's size guidance)",
)
"""What fine-tuning a pretrained LM for extraction needs (chat data has no classes)."""


def from_scratch_need(per_class: int, scope: str) -> DataNeed:
    """A model without pretraining learns the language from the data too."""
    return DataNeed(
        _FINE_TUNE_EXAMPLES[1],
        per_class,
        "a model without pretraining learns the language from your data too: more than the "
        f"{_FINE_TUNE_EXAMPLES[1]:,} at the top of the {scope} range",
    )


MIN_PER_CLASS = _MIN_PER_CLASS


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
