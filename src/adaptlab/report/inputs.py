"""What a report is built from: run directories and the experiment folder, nothing else.

An experiment folder (``runs/<experiment>/``, as ``adaptlab compare`` writes it) holds
``comparison.json``, ``experiment.yaml``, ``data/data_report.json``, ``data/eval.lock`` and one
run folder per strategy under ``runs/``; a run folder holds what :mod:`adaptlab.runs`
describes. A run that is missing, unfinished, unreadable, or scored on another eval set is
left out with a line that names it and the file at fault, and the report is built from the
rest: one broken run must not hide the others.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from adaptlab.comparison import build_comparison, human_ratings
from adaptlab.config import CompareConfig
from adaptlab.paths import read_json_object, write_text_atomic
from adaptlab.profile import StrategyProfile
from adaptlab.runs import (
    ERROR,
    EVAL,
    MANIFEST,
    RunError,
    RunRecord,
    read_manifest,
    read_run,
    read_timing,
)
from adaptlab.stability import Stability, read_stability

COMPARISON = "comparison.json"
EXPERIMENT = "experiment.yaml"
DATA_REPORT = Path("data") / "data_report.json"
EVAL_LOCK = Path("data") / "eval.lock"
ERROR_FILE = ERROR


class ReportError(RuntimeError):
    """Nothing to report on (no readable run), or arguments that name no runs."""


@dataclass(frozen=True)
class ReportInputs:
    """Everything a report shows, read from disk."""

    comparison: dict[str, Any]
    """``comparison.json``'s content for the runs in ``runs`` (rebuilt when stale)."""
    runs: dict[str, RunRecord]
    """Run name -> its record, in leaderboard order."""
    left_out: dict[str, str]
    """Run name -> why it is not in the report; the message names the folder or file."""
    experiment_folder: Path | None = None
    experiment: Mapping[str, Any] | None = None
    """``experiment.yaml`` as plain data (``None`` without an experiment folder)."""
    data_report: Mapping[str, Any] | None = None
    eval_lock: Mapping[str, Any] | None = None
    settings: CompareConfig = field(default_factory=CompareConfig)
    """The experiment's ``compare`` settings (bootstrap resamples, confidence level)."""
    stability: Stability | None = None
    """``stability.json`` (``compare --repeat``), while the runs it was made from are the
    report's runs, unchanged."""

    @property
    def task(self) -> str:
        return str(self.comparison.get("task", "classification"))

    @property
    def metric(self) -> str:
        return str(self.comparison.get("metric", "accuracy"))

    @property
    def name(self) -> str:
        if self.experiment and self.experiment.get("name"):
            return str(self.experiment["name"])
        return self.experiment_folder.name if self.experiment_folder else "runs"

    @property
    def kinds(self) -> dict[str, str]:
        """Run name -> the registered strategy it ran (``setfit_k8`` -> ``setfit``), from its
        manifest."""
        return {name: record.strategy for name, record in self.runs.items()}

    @property
    def profiles(self) -> dict[str, StrategyProfile | None]:
        """Run name -> what its strategy declared itself to be (``None``: a folder written
        before manifests recorded it)."""
        return {name: record.profile for name, record in self.runs.items()}


# --------------------------------------------------------------------------- locating runs


def is_experiment_folder(path: Path) -> bool:
    return (path / "runs").is_dir() or (path / COMPARISON).is_file()


def locate(paths: Sequence[Path]) -> tuple[Path | None, list[Path]]:
    """The experiment folder and the run folders that ``paths`` name.

    An experiment folder stands for all its runs: the folders under ``runs/`` and any run
    ``comparison.json`` names whose folder is gone (so a deleted run is reported, not
    forgotten). Run folders given alone belong to the experiment two levels up, if any.
    """
    if not paths:
        raise ReportError("name an experiment folder (e.g. runs/demo) or run folders")
    experiments = sorted({p for p in paths if is_experiment_folder(p)})
    if len(experiments) > 1:
        named = ", ".join(str(p) for p in experiments)
        raise ReportError(f"one experiment folder per report, got {len(experiments)}: {named}")
    loose = [p for p in paths if p not in experiments]
    experiment = experiments[0] if experiments else _owner(loose)
    folders = list(loose)
    if experiments:
        folders = _experiment_runs(experiments[0]) + folders
    return experiment, _unique(folders)


def _owner(folders: Sequence[Path]) -> Path | None:
    """The experiment folder all ``folders`` sit in (``<experiment>/runs/<name>``), if one."""
    owners = {folder.parent.parent for folder in folders if folder.parent.name == "runs"}
    if len(owners) != 1 or len(folders) != sum(f.parent.name == "runs" for f in folders):
        return None
    owner = owners.pop()
    return owner if is_experiment_folder(owner) else None


def _experiment_runs(experiment: Path) -> list[Path]:
    runs = experiment / "runs"
    found = sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
    recorded = read_json_object(experiment / COMPARISON) or {}
    named = [str(row.get("strategy")) for row in recorded.get("rows", [])]
    named += list(recorded.get("failures") or {})
    return found + [runs / name for name in named]


def _unique(folders: Iterable[Path]) -> list[Path]:
    seen: set[Path] = set()
    unique = []
    for folder in folders:
        key = folder.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(folder)
    return unique


# --------------------------------------------------------------------------- reading


def read_inputs(paths: Sequence[Path]) -> ReportInputs:
    """Read every run ``paths`` name, leave out the unusable ones, and compare the rest (reusing
    ``comparison.json`` when it was built from exactly these runs, after they finished)."""
    experiment_folder, folders = locate(paths)
    context = experiment_context(experiment_folder)
    settings = context.settings
    usable, left_out = screen(folders, settings)
    usable, mismatched = _same_eval_set(usable, context.eval_lock)
    left_out.update(mismatched)
    if not usable:
        lines = "; ".join(f"run '{name}' left out: {why}" for name, why in left_out.items())
        raise ReportError(f"no run to report on: {lines or 'no run folders found'}")
    comparison = _current_comparison(experiment_folder, usable)
    if comparison is None:
        comparison, _ = build_comparison(
            list(usable.values()),
            settings,
            read_timing(experiment_folder) if experiment_folder is not None else None,
        )
    if experiment_folder is not None:
        refresh_human_ratings(experiment_folder, comparison, settings)
    return _inputs(comparison, usable, left_out, experiment_folder, context)


def refresh_human_ratings(
    experiment_folder: Path, comparison: dict[str, Any], settings: CompareConfig
) -> None:
    """Ratings go on after ``compare`` (``adaptlab rate``): put the current ones into the
    comparison, and into the experiment's ``comparison.json`` when it holds the same runs."""
    rated = human_ratings(experiment_folder, settings)
    if rated is None or rated == comparison.get("human_ratings"):
        return
    comparison["human_ratings"] = rated
    path = experiment_folder / COMPARISON
    written = read_json_object(path)
    if written is not None and written.get("rows") == comparison.get("rows"):
        write_text_atomic(path, json.dumps({**written, "human_ratings": rated}, indent=2) + "\n")


def inputs_for_comparison(experiment_folder: Path, comparison: dict[str, Any]) -> ReportInputs:
    """The inputs for a comparison just built by ``compare``: its rows' runs, and its failed
    strategies and unreadable runs as left out."""
    runs = experiment_folder / "runs"
    usable = {str(row["strategy"]): runs / str(row["strategy"]) for row in comparison["rows"]}
    left_out = {
        name: f"{runs / name}: the strategy failed: {message} (see {ERROR_FILE} there)"
        for name, message in (comparison.get("failures") or {}).items()
    }
    for problem in comparison.get("problems") or []:
        left_out[_run_named_in(problem)] = problem
    context = experiment_context(experiment_folder)
    return _inputs(comparison, usable, left_out, experiment_folder, context)


def _inputs(
    comparison: dict[str, Any],
    usable: Mapping[str, Path],
    left_out: dict[str, str],
    experiment_folder: Path | None,
    context: ExperimentContext,
) -> ReportInputs:
    records = {}
    for row in comparison["rows"]:
        name = str(row["strategy"])
        records[name] = read_run(usable[name], predictions=False)
    return ReportInputs(
        comparison,
        records,
        left_out,
        experiment_folder,
        context.experiment,
        context.data_report,
        context.eval_lock,
        context.settings,
        _stability(experiment_folder, records),
    )


def _stability(folder: Path | None, records: Mapping[str, RunRecord]) -> Stability | None:
    """The repeat's record when it describes exactly these runs; a stale or unreadable one is
    not shown (a compare that redid a run made it stale)."""
    if folder is None:
        return None
    try:
        stability = read_stability(folder)
    except RunError:
        return None
    return stability if stability is not None and stability.current(records) else None


def screen(
    folders: Sequence[Path], settings: CompareConfig
) -> tuple[dict[str, Path], dict[str, str]]:
    """Run name -> folder of each run a comparison can use; run name -> why for the others."""
    usable: dict[str, Path] = {}
    left_out: dict[str, str] = {}
    for folder in folders:
        problem = run_problem(folder, settings)
        # Named as the comparison names it: the manifest's strategy (the folder's name, unless
        # a run folder was copied or renamed).
        name = folder.name if problem else run_name(folder)
        if problem is None and name in usable:
            problem = f"{folder}: another run named '{name}' is already in: {usable[name]}"
        if problem is None:
            usable[name] = folder
        else:
            left_out[name] = problem
    return usable, left_out


def run_name(folder: Path) -> str:
    return read_manifest(folder).run


def run_problem(folder: Path, settings: CompareConfig) -> str | None:
    """Why ``folder`` cannot be compared (naming the folder or file), or ``None``."""
    if not folder.is_dir():
        return f"{folder}: no such run folder (deleted, or never run)"
    try:
        read_run(folder)
        # A single run compares cheaply (no bootstrap) and reads every field a row needs.
        build_comparison([folder], settings)
    except RunError as exc:
        return str(exc) + _failure_note(folder)
    except KeyError as exc:
        file = MANIFEST if exc.args and exc.args[0] == "eval_sha256" else EVAL
        return f"{folder / file}: no {exc} field (written by another adaptlab version?)"
    except (TypeError, ValueError, IndexError) as exc:
        return f"{folder / EVAL}: unexpected content: {exc.__class__.__name__}: {exc}"
    return None


def _failure_note(folder: Path) -> str:
    """The last line of the traceback ``compare`` left for a strategy that failed."""
    try:
        lines = (folder / ERROR_FILE).read_text(encoding="utf-8").strip().splitlines()
    except OSError:
        return ""
    return f"; the strategy failed: {lines[-1]}" if lines else ""


def _same_eval_set(
    usable: dict[str, Path], lock: Mapping[str, Any] | None
) -> tuple[dict[str, Path], dict[str, str]]:
    """Runs scored on the experiment's locked eval set (or, without a lock, on the one most
    runs share) and of the task kind most runs have; the rest, with why, left out."""
    facts = {name: _eval_facts(folder) for name, folder in usable.items()}
    locked = (lock or {}).get("eval_sha256")
    common = Counter(sha for sha, _ in facts.values()).most_common(1)
    reference = locked or (common[0][0] if common else None)
    kinds = Counter(kind for sha, kind in facts.values() if sha == reference).most_common(1)
    kind = kinds[0][0] if kinds else None
    keep, left_out = {}, {}
    for name, (sha, run_kind) in facts.items():
        if sha != reference:
            left_out[name] = (
                f"{usable[name] / MANIFEST}: scored on eval set {sha[:12]}…, not the "
                f"experiment's {str(reference)[:12]}…; runs on different eval sets do not compare"
            )
        elif run_kind != kind:
            left_out[name] = f"{usable[name] / EVAL}: a {run_kind} run among {kind} runs"
        else:
            keep[name] = usable[name]
    return keep, left_out


def _eval_facts(folder: Path) -> tuple[str, str]:
    record = read_run(folder, predictions=False)
    return record.manifest.eval_sha256, record.kind


def _current_comparison(
    experiment_folder: Path | None, usable: Mapping[str, Path]
) -> dict[str, Any] | None:
    """``comparison.json`` when it covers exactly the usable runs and is newer than each."""
    if experiment_folder is None:
        return None
    path = experiment_folder / COMPARISON
    recorded = read_json_object(path)
    if recorded is None or not isinstance(recorded.get("rows"), list):
        return None
    names = {str(row.get("strategy")) for row in recorded["rows"]}
    written = path.stat().st_mtime
    fresh = all((f / MANIFEST).stat().st_mtime <= written for f in usable.values())
    return recorded if names == set(usable) and fresh else None


def _run_named_in(problem: str) -> str:
    """The run a ``build_comparison`` problem is about: its message starts with the run's
    folder or a file in it."""
    path = Path(problem.split(": ", 1)[0])
    return path.name if not path.suffix else path.parent.name


# --------------------------------------------------------------------------- the experiment


@dataclass(frozen=True)
class ExperimentContext:
    """What the experiment folder says beyond the runs; ``None`` for each file absent."""

    experiment: Mapping[str, Any] | None = None
    data_report: Mapping[str, Any] | None = None
    eval_lock: Mapping[str, Any] | None = None
    settings: CompareConfig = field(default_factory=CompareConfig)


def experiment_context(folder: Path | None) -> ExperimentContext:
    """``experiment.yaml``, the data report, the eval lock and the compare settings."""
    if folder is None:
        return ExperimentContext()
    experiment = _read_yaml(folder / EXPERIMENT)
    return ExperimentContext(
        experiment,
        read_json_object(folder / DATA_REPORT),
        read_json_object(folder / EVAL_LOCK),
        _compare_settings(experiment),
    )


def _compare_settings(experiment: Mapping[str, Any] | None) -> CompareConfig:
    """The experiment's ``compare`` settings (bootstrap resamples, confidence), so a rebuilt
    comparison matches what ``compare`` wrote; the defaults when they cannot be read."""
    raw = (experiment or {}).get("compare")
    try:
        return CompareConfig.model_validate(raw or {})
    except ValidationError:
        return CompareConfig()


def _read_yaml(path: Path) -> dict[str, Any] | None:
    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return value if isinstance(value, dict) else None
