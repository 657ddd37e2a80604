"""Estimate before training: wall time, peak memory and cost of each strategy of an experiment.

For one experiment config and each strategy ``compare`` would run, the *workload* is worked out
without training anything and without reading a weight: the training data is tokenised the way
training tokenises it, the loop's batch plan (:func:`adaptlab.train.loop.planned_batches`) says
which padded token positions it computes, and the model is built on PyTorch's meta device from
its config to count parameters. A strategy that trains something special says so in an
optional ``workload(run) -> Workload`` method (distillation's half-depth student, LoRA's
adapters, partial's top blocks, SetFit's pairs); every other one gets :func:`default_workload`
from :data:`~adaptlab.cost.model.STRATEGY_METHODS`.

- **FLOPs** = :func:`~adaptlab.cost.model.training_flops` of the method over the trained
  tokens, with N the parameters of the model's linear layers (the ones a token is multiplied
  by: embedding tables are looked up, not multiplied — Kaplan et al. 2020 count N without
  them), plus one-off passes (a teacher's logits or answers: 2·N_teacher per token).
- **Time** = FLOPs / (peak FLOP/s x utilisation). The utilisation is measured on runs on record
  when the target is the profile they were measured on (:data:`MEASURED_PROFILE`): the median
  of the runs of the same strategy and base model, else of the same training method and base
  model, else of the same method; other profiles use their ``assumed_utilisation``.
- **Peak memory** (the fit stage's resident set, what ``cost.json``'s ``peak_rss_bytes``
  measures) = baseline + fp32 weights 4·N (teacher included) + gradients and AdamW's two
  moments 12·N_t + activations of the largest micro-batch (:func:`activation_bytes`). The
  baseline (interpreter, libraries, data) is the median of measured peak − formula over runs
  on record, else this process's resident set after its imports.
- **Cost** = time / 3600 x the profile's price per hour.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from torch import nn

from adaptlab.config import ConfigError, ExperimentConfig, TrainConfig
from adaptlab.cost.hardware import MEASURED_PROFILE, HardwareProfile
from adaptlab.cost.memory import current_rss_bytes
from adaptlab.cost.model import (
    STRATEGY_METHODS,
    TrainingMethod,
    cost_of,
    seconds_for,
    training_flops,
)
from adaptlab.cost.model import utilisation as measured_utilisation

if TYPE_CHECKING:
    from adaptlab.models.encoder import SentenceClassifier
    from adaptlab.strategies.base import RunContext, Strategy, Task

BYTES_PER_WEIGHT = 4
"""fp32 weights, as a CPU trains (the loop autocasts to bf16 on CUDA only)."""
OPTIMIZER_BYTES_PER_TRAINABLE = 12
"""An fp32 gradient (4 bytes) and AdamW's two fp32 moments (8 bytes) per trainable weight."""
TRAINING_METHODS = ("full", "adapter", "top_blocks")
"""Methods that run the training loop (a backward pass and an optimizer)."""
EMBEDDING_BATCH = 128
"""Texts per forward pass when a frozen encoder embeds a data set (``FrozenEncoder``)."""


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Architecture:
    """What the estimate needs to know about a model, counted on the meta device."""

    total_params: int
    matmul_params: int
    """Parameters of linear layers: the weights every token is multiplied by (FLOPs' N)."""
    trainable_params: int
    layers: int
    hidden: int
    heads: int
    vocabulary: int
    """Logits per token of a language model's output layer; 0 for an encoder."""


def architecture(model: nn.Module) -> Architecture:
    """Parameter counts (trainable: ``requires_grad``) and shape of a (meta) model."""
    config = _hf_config_of(model)
    linear = {
        id(p): p.numel()
        for m in model.modules()
        if isinstance(m, nn.Linear)
        for p in m.parameters()
    }
    output = getattr(model, "get_output_embeddings", lambda: None)()
    return Architecture(
        total_params=sum(p.numel() for p in model.parameters()),
        matmul_params=sum(linear.values()),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        layers=int(getattr(config, "num_hidden_layers", 0) or 0),
        hidden=int(getattr(config, "hidden_size", 0) or 0),
        heads=int(getattr(config, "num_attention_heads", 1) or 1),
        vocabulary=int(output.out_features) if isinstance(output, nn.Linear) else 0,
    )


def _hf_config_of(model: nn.Module) -> Any:
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "hidden_size"):
            return config
    return None


def model_config(name: str, revision: str | None = None) -> Any:
    """The transformers config of a bundled, local or hub model (no weights are read)."""
    from transformers import AutoConfig

    from adaptlab.models.bundled import ModelNotAvailable, resolve_model, unavailable_message

    try:
        return AutoConfig.from_pretrained(resolve_model(name), revision=revision)
    except OSError as exc:
        raise ModelNotAvailable(unavailable_message(name, exc)) from exc


def meta_model(name: str, *, revision: str | None = None, layers: int | None = None) -> nn.Module:
    """``name``'s architecture on the meta device (shapes only, no memory, no weights): a causal
    LM when its config names one, else the bare encoder; ``layers`` changes the depth."""
    from transformers import AutoModel, AutoModelForCausalLM

    config = model_config(name, revision)
    if layers is not None:
        config.num_hidden_layers = layers
    causal = any(a.endswith("ForCausalLM") for a in getattr(config, "architectures", None) or [])
    kind = AutoModelForCausalLM if causal else AutoModel
    with torch.device("meta"):
        model: nn.Module = kind.from_config(config)  # type: ignore[no-untyped-call]
    return model


def meta_classifier(name: str, num_labels: int, revision: str | None = None) -> SentenceClassifier:
    """The ``SentenceClassifier`` every fine-tuned classification strategy trains, on meta."""
    from adaptlab.models.encoder import SentenceClassifier

    encoder = meta_model(name, revision=revision)
    with torch.device("meta"):
        return SentenceClassifier(encoder, num_labels)


def meta_trained_model(run: RunContext[Any]) -> nn.Module:
    """The model a classification or generative run trains, from its base model, on meta."""
    revision = run.experiment.model.revision
    if run.task.kind == "classification":
        return meta_classifier(run.base_model, run.task.num_labels, revision)
    return meta_model(run.base_model, revision=revision)


# --------------------------------------------------------------------------- the workload


@dataclass(frozen=True)
class Workload:
    """What one strategy's fit computes and holds, before anything runs."""

    method: TrainingMethod
    model: Architecture
    """The model that trains (or, for ``features``/``none``, the one that runs)."""
    tokens: int
    """Token positions the training loop computes over every epoch, padding included (for
    ``features``: one forward pass over the training texts)."""
    batch: tuple[int, int] = (0, 0)
    """The largest micro-batch: (sequences, tokens per sequence)."""
    steps: int = 0
    one_off_flops: float = 0.0
    one_off: str = ""
    held_params: int = 0
    """Weights held besides ``model`` (a teacher; another model a prompt strategy runs)."""
    weight_bytes: float = BYTES_PER_WEIGHT
    """Bytes per weight of ``model`` as it is held (fp32; a 4-bit base holds about half a byte)."""
    notes: tuple[str, ...] = ()
    not_estimated: str | None = None
    """Why no numbers are given (set instead of guessing)."""

    @property
    def flops(self) -> float:
        if self.not_estimated is not None:
            return 0.0
        trainable = min(self.model.trainable_params, self.model.matmul_params)
        return (
            training_flops(self.method, self.model.matmul_params, trainable, self.tokens)
            + self.one_off_flops
        )


def not_estimated(method: TrainingMethod, reason: str) -> Workload:
    return Workload(method, Architecture(0, 0, 0, 0, 0, 1, 0), 0, not_estimated=reason)


def training_lengths(run: RunContext[Any]) -> list[int]:
    """Each training example's length in tokens, tokenised and (for chat with ``packing``)
    packed the way the run's training does; sft's replayed general text included."""
    from adaptlab.models.bundled import load_tokenizer

    tokenizer = load_tokenizer(run.base_model, run.experiment.model.revision)
    task = run.task
    if task.kind == "classification":
        from adaptlab.train.classifier import classification_examples

        examples = classification_examples(
            tokenizer, task.train_texts, task.train_labels, run.max_length
        )
        return [len(example["input_ids"]) for example in examples]
    from adaptlab.strategies.sft_full import SftConfig, training_examples
    from adaptlab.train.chat import example_length
    from adaptlab.train.sft import sft_examples, training_records

    if isinstance(run.config, SftConfig):
        rows = training_examples(run, tokenizer, run.config)
    else:
        rows, _ = sft_examples(tokenizer, training_records(task), run.max_length, packing=False)
    return [example_length(row) for row in rows]


def trained_workload(
    method: TrainingMethod,
    model: nn.Module,
    lengths: Sequence[int],
    train: TrainConfig,
    *,
    sequences_per_example: int = 1,
    **extra: Any,
) -> Workload:
    """The workload of training ``model`` (its ``requires_grad`` parameters) with the shared
    loop on examples of ``lengths`` tokens; ``extra`` sets :class:`Workload`'s other fields."""
    from adaptlab.train.loop import planned_batches

    batches = planned_batches(lengths, train)
    widths = [max((lengths[i] for i in batch), default=0) for batch in batches]
    tokens = sum(width * len(batch) for width, batch in zip(widths, batches, strict=True))
    largest = max(range(len(batches)), key=lambda i: widths[i] * len(batches[i]), default=None)
    shape = (0, 0) if largest is None else (len(batches[largest]), widths[largest])
    optimizer_steps = -(-len(batches) // train.gradient_accumulation_steps)
    return Workload(
        method,
        architecture(model),
        tokens * sequences_per_example,
        (shape[0] * sequences_per_example, shape[1]),
        optimizer_steps,
        **extra,
    )


def distilled_workload(
    teacher: nn.Module,
    student: nn.Module,
    lengths: Sequence[int],
    train: TrainConfig,
    one_off: str,
) -> Workload:
    """A student that trains fully while the teacher is held and runs over the same tokens
    once (its logits or answers): what every distillation strategy costs."""
    held = architecture(teacher)
    return trained_workload(
        "full",
        student,
        lengths,
        train,
        one_off_flops=2.0 * held.matmul_params * sum(lengths),
        one_off=one_off,
        held_params=held.total_params,
    )


def forward_workload(model: nn.Module, lengths: Sequence[int], **extra: Any) -> Workload:
    """One forward pass over examples of ``lengths`` (length-sorted batches: no padding)."""
    return Workload(
        "features",
        replace(architecture(model), trainable_params=0),
        sum(lengths),
        (min(EMBEDDING_BATCH, len(lengths)), max(lengths, default=0)),
        **extra,
    )


def default_workload(run: RunContext[Any], method: TrainingMethod | None = None) -> Workload:
    """The workload of a strategy that trains the base model as its method says: every weight
    (``full``), nothing but a forward pass over the training texts (``features``), or nothing
    (``none``: only the models it runs are held in memory)."""
    strategy = run.experiment.strategies.get(run.name, {}).get("strategy", run.name)
    method = method or STRATEGY_METHODS.get(str(strategy))
    if method is None:
        return not_estimated(
            "full",
            f"strategy '{strategy}' has no training method in STRATEGY_METHODS and no "
            "workload() of its own",
        )
    if method == "adapter":
        return not_estimated(
            method,
            f"strategy '{strategy}' trains adapters but says nothing of "
            "which (it has no workload())",
        )
    if method == "none":
        return prompt_workload(run)
    if method == "features":
        revision = run.experiment.model.revision
        return forward_workload(
            meta_model(run.base_model, revision=revision), training_lengths(run)
        )
    return trained_workload(method, meta_trained_model(run), training_lengths(run), run.train)


def prompt_workload(run: RunContext[Any]) -> Workload:
    """Nothing trains; the models the strategy runs are held: its other models, if it names
    any (an LLM to prompt, a retriever), else the base model."""
    names = run.config.other_models() or [run.base_model]
    models = [replace(architecture(meta_model(name)), trainable_params=0) for name in names]
    first = models[0]
    return Workload(
        "none",
        first,
        0,
        held_params=sum(m.total_params for m in models[1:]),
        notes=("nothing trains: 0 s of training; prompts are built and answered at evaluation",),
    )


def strategy_workload(strategy: Strategy | type[Any], run: RunContext[Any]) -> Workload:
    """The strategy's own ``workload(run)`` when it has one, else :func:`default_workload`."""
    own: Callable[[RunContext[Any]], Workload] | None = getattr(strategy, "workload", None)
    return default_workload(run) if own is None else own(run)


# --------------------------------------------------------------------------- memory


def activation_bytes(model: Architecture, batch: int, sequence: int, *, training: bool) -> float:
    """Activations of one micro-batch of ``batch`` sequences of ``sequence`` tokens.

    Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models",
    §4.1, eq. (1): a transformer layer stores s·b·h·(34 + 5·a·s/h) bytes for the backward pass
    at 16-bit precision (s tokens, b sequences, h hidden size, a heads; the 5·a·s/h term is
    the attention scores, softmax and its dropout mask); fp32 doubles it. Every layer's are
    kept while training, adapters included (the backward pass runs through the frozen
    layers to reach them); a forward pass without gradients holds about one layer's. A
    language model adds its output logits (4·b·s·V bytes) and, while training, their gradient.
    """
    s, b, h, a = sequence, batch, model.hidden, model.heads
    if h == 0 or s == 0:
        return 0.0
    per_layer = 2.0 * s * b * h * (34 + 5 * a * s / h)
    layers = model.layers if training else 1
    logits = BYTES_PER_WEIGHT * b * s * model.vocabulary * (2 if training else 1)
    return per_layer * layers + logits


def formula_bytes(workload: Workload) -> float:
    """Peak memory of the fit stage without the process baseline (see the module docstring)."""
    if workload.not_estimated is not None:
        return 0.0
    model = workload.model
    frozen = model.total_params - model.trainable_params
    weights = workload.weight_bytes * frozen + BYTES_PER_WEIGHT * (
        model.trainable_params + workload.held_params
    )
    if workload.method == "none":
        return float(weights)
    training = workload.method in TRAINING_METHODS
    optimizer = OPTIMIZER_BYTES_PER_TRAINABLE * model.trainable_params if training else 0
    batch, sequence = workload.batch
    return weights + optimizer + activation_bytes(model, batch, sequence, training=training)


# --------------------------------------------------------------------------- runs on record


@dataclass(frozen=True)
class RecordedRun:
    """A finished run and the workload the estimator gives it, to calibrate against."""

    folder: Path
    name: str
    strategy: str
    base_model: str
    workload: Workload
    fit_wall_s: float
    peak_rss_bytes: int | None

    def utilisation(self, profile: HardwareProfile) -> float | None:
        """Measured model FLOPs utilisation: workload FLOPs / fit seconds / peak FLOP/s."""
        flops = self.workload.flops
        if flops <= 0 or self.fit_wall_s <= 0:
            return None
        return measured_utilisation(flops, self.fit_wall_s, profile)

    @property
    def memory_residual(self) -> float | None:
        """Measured peak minus the formula: what the baseline has to explain."""
        if self.peak_rss_bytes is None or self.workload.not_estimated is not None:
            return None
        return self.peak_rss_bytes - formula_bytes(self.workload)


def run_folders(paths: Iterable[Path]) -> list[Path]:
    """Finished run folders (with ``manifest.json``) given directly, in a ``runs/`` folder
    of an experiment, or as an experiment folder's runs."""
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if (path / "manifest.json").is_file():
            found.append(path)
            continue
        for parent in (path / "runs", path):
            if parent.is_dir():
                found.extend(sorted(p for p in parent.iterdir() if (p / "manifest.json").is_file()))
    return list(dict.fromkeys(found))


def recorded_run(folder: Path) -> RecordedRun:
    """The workload of the finished run in ``folder``, rebuilt from its ``config.yaml`` and its
    experiment's prepared data (``<experiment>/data``, next to ``runs/``); read-only."""
    from adaptlab.paths import read_json_object

    cost = read_json_object(folder / "cost.json")
    if cost is None or "fit_wall_s" not in cost:
        raise ConfigError(f"{folder}: no cost.json with fit_wall_s")
    resolved = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    experiment_folder = folder.parent.parent
    experiment, name = _run_experiment(resolved, experiment_folder)
    task = _prepared_task(experiment_folder / "data", experiment)
    train = TrainConfig.model_validate(resolved["train"])
    workload = workload_for(name, experiment, task, train, resolved.get("strategy_config"))
    peak = cost.get("peak_rss_bytes")
    strategy = str(experiment.strategies.get(name, {}).get("strategy", name))
    return RecordedRun(
        folder,
        name,
        strategy,
        experiment.model.base_model,
        workload,
        float(cost["fit_wall_s"]),
        int(peak) if isinstance(peak, int) and cost.get("peak_rss_scope") == "fit" else None,
    )


def _run_experiment(resolved: dict[str, Any], folder: Path) -> tuple[ExperimentConfig, str]:
    """The run's experiment: its own resolved sections over the experiment's ``strategies``."""
    name = str(resolved["strategy"])
    strategies: dict[str, Any] = {}
    saved = folder / "experiment.yaml"
    if saved.is_file():
        strategies = dict(
            (yaml.safe_load(saved.read_text(encoding="utf-8")) or {}).get("strategies") or {}
        )
    experiment = ExperimentConfig.model_validate(
        {key: resolved[key] for key in ("model", "lora", "data") if key in resolved}
        | {"strategies": strategies, "name": folder.name, "output_dir": str(folder.parent)}
    )
    return experiment, name


def _prepared_task(folder: Path, experiment: ExperimentConfig) -> Task:
    from adaptlab.compare import experiment_task
    from adaptlab.data.pipeline import open_prepared

    prepared = open_prepared(folder, allow_contaminated=experiment.data.allow_contaminated)
    return experiment_task(prepared)


def workload_for(
    name: str,
    experiment: ExperimentConfig,
    task: Task,
    train: TrainConfig | None = None,
    raw_config: dict[str, Any] | None = None,
) -> Workload:
    """The workload of run ``name`` of ``experiment`` on ``task`` (train settings merged as
    ``compare`` merges them unless given)."""
    from adaptlab.strategies.base import RunContext, merged_train_config, resolve_run

    settings = experiment.strategies.get(name)
    strategy, config = resolve_run(name, settings)
    if raw_config is not None:
        config = config.model_validate({**raw_config})
    if train is None:
        train = merged_train_config(experiment.train, experiment.train.model_fields_set, config)
    with tempfile.TemporaryDirectory(prefix="adaptlab-estimate-") as scratch:
        run: RunContext[Any] = RunContext(
            name, Path(scratch) / name, task, experiment, config, train, Path(scratch)
        )
        return strategy_workload(strategy, run)


def recorded_runs(paths: Iterable[Path]) -> tuple[list[RecordedRun], dict[str, str]]:
    """Every finished run under ``paths`` that can be rebuilt, and why the others cannot."""
    runs, problems = [], {}
    for folder in run_folders(paths):
        try:
            runs.append(recorded_run(folder))
        except Exception as exc:  # one unreadable run must not sink the estimate
            problems[str(folder)] = f"{exc.__class__.__name__}: {exc}"
    return runs, problems


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class Calibration:
    value: float
    source: str
    runs: tuple[str, ...] = ()


def calibrated_utilisation(
    workload: Workload,
    strategy: str,
    base_model: str,
    pool: Sequence[RecordedRun],
    profile_name: str,
    profiles: dict[str, HardwareProfile],
    exclude: Path | None = None,
) -> Calibration:
    """The utilisation to divide by (see the module docstring for the order of preference)."""
    profile = profiles[profile_name]
    assumed = Calibration(profile.assumed_utilisation, f"assumed by profile '{profile_name}'")
    if profile_name != MEASURED_PROFILE:
        return assumed
    measured_on = profiles[MEASURED_PROFILE]
    usable = [
        run for run in pool if run.folder != exclude and run.utilisation(measured_on) is not None
    ]
    method = workload.method

    def same_model(run: RecordedRun) -> bool:
        return run.base_model == base_model

    trains = method in TRAINING_METHODS
    tiers: tuple[tuple[str, Callable[[RecordedRun], bool]], ...] = (
        ("same strategy and base model", lambda r: r.strategy == strategy and same_model(r)),
        ("same method and base model", lambda r: r.workload.method == method and same_model(r)),
        ("same method", lambda r: r.workload.method == method),
        (
            "another training method, same base model",
            lambda r: trains and r.workload.method in TRAINING_METHODS and same_model(r),
        ),
    )
    for label, keep in tiers:
        chosen = [run for run in usable if keep(run)]
        if chosen:
            values = [run.utilisation(measured_on) or 0.0 for run in chosen]
            names = tuple(sorted(run.name for run in chosen))
            return Calibration(
                statistics.median(values),
                f"measured: median of {len(chosen)} run(s), {label} ({', '.join(names)})",
                names,
            )
    return assumed


def calibrated_baseline(
    pool: Sequence[RecordedRun], exclude: Path | None = None, trains: bool = True
) -> Calibration:
    """Process baseline memory: the median residual of runs on record that train (or, for
    ``trains=False``, that do not: no autograd and optimizer bookkeeping), else of all runs
    on record, else this process's resident set."""
    residuals = [
        (run, residual)
        for run in pool
        if run.folder != exclude and (residual := run.memory_residual) is not None
    ]
    alike = [(r, v) for r, v in residuals if (r.workload.method in TRAINING_METHODS) == trains]
    chosen = alike or residuals
    if chosen:
        kind = ("training" if trains else "non-training") if alike else "all"
        names = tuple(sorted(run.name for run, _ in chosen))
        return Calibration(
            statistics.median(value for _, value in chosen),
            f"median of measured peak − formula over {len(chosen)} {kind} run(s) on record",
            names,
        )
    return Calibration(float(current_rss_bytes()), "this process's resident set after imports")


# --------------------------------------------------------------------------- the estimate


@dataclass(frozen=True)
class Estimate:
    """One strategy's estimate and where its numbers come from."""

    name: str
    strategy: str
    workload: Workload
    utilisation: Calibration | None
    baseline: Calibration
    seconds: float | None
    peak_bytes: float | None
    cost: float | None
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        w = self.workload
        return {
            "run": self.name,
            "strategy": self.strategy,
            "method": w.method,
            "tokens": w.tokens,
            "steps": w.steps,
            "largest_micro_batch": {"sequences": w.batch[0], "tokens": w.batch[1]},
            "total_params": w.model.total_params,
            "matmul_params": w.model.matmul_params,
            "trainable_params": w.model.trainable_params,
            "held_params": w.held_params,
            "flops": w.flops,
            "one_off_flops": w.one_off_flops,
            "one_off": w.one_off or None,
            "utilisation": None if self.utilisation is None else self.utilisation.value,
            "utilisation_source": None if self.utilisation is None else self.utilisation.source,
            "seconds": self.seconds,
            "peak_memory_bytes": self.peak_bytes,
            "cost_usd": self.cost,
            "notes": list(w.notes),
            "not_estimated": w.not_estimated,
            "warnings": list(self.warnings),
        }


def estimate_workload(
    name: str,
    strategy: str,
    base_model: str,
    workload: Workload,
    pool: Sequence[RecordedRun],
    profile_name: str,
    profiles: dict[str, HardwareProfile],
    exclude: Path | None = None,
) -> Estimate:
    """Time, peak memory and cost of ``workload`` on profile ``profile_name``."""
    profile = profiles[profile_name]
    baseline = calibrated_baseline(pool, exclude, workload.method in TRAINING_METHODS)
    if workload.not_estimated is not None:
        return Estimate(name, strategy, workload, None, baseline, None, None, None)
    utilisation = None
    seconds = 0.0
    if workload.flops > 0:
        utilisation = calibrated_utilisation(
            workload, strategy, base_model, pool, profile_name, profiles, exclude
        )
        seconds = seconds_for(workload.flops, profile, utilisation.value)
    peak = baseline.value + formula_bytes(workload)
    warnings = []
    if peak > profile.memory_gb * 1e9:
        warnings.append(
            f"estimated peak {peak / 1e9:.1f} GB exceeds the {profile.memory_gb:g} GB of "
            f"'{profile_name}'"
        )
    return Estimate(
        name,
        strategy,
        workload,
        utilisation,
        baseline,
        seconds,
        peak,
        cost_of(seconds, profile),
        tuple(warnings),
    )


@dataclass(frozen=True)
class ExperimentEstimate:
    profile_name: str
    profile: HardwareProfile
    estimates: list[Estimate]
    calibration_runs: list[str]
    problems: dict[str, str] = field(default_factory=dict)

    def assumptions(self) -> list[str]:
        return assumption_lines(self)

    def as_dict(self) -> dict[str, Any]:
        return {
            "hardware": self.profile_name,
            "profile": self.profile.model_dump(mode="json"),
            "estimates": [estimate.as_dict() for estimate in self.estimates],
            "calibration_runs": self.calibration_runs,
            "runs_left_out": self.problems,
            "assumptions": self.assumptions(),
        }


def estimate_experiment(
    experiment: ExperimentConfig,
    names: Sequence[str] | None,
    profile_name: str,
    profiles: dict[str, HardwareProfile],
    runs: Sequence[Path] | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> ExperimentEstimate:
    """Estimates for each run ``compare`` would make of ``experiment`` (or ``names``)."""
    from adaptlab.compare import experiment_dir, ordered_strategies
    from adaptlab.cost.hardware import get_profile
    from adaptlab.strategies.base import require_supported, resolve_run

    profile = get_profile(profiles, profile_name)
    task = experiment_task_without_writing(experiment, log)
    ordered = ordered_strategies(names, experiment, task.kind)
    for name in ordered:
        require_supported(name, resolve_run(name, experiment.strategies.get(name))[0], task.kind)
    pool, problems = recorded_runs(
        runs if runs is not None else [experiment_dir(experiment) / "runs"]
    )
    estimates = []
    for name in ordered:
        log(f"[{name}] counting tokens and parameters")
        strategy = str(experiment.strategies.get(name, {}).get("strategy", name))
        workload = workload_for(name, experiment, task)
        estimates.append(
            estimate_workload(
                name, strategy, experiment.model.base_model, workload, pool, profile_name, profiles
            )
        )
    return ExperimentEstimate(
        profile_name, profile, estimates, [str(run.folder) for run in pool], problems
    )


def experiment_task_without_writing(
    experiment: ExperimentConfig, log: Callable[[str], None]
) -> Task:
    """The task ``compare`` would train on: its prepared data when current, else the data
    checked and prepared into a temporary folder (the experiment folder is left as it is)."""
    from adaptlab.compare import _prepared_is_current, experiment_dir, experiment_task
    from adaptlab.data.pipeline import check_data, open_prepared, prepare_data

    folder = experiment_dir(experiment) / "data"
    allow = experiment.data.allow_contaminated
    if _prepared_is_current(folder, experiment):
        return experiment_task(open_prepared(folder, allow_contaminated=allow))
    log("Checking the data (into a temporary folder; nothing is written to the experiment)")
    with tempfile.TemporaryDirectory(prefix="adaptlab-estimate-data-") as scratch:
        result = check_data(experiment.data, experiment.model)
        prepare_data(result, experiment.data, Path(scratch))
        return experiment_task(open_prepared(Path(scratch), allow_contaminated=allow))


FORMULAS: dict[str, str] = {
    "full": "6·N·T (forward 2·N·T, backward 4·N·T; Kaplan et al. 2020)",
    "adapter": "(4·N + 2·N_t)·T (gradients flow through the frozen weights; only N_t get "
    "weight gradients)",
    "top_blocks": "(2·N + 4·N_t)·T (backpropagation stops at the lowest trained block)",
    "features": "2·N·T, one forward pass over the training texts (the head's FLOPs are left out)",
    "none": "0: nothing trains",
}


def assumption_lines(result: ExperimentEstimate) -> list[str]:
    """The numbered list printed under the table: every assumption behind the numbers."""
    profile, name = result.profile, result.profile_name
    methods = sorted(
        {e.workload.method for e in result.estimates if e.workload.not_estimated is None}
    )
    lines = [
        "Training FLOPs per method, N = parameters of linear layers (embedding tables are "
        "looked up, not multiplied), N_t = trainable ones, T = token positions the loop "
        "computes (padding included, every epoch, from the loop's own batch plan): "
        + "; ".join(f"{m}: {FORMULAS[m]}" for m in methods)
        + ".",
        "Attention's sequence-length term (2·layers·s·h per token forward) is left out: "
        "small next to 2·N for short sequences.",
        f"Time = FLOPs / ({profile.peak_tflops:g} TFLOP/s {profile.precision} peak of '{name}' "
        "x utilisation). "
        + (
            "Utilisation measured on runs on record (same strategy and base model first, "
            "then the same method): " + (", ".join(result.calibration_runs) or "none found")
            if name == MEASURED_PROFILE
            else f"Utilisation is the profile's assumed {profile.assumed_utilisation:.0%}: runs "
            f"on record were measured on '{MEASURED_PROFILE}', whose utilisation says nothing "
            "about this machine's"
        )
        + ".",
        "Peak memory = baseline + fp32 weights 4·N_total (a teacher's too) + gradient and "
        "AdamW moments 12·N_t + activations of the largest micro-batch (Korthikanti et al. "
        "2022, s·b·h·(34 + 5·a·s/h) bytes per layer at 16-bit, doubled for fp32; a language "
        "model's logits and their gradient added).",
        "Baseline memory: " + _baseline_source(result) + ".",
        f"Cost = time / 3600 x ${profile.price_per_hour:g}/h "
        f"({profile.price_source or 'no source given'}).",
        "Left out: data preparation, evaluation and generation time, latency measurement, "
        "the retention check of generative runs, model loading and saving.",
    ]
    for estimate in result.estimates:
        for note in estimate.workload.notes:
            lines.append(f"{estimate.name}: {note}.")
        if estimate.workload.not_estimated:
            lines.append(f"{estimate.name}: not estimated: {estimate.workload.not_estimated}.")
    if result.problems:
        lines.append(
            "Runs on record left out of the calibration: "
            + "; ".join(f"{path} ({why})" for path, why in result.problems.items())
        )
    return lines


def _baseline_source(result: ExperimentEstimate) -> str:
    sources = {e.baseline.source for e in result.estimates}
    values = {round(e.baseline.value / 2**20) for e in result.estimates}
    return ", ".join(sorted(sources)) + f" ({', '.join(f'{v:,} MiB' for v in sorted(values))})"


# --------------------------------------------------------------------------- checking


@dataclass(frozen=True)
class CheckRow:
    """A run on record against its leave-one-out estimate."""

    run: str
    folder: Path
    strategy: str
    method: str
    measured_s: float
    estimated_s: float | None
    measured_peak: int | None
    estimated_peak: float | None
    utilisation_source: str | None

    @property
    def time_error(self) -> float | None:
        """(estimated − measured) / measured; None where nothing trains or nothing was estimated."""
        if self.estimated_s is None or self.method == "none" or self.measured_s <= 0:
            return None
        return (self.estimated_s - self.measured_s) / self.measured_s

    @property
    def memory_error(self) -> float | None:
        if self.estimated_peak is None or not self.measured_peak:
            return None
        return (self.estimated_peak - self.measured_peak) / self.measured_peak


def check_against_runs(
    folders: Iterable[Path], profiles: dict[str, HardwareProfile] | None = None
) -> tuple[list[CheckRow], dict[str, str]]:
    """Estimate every finished run in ``folders`` from the *other* runs (leave-one-out: a run
    never calibrates its own estimate) on the profile runs are measured on."""
    from adaptlab.cost.hardware import load_hardware

    profiles = profiles or load_hardware()
    pool, problems = recorded_runs(folders)
    rows = []
    for run in pool:
        estimate = estimate_workload(
            run.name,
            run.strategy,
            run.base_model,
            run.workload,
            pool,
            MEASURED_PROFILE,
            profiles,
            exclude=run.folder,
        )
        rows.append(
            CheckRow(
                run.name,
                run.folder,
                run.strategy,
                run.workload.method,
                run.fit_wall_s,
                estimate.seconds,
                run.peak_rss_bytes,
                estimate.peak_bytes,
                None if estimate.utilisation is None else estimate.utilisation.source,
            )
        )
    return rows, problems
