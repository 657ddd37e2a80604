"""Build the report: read the runs, project costs, decide, render, write.

``adaptlab report RUN_DIR...`` and the end of ``adaptlab compare`` both land here. The report
reads only run directories and the experiment folder (:mod:`adaptlab.report.inputs`) and
writes ``report.html`` (self-contained) and ``report.md`` (the same content) atomically.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import Field

from adaptlab.config import Section
from adaptlab.cost.hardware import HardwareProfile, get_profile, load_hardware
from adaptlab.cost.projection import ProjectionConfig
from adaptlab.paths import writable_folder, write_text_atomic
from adaptlab.report import html, markdown
from adaptlab.report.decide import (
    Decision,
    DecisionConfig,
    StabilityFacts,
    decide,
    evidence_from_comparison,
)
from adaptlab.report.deployment import project
from adaptlab.report.inputs import ReportError, ReportInputs, inputs_for_comparison, read_inputs
from adaptlab.report.pairs import paired_differences
from adaptlab.report.sections import ReportData, document
from adaptlab.runs import RunError, RunRecord, read_run
from adaptlab.stability import SeedPooled, Stability, pick_gaps, seed_pooled

REPORT_HTML = "report.html"
REPORT_MARKDOWN = "report.md"


class ReportConfig(Section):
    """What the report assumes beyond what the runs measured."""

    projection: ProjectionConfig = Field(
        default_factory=ProjectionConfig,
        description="Deployment assumptions: traffic, horizon, re-tuning, hardware.",
    )
    decision: DecisionConfig = Field(
        default_factory=DecisionConfig, description="Thresholds of the decision rules."
    )
    hardware: str | None = Field(
        None,
        description="A YAML file of hardware profiles to add to or change the built-in ones.",
    )


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    markdown: Path
    recommended: str
    left_out: dict[str, str]
    decision: Decision | None = None
    """The decision the report shows (pooled over seeds where a ``stability.json`` was read)."""


def build_report(
    paths: Sequence[Path], settings: ReportConfig | None = None, out: Path | None = None
) -> ReportFiles:
    """The report on the runs ``paths`` name (an experiment folder or run folders), written
    into ``out`` (default: the experiment folder, else the first run folder's parent)."""
    inputs = read_inputs(paths)
    folder = out or inputs.experiment_folder or Path(paths[0]).parent
    return write_report(inputs, settings or ReportConfig(), folder)


def write_report(inputs: ReportInputs, settings: ReportConfig, out: Path) -> ReportFiles:
    data = report_data(inputs, settings)
    report = document(data)
    html_path, markdown_path = writable_folder(out) / REPORT_HTML, out / REPORT_MARKDOWN
    write_text_atomic(html_path, html.render(report))
    write_text_atomic(markdown_path, markdown.render(report))
    return ReportFiles(
        html_path, markdown_path, data.decision.recommended, inputs.left_out, data.decision
    )


def report_data(inputs: ReportInputs, settings: ReportConfig) -> ReportData:
    """Costs projected and the decision taken: everything the sections show.

    After ``compare --repeat`` (a current ``stability.json``), quality is decided on every
    seed's runs together (:func:`adaptlab.stability.seed_pooled`): each run's score is its mean
    over the seeds and each difference resamples the seeds as well as the eval items, so
    training-seed noise is inside the intervals the rules read."""
    profiles = hardware_profiles(settings)
    if inputs.stability is not None and settings != ReportConfig():
        inputs = replace(inputs, stability=restated_stability(inputs, settings))
    deployment = project(inputs, settings.projection, profiles)
    facts = {name: (record.strategy, record.profile) for name, record in inputs.runs.items()}
    stability = inputs.stability
    pooled = pooled_over_seeds(inputs)
    comparison = inputs.comparison if pooled is None else _pooled_rows(inputs.comparison, pooled)
    paired = (
        paired_differences(inputs.runs.values(), inputs.settings)
        if pooled is None
        else pooled.differences
    )
    evidence = evidence_from_comparison(
        comparison,
        deployment.totals(),
        facts,
        inputs.data_report,
        settings.decision,
        paired,
        deployment.intervals(),
        None if stability is None else StabilityFacts(stability.picks),
    )
    return ReportData(inputs, decide(evidence), deployment, settings.decision, profiles, pooled)


def restated_stability(inputs: ReportInputs, settings: ReportConfig) -> Stability:
    """``stability.json`` with each seed's pick, ties and the picks' gaps decided again under
    ``settings``: ``compare --repeat`` recorded them under the default report settings, and a
    report with other margins or prices must not cite picks it would not have made."""
    stability, folder = inputs.stability, inputs.experiment_folder
    assert stability is not None and folder is not None
    own = stability.seeds[0]
    decided = {own: report_data(replace(inputs, stability=None), settings).decision}
    records: dict[int, list[RunRecord]] = {own: list(inputs.runs.values())}
    for seed, relative in stability.folders.items():
        try:
            again = read_inputs([folder / relative])
        except (ReportError, RunError):
            continue  # a rerun that cannot be read keeps its recorded pick
        decided[seed] = report_data(again, settings).decision
        records[seed] = list(again.runs.values())
    picks = {
        seed: decided[seed].recommended if seed in decided else name
        for seed, name in stability.picks.items()
    }
    tied = {
        seed: list(decided[seed].tied_with) if seed in decided else names
        for seed, names in stability.tied.items()
    }
    gaps = pick_gaps(picks, records, inputs.settings)
    return replace(stability, picks=picks, tied=tied, gaps=gaps)


def pooled_over_seeds(inputs: ReportInputs) -> SeedPooled | None:
    """The report's runs pooled with their reruns under the other seeds of its
    ``stability.json``; ``None`` without one, or where the metric does not pool."""
    stability, folder = inputs.stability, inputs.experiment_folder
    if stability is None or folder is None:
        return None
    by_seed: dict[int, dict[str, RunRecord]] = {stability.seeds[0]: dict(inputs.runs)}
    for seed, relative in stability.folders.items():
        runs = {}
        for name in inputs.runs:
            try:
                runs[name] = read_run(folder / relative / "runs" / name, predictions=False)
            except RunError:
                continue  # failed or removed there: pooled over the runs every seed has
        by_seed[seed] = runs
    return seed_pooled(by_seed, inputs.metric, inputs.settings)


def _pooled_rows(comparison: dict[str, Any], pooled: SeedPooled) -> dict[str, Any]:
    """The comparison with each pooled run's score and interval over the seeds."""
    metric = pooled.metric
    rows = []
    for row in comparison["rows"]:
        name = str(row["strategy"])
        if name in pooled.quality:
            row = {
                **row,
                metric: pooled.quality[name],
                f"{metric}_ci": list(pooled.intervals[name]),
                "vs_best": None,  # every pair is in pooled.differences
            }
        rows.append(row)
    return {**comparison, "rows": rows}


def hardware_profiles(settings: ReportConfig) -> dict[str, HardwareProfile]:
    """The profiles to price on; an unknown profile name is an error before anything is read."""
    profiles = load_hardware(settings.hardware)
    for name in (settings.projection.training_hardware, settings.projection.serving_hardware):
        try:
            get_profile(profiles, name)
        except KeyError as exc:
            raise ReportError(str(exc.args[0])) from None
    return profiles


def decision_for(folder: Path, comparison: dict[str, Any]) -> Decision:
    """The decision on a comparison just built, on its own seed's runs alone (default report
    settings; a ``stability.json`` already in the folder is not read): one seed's pick, as
    ``compare --repeat`` records it for each seed."""
    inputs = replace(inputs_for_comparison(folder, comparison), stability=None)
    return report_data(inputs, ReportConfig()).decision


def report_after_compare(
    folder: Path, comparison: dict[str, Any], log: Callable[[str], None]
) -> ReportFiles | None:
    """The report at the end of ``compare``. The comparison is already written: a report that
    fails is said in one line, and an older report is removed rather than left contradicting
    the new leaderboard."""
    try:
        return write_report(inputs_for_comparison(folder, comparison), ReportConfig(), folder)
    except Exception as exc:  # the comparison must survive any report failure
        for name in (REPORT_HTML, REPORT_MARKDOWN):
            (folder / name).unlink(missing_ok=True)
        log(f"report not built: {exc.__class__.__name__}: {exc}")
        return None
