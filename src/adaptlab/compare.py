"""``adaptlab compare``: every strategy on the same data and the same locked eval set.

Data is prepared (or reused) once, each strategy runs into its own run directory (skipped when
a finished run with the same data, eval set, model and config is already there), and the
comparison is built from the run directories alone.
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
from adaptlab.data.issues import DataError
from adaptlab.data.lock import TRAIN_NAME, EvalLockError, read_lock, require_same_eval, sha256_file
from adaptlab.data.pipeline import (
    PreparedData,
    check_data,
    open_prepared,
    prepare_data,
    write_report,
)
from adaptlab.evaluate.bootstrap import paired_bootstrap
from adaptlab.evaluate.harness import evaluate_classifier, sample_indices
from adaptlab.models.encoder import model_fingerprint, weights_bytes
from adaptlab.runs import RunError, RunFolder, base_manifest, dependency_fingerprints, folder_size
from adaptlab.strategies.base import (
    REGISTRY,
    ClassificationTask,
    RunContext,
    StrategyConfig,
    Track,
    merged_train_config,
    no_progress,
    resolve_run,
)

Log = Callable[[str], None]


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


# --------------------------------------------------------------------------- running


def ordered_strategies(names: Sequence[str] | None, experiment: ExperimentConfig) -> list[str]:
    """Requested strategies with their prerequisites first (a teacher before its student)."""
    from adaptlab import strategies as _registered  # noqa: F401

    requested = list(names or experiment.compare.strategies or REGISTRY)
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


def run_strategy(
    name: str,
    experiment: ExperimentConfig,
    prepared: PreparedData,
    task: ClassificationTask,
    track: Track,
    log: Log,
    force: bool = False,
) -> RunFolder:
    """Fit, evaluate and record one strategy, unless an equivalent finished run exists."""
    strategy, config = resolve_run(name, experiment.strategies.get(name))
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
    context = RunContext(
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
    classifier = strategy.fit(context)
    fit_seconds = time.perf_counter() - start
    context.record(
        peak_rss_bytes=peak_rss_bytes(),
        peak_rss_scope="fit" if per_stage else "process",
        peak_cuda_bytes=peak_cuda_bytes(),
    )
    log(f"[{name}] evaluating on {len(task.eval_texts):,} locked eval examples")
    indices = sample_indices(len(task.eval_texts), getattr(config, "eval_limit", None), seed=0)
    payload, probabilities, indices = evaluate_classifier(
        classifier, task, experiment.compare, indices
    )
    folder.write_predictions(probabilities, task.eval_labels[indices], indices)
    folder.write_json("eval.json", {"strategy": name, **payload})
    folder.write_json("cost.json", _cost(context, fit_seconds, folder.path))
    folder.write_json("manifest.json", manifest)  # last: its presence marks the run finished
    return folder


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


def _cost(context: RunContext, fit_seconds: float, folder: Path) -> dict[str, Any]:
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


@dataclass(frozen=True)
class RunResult:
    name: str
    folder: Path
    eval: dict[str, Any]
    cost: dict[str, Any]
    manifest: dict[str, Any]
    probabilities: np.ndarray
    gold: np.ndarray
    indices: np.ndarray


def read_run(folder: Path) -> RunResult:
    run = RunFolder(folder)
    manifest = run.read_json("manifest.json")
    evaluation = run.read_json("eval.json")
    cost = run.read_json("cost.json")
    probabilities, gold, indices = run.read_predictions()
    return RunResult(
        str(manifest.get("strategy", folder.name)),
        folder,
        evaluation,
        cost,
        manifest,
        probabilities,
        gold,
        indices,
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
    best = max(results, key=lambda r: (not r.eval["sampled"], r.eval["metrics"]["accuracy"]))
    rows = [_row(result, best, settings) for result in results]
    rows.sort(key=lambda row: -row["accuracy"])
    comparison = {
        "best": best.name,
        "eval_sha256": best.manifest["eval_sha256"],
        "confidence": settings.confidence,
        "rows": rows,
        "problems": problems,
    }
    return comparison, problems


def _row(result: RunResult, best: RunResult, settings: CompareConfig) -> dict[str, Any]:
    metrics = result.eval["metrics"]
    difference = _difference_to(result, best, settings)
    latency = result.eval.get("latency", {})
    return {
        "strategy": result.name,
        "n": result.eval["n"],
        "sampled": result.eval["sampled"],
        "accuracy": metrics["accuracy"],
        "accuracy_ci": result.eval["accuracy_ci"],
        "macro_f1": metrics["macro_f1"],
        "ece": metrics["ece"],
        "confident_wrong_rate": metrics["confident_wrong_rate"],
        "vs_best": difference,
        "latency_batch1_p50_ms": latency.get("batch_1", {}).get("p50_ms"),
        "latency_batch1_p95_ms": latency.get("batch_1", {}).get("p95_ms"),
        "latency_batch32_per_example_ms": latency.get("batch_32", {}).get("per_example_ms"),
        "size_on_disk_bytes": result.cost.get("size_on_disk_bytes"),
        "trainable_params": result.cost.get("trainable_params"),
        "total_params": result.cost.get("total_params"),
        "fit_wall_s": result.cost.get("fit_wall_s"),
        "peak_memory_bytes": result.cost.get("peak_rss_bytes"),
    }


def _difference_to(
    result: RunResult, best: RunResult, settings: CompareConfig
) -> dict[str, Any] | None:
    """Paired bootstrap of accuracy against the best run, on the eval items both scored."""
    if result.name == best.name:
        return None
    shared, in_result, in_best = np.intersect1d(result.indices, best.indices, return_indices=True)
    if len(shared) == 0:
        return None
    correct_result = result.probabilities[in_result].argmax(1) == result.gold[in_result]
    correct_best = best.probabilities[in_best].argmax(1) == best.gold[in_best]
    difference = paired_bootstrap(
        correct_result.astype(np.float64),
        correct_best.astype(np.float64),
        metric="accuracy",
        names=(result.name, best.name),
        resamples=settings.bootstrap_resamples,
        confidence=settings.confidence,
    )
    return {
        "difference": difference.difference,
        "low": difference.low,
        "high": difference.high,
        "significant": difference.significant(),
        "n": len(shared),
    }


def leaderboard_markdown(comparison: dict[str, Any]) -> str:
    level = round(comparison["confidence"] * 100)
    lines = [
        "| strategy | accuracy | Δ vs best "
        + f"({level}% CI) | macro-F1 | ECE | confidently wrong | "
        "p50 ms (batch 1) | ms/example (batch 32) | size MB | trainable params | fit s | peak MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in comparison["rows"]:
        lines.append("| " + " | ".join(leaderboard_cells(row)) + " |")
    lines.append("")
    lines.append(
        f"Best: **{comparison['best']}**. Δ is the paired-bootstrap difference in "
        "accuracy to the best run on the same eval items; * marks a significant one."
    )
    for row in comparison["rows"]:
        if row["sampled"]:
            lines.append(
                f"- {row['strategy']} was scored on a fixed sample of {row['n']:,} eval "
                "examples (too slow for the whole set); its Δ is on that sample."
            )
    return "\n".join(lines) + "\n"


def leaderboard_cells(row: dict[str, Any]) -> list[str]:
    low, high = row["accuracy_ci"]
    difference = row["vs_best"]
    delta = (
        "—"
        if difference is None
        else (
            f"{difference['difference'] * 100:+.1f} [{difference['low'] * 100:+.1f}, "
            f"{difference['high'] * 100:+.1f}]{'*' if difference['significant'] else ''}"
        )
    )
    return [
        row["strategy"] + (" (sample)" if row["sampled"] else ""),
        f"{row['accuracy'] * 100:.2f}% [{low * 100:.1f}, {high * 100:.1f}]",
        delta,
        f"{row['macro_f1'] * 100:.2f}",
        f"{row['ece']:.3f}",
        f"{row['confident_wrong_rate'] * 100:.1f}%",
        _number(row["latency_batch1_p50_ms"], "{:.1f}"),
        _number(row["latency_batch32_per_example_ms"], "{:.2f}"),
        _number(
            None if row["size_on_disk_bytes"] is None else row["size_on_disk_bytes"] / 2**20,
            "{:.1f}",
        ),
        _number(row["trainable_params"], "{:,}"),
        _number(row["fit_wall_s"], "{:.1f}"),
        _number(
            None if row["peak_memory_bytes"] is None else row["peak_memory_bytes"] / 2**20, "{:.0f}"
        ),
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
    task = classification_task(prepared)
    failures: dict[str, str] = {}
    folders = []
    for name in ordered_strategies(names, experiment):
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
    return Comparison(out, comparison, failures)
