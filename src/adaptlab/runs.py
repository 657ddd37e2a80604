"""The run folder: the contract between stages, and its one reader and writer.

``<output_dir>/<experiment>/runs/<run>/`` holds ``config.yaml``, ``metrics.jsonl`` (training
only), ``eval.json``, ``cost.json``, ``predictions.safetensors`` (per-example scores on the
locked eval set, for paired comparisons: a classifier's probabilities, a generator's slot
counts), ``generations.jsonl`` (a generator's answers), the weights (``model/``, ``adapter/``
or ``head.safetensors``) and ``manifest.json`` (what the result depends on, the run's name and
its registered strategy, and the strategy's declared profile). Every file is written to a
temporary name and renamed into place; ``manifest.json`` is written last: a run without it is
unfinished. The README's "The run folder" section lists every file and field.

Later stages (compare, the comparison, the report, estimate, and the registry and server to
come) read a run only through :func:`read_run` (or :func:`read_manifest`), which checks the
manifest's ``schema_version``: a folder written by a newer adaptlab is refused by name.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import platform
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from adaptlab import __version__
from adaptlab.paths import atomic_path, write_text_atomic
from adaptlab.profile import StrategyProfile, TaskKind
from adaptlab.safeload import check_before_load

MANIFEST = "manifest.json"
EVAL = "eval.json"
COST = "cost.json"
CONFIG = "config.yaml"
PREDICTIONS = "predictions.safetensors"
GENERATIONS = "generations.jsonl"
METRICS = "metrics.jsonl"
ERROR = "error.txt"
CHECKPOINT = "checkpoint"
"""The training loop's checkpoint folder (``train/checkpoint.py`` owns it); kept until the
run is committed."""
"""What ``compare`` leaves in the folder of a run that failed."""
SCHEMA_VERSION = 1
"""Version of the run-folder layout this adaptlab writes and reads. 0 is a folder written
before the field existed (its ``strategy`` holds the run name and it has no profile): read,
with the profile unknown. Bump it when a field changes meaning."""
LIBRARIES = ("torch", "transformers", "peft", "accelerate", "scikit-learn", "numpy", "safetensors")


class RunError(RuntimeError):
    """A run directory that is missing, unfinished or unreadable; the message names it."""


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def code_version() -> str:
    """adaptlab's version, plus the git commit when running from a checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def manifest_key(manifest: dict[str, Any]) -> dict[str, Any]:
    """The fields that decide whether an existing run is still valid for a new request."""
    keys = (
        "schema_version",
        "run",
        "strategy",
        "train_sha256",
        "eval_sha256",
        "base_model",
        "base_model_fingerprint",
        "config_sha256",
        "seed",
        "dependencies",
        "other_models",
        "documents_sha256",
    )
    return {key: manifest.get(key) for key in keys}


def dependency_fingerprints(runs_root: Path, names: list[str]) -> dict[str, str | None]:
    """For each run this one depends on (a distillation teacher), the time its manifest was
    written: redoing the teacher makes the student stale."""
    stamps: dict[str, str | None] = {}
    for name in names:
        try:
            stamps[name] = read_manifest(runs_root / name).created_at
        except RunError:
            stamps[name] = None
    return stamps


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``: what a finished run depends on, and what it is."""

    schema_version: int
    run: str
    """The run's name (its folder's name): ``setfit_k8``, ``lora_r8``."""
    strategy: str
    """The registered strategy it ran: ``setfit``, ``lora``."""
    profile: StrategyProfile | None
    """What the strategy declared itself to be; ``None`` in a schema-0 folder."""
    train_sha256: str
    eval_sha256: str
    base_model: str
    created_at: str | None
    raw: dict[str, Any]
    """The whole file, for fields read by one stage only (libraries, device, seed...)."""


def parse_manifest(payload: dict[str, Any], folder: Path) -> Manifest:
    """The typed manifest of ``folder``, or :class:`RunError` naming the file and field."""
    path = folder / MANIFEST
    version = payload.get("schema_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise RunError(f"{path}: schema_version = {version!r} is not a version number")
    if version > SCHEMA_VERSION:
        raise RunError(
            f"{path}: written with run-folder schema_version {version}, and this adaptlab "
            f"({__version__}) reads versions up to {SCHEMA_VERSION}: upgrade adaptlab to read it"
        )
    for key in ("strategy", "train_sha256", "eval_sha256"):
        if not isinstance(payload.get(key), str):
            raise RunError(f"{path}: field '{key}' is missing or not a string")
    profile = None
    if version >= 1:
        if not isinstance(payload.get("run"), str) or not isinstance(payload.get("profile"), dict):
            raise RunError(f"{path}: fields 'run' (string) and 'profile' (object) are required")
        try:
            profile = StrategyProfile.from_dict(payload["profile"])
        except ValueError as exc:
            raise RunError(f"{path}: field 'profile': {exc}") from None
    created = payload.get("created_at")
    return Manifest(
        schema_version=version,
        run=str(payload["run"]) if version >= 1 else folder.name,
        strategy=str(payload["strategy"]),
        profile=profile,
        train_sha256=str(payload["train_sha256"]),
        eval_sha256=str(payload["eval_sha256"]),
        base_model=str(payload.get("base_model", "")),
        created_at=None if created is None else str(created),
        raw=payload,
    )


def read_manifest(folder: Path) -> Manifest:
    """The typed ``manifest.json`` of the run in ``folder`` (finished runs only)."""
    return parse_manifest(RunFolder(folder).read_json(MANIFEST), folder)


PRIMARY_METRIC: dict[str, str] = {"classification": "accuracy", "generative": "slot_f1"}
"""What runs of each task kind are ranked on: ``eval.json``'s ``metrics.<name>``, with its
interval in ``<name>_ci``. Free-text runs (``generation``) name theirs in ``primary_metric``
(``compare.generation_metric``: ROUGE-L F1 by default)."""


@dataclass(frozen=True)
class Evaluation:
    """``eval.json``: the run's quality on the locked eval set (or the sample it was scored on)."""

    task: TaskKind
    n: int
    """Eval items scored."""
    eval_size: int | None
    """Items in the locked eval set (``None`` in folders written before it was recorded)."""
    sampled: bool
    """Scored on a sample (``eval_limit``), not on the whole eval set."""
    metrics: dict[str, Any]
    primary_metric: str
    """What the run is ranked on (:data:`PRIMARY_METRIC`, or a free-text run's own)."""
    score: float
    """The primary metric's value: accuracy, micro slot F1, or e.g. ROUGE-L F1 (0-1)."""
    interval: tuple[float, float]
    """The bootstrap interval of :attr:`score`."""
    latency: dict[str, dict[str, Any]]
    """A classifier's latency per batch size (``batch_1``...); a generator's is in
    ``raw["cost"]``."""
    raw: dict[str, Any]
    """The whole file, for fields one stage reads (reliability, tokens, retention, cost...)."""
    grounding: dict[str, Any] | None = None
    """A retrieval run's groundedness (mean and interval) and citation rate and accuracy."""
    retrieval: dict[str, Any] | None = None
    """A retrieval run's recall@k and MRR per retriever (``by_retriever``), the retriever
    used and ``k``, when eval records name their gold documents."""
    multi_label: dict[str, Any] | None = None
    """A multi-label classifier's per-label thresholds (tuned on the validation split) and
    the intervals of its other metrics (macro-F1, subset accuracy, example F1)."""
    out_of_scope: dict[str, Any] | None = None
    """A classifier's out-of-scope rejection (``data.out_of_scope_label``): the threshold and
    how it was chosen, the open-set metrics with intervals, AUROC, the trade-off curve."""


@dataclass(frozen=True)
class Cost:
    """``cost.json``: what fitting the run took and what serving it needs."""

    fit_wall_s: float | None
    artefact_bytes: int | None
    size_on_disk_bytes: int | None
    """The run's own weights plus the base model's (and any other model's) when serving needs
    them."""
    trainable_params: int | None
    total_params: int | None
    peak_rss_bytes: int | None
    peak_rss_scope: str | None
    """``fit`` (the peak was reset before fitting) or ``process``."""
    raw: dict[str, Any]
    """The whole file: a strategy's own cost facts (index sizes, forward tokens...)."""


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_KINDS: dict[str, Callable[[Any], bool]] = {
    "number": _number,
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
}


def _field(path: Path, payload: dict[str, Any], key: str, kind: str, required: bool) -> Any:
    """``payload[key]`` checked to be a ``kind`` (a key of :data:`_KINDS`)."""
    value = payload.get(key)
    if value is None and not required:
        return None
    if not _KINDS[kind](value):
        found = "missing" if value is None else f"{value!r}"
        article = "an" if kind[0] in "aeiou" else "a"
        raise RunError(f"{path}: field '{key}' should be {article} {kind}, found {found}")
    return value


def parse_evaluation(payload: dict[str, Any], folder: Path) -> Evaluation:
    """The typed ``eval.json`` of ``folder``, or :class:`RunError` naming the file and field."""
    path = folder / EVAL
    task = payload.get("task", "classification")  # folders from before generative tasks
    if task not in get_args(TaskKind):
        raise RunError(f"{path}: field 'task' = {task!r} is not one of {get_args(TaskKind)}")
    metrics = _field(path, payload, "metrics", "object", True)
    if task == "generation":
        primary = _field(path, payload, "primary_metric", "string", True)
    elif task == "classification" and ("out_of_scope" in payload or "multi_label" in payload):
        # ranked on its open-set metric, or a multi-label run's micro-F1
        primary = _field(path, payload, "primary_metric", "string", True)
    else:
        primary = PRIMARY_METRIC[task]
    if not _number(metrics.get(primary)):
        raise RunError(f"{path}: field 'metrics.{primary}' is missing or not a number")
    interval = payload.get(f"{primary}_ci")
    if not (isinstance(interval, list) and len(interval) == 2 and all(map(_number, interval))):
        raise RunError(f"{path}: field '{primary}_ci' should be [low, high], found {interval!r}")
    latency = _field(path, payload, "latency", "object", False) or {}
    return Evaluation(
        task=task,
        n=_field(path, payload, "n", "integer", True),
        eval_size=_field(path, payload, "eval_size", "integer", False),
        sampled=bool(_field(path, payload, "sampled", "boolean", False)),
        metrics=metrics,
        primary_metric=primary,
        score=float(metrics[primary]),
        interval=(float(interval[0]), float(interval[1])),
        latency=latency,
        raw=payload,
        grounding=_field(path, payload, "grounding", "object", False),
        retrieval=_field(path, payload, "retrieval", "object", False),
        out_of_scope=_field(path, payload, "out_of_scope", "object", False),
        multi_label=_field(path, payload, "multi_label", "object", False),
    )


def parse_cost(payload: dict[str, Any], folder: Path) -> Cost:
    """The typed ``cost.json`` of ``folder``, or :class:`RunError` naming the file and field."""
    path = folder / COST

    def integer(key: str) -> int | None:
        value = _field(path, payload, key, "integer", False)
        return None if value is None else int(value)

    fit = _field(path, payload, "fit_wall_s", "number", False)
    return Cost(
        fit_wall_s=None if fit is None else float(fit),
        artefact_bytes=integer("artefact_bytes"),
        size_on_disk_bytes=integer("size_on_disk_bytes"),
        trainable_params=integer("trainable_params"),
        total_params=integer("total_params"),
        peak_rss_bytes=integer("peak_rss_bytes"),
        peak_rss_scope=_field(path, payload, "peak_rss_scope", "string", False),
        raw=payload,
    )


@dataclass(frozen=True)
class GenerationRow:
    """One line of ``generations.jsonl``: a generator's answer to one eval request."""

    index: int
    """The request's position in the locked eval set."""
    text: str
    finished: bool
    """It ended by itself (end of turn), not at ``max_new_tokens``."""
    prompt_tokens: int
    generated_tokens: int
    context: tuple[str, ...] | None = None
    """A retrieval run's chunk ids shown with the request, best first."""


_GENERATION_FIELDS = {
    "index": "integer",
    "text": "string",
    "finished": "boolean",
    "prompt_tokens": "integer",
    "generated_tokens": "integer",
}


def parse_generations(text: str, folder: Path) -> tuple[GenerationRow, ...]:
    """The rows of ``generations.jsonl``, or :class:`RunError` naming the file, line and field."""
    path = folder / GENERATIONS
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        where = Path(f"{path}:{number}")
        try:
            payload = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RunError(f"{where}: not JSON: {exc.msg}") from None
        if not isinstance(payload, dict):
            raise RunError(f"{where}: expected a JSON object")
        values = {
            k: _field(where, payload, k, kind, True) for k, kind in _GENERATION_FIELDS.items()
        }
        context = payload.get("context")
        if context is not None:
            if not isinstance(context, list) or not all(isinstance(c, str) for c in context):
                raise RunError(f"{where}: field 'context' must be a list of chunk ids")
            values["context"] = tuple(context)
        rows.append(GenerationRow(**values))
    return tuple(rows)


@dataclass(frozen=True)
class RunRecord:
    """One finished run, as read from its folder: the only way later stages see a run."""

    folder: Path
    manifest: Manifest
    eval: Evaluation
    cost: Cost
    config_yaml: str
    """The run's resolved config (``config.yaml``); empty when the file is missing."""

    @property
    def name(self) -> str:
        return self.manifest.run

    @property
    def strategy(self) -> str:
        return self.manifest.strategy

    @property
    def profile(self) -> StrategyProfile | None:
        return self.manifest.profile

    @property
    def kind(self) -> TaskKind:
        """The task kind (runs finished before generative tasks existed: classification)."""
        return self.eval.task

    @cached_property
    def predictions(self) -> dict[str, np.ndarray]:
        """Per-example arrays on the eval items ``indices`` (read on first use): a
        classifier's ``probabilities`` and ``gold`` labels, a generator's slot ``counts``,
        ``exact`` and ``json_valid``."""
        return RunFolder(self.folder).read_prediction_arrays()

    @property
    def indices(self) -> np.ndarray:
        return self.predictions["indices"]

    @cached_property
    def generations(self) -> tuple[GenerationRow, ...]:
        """A generator's answers (read on first use); empty for a classifier's run."""
        path = self.folder / GENERATIONS
        if self.kind != "generative" and not path.exists():
            return ()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RunError(f"{path}: unreadable: {exc}") from None
        return parse_generations(text, self.folder)


def read_run(folder: Path, *, predictions: bool = True) -> RunRecord:
    """The finished run in ``folder``, or :class:`RunError` naming the file at fault.

    ``predictions``: also read (and so check) ``predictions.safetensors`` now."""
    run = RunFolder(folder)
    manifest = parse_manifest(run.read_json(MANIFEST), folder)
    try:
        config_yaml = (folder / CONFIG).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        config_yaml = ""
    evaluation = parse_evaluation(run.read_json(EVAL), folder)
    cost = parse_cost(run.read_json(COST), folder)
    record = RunRecord(folder, manifest, evaluation, cost, config_yaml)
    if predictions:
        _ = record.predictions
    return record


@dataclass(frozen=True)
class RunFolder:
    path: Path

    def is_complete(self) -> bool:
        return (self.path / MANIFEST).exists() and (self.path / EVAL).exists()

    def matches(self, expected: dict[str, Any]) -> bool:
        """Finished, and computed from the same data, eval set, model and config."""
        if not self.is_complete():
            return False
        try:
            return manifest_key(self.read_json(MANIFEST)) == manifest_key(expected)
        except RunError:
            return False

    def can_resume(self, config_yaml: str) -> bool:
        """Unfinished, with a training checkpoint, and started with exactly this config."""
        config = self.path / CONFIG
        return (
            not self.is_complete()
            and (self.path / CHECKPOINT).is_dir()
            and config.is_file()
            and config.read_text(encoding="utf-8") == config_yaml
        )

    def reset(self) -> None:
        """Remove a stale or half-written run before it is redone."""
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)

    def write_text(self, name: str, text: str) -> None:
        write_text_atomic(self.path / name, text)

    def write_json(self, name: str, payload: dict[str, Any]) -> None:
        write_text_atomic(self.path / name, json.dumps(payload, indent=2, sort_keys=False) + "\n")

    def read_json(self, name: str) -> dict[str, Any]:
        path = self.path / name
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunError(f"{self.path}: no {name}: the run is missing or unfinished") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RunError(f"{path}: unreadable: {exc}") from None
        if not isinstance(value, dict):
            raise RunError(f"{path}: expected a JSON object")
        return value

    def write_eval(self, payload: dict[str, Any]) -> None:
        """``eval.json``, refused (before anything is written) when :func:`read_run` could not
        read it back."""
        parse_evaluation(payload, self.path)
        self.write_json(EVAL, payload)

    def write_cost(self, payload: dict[str, Any]) -> None:
        """``cost.json``, checked as :meth:`write_eval` checks ``eval.json``."""
        parse_cost(payload, self.path)
        self.write_json(COST, payload)

    def write_manifest(self, payload: dict[str, Any]) -> None:
        """``manifest.json``, checked, and written last: its presence marks the run finished."""
        parse_manifest(payload, self.path)
        self.write_json(MANIFEST, payload)

    def write_generations(self, rows: list[dict[str, Any]]) -> None:
        """``generations.jsonl``, checked as :meth:`write_eval` checks ``eval.json``."""
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        parse_generations(text, self.path)
        write_text_atomic(self.path / GENERATIONS, text)

    def write_predictions(
        self,
        probabilities: np.ndarray,
        gold: np.ndarray,
        indices: np.ndarray,
        per_query: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Per-example probabilities, gold labels (-1: out of scope) and their positions in
        the locked eval set; with out-of-scope rejection, its per-query scores too."""
        self.write_prediction_arrays(
            {
                "probabilities": probabilities.astype(np.float32),
                "gold": gold.astype(np.int64),
                "indices": indices.astype(np.int64),
                **(per_query or {}),
            }
        )

    def read_predictions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        arrays = self.read_prediction_arrays()
        try:
            return arrays["probabilities"], arrays["gold"], arrays["indices"]
        except KeyError as exc:
            raise RunError(f"{self.path / PREDICTIONS}: no {exc} predictions") from None

    def write_prediction_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Per-example arrays on the locked eval set, ``indices`` (their positions) among them."""
        with atomic_path(self.path / PREDICTIONS) as tmp:
            save_file(arrays, str(tmp))

    def read_prediction_arrays(self) -> dict[str, np.ndarray]:
        path = self.path / PREDICTIONS
        try:
            check_before_load(path, "predictions")
            arrays = load_file(str(path))
        except Exception as exc:  # safetensors raises its own SafetensorError on a bad header
            raise RunError(f"{path}: unreadable predictions: {exc}") from None
        if "indices" not in arrays:
            raise RunError(f"{path}: no eval indices")
        return arrays


# --------------------------------------------------------------------------- timing

TIMING = "latency.json"
"""The experiment folder's record of the runs' serving latency, timed together (beside
``comparison.json``; written by :mod:`adaptlab.timing`)."""
TIMING_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class RunTiming:
    """One run's part of ``latency.json``."""

    manifest_created_at: str | None
    """The ``created_at`` of the run's manifest when it was timed: a run redone since is not
    the run that was timed."""
    graph: str | None
    """Its inference graph's fingerprint (:func:`adaptlab.evaluate.latency.graph_fingerprint`),
    ``None`` when it cannot describe itself."""
    rounds_ms: dict[int, tuple[tuple[float, ...], ...]]
    """Batch size -> milliseconds per timed call, one tuple per round."""

    def to_dict(self) -> dict[str, Any]:
        batches = {
            f"batch_{size}": {"rounds_ms": [list(calls) for calls in rounds]}
            for size, rounds in self.rounds_ms.items()
        }
        return {
            "manifest_created_at": self.manifest_created_at,
            "graph": self.graph,
            "batches": batches,
        }


@dataclass(frozen=True)
class Timing:
    """``latency.json``: every classification run of a comparison timed in interleaved rounds
    (:func:`adaptlab.evaluate.latency.measure_interleaved`), with what it was timed with."""

    created_at: str
    rounds: int
    batch_sizes: tuple[int, ...]
    budget_s: float
    """Seconds of timed calls allowed per run and batch size, over all the rounds."""
    runs: dict[str, RunTiming]
    contention: dict[str, Any] | None = None
    """What else the machine was doing (load average before and after, cores), when known."""
    schema_version: int = TIMING_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "schema_version": self.schema_version,
            "created_at": self.created_at,
            "rounds": self.rounds,
            "batch_sizes": list(self.batch_sizes),
            "budget_s": self.budget_s,
        }
        if self.contention is not None:
            payload["contention"] = self.contention
        payload["runs"] = {name: run.to_dict() for name, run in self.runs.items()}
        return payload


def read_timing(experiment_folder: Path) -> Timing | None:
    """The experiment's ``latency.json``; ``None`` when there is none, :class:`RunError`
    naming the file and field when it cannot be read."""
    path = experiment_folder / TIMING
    payload = read_experiment_record(path)
    return None if payload is None else parse_timing(payload, path)


def read_experiment_record(path: Path) -> dict[str, Any] | None:
    """The JSON object of an experiment-level record (``latency.json``, ``stability.json``):
    ``None`` when the file is missing, :class:`RunError` naming it when it cannot be read, is
    not JSON (with the line) or not an object."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: unreadable: {exc}") from None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunError(f"{path}: not JSON: {exc.msg} (line {exc.lineno})") from None
    if not isinstance(payload, dict):
        raise RunError(f"{path}: expected a JSON object")
    return payload


def write_timing(experiment_folder: Path, timing: Timing) -> None:
    """``latency.json``, checked as :func:`read_timing` reads it, written under a temporary
    name and renamed into place."""
    path = experiment_folder / TIMING
    payload = timing.to_dict()
    parse_timing(payload, path)
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


def parse_timing(payload: dict[str, Any], path: Path) -> Timing:
    """The typed ``latency.json`` at ``path``, or :class:`RunError` naming the file and field."""
    version = _field(path, payload, "schema_version", "integer", True)
    if version > TIMING_SCHEMA_VERSION or version < 1:
        raise RunError(
            f"{path}: schema_version = {version}: this adaptlab ({__version__}) reads "
            f"versions 1 to {TIMING_SCHEMA_VERSION}"
        )
    sizes = payload.get("batch_sizes")
    if not isinstance(sizes, list) or not sizes or not all(_batch_size(size) for size in sizes):
        raise RunError(f"{path}: field 'batch_sizes' should be a list of integers >= 1")
    rounds = _field(path, payload, "rounds", "integer", True)
    if rounds < 1:
        raise RunError(f"{path}: field 'rounds' = {rounds}: must be >= 1")
    runs = _field(path, payload, "runs", "object", True)
    return Timing(
        created_at=_field(path, payload, "created_at", "string", True),
        rounds=rounds,
        batch_sizes=tuple(sizes),
        budget_s=float(_field(path, payload, "budget_s", "number", True)),
        runs={str(name): _run_timing(path, f"runs.{name}", raw) for name, raw in runs.items()},
        contention=_field(path, payload, "contention", "object", False),
        schema_version=version,
    )


def _batch_size(value: Any) -> bool:
    return _KINDS["integer"](value) and value >= 1


def _run_timing(path: Path, where: str, raw: Any) -> RunTiming:
    if not isinstance(raw, dict):
        raise RunError(f"{path}: field '{where}' should be an object, found {raw!r}")
    stamp = raw.get("manifest_created_at")
    graph = raw.get("graph")
    for key, value in (("manifest_created_at", stamp), ("graph", graph)):
        if value is not None and not isinstance(value, str):
            raise RunError(f"{path}: field '{where}.{key}' should be a string or null")
    batches = raw.get("batches")
    if not isinstance(batches, dict):
        raise RunError(f"{path}: field '{where}.batches' should be an object, found {batches!r}")
    rounds_ms = {}
    for key, batch in batches.items():
        size = key.removeprefix("batch_")
        if not (key.startswith("batch_") and size.isdigit() and int(size) >= 1):
            raise RunError(f"{path}: field '{where}.batches.{key}': expected batch_<size>")
        rounds_ms[int(size)] = _rounds(path, f"{where}.batches.{key}.rounds_ms", batch)
    return RunTiming(stamp, graph, rounds_ms)


def _rounds(path: Path, where: str, batch: Any) -> tuple[tuple[float, ...], ...]:
    """``[[ms, ...], ...]``: at least one round, each with at least one finite time >= 0."""
    rounds = batch.get("rounds_ms") if isinstance(batch, dict) else None
    if not isinstance(rounds, list) or not rounds:
        raise RunError(f"{path}: field '{where}' should be a non-empty list of rounds")
    for index, calls in enumerate(rounds):
        if not isinstance(calls, list) or not calls:
            raise RunError(f"{path}: field '{where}[{index}]' should be a non-empty list of ms")
        for position, value in enumerate(calls):
            if not (_number(value) and math.isfinite(value) and value >= 0):
                raise RunError(
                    f"{path}: field '{where}[{index}][{position}]' should be a time in ms "
                    f"(a number >= 0), found {value!r}"
                )
    return tuple(tuple(float(value) for value in calls) for calls in rounds)


def base_manifest(
    run: str,
    strategy: str,
    profile: StrategyProfile,
    train_sha256: str,
    eval_sha256: str,
    base_model: str,
    base_model_fingerprint: str,
    config_yaml: str,
    seed: int,
    allow_contaminated: bool,
) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "run": run,
        "strategy": strategy,
        "profile": profile.to_dict(),
        "train_sha256": train_sha256,
        "eval_sha256": eval_sha256,
        "base_model": base_model,
        "base_model_fingerprint": base_model_fingerprint,
        "config_sha256": sha256_text(config_yaml),
        "seed": seed,
        "allow_contaminated": allow_contaminated,
        "code_version": code_version(),
        "libraries": library_versions(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def folder_size(path: Path, names: tuple[str, ...] = ("model", "adapter")) -> int:
    """Bytes of the weights a run saved (``model/``, ``adapter/`` and ``*.safetensors`` heads)."""
    total = 0
    for child in path.iterdir():
        if child.is_dir() and child.name in names:
            total += sum(f.stat().st_size for f in child.rglob("*") if f.is_file())
        elif child.is_file() and child.suffix == ".safetensors" and child.name != PREDICTIONS:
            total += child.stat().st_size
    return total
