"""Typed configuration: YAML in, validated objects out.

One model per concern (data, model, training, LoRA). Key names follow what users of Axolotl,
LLaMA-Factory and TRL already write (``base_model``, ``learning_rate``, ``num_epochs``,
``micro_batch_size``, ``gradient_accumulation_steps``, ``sequence_len``, ``lora_r``,
``lora_alpha``, ``val_set_size``, ``seed``). Each field's description is its reference text:
``adaptlab config reference`` prints them.

Errors name the file, the line, the key, the value and what is allowed, e.g.::

    configs/x.yaml:7: train.learning_rate = 5.0 is not allowed: must be > 0 and <= 1
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from annotated_types import Ge, Gt, Le, Lt
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_CAUSAL_LM = "HuggingFaceTB/SmolLM2-135M-Instruct"

DataFormat = Literal["auto", "classification", "chat", "completion", "alpaca"]


PII_TYPES: tuple[str, ...] = ("EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "IP_ADDRESS")
"""The PII types :mod:`adaptlab.data.pii` detects (``data.pii_types`` takes these); defined
here so that this module imports no other adaptlab module."""


NAME_MAX = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_name(value: str) -> str:
    """``value`` when it is safe as a folder name (an experiment, a run): letters, digits,
    ``_``, ``-`` and ``.``, starting with a letter or digit, no ``..``, at most
    :data:`NAME_MAX` characters. Names are data, never paths: ``../x`` or ``/tmp/x`` is
    refused here rather than written (or deleted) outside the output folder."""
    if len(value) > NAME_MAX or not _NAME.fullmatch(value) or ".." in value:
        raise ValueError(
            f"{value!r} is not a name: use letters, digits, '_', '-' and '.', starting with a "
            f"letter or digit, without '..', at most {NAME_MAX} characters (it becomes a "
            "folder name)"
        )
    return value


Name = Annotated[str, AfterValidator(check_name)]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated on entry."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class DataConfig(Section):
    """Where the data comes from and how it is cleaned and split."""

    train: str | None = Field(
        None,
        description="Training data: a local .csv/.jsonl/.json/.parquet file, a folder saved by "
        "HF datasets, or a hub dataset name (online). Empty: the bundled demo data.",
    )
    eval: str | None = Field(
        None,
        description="A given eval file. Empty: a stratified split of `train` of size "
        "`val_set_size` is made and locked.",
    )
    format: DataFormat = Field(
        "auto",
        description="Record format; `auto` detects it from the records' keys.",
    )
    task: Literal["auto", "extraction", "generation"] = Field(
        "auto",
        description="What answers of chat, completion or alpaca records are: `extraction` "
        "(JSON slot frames, scored on slot F1), `generation` (free text, scored against the "
        "references); `auto`: extraction when every answer is a JSON object, else generation.",
    )
    text_field: str | None = Field(
        None, description="Classification text column (auto: text/sentence/utterance/query)."
    )
    label_field: str | None = Field(
        None, description="Classification label column (auto: label/category/intent/class)."
    )
    labels: list[str] | None = Field(
        None,
        description="The allowed label set; a record with another label is an error. "
        "Empty: the labels found in the training data.",
    )
    out_of_scope_label: str | None = Field(
        None,
        description="The label of queries that fit no intent (e.g. oos). Each classifier then "
        "rejects a query whose score falls under a threshold chosen on a validation split of "
        "train (compare.out_of_scope); eval records may carry it though train has none.",
    )
    documents: str | None = Field(
        None,
        description="A document collection for retrieval strategies (rag, rag_sft): a folder "
        "of .txt/.md/.html/.pdf files or a JSONL of {id, text, title?}. Eval records name "
        "their gold documents in a `documents` list to score retrieval.",
    )
    chunk_tokens: Annotated[int, Ge(16), Le(4096)] = Field(
        200,
        description="Most tokens per document chunk (the retrieval encoder's tokenizer); "
        "chunks end at sentence boundaries.",
    )
    chunk_overlap_tokens: Annotated[int, Ge(0)] = Field(
        40,
        description="Tokens of the previous chunk's last sentences repeated at a chunk's start.",
    )
    hub_split: str = Field("train", description="Split to read when `train` is a hub name.")
    val_set_size: Annotated[float, Gt(0)] = Field(
        0.2,
        description="Eval split size when no eval file is given: a fraction in (0, 1) or a "
        "count of examples (>= 1).",
    )
    stratify: bool = Field(True, description="Keep label proportions equal in train and eval.")
    seed: int = Field(42, description="Seed of the train/eval split.")
    scrub_pii: bool = Field(True, description="Replace PII with typed placeholders (<EMAIL>).")
    pii_types: list[Literal[PII_TYPES]] = Field(  # type: ignore[valid-type]
        list(PII_TYPES), description="PII types to detect and scrub."
    )
    dedup: bool = Field(True, description="Drop exact and near-duplicate training records.")
    near_dup_threshold: Annotated[float, Gt(0), Le(1)] = Field(
        0.85,
        description="Estimated Jaccard similarity (character 5-gram shingles, MinHash LSH) at "
        "or above which two records are near-duplicates.",
    )
    allow_contaminated: bool = Field(
        False,
        description="Proceed although eval items also occur in train (recorded in eval.lock).",
    )
    decontaminate: bool = Field(
        False, description="Drop training records that also occur in the eval set."
    )
    min_examples_per_class: Annotated[int, Ge(1)] = Field(
        10, description="Flag classes with fewer training examples than this."
    )

    @model_validator(mode="after")
    def _check_split(self) -> DataConfig:
        if self.val_set_size >= 1 and not float(self.val_set_size).is_integer():
            raise ValueError(
                f"val_set_size = {self.val_set_size}: a count must be a whole number; "
                "a fraction must be in (0, 1)"
            )
        if self.chunk_overlap_tokens >= self.chunk_tokens:
            raise ValueError(
                f"chunk_overlap_tokens = {self.chunk_overlap_tokens}: must be below "
                f"chunk_tokens = {self.chunk_tokens}"
            )
        if self.allow_contaminated and self.decontaminate:
            raise ValueError("allow_contaminated and decontaminate exclude each other: pick one")
        return self


class ModelConfig(Section):
    """The pretrained model being adapted."""

    base_model: str = Field(
        DEFAULT_ENCODER,
        description="A local model folder, a bundled model's hub name (works offline), or any "
        "hub name (online).",
    )
    sequence_len: Annotated[int, Ge(8), Le(131072)] = Field(
        128,
        description="Maximum tokens per example. Longer examples are reported by `data check`, "
        "never silently truncated.",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")


class TrainConfig(Section):
    """The shared training loop's settings."""

    learning_rate: Annotated[float, Gt(0), Le(1)] = Field(5e-5, description="Peak learning rate.")
    num_epochs: Annotated[float, Gt(0), Le(1000)] = Field(3.0, description="Passes over train.")
    max_steps: Annotated[int, Ge(1)] | None = Field(
        None, description="Stop after this many optimizer steps (overrides num_epochs)."
    )
    micro_batch_size: Annotated[int, Ge(1), Le(65536)] = Field(
        32, description="Examples per forward pass on one device."
    )
    gradient_accumulation_steps: Annotated[int, Ge(1), Le(4096)] = Field(
        1, description="Micro-batches per optimizer step."
    )
    warmup_ratio: Annotated[float, Ge(0), Lt(1)] = Field(
        0.06, description="Fraction of steps with linear warmup."
    )
    lr_scheduler: Literal["linear", "cosine", "constant"] = Field(
        "linear", description="Decay after warmup."
    )
    weight_decay: Annotated[float, Ge(0), Le(1)] = Field(0.01, description="AdamW weight decay.")
    max_grad_norm: Annotated[float, Gt(0)] | None = Field(
        1.0, description="Gradient clipping norm; empty disables clipping."
    )
    eval_steps: Annotated[int, Ge(1)] | None = Field(
        None, description="Evaluate every N optimizer steps; empty: at the end of each epoch."
    )
    early_stopping_patience: Annotated[int, Ge(1)] | None = Field(
        None, description="Stop after N evaluations without improvement; empty: never."
    )
    seed: int = Field(42, description="Seed of initialisation, shuffling and dropout.")
    group_by_length: bool = Field(
        True, description="Batch examples of similar length together to avoid padding."
    )
    bf16: Literal["auto", "true", "false"] = Field(
        "auto", description="bf16 mixed precision: auto uses it on CUDA devices that support it."
    )


class LoraConfig(Section):
    """Low-rank adapters (PEFT)."""

    lora_r: Annotated[int, Ge(1), Le(4096)] = Field(16, description="Adapter rank.")
    lora_alpha: Annotated[float, Gt(0)] = Field(32, description="Adapter scaling numerator.")
    lora_dropout: Annotated[float, Ge(0), Lt(1)] = Field(0.05, description="Adapter dropout.")
    lora_target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or all-linear."
    )
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")


class RetentionConfig(Section):
    """How much general capability a generative run kept (catastrophic forgetting): held-out
    general text's perplexity and a fixed set of general instructions, measured on every
    generative run's model and on the base model (:mod:`adaptlab.evaluate.forgetting`)."""

    enabled: bool = Field(
        True,
        description="Measure retention of generative runs and of the base model, and report "
        "the change; classification runs are never measured.",
    )
    perplexity_tokens: Annotated[int, Ge(16), Le(1_048_576)] = Field(
        8192,
        description="Tokens of held-out general text (BBC News) scored for perplexity, in "
        "windows of window_tokens; 8192 took 31-43 s for SmolLM2-135M on one core of a busy "
        "2-core CPU.",
    )
    window_tokens: Annotated[int, Ge(8), Le(8192)] = Field(
        256, description="Tokens per perplexity window (each window is scored on its own)."
    )
    instructions: Annotated[int, Ge(0)] | None = Field(
        None,
        description="How many of the fixed general instructions to ask (the first N); empty: "
        "all of them; 0: none (then no forgetting score, perplexity only).",
    )
    max_new_tokens: Annotated[int, Ge(1), Le(512)] = Field(
        32, description="Most tokens generated per general instruction (answers are short)."
    )
    perplexity_batch_size: Annotated[int, Ge(1), Le(1024)] = Field(
        4,
        description="Perplexity windows scored together (memory: the logits of 4 windows of "
        "256 tokens over SmolLM2's 49k-token vocabulary are 200 MB).",
    )
    instruction_batch_size: Annotated[int, Ge(1), Le(1024)] = Field(
        32,
        description="Instructions answered together; the whole set in one batch is the "
        "fastest on a CPU (fewer sequential decoding steps).",
    )


GenerationMetric = Literal[
    "rougeL", "rouge1", "rouge2", "bleu", "chrf", "embedding_similarity", "exact_match", "token_f1"
]
"""The metrics a free-text task may be ranked on (each on 0-1 in ``eval.json``)."""


OutOfScopeMetric = Literal["overall_accuracy", "in_scope_accuracy", "out_of_scope_recall"]


class OutOfScopeConfig(Section):
    """How classifiers reject out-of-scope queries (``data.out_of_scope_label`` set)."""

    rule: Literal["in_scope_rejection", "joint_accuracy"] = Field(
        "in_scope_rejection",
        description="How the threshold is chosen on the validation split: in_scope_rejection "
        "(reject the target share of in-scope queries) or joint_accuracy (the best accuracy "
        "over in-scope and out-of-scope queries; needs out-of-scope examples in train).",
    )
    in_scope_rejection: Annotated[float, Gt(0), Lt(1)] = Field(
        0.05, description="The share of in-scope validation queries the threshold rejects."
    )
    rank_on: OutOfScopeMetric = Field(
        "overall_accuracy",
        description="What runs are ranked on: overall_accuracy (every eval query, a rejected "
        "out-of-scope one counting as right; Larson et al. 2019), in_scope_accuracy or "
        "out_of_scope_recall.",
    )


class CompareConfig(Section):
    """Which strategies ``adaptlab compare`` runs and how results are measured."""

    strategies: list[str] | None = Field(
        None,
        description="Strategies to run, in order; empty: every strategy for the data's task kind "
        "(classification data: classification strategies; chat data: generative ones).",
    )
    bootstrap_resamples: Annotated[int, Ge(100), Le(100_000)] = Field(
        2000, description="Paired-bootstrap resamples for the confidence intervals."
    )
    confidence: Annotated[float, Gt(0), Lt(1)] = Field(
        0.95, description="Confidence level of the intervals."
    )
    latency_batch_sizes: list[Annotated[int, Ge(1)]] = Field(
        [1, 32], description="Batch sizes at which CPU latency is measured."
    )
    latency_budget_s: Annotated[float, Gt(0)] = Field(
        5.0,
        description="Seconds spent measuring latency per strategy and batch size; when compare "
        "times the classification runs together, spread over latency_rounds rounds.",
    )
    latency_rounds: Annotated[int, Ge(1), Le(50)] = Field(
        5,
        description="Rounds in which compare times every classification run together, each run "
        "getting its share of calls per round in a rotating order, so a change in the "
        "machine's load hits them all alike and widens the median's interval.",
    )
    repeat: Annotated[int, Ge(1), Le(9)] = Field(
        1,
        description="Training seeds per run that trains: above 1, compare reruns those runs with "
        "repeat - 1 other seeds (42, 7, 1234, ..., skipping train.seed; in "
        "<experiment>/repeats/), reports whether the recommendation held, and decides on "
        "every seed's runs together, so the intervals cover the seed as well as the eval "
        "items. `adaptlab compare --repeat N` overrides it.",
    )
    retention: RetentionConfig = Field(
        default_factory=RetentionConfig,
        description="Catastrophic-forgetting check of generative runs against the base model.",
    )
    generation_metric: GenerationMetric = Field(
        "rougeL",
        description="What free-text runs are ranked on (the leaderboard, Δ vs best, the "
        "decision rules): rougeL (ROUGE-L F1, stemmed), rouge1, rouge2, bleu, chrf (chrF++), "
        "embedding_similarity, exact_match or token_f1 (SQuAD's token F1, for short answers).",
    )
    validation_share: Annotated[float, Gt(0), Lt(1)] = Field(
        0.1,
        description="Classifiers with thresholds (out-of-scope rejection, multi-label data): "
        "the share of training records held out, seeded by train.seed (stratified for "
        "single-label data), to choose the thresholds on; the strategies train on the rest.",
    )
    out_of_scope: OutOfScopeConfig = Field(
        default_factory=OutOfScopeConfig,
        description="Out-of-scope rejection of classifiers (with data.out_of_scope_label).",
    )
    similarity_model: str = Field(
        "sentence-transformers/all-MiniLM-L6-v2",
        description="Sentence encoder of the embedding similarity between a free-text answer "
        "and its best reference (the bundled MiniLM by default).",
    )


class ExperimentConfig(Section):
    """A whole adaptlab run: one file, one section per concern."""

    name: Name = Field(
        "adaptlab",
        description="A name for the experiment, its folder's name: letters, digits, '_', '-', '.'.",
    )
    output_dir: str = Field("runs", description="Where run directories are written.")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)
    strategies: dict[Name, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per-strategy settings, e.g. `setfit: {shots: 10}`; each strategy's keys "
        "are listed by `adaptlab strategies`. A key is a run's name (its folder's name).",
    )


class ConfigError(ValueError):
    """A config file that cannot be used; the message names file, line, key and value."""


ModelT = TypeVar("ModelT", bound=BaseModel)


ExperimentCheck = Callable[["ExperimentConfig", str, dict[Any, int]], None]
"""A further check of a validated experiment (its file name and key -> line map): the
strategies layer checks each ``strategies.<run>`` block against its strategy's config
(:func:`adaptlab.strategies.base.load_experiment`); this module knows no strategy."""


def load_config(
    path: str | Path,
    model: type[ModelT] = ExperimentConfig,  # type: ignore[assignment]
    check: ExperimentCheck | None = None,
) -> ModelT:
    """Read a YAML file and validate it into ``model``, or raise :class:`ConfigError`."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:  # before reading it: a config is never this large
            raise ConfigError(
                f"{path}: {size:,} bytes; a config may have at most {MAX_CONFIG_BYTES:,}: refused"
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    return parse_config(text, source=str(path), model=model, check=check)


def parse_config(
    text: str, source: str, model: type[ModelT], check: ExperimentCheck | None = None
) -> ModelT:
    """Validate YAML ``text`` (named ``source`` in errors) into ``model``."""
    node, raw = read_yaml(text, source)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}:1: the top level must be a mapping of keys to values")
    lines = _key_lines(node) if node is not None else {}
    try:
        config = model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, model, source, lines)) from None
    if check is not None and isinstance(config, ExperimentConfig):
        check(config, source, lines)
    return config


MAX_CONFIG_BYTES = 1_000_000
"""A config is a page of settings; a larger file is refused before it is parsed."""
MAX_CONFIG_VALUES = 100_000
"""Values a config may hold once its aliases are expanded (a 700-byte "billion laughs" file
expands to billions): counted on the composed graph, without expanding it."""


def read_yaml(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """The composed YAML tree and the value of ``text``, bounded: at most
    :data:`MAX_CONFIG_BYTES`, at most :data:`MAX_CONFIG_VALUES` values with aliases expanded,
    and no key twice in one mapping (YAML keeps the last silently; here both lines are named)."""
    size = len(text.encode("utf-8"))
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{source}: {size:,} bytes; a config may have at most {MAX_CONFIG_BYTES:,}: refused"
        )
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if node is None:
        return None, None
    values = _expanded_size(node, {}, MAX_CONFIG_VALUES)
    if values > MAX_CONFIG_VALUES:
        raise ConfigError(
            f"{source}: its aliases expand to more than {MAX_CONFIG_VALUES:,} values (a YAML "
            "alias bomb?): refused without expanding them"
        )
    _refuse_duplicate_keys(node, source, set())
    try:
        return node, yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc


def _expanded_size(node: yaml.Node, sizes: dict[int, int], limit: int) -> int:
    """How many values ``node`` holds with every alias expanded; computed once per node (an
    alias is the same node object), so the count costs the size of the file, not of the
    expansion. Stops counting past ``limit``."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    total = 1
    children: list[yaml.Node] = []
    if isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    for child in children:
        total += _expanded_size(child, sizes, limit)
        if total > limit:
            break
    sizes[id(node)] = total
    return total


def _refuse_duplicate_keys(node: yaml.Node, source: str, seen: set[int]) -> None:
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                line = key_node.start_mark.line + 1
                if key_node.value in first:
                    raise ConfigError(
                        f"{source}:{line}: key '{key_node.value}' is given twice in one mapping "
                        f"(first on line {first[key_node.value]}): keep one"
                    )
                first[key_node.value] = line
            _refuse_duplicate_keys(value_node, source, seen)
    elif isinstance(node, yaml.SequenceNode):
        for child in node.value:
            _refuse_duplicate_keys(child, source, seen)


def _key_lines(node: yaml.Node, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """Map each key path in a composed YAML tree to its 1-based line number."""
    lines: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, str(key_node.value))
            lines[path] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, path))
    return lines


def _describe(
    exc: ValidationError,
    model: type[BaseModel],
    source: str,
    lines: dict[Any, int],
    prefix: tuple[str, ...] = (),
) -> str:
    messages = []
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"] if not isinstance(part, int))
        # a dict key's error ends its location with the key and "[key]": name the key once
        key_path = prefix + tuple(str(part) for part in error["loc"] if part != "[key]")
        line = _nearest_line(lines, key_path)
        where = f"{source}:{line}" if line else source
        key = ".".join(key_path) or "(top level)"
        if error["type"] == "extra_forbidden":
            messages.append(f"{where}: {key}: unknown key. {_suggest(model, loc)}")
            continue
        value = error.get("input")
        if error["type"] == "value_error":  # our own check: its message says what is allowed
            detail = str(error["msg"]).removeprefix("Value error, ")
        else:
            allowed = _allowed(model, loc)
            detail = f"{error['msg']}" + (f"; allowed: {allowed}" if allowed else "")
        messages.append(f"{where}: {key} = {value!r} is not allowed: {detail}")
    return "\n".join(messages)


def _nearest_line(lines: dict[Any, int], key_path: tuple[str, ...]) -> int | None:
    for end in range(len(key_path), 0, -1):
        if key_path[:end] in lines:
            return lines[key_path[:end]]
    return None


def _field_owner(
    model: type[BaseModel], loc: tuple[str, ...]
) -> tuple[type[BaseModel], str] | None:
    """Find the section model that owns the last key of ``loc``."""
    current = model
    for part in loc[:-1]:
        field = current.model_fields.get(part)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        current = annotation
    return (current, loc[-1]) if loc else None


def _suggest(model: type[BaseModel], loc: tuple[str, ...]) -> str:
    owner = _field_owner(model, loc)
    if owner is None:
        return ""
    section, key = owner
    known = sorted(section.model_fields)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"Did you mean '{close[0]}'? " if close else ""
    return f"{hint}Allowed keys here: {', '.join(known)}."


def _allowed(model: type[BaseModel], loc: tuple[str, ...]) -> str:
    owner = _field_owner(model, loc)
    if owner is None or owner[1] not in owner[0].model_fields:
        return ""
    field = owner[0].model_fields[owner[1]]
    bounds = []
    for constraint in field.metadata:
        for attr, symbol in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if hasattr(constraint, attr):
                bounds.append(f"{symbol} {getattr(constraint, attr)}")
    text = " and ".join(bounds)
    return f"{owner[1]} {text}" if text else (field.description or "")


def reference(model: type[BaseModel] = ExperimentConfig, prefix: str = "") -> list[str]:
    """One line per key: ``section.key (default): description`` — the YAML reference."""
    rows = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(reference(annotation, f"{prefix}{name}."))
            continue
        default = field.get_default(call_default_factory=True)
        rows.append(f"{prefix}{name} (default {default!r}): {field.description or ''}")
    return rows


def to_yaml(config: BaseModel) -> str:
    """Serialise a validated config to YAML (what a run directory's config.yaml holds)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
