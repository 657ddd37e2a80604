"""``adaptlab compare``: every strategy on the same data and the same locked eval set.

Data is prepared (or reused) once, each strategy runs into its own run directory (skipped when
a finished run with the same data, eval set, model and config is already there), and the
comparison is built from the run directories alone.

The prepared data's format decides the task kind: classification data makes a classification
task (ranked on accuracy), chat data a generative one (answers scored as JSON slot frames,
ranked on slot F1). Only strategies that handle that kind run: by default all of them, and
naming another is an error before anything runs.

Generative runs are also checked for catastrophic forgetting (``compare.retention``): the
run's LM and the base model are measured the same way (:mod:`adaptlab.evaluate.forgetting`),
the base once per experiment (kept in ``base_retention.json``, keyed by the base model's
fingerprint and the measurement's settings), and the change lands in the run's ``eval.json``,
its leaderboard row (``forgetting``, read by the decision rules) and the leaderboard.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adaptlab.config import CompareConfig, ExperimentConfig, TrainConfig, to_yaml
from adaptlab.cost.memory import peak_cuda_bytes, peak_rss_bytes, reset_peak
from adaptlab.data.convert import SLOT_ORDER, restaurant8k_slots
from adaptlab.data.formats import LoadedData
from adaptlab.data.issues import DataError
from adaptlab.data.lock import (
    EVAL_NAME,
    TRAIN_NAME,
    EvalLockError,
    read_lock,
    require_same_eval,
    sha256_file,
)
from adaptlab.data.pipeline import (
    PreparedData,
    check_data,
    open_prepared,
    prepare_data,
    write_report,
)
from adaptlab.evaluate.bootstrap import paired_bootstrap, paired_bootstrap_micro_f1
from adaptlab.evaluate.forgetting import forgetting, retention, retention_fingerprint
from adaptlab.evaluate.harness import evaluate_classifier, evaluate_generator, sample_indices
from adaptlab.evaluate.slots import normalise_value
from adaptlab.models.causal_lm import CausalLM
from adaptlab.models.encoder import model_fingerprint, weights_bytes
from adaptlab.paths import read_json_object, write_text_atomic
from adaptlab.runs import (
    GENERATIONS,
    RunError,
    RunFolder,
    base_manifest,
    dependency_fingerprints,
    folder_size,
)
from adaptlab.strategies.base import (
    ClassificationTask,
    Classifier,
    GenerativeTask,
    Generator,
    RunContext,
    StrategyConfig,
    StrategyUnavailableError,
    Task,
    TaskKind,
    Track,
    merged_train_config,
    no_progress,
    require_supported,
    resolve_run,
    strategies_for,
    unavailable_here,
)

Log = Callable[[str], None]

BASE_RETENTION = "base_retention.json"
"""The base model's retention measurement, in the experiment folder."""


def experiment_dir(experiment: ExperimentConfig) -> Path:
    return Path(experiment.output_dir) / experiment.name


# --------------------------------------------------------------------------- data


def prepare_experiment_data(experiment: ExperimentConfig, track: Track, log: Log) -> PreparedData:
    """The experiment's prepared data folder, made once and then reused while it is valid."""
    folder = experiment_dir(experiment) / "data"
    if _prepared_is_current(folder, experiment):
        log(f"Using prepared data in {folder} (eval set locked)")
    else:
        log(f"Preparing data into {folder}")
        result = check_data(experiment.data, experiment.model, track)
        write_report(result.report, folder)
        prepare_data(result, experiment.data, folder)
    return open_prepared(folder, allow_contaminated=experiment.data.allow_contaminated)


def _prepared_is_current(folder: Path, experiment: ExperimentConfig) -> bool:
    """A lock exists and was made from the same source files with the same split settings."""
    try:
        lock = read_lock(folder)
    except EvalLockError:
        return False
    data = experiment.data
    source = data.train
    if source is None or not Path(source).is_file():
        return False
    same_source = lock.split.get("train_file_sha256") == sha256_file(Path(source))
    if data.eval is not None:
        given = Path(data.eval)
        same_eval = given.is_file() and lock.split.get("eval_file_sha256") == sha256_file(given)
        return same_source and same_eval and lock.source == "given"
    same_split = (lock.split.get("val_set_size"), lock.split.get("seed")) == (
        data.val_set_size,
        data.seed,
    )
    return same_source and same_split and lock.source == "split"


def classification_task(prepared: PreparedData) -> ClassificationTask:
    """Texts and label ids from a prepared classification folder."""
    lock = prepared.lock
    if lock.format != "classification" or not lock.text_field or not lock.label_field:
        raise DataError(
            f"{prepared.folder}: `compare` needs classification data, got {lock.format}"
        )
    names = tuple(lock.labels or [])
    index = {name: i for i, name in enumerate(names)}
    text, label = lock.text_field, lock.label_field

    def split(records: Sequence[Any]) -> tuple[list[str], np.ndarray]:
        texts = [str(r.data[text]) for r in records]
        labels = np.array([index[str(r.data[label])] for r in records], dtype=np.int64)
        return texts, labels

    train_texts, train_labels = split(prepared.train.records)
    eval_texts, eval_labels = split(prepared.eval.records)
    return ClassificationTask(
        names,
        train_texts,
        train_labels,
        eval_texts,
        eval_labels,
        sha256_file(prepared.folder / TRAIN_NAME),
        lock.eval_sha256,
    )


def generative_task(prepared: PreparedData) -> GenerativeTask:
    """Chat records and gold slot frames from a prepared chat folder."""
    lock = prepared.lock
    if lock.format != "chat":
        raise DataError(f"{prepared.folder}: a generative task needs chat data, got {lock.format}")
    train_frames = _frames(prepared.train, prepared.folder / TRAIN_NAME)
    eval_frames = _frames(prepared.eval, prepared.folder / EVAL_NAME)
    named = {slot for frame in train_frames + eval_frames for slot in frame}
    known = [slot for slot in SLOT_ORDER if slot in named]
    return GenerativeTask(
        tuple(known + sorted(named - set(known))),
        [list(r.data["messages"]) for r in prepared.train.records],
        [list(r.data["messages"]) for r in prepared.eval.records],
        eval_frames,
        sha256_file(prepared.folder / TRAIN_NAME),
        lock.eval_sha256,
    )


def _frames(data: LoadedData, path: Path) -> list[dict[str, str]]:
    """Each record's last assistant message read as a slot frame, or an error naming it."""
    frames = []
    for record in data.records:
        try:
            frame = restaurant8k_slots(record.data)
            if not all(normalise_value(value) for value in frame.values()):
                raise DataError("a slot's value is empty")
        except DataError as exc:
            raise DataError(
                f"{path}:{record.line}: a generative task scores answers as JSON slot frames "
                f"(slot -> text); this record's answer is not one: {exc}"
            ) from None
        frames.append(frame)
    return frames


def experiment_task(prepared: PreparedData) -> Task:
    """The task the prepared data makes: classification records a classification task, chat
    records a generative one."""
    if prepared.lock.format == "chat":
        return generative_task(prepared)
    if prepared.lock.format == "classification":
        return classification_task(prepared)
    raise DataError(
        f"{prepared.folder}: `compare` takes classification or chat data, got "
        f"{prepared.lock.format}; convert it to chat records (messages)"
    )


# --------------------------------------------------------------------------- running


def ordered_strategies(
    names: Sequence[str] | None,
    experiment: ExperimentConfig,
    task_kind: TaskKind = "classification",
) -> list[str]:
    """Requested strategies with their prerequisites first (a teacher before its student);
    none requested: every strategy that handles ``task_kind``."""
    requested = list(names or experiment.compare.strategies or strategies_for(task_kind))
    ordered: list[str] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in ordered:
            return
        if name in chain:
            raise ValueError(f"strategy dependency cycle: {' -> '.join((*chain, name))}")
        strategy, config = resolve_run(name, experiment.strategies.get(name))
        for needed in strategy.requires(config):
            if needed in requested:
                visit(needed, (*chain, name))
        ordered.append(name)

    for name in requested:
        visit(name, ())
    return ordered


def runnable_here(
    ordered: list[str], experiment: ExperimentConfig, *, chosen: bool, log: Log
) -> list[str]:
    """The runs this machine can do. One that cannot (qlora without CUDA) is an error before
    anything runs when the user ``chosen`` the list, and is left out, with a line saying why,
    from the default list of every strategy."""
    runnable = []
    for name in ordered:
        reason = unavailable_here(*resolve_run(name, experiment.strategies.get(name)))
        if reason is None:
            runnable.append(name)
        elif chosen:
            raise StrategyUnavailableError(f"strategy '{name}' cannot run here: {reason}")
        else:
            log(f"[{name}] left out: {reason}")
    return runnable


def run_strategy(
    name: str,
    experiment: ExperimentConfig,
    prepared: PreparedData,
    task: Task,
    track: Track,
    log: Log,
    force: bool = False,
) -> RunFolder:
    """Fit, evaluate and record one strategy, unless an equivalent finished run exists."""
    strategy, config = resolve_run(name, experiment.strategies.get(name))
    require_supported(name, strategy, task.kind)
    train = merged_train_config(experiment.train, experiment.train.model_fields_set, config)
    folder = RunFolder(experiment_dir(experiment) / "runs" / name)
    config_yaml = _run_config_yaml(experiment, name, config, train)
    manifest = base_manifest(
        name,
        task.train_sha256,
        task.eval_sha256,
        experiment.model.base_model,
        model_fingerprint(experiment.model.base_model),
        config_yaml,
        train.seed,
        prepared.allow_contaminated,
    )
    manifest["dependencies"] = dependency_fingerprints(
        experiment_dir(experiment) / "runs", strategy.requires(config)
    )
    if config.other_models():
        manifest["other_models"] = {m: model_fingerprint(m) for m in config.other_models()}
    if not force and folder.matches(manifest):
        log(f"[{name}] up to date in {folder.path}; skipped")
        return folder
    resume = not force and folder.can_resume(config_yaml)
    if resume:
        log(f"[{name}] resuming the interrupted run from its checkpoint")
    else:
        folder.reset()
        (folder.path / "config.yaml").write_text(config_yaml)
    context: RunContext[Any] = RunContext(
        name,
        folder.path,
        task,
        experiment,
        config,
        train,
        experiment_dir(experiment) / "runs",
        track,
        resume=resume,
    )
    log(f"[{name}] fitting")
    per_stage = reset_peak()
    start = time.perf_counter()
    model = strategy.fit(context)
    fit_seconds = time.perf_counter() - start
    context.record(
        peak_rss_bytes=peak_rss_bytes(),
        peak_rss_scope="fit" if per_stage else "process",
        peak_cuda_bytes=peak_cuda_bytes(),
    )
    indices = sample_indices(task.eval_size, getattr(config, "eval_limit", None), seed=0)
    log(f"[{name}] evaluating on {len(indices):,} of {task.eval_size:,} locked eval examples")
    payload = _evaluate(name, model, task, experiment.compare, indices, folder)
    if experiment.compare.retention.enabled and isinstance(task, GenerativeTask):
        assert isinstance(model, Generator)  # _evaluate refused anything else
        payload["retention"] = measure_retention(name, model, experiment, log)
    folder.write_json("eval.json", {"strategy": name, **payload})
    folder.write_json("cost.json", _cost(context, fit_seconds, folder.path))
    folder.write_json("manifest.json", manifest)  # last: its presence marks the run finished
    return folder


def _evaluate(
    name: str,
    model: Classifier | Generator,
    task: Task,
    settings: CompareConfig,
    indices: np.ndarray,
    folder: RunFolder,
) -> dict[str, Any]:
    """Score the fitted model on the eval items ``indices``; write its per-example results."""
    if isinstance(task, GenerativeTask):
        if not isinstance(model, Generator):
            raise TypeError(f"strategy '{name}' returned {type(model).__name__}, not a Generator")
        payload, answers = evaluate_generator(model, task, settings, indices)
        folder.write_prediction_arrays(answers.arrays())
        folder.write_jsonl(GENERATIONS, answers.rows())
        return payload
    if not isinstance(model, Classifier):
        raise TypeError(f"strategy '{name}' returned {type(model).__name__}, not a Classifier")
    payload, probabilities, indices = evaluate_classifier(model, task, settings, indices)
    folder.write_predictions(probabilities, task.eval_labels[indices], indices)
    return {"task": task.kind, **payload}


def measure_retention(
    name: str, generator: Generator, experiment: ExperimentConfig, log: Log
) -> dict[str, Any]:
    """Retention of the run's LM and its change against the base model (``vs_base``)."""
    log(f"[{name}] measuring retention (held-out perplexity, general instructions)")
    measured = retention(generator.lm, experiment.compare.retention)
    change = forgetting(base_retention(experiment, log), measured)
    return {**measured, "vs_base": {"base_model": experiment.model.base_model, **change}}


def base_retention(experiment: ExperimentConfig, log: Log) -> dict[str, Any]:
    """The base model's retention, measured once per base weights and retention settings and
    kept in the experiment folder: every generative run is compared with the same numbers."""
    settings, model = experiment.compare.retention, experiment.model
    key = {
        "base_model": model.base_model,
        "revision": model.revision,
        "model_fingerprint": model_fingerprint(model.base_model),
        "retention_fingerprint": retention_fingerprint(settings),
    }
    path = experiment_dir(experiment) / BASE_RETENTION
    cached = read_json_object(path)
    if cached is not None and cached.get("key") == key:
        return dict(cached["retention"])
    log(f"measuring the base model's retention ({model.base_model}) into {path}")
    measured = retention(CausalLM.load(model.base_model, model.revision), settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"key": key, "retention": measured}, indent=2) + "\n")
    return measured


def _run_config_yaml(
    experiment: ExperimentConfig, name: str, config: StrategyConfig, train: TrainConfig
) -> str:
    resolved = {
        "strategy": name,
        "strategy_config": config.model_dump(mode="json"),
        "train": train.model_dump(mode="json"),
        "model": experiment.model.model_dump(mode="json"),
        "lora": experiment.lora.model_dump(mode="json"),
        "data": experiment.data.model_dump(mode="json"),
    }
    import yaml

    return str(yaml.safe_dump(resolved, sort_keys=False))


def _cost(context: RunContext[Any], fit_seconds: float, folder: Path) -> dict[str, Any]:
    facts = dict(context.facts)
    artefacts = folder_size(folder)
    # What serving needs on disk: the run's own weights, plus the base model's when the run
    # only stores a head, an index or an adapter on top of it, plus any other model it uses.
    base = weights_bytes(context.base_model) if facts.get("needs_base_model") else 0
    base += sum(weights_bytes(name) for name in context.config.other_models())
    return {
        "fit_wall_s": round(fit_seconds, 2),
        "artefact_bytes": artefacts,
        "size_on_disk_bytes": artefacts + base,
        "trainable_params": facts.pop("trainable_params", None),
        "total_params": facts.pop("total_params", None),
        **facts,
    }


# --------------------------------------------------------------------------- comparing

PRIMARY_METRIC: dict[str, str] = {"classification": "accuracy", "generative": "slot_f1"}
"""What runs of each task kind are ranked on (and the paired bootstrap compares)."""

METRIC_WORDS = {"accuracy": "accuracy", "slot_f1": "slot F1 (micro)"}


@dataclass(frozen=True)
class RunResult:
    name: str
    folder: Path
    eval: dict[str, Any]
    cost: dict[str, Any]
    manifest: dict[str, Any]
    predictions: dict[str, np.ndarray]
    """Per-example arrays on the eval items ``indices``: a classifier's ``probabilities`` and
    ``gold`` labels, a generator's slot ``counts``, ``exact`` and ``json_valid``."""

    @property
    def kind(self) -> str:
        # Runs finished before generative tasks existed have no "task": classification.
        return str(self.eval.get("task", "classification"))

    @property
    def indices(self) -> np.ndarray:
        return self.predictions["indices"]

    @property
    def score(self) -> float:
        return float(self.eval["metrics"][PRIMARY_METRIC[self.kind]])


def read_run(folder: Path) -> RunResult:
    run = RunFolder(folder)
    manifest = run.read_json("manifest.json")
    evaluation = run.read_json("eval.json")
    cost = run.read_json("cost.json")
    predictions = run.read_prediction_arrays()
    return RunResult(
        str(manifest.get("strategy", folder.name)),
        folder,
        evaluation,
        cost,
        manifest,
        predictions,
    )


def build_comparison(
    folders: Sequence[Path], settings: CompareConfig
) -> tuple[dict[str, Any], list[str]]:
    """Leaderboard data from run directories; unreadable runs are named and left out."""
    results, problems = [], []
    for folder in folders:
        try:
            results.append(read_run(folder))
        except RunError as exc:
            problems.append(str(exc))
    if not results:
        raise RunError("no finished runs to compare: " + "; ".join(problems))
    require_same_eval({r.name: str(r.manifest["eval_sha256"]) for r in results})
    kinds = {r.kind for r in results}
    if len(kinds) > 1:
        named = ", ".join(f"{r.name} ({r.kind})" for r in results)
        raise RunError(f"runs of different task kinds cannot be compared: {named}")
    kind = kinds.pop()
    best = max(results, key=lambda r: (not r.eval["sampled"], r.score))
    rows = [_row(result, best, settings) for result in results]
    metric = PRIMARY_METRIC[kind]
    rows.sort(key=lambda row: -row[metric])
    comparison = {
        "task": kind,
        "metric": metric,
        "best": best.name,
        "eval_sha256": best.manifest["eval_sha256"],
        "confidence": settings.confidence,
        "rows": rows,
        "problems": problems,
    }
    return comparison, problems


def _row(result: RunResult, best: RunResult, settings: CompareConfig) -> dict[str, Any]:
    generative = result.kind == "generative"
    if generative:
        measured = {**_generative_fields(result), **_retention_fields(result)}
    else:
        measured = _accuracy_fields(result)
    return {
        "strategy": result.name,
        "task": result.kind,
        "n": result.eval["n"],
        "sampled": result.eval["sampled"],
        **measured,
        "vs_best": _difference_to(result, best, settings),
        "size_on_disk_bytes": result.cost.get("size_on_disk_bytes"),
        "trainable_params": result.cost.get("trainable_params"),
        "total_params": result.cost.get("total_params"),
        "fit_wall_s": result.cost.get("fit_wall_s"),
        "peak_memory_bytes": result.cost.get("peak_rss_bytes"),
    }


def _accuracy_fields(result: RunResult) -> dict[str, Any]:
    metrics = result.eval["metrics"]
    latency = result.eval.get("latency", {})
    return {
        "accuracy": metrics["accuracy"],
        "accuracy_ci": result.eval["accuracy_ci"],
        "macro_f1": metrics["macro_f1"],
        "ece": metrics["ece"],
        "confident_wrong_rate": metrics["confident_wrong_rate"],
        "latency_batch1_p50_ms": latency.get("batch_1", {}).get("p50_ms"),
        "latency_batch1_p95_ms": latency.get("batch_1", {}).get("p95_ms"),
        "latency_batch32_per_example_ms": latency.get("batch_32", {}).get("per_example_ms"),
    }


def _generative_fields(result: RunResult) -> dict[str, Any]:
    metrics = result.eval["metrics"]
    cost = result.eval.get("cost", {})
    latency = cost.get("latency", {})
    return {
        "slot_f1": metrics["slot_f1"],
        "slot_f1_ci": result.eval["slot_f1_ci"],
        "slot_precision": metrics["slot_precision"],
        "slot_recall": metrics["slot_recall"],
        "json_valid_rate": metrics["json_valid_rate"],
        "exact_match": metrics["exact_match"],
        "latency_batch1_p50_ms": latency.get("p50_ms"),
        "latency_batch1_p95_ms": latency.get("p95_ms"),
        "output_tokens_per_s": cost.get("output_tokens_per_s"),
        "prompt_tokens_per_request": result.eval.get("tokens", {}).get("prompt", {}).get("mean"),
        "prompt_build_p50_ms": cost.get("prompt_build_latency", {}).get("p50_ms"),
    }


def _retention_fields(result: RunResult) -> dict[str, Any]:
    """The change against the base model (``None`` where retention was not measured)."""
    change = result.eval.get("retention", {}).get("vs_base", {})
    keys = ("forgetting", "instruction_pass_rate", "perplexity", "perplexity_ratio")
    return {key: change.get(key) for key in keys}


def _difference_to(
    result: RunResult, best: RunResult, settings: CompareConfig
) -> dict[str, Any] | None:
    """Paired bootstrap of the primary metric against the best run, on the eval items both
    scored: accuracy from per-item correctness, slot F1 from per-item slot counts (pooled)."""
    if result.name == best.name:
        return None
    shared, in_result, in_best = np.intersect1d(result.indices, best.indices, return_indices=True)
    if len(shared) == 0:
        return None
    options: dict[str, Any] = {
        "names": (result.name, best.name),
        "resamples": settings.bootstrap_resamples,
        "confidence": settings.confidence,
    }
    if result.kind == "generative":
        difference = paired_bootstrap_micro_f1(
            result.predictions["counts"][in_result],
            best.predictions["counts"][in_best],
            metric="slot_f1",
            **options,
        )
    else:
        difference = paired_bootstrap(
            _correct(result, in_result), _correct(best, in_best), metric="accuracy", **options
        )
    return {
        "difference": difference.difference,
        "low": difference.low,
        "high": difference.high,
        "significant": difference.significant(),
        "n": len(shared),
    }


def _correct(result: RunResult, rows: np.ndarray) -> np.ndarray:
    probabilities, gold = result.predictions["probabilities"], result.predictions["gold"]
    correct: np.ndarray = (probabilities[rows].argmax(1) == gold[rows]).astype(np.float64)
    return correct


# (markdown header, compact header for the terminal) of each leaderboard column, per task kind
COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "classification": (
        ("strategy", "strategy"),
        ("accuracy", "accuracy"),
        ("Δ vs best ({level}% CI)", "Δ vs best ({level}% CI)"),
        ("macro-F1", "macro-F1"),
        ("ECE", "ECE"),
        ("confidently wrong", "conf. wrong"),
        ("p50 ms (batch 1)", "p50 ms b1"),
        ("ms/example (batch 32)", "ms/ex b32"),
        ("size MB", "size MB"),
        ("trainable params", "trainable"),
        ("fit s", "fit s"),
        ("peak MB", "peak MB"),
    ),
    "generative": (
        ("strategy", "strategy"),
        ("slot F1", "slot F1"),
        ("Δ vs best ({level}% CI)", "Δ vs best ({level}% CI)"),
        ("JSON valid", "JSON valid"),
        ("exact match", "exact"),
        ("general instructions (Δ pts vs base)", "general (Δ)"),
        ("held-out perplexity (× base)", "ppl (× base)"),
        ("p50 ms (batch 1)", "p50 ms b1"),
        ("output tokens/s", "out tok/s"),
        ("prompt tokens/request", "prompt tok"),
        ("size MB", "size MB"),
        ("trainable params", "trainable"),
        ("fit s", "fit s"),
        ("peak MB", "peak MB"),
    ),
}


def leaderboard_headers(comparison: dict[str, Any], compact: bool = False) -> list[str]:
    """Column titles for the comparison's task kind (``compact``: for a terminal)."""
    level = round(comparison["confidence"] * 100)
    columns = COLUMNS[comparison.get("task", "classification")]
    return [pair[compact].format(level=level) for pair in columns]


def leaderboard_markdown(comparison: dict[str, Any]) -> str:
    headers = leaderboard_headers(comparison)
    lines = [
        "| " + " | ".join(headers) + " |",
        "|---|" + "---:|" * (len(headers) - 1),
    ]
    for row in comparison["rows"]:
        lines.append("| " + " | ".join(leaderboard_cells(row)) + " |")
    lines.append("")
    metric = METRIC_WORDS[comparison.get("metric", "accuracy")]
    lines.append(
        f"Best: **{comparison['best']}**. Δ is the paired-bootstrap difference in "
        f"{metric} to the best run on the same eval items; * marks a significant one."
    )
    if comparison.get("task") == "generative":
        lines.append(
            "Retention (catastrophic forgetting): the pass rate on adaptlab's fixed general "
            "instructions, Δ in points against the base model (a drop is the `forgetting` the "
            "decision rules read), and perplexity on held-out BBC News text, × the base "
            "model's; — where not measured."
        )
    for row in comparison["rows"]:
        if row["sampled"]:
            lines.append(
                f"- {row['strategy']} was scored on a fixed sample of {row['n']:,} eval "
                "examples (too slow for the whole set); its Δ is on that sample."
            )
    return "\n".join(lines) + "\n"


def leaderboard_cells(row: dict[str, Any]) -> list[str]:
    name = row["strategy"] + (" (sample)" if row["sampled"] else "")
    if row.get("task") == "generative":
        low, high = row["slot_f1_ci"]
        measured = [
            f"{row['slot_f1'] * 100:.2f} [{low * 100:.1f}, {high * 100:.1f}]",
            _delta(row["vs_best"]),
            f"{row['json_valid_rate'] * 100:.1f}%",
            f"{row['exact_match'] * 100:.1f}%",
            *_retention_cells(row),
            _number(row["latency_batch1_p50_ms"], "{:.1f}"),
            _number(row["output_tokens_per_s"], "{:.1f}"),
            _number(row["prompt_tokens_per_request"], "{:.0f}"),
        ]
    else:
        low, high = row["accuracy_ci"]
        measured = [
            f"{row['accuracy'] * 100:.2f}% [{low * 100:.1f}, {high * 100:.1f}]",
            _delta(row["vs_best"]),
            f"{row['macro_f1'] * 100:.2f}",
            f"{row['ece']:.3f}",
            f"{row['confident_wrong_rate'] * 100:.1f}%",
            _number(row["latency_batch1_p50_ms"], "{:.1f}"),
            _number(row["latency_batch32_per_example_ms"], "{:.2f}"),
        ]
    return [name, *measured, *_cost_cells(row)]


def _retention_cells(row: dict[str, Any]) -> list[str]:
    """Pass rate on the general instructions with its change in points against the base
    model, and held-out perplexity with its ratio to the base's; "—" where not measured."""
    rate, lost = row.get("instruction_pass_rate"), row.get("forgetting")
    general = "—" if rate is None else f"{rate * 100:.1f}%"
    if rate is not None and lost is not None:
        general += f" ({(0.0 - lost) * 100:+.1f})"  # 0.0 - x: an unchanged model shows +0.0
    perplexity, ratio = row.get("perplexity"), row.get("perplexity_ratio")
    held_out = "—" if perplexity is None else f"{perplexity:.2f} (×{ratio:.3f})"
    return [general, held_out]


def _delta(difference: dict[str, Any] | None) -> str:
    """A paired difference in points (×100), its CI, and * when significant."""
    if difference is None:
        return "—"
    return (
        f"{difference['difference'] * 100:+.1f} [{difference['low'] * 100:+.1f}, "
        f"{difference['high'] * 100:+.1f}]{'*' if difference['significant'] else ''}"
    )


def _cost_cells(row: dict[str, Any]) -> list[str]:
    size, peak = row["size_on_disk_bytes"], row["peak_memory_bytes"]
    return [
        _number(None if size is None else size / 2**20, "{:.1f}"),
        _number(row["trainable_params"], "{:,}"),
        _number(row["fit_wall_s"], "{:.1f}"),
        _number(None if peak is None else peak / 2**20, "{:.0f}"),
    ]


def _number(value: Any, pattern: str) -> str:
    return "—" if value is None else pattern.format(value)


@dataclass(frozen=True)
class Comparison:
    folder: Path
    comparison: dict[str, Any]
    failures: dict[str, str]


def compare(
    experiment: ExperimentConfig,
    names: Sequence[str] | None = None,
    track: Track = no_progress,
    log: Log = print,
    force: bool = False,
) -> Comparison:
    """Prepare data, run every requested strategy, and write the comparison."""
    prepared = prepare_experiment_data(experiment, track, log)
    task = experiment_task(prepared)
    ordered = ordered_strategies(names, experiment, task.kind)
    for name in ordered:  # a strategy for another kind of task is a mistake: refuse it at once
        require_supported(name, resolve_run(name, experiment.strategies.get(name))[0], task.kind)
    ordered = runnable_here(
        ordered, experiment, chosen=bool(names or experiment.compare.strategies), log=log
    )
    failures: dict[str, str] = {}
    folders = []
    for name in ordered:
        try:
            folders.append(run_strategy(name, experiment, prepared, task, track, log, force).path)
        except Exception as exc:  # one failing strategy must not sink the comparison
            failures[name] = f"{exc.__class__.__name__}: {exc}"
            log(f"[{name}] FAILED: {failures[name]}")
            (experiment_dir(experiment) / "runs" / name).mkdir(parents=True, exist_ok=True)
            (experiment_dir(experiment) / "runs" / name / "error.txt").write_text(
                traceback.format_exc()
            )
    comparison, _ = build_comparison(folders, experiment.compare)
    comparison["failures"] = failures
    out = experiment_dir(experiment)
    (out / "comparison.json").write_text(json.dumps(comparison, indent=2) + "\n")
    (out / "leaderboard.md").write_text(leaderboard_markdown(comparison))
    (out / "experiment.yaml").write_text(to_yaml(experiment))
    from adaptlab.report.build import report_after_compare  # imported here: it imports compare

    report_after_compare(out, comparison, log)
    return Comparison(out, comparison, failures)
