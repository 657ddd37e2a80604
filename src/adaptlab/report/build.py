"""Build the report: read the runs, project costs, decide, render, write.

``adaptlab report RUN_DIR...`` and the end of ``adaptlab compare`` both land here. The report
reads only run directories and the experiment folder (:mod:`adaptlab.report.inputs`) and
writes ``report.html`` (self-contained) and ``report.md`` (the same content) atomically.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
    return ReportFiles(html_path, markdown_path, data.decision.recommended, inputs.left_out)


def report_data(inputs: ReportInputs, settings: ReportConfig) -> ReportData:
    """Costs projected and the decision taken: everything the sections show."""
    profiles = hardware_profiles(settings)
    deployment = project(inputs, settings.projection, profiles)
    facts = {name: (record.strategy, record.profile) for name, record in inputs.runs.items()}
    stability = inputs.stability
    evidence = evidence_from_comparison(
        inputs.comparison,
        deployment.totals(),
        facts,
        inputs.data_report,
        settings.decision,
        paired_differences(inputs.runs.values(), inputs.settings),
        deployment.intervals(),
        None if stability is None else StabilityFacts(stability.picks),
    )
    return ReportData(inputs, decide(evidence), deployment, settings.decision, profiles)


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
    """The decision the report of a comparison just built takes (default report settings)."""
    return report_data(inputs_for_comparison(folder, comparison), ReportConfig()).decision


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
