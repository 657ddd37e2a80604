"""Estimate before training: wall time, peak memory and cost of each strategy of an experiment.

For one experiment config and each strategy ``compare`` would run, the *workload* is worked out
without training anything and without reading a weight (:mod:`adaptlab.cost.workload`). A
strategy that trains something special says so in an optional ``workload(run) -> Workload``
method (distillation's half-depth student, LoRA's adapters, partial's top blocks, SetFit's
pairs); every other one gets :func:`default_workload` from the training method it declares
(``profile.method``).

- **Time** = FLOPs / (peak FLOP/s x utilisation). The utilisation is measured on runs on record
  when the target is the profile they were measured on (:data:`MEASURED_PROFILE`): the median
  of the runs of the same strategy and base model, else of the same training method and base
  model, else of the same method; other profiles use their ``assumed_utilisation``. A run on
  record's method is the one its manifest's profile declares.
- **Peak memory** (the fit stage's resident set, what ``cost.json``'s ``peak_rss_bytes``
  measures) = baseline + :func:`~adaptlab.cost.workload.formula_bytes`. The baseline
  (interpreter, libraries, data) is the median of measured peak − formula over runs on
  record, else this process's resident set after its imports.
- **Cost** = time / 3600 x the profile's price per hour.

This sits beside ``compare`` (above the strategies, the run folder and the cost arithmetic):
runs on record are read through :func:`adaptlab.runs.read_run` only.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from adaptlab.compare import (
    experiment_dir,
    experiment_task,
    ordered_strategies,
    prepared_is_current,
)
from adaptlab.config import ConfigError, ExperimentConfig, TrainConfig
from adaptlab.cost.contention import contended
from adaptlab.cost.hardware import MEASURED_PROFILE, HardwareProfile, get_profile, load_hardware
from adaptlab.cost.memory import current_rss_bytes
from adaptlab.cost.model import cost_of, seconds_for
from adaptlab.cost.model import utilisation as measured_utilisation
from adaptlab.cost.workload import (
    TRAINING_METHODS,
    Workload,
    formula_bytes,
    forward_workload,
    meta_model,
    meta_trained_model,
    not_estimated,
    prompt_workload,
    trained_workload,
    training_lengths,
)
from adaptlab.data.pipeline import check_data, open_prepared, prepare_data
from adaptlab.profile import TrainingMethod
from adaptlab.runs import CONFIG, RunRecord, read_run
from adaptlab.strategies.base import (
    RunContext,
    Strategy,
    Task,
    get_strategy,
    merged_train_config,
    require_supported,
    resolve_run,
    strategy_name,
)

# --------------------------------------------------------------------------- the workload


def default_workload(run: RunContext[Any], method: TrainingMethod | None = None) -> Workload:
    """The workload of a strategy that trains the base model as its method (by default its
    ``profile.method``) says: every weight (``full``, or ``top_blocks``: the model's
    ``requires_grad`` parameters), nothing but a forward pass over the training texts
    (``features``), or nothing (``none``: only the models it runs are held in memory)."""
    strategy = strategy_name(run.name, run.experiment.strategies.get(run.name))
    method = method or get_strategy(strategy).profile.method
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


def strategy_workload(strategy: Strategy | type[Any], run: RunContext[Any]) -> Workload:
    """The strategy's own ``workload(run)`` when it has one, else :func:`default_workload`
    of the method it declares."""
    own: Callable[[RunContext[Any]], Workload] | None = getattr(strategy, "workload", None)
    return default_workload(run, strategy.profile.method) if own is None else own(run)


# --------------------------------------------------------------------------- runs on record


@dataclass(frozen=True)
class RecordedRun:
    """A finished run and the workload the estimator gives it, to calibrate against."""

    folder: Path
    name: str
    strategy: str
    method: TrainingMethod
    """The training method the run's strategy declared (its manifest's profile)."""
    base_model: str
    workload: Workload
    fit_wall_s: float
    peak_rss_bytes: int | None
    fit_contention: float | None = None
    """Share of the machine's CPU time other processes used during the fit (``cost.json``)."""

    @property
    def contended(self) -> bool:
        """Fitted while other work shared the machine: its wall time overstates the run's."""
        return contended(self.fit_contention, self.fit_wall_s)

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
    record = read_run(folder, predictions=False)
    cost = record.cost
    if cost.fit_wall_s is None:
        raise ConfigError(f"{folder}: no cost.json with fit_wall_s")
    resolved = yaml.safe_load(record.config_yaml) if record.config_yaml else None
    if not isinstance(resolved, dict) or "train" not in resolved:
        raise ConfigError(f"{folder / CONFIG}: missing, or without a train section")
    experiment_folder = folder.parent.parent
    name = _run_name(record, resolved)
    experiment = _run_experiment(resolved, experiment_folder, name, record)
    strategy = strategy_name(name, experiment.strategies.get(name))
    profile = record.profile or get_strategy(strategy).profile  # schema 0: no profile recorded
    task = _prepared_task(experiment_folder / "data", experiment)
    train = TrainConfig.model_validate(resolved["train"])
    workload = workload_for(name, experiment, task, train, resolved.get("strategy_config"))
    return RecordedRun(
        folder,
        name,
        strategy,
        profile.method,
        experiment.model.base_model,
        workload,
        cost.fit_wall_s,
        cost.peak_rss_bytes if cost.peak_rss_scope == "fit" else None,
        _share(cost.raw.get("fit_contention")),
    )


def _share(value: Any) -> float | None:
    """``cost.json``'s ``fit_contention`` (absent before it was recorded)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _run_name(record: RunRecord, resolved: dict[str, Any]) -> str:
    """The manifest's run name; a folder written before it had one named the run in its
    ``config.yaml``'s ``strategy``."""
    if record.profile is not None:
        return record.name
    return str(resolved.get("run") or resolved.get("strategy") or record.name)


def _run_experiment(
    resolved: dict[str, Any], folder: Path, name: str, record: RunRecord
) -> ExperimentConfig:
    """The run's experiment: its own resolved sections over the experiment's ``strategies``
    (and, where that no longer names the run, the strategy its manifest says it ran)."""
    strategies: dict[str, Any] = {}
    saved = folder / "experiment.yaml"
    if saved.is_file():
        strategies = dict(
            (yaml.safe_load(saved.read_text(encoding="utf-8")) or {}).get("strategies") or {}
        )
    if record.profile is not None and record.strategy != name:
        strategies.setdefault(name, {"strategy": record.strategy})
    return ExperimentConfig.model_validate(
        {key: resolved[key] for key in ("model", "lora", "data") if key in resolved}
        | {"strategies": strategies, "name": folder.name, "output_dir": str(folder.parent)}
    )


def _prepared_task(folder: Path, experiment: ExperimentConfig) -> Task:
    data = experiment.data
    prepared = open_prepared(
        folder, allow_contaminated=data.allow_contaminated, near_threshold=data.near_dup_threshold
    )
    return experiment_task(prepared, experiment.data.task, experiment)


def workload_for(
    name: str,
    experiment: ExperimentConfig,
    task: Task,
    train: TrainConfig | None = None,
    raw_config: dict[str, Any] | None = None,
) -> Workload:
    """The workload of run ``name`` of ``experiment`` on ``task`` (train settings merged as
    ``compare`` merges them unless given)."""
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
    method: TrainingMethod,
    strategy: str,
    base_model: str,
    pool: Sequence[RecordedRun],
    profile_name: str,
    profiles: dict[str, HardwareProfile],
    exclude: Path | None = None,
) -> Calibration:
    """The utilisation to divide by for strategy ``strategy``, which declares ``method`` (see
    the module docstring for the order of preference)."""
    profile = profiles[profile_name]
    assumed = Calibration(profile.assumed_utilisation, f"assumed by profile '{profile_name}'")
    if profile_name != MEASURED_PROFILE:
        return assumed
    measured_on = profiles[MEASURED_PROFILE]
    measured = [
        run for run in pool if run.folder != exclude and run.utilisation(measured_on) is not None
    ]
    # A fit that shared the machine ran slower than the run needs: it would calibrate low.
    usable = [run for run in measured if not run.contended]
    busy = sorted(f"{run.name} ({run.fit_contention:.0%})" for run in measured if run.contended)
    left_out = f"; left out, fitted under contention: {', '.join(busy)}" if busy else ""

    def same_model(run: RecordedRun) -> bool:
        return run.base_model == base_model

    trains = method in TRAINING_METHODS
    tiers: tuple[tuple[str, Callable[[RecordedRun], bool]], ...] = (
        ("same strategy and base model", lambda r: r.strategy == strategy and same_model(r)),
        ("same method and base model", lambda r: r.method == method and same_model(r)),
        ("same method", lambda r: r.method == method),
        (
            "another training method, same base model",
            lambda r: trains and r.method in TRAINING_METHODS and same_model(r),
        ),
    )
    for label, keep in tiers:
        chosen = [run for run in usable if keep(run)]
        if chosen:
            values = [run.utilisation(measured_on) or 0.0 for run in chosen]
            names = tuple(sorted(run.name for run in chosen))
            return Calibration(
                statistics.median(values),
                f"measured: median of {len(chosen)} run(s), {label} ({', '.join(names)})"
                + left_out,
                names,
            )
    return Calibration(assumed.value, assumed.source + left_out)


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
    alike = [(r, v) for r, v in residuals if (r.method in TRAINING_METHODS) == trains]
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
    method: TrainingMethod,
    base_model: str,
    workload: Workload,
    pool: Sequence[RecordedRun],
    profile_name: str,
    profiles: dict[str, HardwareProfile],
    exclude: Path | None = None,
) -> Estimate:
    """Time, peak memory and cost of ``workload`` of run ``name`` (of ``strategy``, which
    declares ``method``) on profile ``profile_name``."""
    profile = profiles[profile_name]
    baseline = calibrated_baseline(pool, exclude, method in TRAINING_METHODS)
    if workload.not_estimated is not None:
        return Estimate(name, strategy, workload, None, baseline, None, None, None)
    utilisation = None
    seconds = 0.0
    if workload.flops > 0:
        utilisation = calibrated_utilisation(
            method, strategy, base_model, pool, profile_name, profiles, exclude
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
    profile_name: str = MEASURED_PROFILE,
    profiles: dict[str, HardwareProfile] | None = None,
    runs: Sequence[Path] | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> ExperimentEstimate:
    """Estimates for each run ``compare`` would make of ``experiment`` (or ``names``) on
    hardware profile ``profile_name`` of ``profiles`` (default: the built-in and user ones)."""
    profiles = profiles or load_hardware()
    profile = get_profile(profiles, profile_name)
    task = experiment_task_without_writing(experiment, log)
    ordered = ordered_strategies(names, experiment, task.kind)
    for name in ordered:
        require_supported(name, resolve_run(name, experiment.strategies.get(name))[0], task.kind)
    base_model = experiment.model.base_model
    pool, problems = recorded_runs(
        runs if runs is not None else [experiment_dir(experiment) / "runs"]
    )
    estimates = []
    for name in ordered:
        log(f"[{name}] counting tokens and parameters")
        strategy = strategy_name(name, experiment.strategies.get(name))
        method = get_strategy(strategy).profile.method
        workload = workload_for(name, experiment, task)
        estimates.append(
            estimate_workload(
                name, strategy, method, base_model, workload, pool, profile_name, profiles
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
    folder = experiment_dir(experiment) / "data"
    allow, near = experiment.data.allow_contaminated, experiment.data.near_dup_threshold
    if prepared_is_current(folder, experiment):
        return experiment_task(
            open_prepared(folder, allow_contaminated=allow, near_threshold=near),
            experiment.data.task,
            experiment,
        )
    log("Checking the data (into a temporary folder; nothing is written to the experiment)")
    with tempfile.TemporaryDirectory(prefix="adaptlab-estimate-data-") as scratch:
        result = check_data(experiment.data, experiment.model)
        prepare_data(result, experiment.data, Path(scratch))
        prepared = open_prepared(Path(scratch), allow_contaminated=allow, near_threshold=near)
        return experiment_task(prepared, experiment.data.task, experiment)


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
    profiles = profiles or load_hardware()
    pool, problems = recorded_runs(folders)
    rows = []
    for run in pool:
        estimate = estimate_workload(
            run.name,
            run.strategy,
            run.method,
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
                run.method,
                run.fit_wall_s,
                estimate.seconds,
                run.peak_rss_bytes,
                estimate.peak_bytes,
                None if estimate.utilisation is None else estimate.utilisation.source,
            )
        )
    return rows, problems
