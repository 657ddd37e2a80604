"""``adaptlab monitor report MONITOR_DIR``: the drift monitor's record as one HTML page.

Read from ``windows.jsonl`` and ``proposals/*/proposal.json`` only, and laid out with the main
report's document blocks and renderer (:mod:`adaptlab.report.html`: the same styles, plots as
inline PNG, no script, nothing loaded from elsewhere): per model, each window's p-values and PSI
over time with the thresholds drawn, a table of every window, and the re-tune proposals.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from adaptlab.paths import write_text_atomic
from adaptlab.report import html
from adaptlab.report.document import Block, Bullets, Document, Image, Notice, Paragraph, Section
from adaptlab.report.document import Table as TableBlock
from adaptlab.report.plots import Plot, render
from adaptlab.serve.drift import PSEUDO_COUNT, PSI_MAJOR, PSI_MODERATE
from adaptlab.serve.monitor import WINDOWS_FILE
from adaptlab.serve.retune import PROPOSAL, PROPOSALS, folder_name

REPORT_FILE = "monitor.html"


class MonitorReportError(RuntimeError):
    """Nothing to report: the folder holds no monitor record."""


@dataclass
class ModelRecord:
    """What the monitor wrote about one model."""

    name: str
    references: list[dict[str, Any]] = field(default_factory=list)
    windows: list[dict[str, Any]] = field(default_factory=list)
    proposals: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)


@dataclass(frozen=True)
class MonitorRecord:
    folder: Path
    models: dict[str, ModelRecord]
    problems: list[str]
    """Lines or files that could not be read, named."""


def read_monitor(folder: Path) -> MonitorRecord:
    """The record in ``folder`` (lines that do not parse are named in ``problems``)."""
    path = folder / WINDOWS_FILE
    if not path.is_file():
        raise MonitorReportError(
            f"{path}: not found; give the folder 'adaptlab serve' monitors into (--monitor-dir, "
            "default monitor/ in adaptlab's cache)"
        )
    models: dict[str, ModelRecord] = {}
    problems: list[str] = []
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            entry = _entry(line)
            if entry is None:
                problems.append(f"{path}:{number}: not a monitor record (skipped)")
                continue
            record = models.setdefault(entry["model"], ModelRecord(entry["model"]))
            if entry.get("event") == "reference":
                record.references.append(entry)
            elif entry.get("event") == "window":
                record.windows.append(entry)
    for proposal in sorted((folder / PROPOSALS).glob(f"*/{PROPOSAL}")):
        try:
            content = json.loads(proposal.read_text(encoding="utf-8"))
            model = str(content["model"])
        except (OSError, ValueError, KeyError, TypeError):
            problems.append(f"{proposal}: unreadable (skipped)")
            continue
        models.setdefault(model, ModelRecord(model)).proposals.append((proposal.parent, content))
    return MonitorRecord(folder, models, problems)


def _entry(line: str) -> dict[str, Any] | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
        return None
    return entry


def write_monitor_report(folder: Path, out: Path | None = None) -> Path:
    """Write the page for the monitor record in ``folder`` (default ``folder/monitor.html``)."""
    record = read_monitor(folder)
    target = out or folder / REPORT_FILE
    write_text_atomic(target, html.render(monitor_document(record)))
    return target


# --------------------------------------------------------------------------- the document


def monitor_document(record: MonitorRecord) -> Document:
    windows = sum(len(m.windows) for m in record.models.values())
    subtitle = f"{record.folder}: {len(record.models)} models, {windows} windows"
    sections = [_summary(record), _thresholds(record)]
    sections += [_model_section(model) for model in record.models.values()]
    return Document("Drift monitor", subtitle, tuple(sections))


def _summary(record: MonitorRecord) -> Section:
    rows = []
    for model in record.models.values():
        drifted = sum(1 for w in model.windows if w.get("drifted"))
        total = len(model.windows)
        rate = f"{drifted / total:.0%}" if total else "—"
        rows.append(
            (
                model.name,
                _reference_state(model),
                str(total),
                f"{drifted} ({rate})",
                str(max((int(w.get("consecutive") or 0) for w in model.windows), default=0)),
                str(len(model.proposals)),
            )
        )
    headers = ("model", "reference", "windows", "drifted", "longest run", "proposals")
    blocks: list[Block] = [TableBlock(headers, tuple(rows), id="monitor-summary")]
    blocks += [Notice(problem) for problem in record.problems]
    return Section("summary", "Summary", tuple(blocks))


def _reference_state(model: ModelRecord) -> str:
    if not model.references:
        return "—"
    last = model.references[-1]
    if last.get("ready"):
        facts = last.get("facts") or {}
        return f"ready ({facts.get('embedded', '?')} training texts, {facts.get('encoder', '?')})"
    return f"none: {last.get('reason', 'unknown')}"


def _thresholds(record: MonitorRecord) -> Section:
    latest = [m.windows[-1] for m in record.models.values() if m.windows]
    alpha = latest[-1].get("alpha") if latest else None
    psi_threshold = latest[-1].get("psi_threshold") if latest else PSI_MAJOR
    items = (
        f"A window drifts when a test rejects at alpha / t (Bonferroni over the t tests that ran: "
        f"MMD, KS and, for a classifier, the labels); alpha = {alpha if alpha is not None else '—'}"
        ".",
        "MMD: unbiased MMD² of the window's embeddings against a sample of the training texts, "
        "Gaussian kernel of median-heuristic width, permutation p-value (Gretton et al., JMLR "
        "2012).",
        "KS: two-sample Kolmogorov-Smirnov of the confidences (a generator: answer lengths) "
        "against the model's on the locked eval set.",
        f"Labels: PSI of the predicted labels against the model's on the eval set (each count "
        f"+{PSEUDO_COUNT}); it counts as drift only when at least {psi_threshold} and the "
        f"chi-square test of the same counts rejects. PSI bands: < {PSI_MODERATE} no shift, "
        f"{PSI_MODERATE}-{PSI_MAJOR} moderate, > {PSI_MAJOR} major.",
        "A re-tune proposal is written once per episode of 'persist' drifted windows in a row.",
    )
    return Section("thresholds", "Tests and thresholds", (Bullets(items),))


def _model_section(model: ModelRecord) -> Section:
    blocks: list[Block] = []
    for reference in model.references:
        if not reference.get("ready"):
            blocks.append(Notice(f"No reference: {reference.get('reason', 'unknown')}"))
    if model.windows:
        ident = folder_name(model.name)
        blocks.append(Image(p_value_plot(model.name, model.windows, ident)))
        if any(w.get("psi") is not None for w in model.windows):
            blocks.append(Image(psi_plot(model.name, model.windows, ident)))
        blocks.append(_window_table(model.windows, ident))
    else:
        blocks.append(Paragraph("No window evaluated yet."))
    for folder, proposal in model.proposals:
        blocks.append(_proposal_block(folder, proposal))
    return Section(f"model-{folder_name(model.name)}", f"Model {model.name}", tuple(blocks))


def _window_table(windows: Sequence[dict[str, Any]], ident: str) -> TableBlock:
    headers = (
        "#",
        "at",
        "inputs",
        "MMD²",
        "MMD p",
        "KS",
        "KS p",
        "PSI",
        "labels p",
        "drifted",
    )
    rows = tuple(
        (
            str(position),
            str(w.get("at", "")),
            str(w.get("size", "")),
            _number(w.get("mmd2"), ".4f"),
            _number(w.get("mmd_p_value"), ".3g"),
            _number(w.get("ks_statistic"), ".3f"),
            _number(w.get("ks_p_value"), ".3g"),
            _number(w.get("psi"), ".3f"),
            _number(w.get("labels_p_value"), ".3g"),
            "; ".join(w.get("reasons") or []) or "no",
        )
        for position, w in enumerate(windows, start=1)
    )
    return TableBlock(headers, rows, id=f"windows-{ident}")


def _proposal_block(folder: Path, proposal: dict[str, Any]) -> Bullets:
    recommended = proposal.get("recommendation") or {}
    estimate = proposal.get("estimate") or {}
    data = proposal.get("new_data") or {}
    if recommended.get("run"):
        chosen = (
            f"recommended strategy: {recommended['run']} ({recommended.get('strategy')}), "
            f"{recommended.get('source', '')}"
        )
    else:
        chosen = f"recommended strategy unknown: {recommended.get('why_unknown', '?')}"
    if estimate.get("why_unknown"):
        cost = f"estimate unknown: {estimate['why_unknown']}"
    else:
        cost = (
            f"estimate on {estimate.get('hardware')}: {_number(estimate.get('seconds'), '.0f')} s, "
            f"${_number(estimate.get('cost_usd'), '.4f')}, peak "
            f"{_number((estimate.get('peak_memory_bytes') or math.nan) / 1e6, ',.0f')} MB"
        )
    scrubbed = data.get("pii_scrubbed") or {}
    pii = ", ".join(f"{k} {v}" for k, v in scrubbed.items()) or "none found"
    return Bullets(
        (
            f"Re-tune proposal {folder.name} ({proposal.get('created_at')}): {folder}",
            chosen,
            cost,
            f"new unlabeled data: {data.get('rows')} rows in {data.get('file')} "
            f"(personal data scrubbed: {pii})",
        )
    )


def _number(value: Any, spec: str) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return "—"
    return format(value, spec)


# --------------------------------------------------------------------------- plots


def _series(windows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for position, window in enumerate(windows, start=1):
        value = window.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            xs.append(position)
            ys.append(float(value))
    return xs, ys


def p_value_plot(model: str, windows: Sequence[dict[str, Any]], ident: str) -> Plot:
    """Each test's p-value per window (log scale) and the level each is tested at."""
    figure = Figure(figsize=(8, 3.6), layout="constrained")
    axes = figure.subplots()
    for key, label in (
        ("mmd_p_value", "MMD"),
        ("ks_p_value", "KS"),
        ("labels_p_value", "labels (chi-square)"),
    ):
        xs, ys = _series(windows, key)
        if xs:
            axes.plot(xs, [max(y, 1e-6) for y in ys], marker="o", markersize=3, label=label)
    xs, levels = _series(windows, "alpha_per_test")
    if xs:
        axes.plot(xs, levels, color="#d62728", linestyle="--", linewidth=1, label="alpha / t")
    drifted = [i for i, w in enumerate(windows, start=1) if w.get("drifted")]
    for position in drifted:
        axes.axvspan(position - 0.5, position + 0.5, color="#d62728", alpha=0.08)
    axes.set_yscale("log")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("window")
    axes.set_ylabel("p-value")
    title = f"{model}: p-values per window"
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower left", fontsize=8)
    alt = (
        f"{title}: {len(windows)} windows, {len(drifted)} drifted"
        + (f" (windows {', '.join(map(str, drifted))})" if drifted else "")
        + "."
    )
    return render(figure, f"plot-p-{ident}", title, alt)


def psi_plot(model: str, windows: Sequence[dict[str, Any]], ident: str) -> Plot:
    """The predicted labels' PSI per window, with the conventional bands."""
    figure = Figure(figsize=(8, 3.2), layout="constrained")
    axes = figure.subplots()
    xs, ys = _series(windows, "psi")
    axes.plot(xs, ys, marker="o", markersize=3, color="#1f77b4", label="PSI")
    axes.axhline(PSI_MODERATE, color="#ff7f0e", linestyle=":", linewidth=1, label="0.1 moderate")
    axes.axhline(PSI_MAJOR, color="#d62728", linestyle="--", linewidth=1, label="0.25 major")
    axes.set_ylim(bottom=0)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("window")
    axes.set_ylabel("PSI")
    title = f"{model}: PSI of the predicted labels"
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper left", fontsize=8)
    highest = max(ys) if ys else math.nan
    alt = f"{title}: {len(xs)} windows, highest PSI {highest:.3f}."
    return render(figure, f"plot-psi-{ident}", title, alt)
