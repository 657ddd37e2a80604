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

import dataclasses
import json
import math
import shutil
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from adaptlab.comparison import (
    build_comparison,
    human_ratings,
    leaderboard_markdown,
    read_runs,
)
from adaptlab.config import (
    CompareConfig,
    ConfigError,
    DataConfig,
    ExperimentConfig,
    TrainConfig,
    to_yaml,
)
from adaptlab.cost import contention
from adaptlab.cost.memory import peak_cuda_bytes, peak_rss_bytes, reset_peak
from adaptlab.data.convert import SLOT_ORDER, restaurant8k_slots
from adaptlab.data.documents import PreparedCollection, source_sha256
from adaptlab.data.formats import LoadedData, label_key
from adaptlab.data.issues import DataError
from adaptlab.data.lock import (
    EVAL_NAME,
    TRAIN_NAME,
    EvalLockError,
    read_lock,
    sha256_file,
    split_indices,
)
from adaptlab.data.pipeline import (
    PreparedData,
    check_data,
    open_prepared,
    prepare_data,
    write_report,
)
from adaptlab.evaluate.forgetting import forgetting, retention, retention_fingerprint
from adaptlab.evaluate.harness import (
    evaluate_classifier,
    evaluate_generator,
    per_record_arrays,
    sample_indices,
)
from adaptlab.evaluate.open_set import OUT_OF_SCOPE
from adaptlab.evaluate.slots import normalise_value
from adaptlab.models.bundled import load_tokenizer, loadable
from adaptlab.models.causal_lm import CausalLM
from adaptlab.models.encoder import model_fingerprint, weights_bytes
from adaptlab.paths import inside, one_writer, read_json_object, write_text_atomic
from adaptlab.profile import TaskKind
from adaptlab.report.build import decision_for, report_after_compare
from adaptlab.report.decide import Decision
from adaptlab.report.inputs import COMPARISON, EXPERIMENT
from adaptlab.runs import (
    CONFIG,
    ERROR,
    RunFolder,
    RunRecord,
    base_manifest,
    dependency_fingerprints,
    folder_size,
)
from adaptlab.stability import (
    REPEATS,
    SeedChange,
    Stability,
    pick_gaps,
    repeat_seeds,
    seed_changes,
    write_stability,
)
from adaptlab.strategies.base import (
    ClassificationTask,
    Classifier,
    GenerativeTask,
    Generator,
    RunContext,
    Strategy,
    StrategyConfig,
    StrategyUnavailableError,
    Task,
    Track,
    merged_train_config,
    no_progress,
    require_supported,
    resolve_run,
    strategies_for,
    strategy_name,
    unavailable_here,
)
from adaptlab.timing import time_runs
from adaptlab.train.checkpoint import remove_checkpoint

Log = Callable[[str], None]

BASE_RETENTION = "base_retention.json"
"""The base model's retention measurement, in the experiment folder."""
LEADERBOARD = "leaderboard.md"


def experiment_dir(experiment: ExperimentConfig) -> Path:
    return inside(Path(experiment.output_dir), experiment.name)


def run_dir(experiment: ExperimentConfig, name: str) -> Path:
    """``<output_dir>/<experiment>/runs/<name>``, never outside ``runs/``."""
    return inside(experiment_dir(experiment) / "runs", name)


# --------------------------------------------------------------------------- data


def prepare_experiment_data(experiment: ExperimentConfig, track: Track, log: Log) -> PreparedData:
    """The experiment's prepared data folder, made once and then reused while it is valid."""
    folder = experiment_dir(experiment) / "data"
    if prepared_is_current(folder, experiment):
        log(f"Using prepared data in {folder} (eval set locked)")
    else:
        log(f"Preparing data into {folder}")
        result = check_data(experiment.data, experiment.model, track)
        write_report(result.report, folder)
        prepare_data(result, experiment.data, folder)
    data = experiment.data
    return open_prepared(
        folder, allow_contaminated=data.allow_contaminated, near_threshold=data.near_dup_threshold
    )


def prepared_is_current(folder: Path, experiment: ExperimentConfig) -> bool:
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
    if not same_documents(lock.documents, data):
        return False
    if data.eval is not None:
        given = Path(data.eval)
        same_eval = given.is_file() and lock.split.get("eval_file_sha256") == sha256_file(given)
        return same_source and same_eval and lock.source == "given"
    same_split = (lock.split.get("val_set_size"), lock.split.get("seed")) == (
        data.val_set_size,
        data.seed,
    )
    return same_source and same_split and lock.source == "split"


def same_documents(locked: dict[str, Any] | None, data: DataConfig) -> bool:
    """Whether the lock's collection is ``data.documents`` as it is now on disk, chunked the
    same way (a cheap check on the raw bytes; the prepared chunks carry the content hash)."""
    if data.documents is None or locked is None:
        return data.documents is None and locked is None
    source = Path(data.documents)
    return (
        source.exists()
        and (locked.get("chunk_tokens"), locked.get("overlap_tokens"))
        == (data.chunk_tokens, data.chunk_overlap_tokens)
        and locked.get("source_sha256") == source_sha256(source)
    )


def classification_task(
    prepared: PreparedData, experiment: ExperimentConfig | None = None
) -> ClassificationTask:
    """Texts and label ids from a prepared classification folder.

    Records whose label is a list make a multi-label task (label sets as 0/1 rows). With
    ``experiment``, a task that tunes thresholds gets its validation split: multi-label data
    (per-label thresholds), and data with ``data.out_of_scope_label``, whose out-of-scope eval
    records get the label id :data:`OUT_OF_SCOPE` (out-of-scope training records stay a class
    of their own). ``compare.validation_share`` of the training records are held out (seeded by
    ``train.seed``; stratified for single-label data)."""
    lock = prepared.lock
    if lock.format != "classification" or not lock.text_field or not lock.label_field:
        raise DataError(
            f"{prepared.folder}: `compare` needs classification data, got {lock.format}"
        )
    names = tuple(lock.labels or [])
    index = {name: i for i, name in enumerate(names)}
    text, label = lock.text_field, lock.label_field
    records = [*prepared.train.records, *prepared.eval.records]
    multi = any(isinstance(r.data[label], list) for r in records)
    outside = None if experiment is None else experiment.data.out_of_scope_label
    if multi and outside is not None:
        raise DataError(
            f"{prepared.folder}: data.out_of_scope_label applies to single-label data; in "
            "multi-label data a query with no intent has an empty label list"
        )

    def split(rows: Sequence[Any], *, gold: bool) -> tuple[list[str], np.ndarray]:
        texts = [str(r.data[text]) for r in rows]
        if multi:
            sets = np.zeros((len(rows), len(names)), dtype=np.int64)
            for row, record in enumerate(rows):
                for value in record.data[label]:
                    sets[row, index[label_key(value)]] = 1
            return texts, sets
        values = [label_key(r.data[label]) for r in rows]
        ids = [OUT_OF_SCOPE if gold and v == outside else index[v] for v in values]
        return texts, np.array(ids, dtype=np.int64)

    train_texts, train_labels = split(prepared.train.records, gold=False)
    eval_texts, eval_labels = split(prepared.eval.records, gold=True)
    task = ClassificationTask(
        names,
        train_texts,
        train_labels,
        eval_texts,
        eval_labels,
        sha256_file(prepared.folder / TRAIN_NAME),
        lock.eval_sha256,
        out_of_scope_label=outside,
        multi_label=multi,
    )
    if experiment is None or not (multi or outside is not None):
        return task
    return _with_validation_split(task, experiment)


def _with_validation_split(
    task: ClassificationTask, experiment: ExperimentConfig
) -> ClassificationTask:
    """``task`` with a seeded share of its training records moved to validation (stratified
    for single-label data; out-of-scope ones labelled :data:`OUT_OF_SCOPE` there, as in the
    eval set)."""
    share = experiment.compare.validation_share
    count = len(task.train_texts)
    if task.multi_label:
        fit, held, _ = split_indices(None, count, share, experiment.train.seed, False)
    else:
        labels = [task.label_names[i] for i in task.train_labels]
        fit, held, _ = split_indices(labels, count, share, experiment.train.seed, True)
    held_labels = task.train_labels[held]
    column = task.out_of_scope_column
    if column is not None:
        held_labels = np.where(held_labels == column, OUT_OF_SCOPE, held_labels)
    return dataclasses.replace(
        task,
        train_texts=[task.train_texts[i] for i in fit],
        train_labels=task.train_labels[fit],
        validation_texts=[task.train_texts[i] for i in held],
        validation_labels=held_labels,
    )


AnswerKind = Literal["auto", "extraction", "generation"]
"""``data.task``: what a generative record's answer is (see :func:`generative_task`)."""


def generative_task(prepared: PreparedData, answers: AnswerKind = "auto") -> GenerativeTask:
    """Conversations and what their answers are scored against, from a prepared chat,
    completion or alpaca folder (completion and alpaca records become a user turn and an
    assistant turn).

    ``extraction``: every answer is a JSON slot frame (slot -> text), scored on slot F1.
    ``generation``: answers are free text, scored against each eval record's ``references``
    (several human answers to one input) or, without them, its answer. ``auto``: extraction
    when every answer is a JSON object, generation when none is; a mix is an error naming the
    first answer that breaks the majority, since a typo should not turn a slot task into prose.
    """
    lock = prepared.lock
    if lock.format not in GENERATIVE_FORMATS:
        raise DataError(
            f"{prepared.folder}: a generative task needs chat, completion or alpaca records, "
            f"got {lock.format}"
        )
    train_path, eval_path = prepared.folder / TRAIN_NAME, prepared.folder / EVAL_NAME
    train = [as_messages(lock.format, r.data) for r in prepared.train.records]
    evals = [as_messages(lock.format, r.data) for r in prepared.eval.records]
    if answers == "auto":
        answers = _answer_kind(prepared, train, evals)
    if answers == "generation":
        return GenerativeTask(
            (),
            train,
            evals,
            [],
            sha256_file(train_path),
            lock.eval_sha256,
            eval_references=[
                references(record.data, messages, eval_path, record.line)
                for record, messages in zip(prepared.eval.records, evals, strict=True)
            ],
            collection=prepared.collection,
            train_documents=gold_documents(prepared.train),
            eval_documents=gold_documents(prepared.eval),
        )
    train_frames = _frames(prepared.train, train, train_path)
    eval_frames = _frames(prepared.eval, evals, eval_path)
    named = {slot for frame in train_frames + eval_frames for slot in frame}
    known = [slot for slot in SLOT_ORDER if slot in named]
    return GenerativeTask(
        tuple(known + sorted(named - set(known))),
        train,
        evals,
        eval_frames,
        sha256_file(train_path),
        lock.eval_sha256,
    )


GENERATIVE_FORMATS = ("chat", "completion", "alpaca")


def gold_documents(data: LoadedData) -> list[list[str]]:
    """Each record's gold document ids (its ``documents`` list, checked when the data was
    read); an empty list for a record that names none."""
    return [[str(i) for i in record.data.get("documents") or []] for record in data.records]


def as_messages(format: str, row: dict[str, Any]) -> list[dict[str, Any]]:
    """A record as chat messages: chat records as they are; a completion record's prompt as
    the user turn and its completion as the answer; an alpaca record's instruction (and input,
    after a blank line) as the user turn and its output as the answer."""
    if format == "chat":
        return list(row["messages"])
    if format == "completion":
        request, answer = str(row.get("prompt") or ""), str(row["completion"])
    else:
        parts = [str(row["instruction"]), str(row.get("input") or "")]
        request, answer = "\n\n".join(part for part in parts if part.strip()), str(row["output"])
    return [{"role": "user", "content": request}, {"role": "assistant", "content": answer}]


def last_answer(messages: Sequence[dict[str, Any]]) -> str:
    """The content of a conversation's last assistant message (the reference answer)."""
    answers = [m for m in messages if m.get("role") == "assistant"]
    return str(answers[-1].get("content") or "") if answers else ""


def references(
    row: dict[str, Any], messages: Sequence[dict[str, Any]], path: Path, line: int
) -> list[str]:
    """What a free-text answer is scored against: the record's ``references`` (checked when
    the data was read), else its answer."""
    given = row.get("references")
    if given is None:
        return [last_answer(messages)]
    if not isinstance(given, list) or not given or not all(isinstance(r, str) for r in given):
        raise DataError(f"{path}:{line}: field 'references' must be a non-empty list of strings")
    return list(given)


def _answer_kind(
    prepared: PreparedData, train: list[list[dict[str, Any]]], evals: list[list[dict[str, Any]]]
) -> Literal["extraction", "generation"]:
    """``extraction`` when every answer is a JSON object, ``generation`` when none is."""
    located = [
        (prepared.folder / name, record.line, _is_frame(messages))
        for name, data, conversations in (
            (TRAIN_NAME, prepared.train, train),
            (EVAL_NAME, prepared.eval, evals),
        )
        for record, messages in zip(data.records, conversations, strict=True)
    ]
    frames = sum(is_frame for _, _, is_frame in located)
    if frames == len(located):
        return "extraction"
    if frames == 0:
        return "generation"
    majority = frames * 2 >= len(located)
    path, line, _ = next(item for item in located if item[2] != majority)
    found = "free text" if majority else "a JSON object"
    raise DataError(
        f"{path}:{line}: {frames:,} of {len(located):,} answers are JSON slot frames but this "
        f"one is {found}; set data.task to extraction (slot frames, scored on slot F1) or "
        "generation (free text, scored against references)"
    )


def _is_frame(messages: Sequence[dict[str, Any]]) -> bool:
    try:
        value = json.loads(last_answer(messages))
    except json.JSONDecodeError:
        return False
    return isinstance(value, dict)


def _frames(
    data: LoadedData, conversations: list[list[dict[str, Any]]], path: Path
) -> list[dict[str, str]]:
    """Each record's last assistant message read as a slot frame, or an error naming it."""
    frames = []
    for record, messages in zip(data.records, conversations, strict=True):
        try:
            frame = restaurant8k_slots({"messages": messages})
            if not all(normalise_value(value) for value in frame.values()):
                raise DataError("a slot's value is empty")
        except DataError as exc:
            raise DataError(
                f"{path}:{record.line}: a slot-extraction task scores answers as JSON slot "
                f"frames (slot -> text); this record's answer is not one: {exc} (free-text "
                "answers: set data.task to generation)"
            ) from None
        frames.append(frame)
    return frames


def experiment_task(
    prepared: PreparedData,
    answers: AnswerKind = "auto",
    experiment: ExperimentConfig | None = None,
) -> Task:
    """The task the prepared data makes: classification records a classification task (with
    ``experiment``'s out-of-scope settings); chat, completion and alpaca records a generative
    one (slot extraction or free text, by ``answers``: the experiment's ``data.task``)."""
    if prepared.lock.format in GENERATIVE_FORMATS:
        return generative_task(prepared, answers)
    if prepared.lock.format == "classification":
        return classification_task(prepared, experiment)
    raise DataError(
        f"{prepared.folder}: `compare` takes classification, chat, completion or alpaca data, "
        f"got {prepared.lock.format}"
    )


# --------------------------------------------------------------------------- running


DOCUMENT_SETTINGS = ("documents", "chunk_tokens", "chunk_overlap_tokens")
"""``data`` settings only retrieval runs depend on."""


def require_collection(name: str, task: Task) -> PreparedCollection:
    """The task's document collection, or an error naming the run that needs one."""
    collection = getattr(task, "collection", None)
    if collection is None:
        raise ConfigError(f"strategy run '{name}': {DOCUMENTS_NEEDED}")
    assert isinstance(collection, PreparedCollection)
    return collection


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
    ordered: list[str],
    experiment: ExperimentConfig,
    *,
    chosen: bool,
    log: Log,
    task: Task | None = None,
) -> list[str]:
    """The runs this machine and data can do. One that cannot (qlora without CUDA; rag
    without a document collection in ``task``) is an error before anything runs when the user
    ``chosen`` the list, and is left out, with a line saying why, from the default list of
    every strategy."""
    runnable = []
    for name in ordered:
        strategy, config = resolve_run(name, experiment.strategies.get(name))
        reason = (
            unavailable_here(strategy, config)
            or _missing_documents(strategy, task)
            or _single_label_only(strategy, task)
        )
        if reason is None:
            runnable.append(name)
        elif chosen:
            raise StrategyUnavailableError(f"strategy '{name}' cannot run here: {reason}")
        else:
            log(f"[{name}] left out: {reason}")
    return runnable


DOCUMENTS_NEEDED = (
    "it answers from a document collection: set data.documents to a folder of "
    ".txt/.md/.html/.pdf files or a JSONL of {id, text, title?}"
)


def _single_label_only(strategy: Strategy, task: Task | None) -> str | None:
    """Why a strategy cannot run on a multi-label ``task`` (its profile does not say
    ``multi_label``), or None."""
    if getattr(task, "multi_label", False) and not strategy.profile.multi_label:
        return "it gives one label per record; this data has several (multi-label) per record"
    return None


def _missing_documents(strategy: Strategy, task: Task | None) -> str | None:
    """Why a strategy that retrieves cannot run on ``task`` (it has no collection), or None."""
    if strategy.profile.retrieves and getattr(task, "collection", None) is None:
        return DOCUMENTS_NEEDED
    return None


def task_decoding(
    config: StrategyConfig, task: Task, experiment: ExperimentConfig, cites: bool = False
) -> StrategyConfig:
    """For free text, a strategy's ``decoding.max_new_tokens``, unless set, becomes the 99th
    percentile of the training answers' length in the base model's tokens plus the stop
    token (and, for a strategy asked to ``cite`` passages, :data:`CITATION_TOKENS` more): long
    enough for nearly every answer the task has, and no longer (the default, 64, suits slot
    frames). The run's ``config.yaml`` records what was used."""
    decoding = getattr(config, "decoding", None)
    if (
        not isinstance(task, GenerativeTask)
        or task.kind != "generation"
        or decoding is None
        or "max_new_tokens" in decoding.model_fields_set
    ):
        return config
    tokens = answer_tokens_p99(task, experiment.model.base_model, experiment.model.revision) + 1
    tokens += CITATION_TOKENS if cites else 0
    return config.model_copy(
        update={"decoding": decoding.model_copy(update={"max_new_tokens": tokens})}
    )


CITATION_TOKENS = 8
"""Room for a citation after the answer (`` [1]`` is 3 tokens for SmolLM2, ``[1, 2]`` 6)."""

_ANSWER_P99: dict[tuple[str, str | None, str], int] = {}


def answer_tokens_p99(task: GenerativeTask, model: str, revision: str | None = None) -> int:
    """The 99th percentile (rounded up) of the training answers' length in ``model``'s tokens,
    counted once per model and training data."""
    key = (model, revision, task.train_sha256)
    if key not in _ANSWER_P99:
        tokenizer = load_tokenizer(model, revision)
        answers = [last_answer(record) for record in task.train_records]
        lengths = [len(ids) for ids in tokenizer(answers, add_special_tokens=False)["input_ids"]]
        _ANSWER_P99[key] = max(1, math.ceil(float(np.percentile(lengths, 99))))
    return _ANSWER_P99[key]


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
    raw = experiment.strategies.get(name)
    strategy, config = resolve_run(name, raw)
    require_supported(name, strategy, task.kind)
    config = task_decoding(config, task, experiment, cites=strategy.profile.retrieves)
    train = merged_train_config(experiment.train, experiment.train.model_fields_set, config)
    folder = RunFolder(run_dir(experiment, name))
    registered = strategy_name(name, raw)
    config_yaml = _run_config_yaml(
        experiment, name, registered, config, train, strategy.profile.retrieves
    )
    manifest = base_manifest(
        name,
        registered,
        strategy.profile,
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
    if strategy.profile.retrieves:
        manifest["documents_sha256"] = require_collection(name, task).sha256
    if isinstance(task, ClassificationTask):  # what the probability columns mean, for loading
        manifest["label_names"] = list(task.label_names)
    if not force and folder.matches(manifest):
        log(f"[{name}] up to date in {folder.path}; skipped")
        remove_checkpoint(folder.path)  # what a crash during the last removal left behind
        return folder
    resume = not force and folder.can_resume(config_yaml)
    if resume:
        log(f"[{name}] resuming the interrupted run from its checkpoint")
    else:
        folder.reset()
        folder.write_text(CONFIG, config_yaml)
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
    window = contention.start()
    model = strategy.fit(context)
    fitted = contention.finish(window)
    fit_seconds = fitted.wall_s
    context.record(
        **fitted.to_dict(),
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
    folder.write_eval({"run": name, "strategy": registered, **payload})
    if isinstance(task, GenerativeTask):  # what a request costs, beside what fitting did
        served = payload["cost"]
        context.record(
            latency_batch1_p50_ms=served["latency"]["p50_ms"],
            prompt_build_p50_ms=served["prompt_build_latency"]["p50_ms"],
        )
    folder.write_cost(_cost(context, fit_seconds, folder.path))
    folder.write_manifest(manifest)  # its presence marks the run finished: the commit
    remove_checkpoint(folder.path)  # only now: a crash before the commit resumes from it
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
        folder.write_generations(answers.rows())
        return payload
    if not isinstance(model, Classifier):
        raise TypeError(f"strategy '{name}' returned {type(model).__name__}, not a Classifier")
    payload, probabilities, indices = evaluate_classifier(model, task, settings, indices)
    gold = task.eval_labels[indices]
    extra = per_record_arrays(payload, probabilities, gold, task.label_names)
    folder.write_predictions(probabilities, gold, indices, extra)
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
    experiment: ExperimentConfig,
    name: str,
    registered: str,
    config: StrategyConfig,
    train: TrainConfig,
    retrieves: bool = False,
) -> str:
    # The collection's settings are part of a retrieval run's config only: a run that reads
    # no documents stays current when they change.
    data = experiment.data.model_dump(
        mode="json", exclude=None if retrieves else set(DOCUMENT_SETTINGS)
    )
    resolved = {
        "run": name,
        "strategy": registered,
        "strategy_config": config.model_dump(mode="json"),
        "train": train.model_dump(mode="json"),
        "model": experiment.model.model_dump(mode="json"),
        "lora": experiment.lora.model_dump(mode="json"),
        "data": data,
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
    # a resumed run's fit time adds the training done before the interruption
    earlier = float(facts.get("resumed_after_train_s", 0.0))
    return {
        "fit_wall_s": round(fit_seconds + earlier, 2),
        "artefact_bytes": artefacts,
        "size_on_disk_bytes": artefacts + base,
        "trainable_params": facts.pop("trainable_params", None),
        "total_params": facts.pop("total_params", None),
        **facts,
    }


@dataclass(frozen=True)
class Comparison:
    folder: Path
    comparison: dict[str, Any]
    failures: dict[str, str]
    decision: Decision | None = None
    """The decision of the report written at the end (``None`` when it was not built)."""


def compare(
    experiment: ExperimentConfig,
    names: Sequence[str] | None = None,
    track: Track = no_progress,
    log: Log = print,
    force: bool = False,
    wait: bool = False,
    repeat: int | None = None,
) -> Comparison:
    """Prepare data, run every requested strategy, and write the comparison.

    ``repeat`` (default: the experiment's ``compare.repeat``) > 1 then reruns the runs that
    train with ``repeat - 1`` other seeds, writes
    whether the recommendation held, and rebuilds the report, which then decides on every
    seed's runs together (:mod:`adaptlab.stability`, :func:`repeat_with_seeds`).

    One ``compare`` writes an experiment folder at a time: a second one fails at once naming
    the first (:class:`~adaptlab.paths.FolderBusyError`), or with ``wait`` waits for it."""
    count = experiment.compare.repeat if repeat is None else repeat
    seeds = repeat_seeds(experiment.train.seed, count)  # a bad count fails before any work
    with one_writer(experiment_dir(experiment), "adaptlab compare", wait=wait):
        result = _compare(experiment, names, track, log, force)
        if len(seeds) > 1:
            repeat_with_seeds(experiment, names, result, seeds[1:], track, log, force)
        return result


def _compare(
    experiment: ExperimentConfig,
    names: Sequence[str] | None,
    track: Track,
    log: Log,
    force: bool,
    keep: frozenset[str] = frozenset(),
) -> Comparison:
    """``keep``: runs already in the experiment's runs folder, taken as they are (a repeat's
    copies of the runs that do not train)."""
    prepared = prepare_experiment_data(experiment, track, log)
    task = experiment_task(prepared, experiment.data.task, experiment)
    ordered = ordered_strategies(names, experiment, task.kind)
    for name in ordered:  # a strategy for another kind of task is a mistake: refuse it at once
        require_supported(name, resolve_run(name, experiment.strategies.get(name))[0], task.kind)
        run_dir(experiment, name)  # and so is a name that is a path
    loadable(experiment.model.base_model)  # and a base model that would unpickle or run code
    ordered = runnable_here(
        ordered,
        experiment,
        chosen=bool(names or experiment.compare.strategies),
        log=log,
        task=task,
    )
    failures: dict[str, str] = {}
    folders = []
    for name in ordered:
        if name in keep:
            folders.append(run_dir(experiment, name))
            continue
        try:
            folders.append(run_strategy(name, experiment, prepared, task, track, log, force).path)
        except Exception as exc:  # one failing strategy must not sink the comparison
            failures[name] = f"{exc.__class__.__name__}: {exc}"
            log(f"[{name}] FAILED: {failures[name]}")
            failed = run_dir(experiment, name)
            failed.mkdir(parents=True, exist_ok=True)
            write_text_atomic(failed / ERROR, traceback.format_exc())
    timing = None
    if isinstance(task, ClassificationTask):  # generators keep their eval-time latency
        try:
            timing = time_runs(
                experiment_dir(experiment), folders, experiment.compare, log, texts=task.eval_texts
            )
        except Exception as exc:  # timing must never sink a comparison
            log(
                f"Timing the runs together FAILED ({exc.__class__.__name__}: {exc}); "
                "each run's latency measured alone at evaluation is used"
            )
    comparison, _ = build_comparison(folders, experiment.compare, timing)
    comparison["failures"] = failures
    out = experiment_dir(experiment)
    rated = human_ratings(out, experiment.compare)
    if rated is not None:
        comparison["human_ratings"] = rated
    write_text_atomic(out / COMPARISON, json.dumps(comparison, indent=2) + "\n")
    write_text_atomic(out / LEADERBOARD, leaderboard_markdown(comparison))
    write_text_atomic(out / EXPERIMENT, to_yaml(experiment))
    report = report_after_compare(out, comparison, log)
    return Comparison(out, comparison, failures, None if report is None else report.decision)


# --------------------------------------------------------------------------- seed stability


def repeat_with_seeds(
    experiment: ExperimentConfig,
    names: Sequence[str] | None,
    main: Comparison,
    seeds: Sequence[int],
    track: Track,
    log: Log,
    force: bool,
) -> Stability:
    """Rerun the comparison's runs that train with each of ``seeds``, each into
    ``<experiment>/repeats/seed_<s>/`` beside copies of its prepared data and of its runs that
    do not train (their results do not depend on the seed), decide there the same way, and
    write ``stability.json``; then rebuild the report, which reads it."""
    records = _records(main)
    decision = decision_for(main.folder, main.comparison)
    own = experiment.train.seed
    picks, tied = {own: decision.recommended}, {own: list(decision.tied_with)}
    changes: list[SeedChange] = []
    folders: dict[int, str] = {}
    failures: dict[int, dict[str, str]] = {}
    by_seed = {own: records}
    for seed in seeds:
        log(f"Repeating the runs that train with seed {seed}")
        result = _repeat_once(experiment, names, main.folder, records, seed, track, log, force)
        # a repeat's folder holds no stability.json: its report decided on its own seed alone
        again = result.decision or decision_for(result.folder, result.comparison)
        picks[seed], tied[seed] = again.recommended, list(again.tied_with)
        by_seed[seed] = _records(result)
        changes += seed_changes(records, by_seed[seed], seed, experiment.compare)
        folders[seed] = str(result.folder.relative_to(main.folder))
        failures[seed] = result.failures
    stability = Stability(
        metric=str(main.comparison.get("metric", "accuracy")),
        picks=picks,
        tied=tied,
        changes=changes,
        stamps={r.name: r.manifest.created_at for r in records},
        folders=folders,
        failures=failures,
        gaps=pick_gaps(picks, by_seed, experiment.compare),
    )
    write_stability(main.folder, stability)
    said = "; ".join(f"seed {seed}: {name}" for seed, name in picks.items())
    log(f"Recommendation across seeds {'held' if stability.held else 'CHANGED'}: {said}")
    report_after_compare(main.folder, main.comparison, log)
    return stability


def _records(result: Comparison) -> list[RunRecord]:
    """The comparison's runs, read back from its folder."""
    rows = result.comparison["rows"]
    return read_runs([result.folder / "runs" / str(row["strategy"]) for row in rows])[0]


def _repeat_once(
    experiment: ExperimentConfig,
    names: Sequence[str] | None,
    folder: Path,
    records: Sequence[RunRecord],
    seed: int,
    track: Track,
    log: Log,
    force: bool,
) -> Comparison:
    """One rerun with ``seed``: the runs that train anew, the others copied as they are."""
    other = _seeded(experiment, folder, seed)
    untrained = frozenset(r.name for r in records if r.profile and r.profile.role != "tuned")
    _copy_into(folder, experiment_dir(other), ["data", *(f"runs/{n}" for n in untrained)])
    return _compare(other, names, track, log, force, keep=untrained)


def _seeded(experiment: ExperimentConfig, folder: Path, seed: int) -> ExperimentConfig:
    """The experiment with another training seed, written inside ``folder``'s repeats."""
    train = experiment.train.model_copy(update={"seed": seed})
    return experiment.model_copy(
        update={"train": train, "output_dir": str(folder / REPEATS), "name": f"seed_{seed}"}
    )


def _copy_into(source: Path, target: Path, parts: Sequence[str]) -> None:
    """Copy each folder ``parts`` names from ``source`` to ``target`` (replacing what is there),
    through a temporary name, so an interrupted copy never looks finished."""
    for part in parts:
        origin, destination = source / part, target / part
        if not origin.is_dir():
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(f".{destination.name}.copying")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(origin, partial)
        shutil.rmtree(destination, ignore_errors=True)
        partial.rename(destination)
