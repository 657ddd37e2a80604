"""The report's sections, from the runs' measurements, the decision and the cost projection.

Order: the recommendation and its reasons first, then runs left out, the leaderboard, quality
against cost and latency, deployment cost over time, per-class (or per-slot) results,
calibration, forgetting, the data report's summary and every run's lineage.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from adaptlab.comparison import leaderboard_cells, leaderboard_headers
from adaptlab.cost.hardware import MEASURED_PROFILE, HardwareProfile
from adaptlab.cost.projection import ProjectionConfig, retune_count
from adaptlab.report.decide import METRIC_WORDS, Decision, DecisionConfig, Finding
from adaptlab.report.deployment import Deployment
from adaptlab.report.document import (
    Block,
    Bullets,
    Code,
    Details,
    Document,
    Image,
    Notice,
    Paragraph,
    Section,
    Table,
)
from adaptlab.report.examples import compared_examples, read_eval_records
from adaptlab.report.inputs import ReportInputs
from adaptlab.report.plots import (
    Plot,
    Point,
    calibration_plot,
    cost_curves_plot,
    forgetting_plot,
    palette,
    per_label_plot,
    quality_plot,
)
from adaptlab.runs import RunError, RunRecord

PER_LABEL_PLOT_LIMIT = 30
"""Classes shown in the per-class heatmap (banking77 has 77: the hardest 30 stay legible)."""
PER_LABEL_TABLE_LIMIT = 10


@dataclass(frozen=True)
class ReportData:
    """Everything the sections read."""

    inputs: ReportInputs
    decision: Decision
    deployment: Deployment
    decision_settings: DecisionConfig
    profiles: Mapping[str, HardwareProfile]

    @property
    def rows(self) -> list[dict[str, Any]]:
        return list(self.inputs.comparison["rows"])

    @property
    def metric_words(self) -> str:
        return METRIC_WORDS.get(self.inputs.metric, self.inputs.metric)

    @property
    def colours(self) -> dict[str, str]:
        return palette([str(row["strategy"]) for row in self.rows])

    @property
    def horizon(self) -> str:
        return f"{_number(self.deployment.settings.months)} months"


def document(data: ReportData) -> Document:
    inputs = data.inputs
    lock = inputs.comparison.get("eval_sha256", "")
    subtitle = (
        f"{inputs.task} task, ranked on {data.metric_words}; {len(inputs.runs)} runs on the "
        f"locked eval set {str(lock)[:12]}…; built {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    built = [
        recommendation(data),
        problems(data),
        leaderboard(data),
        quality(data),
        deployment(data),
        per_label(data),
        examples(data),
        human_preference(data),
        calibration(data),
        forgetting(data),
        data_summary(data),
        lineage(data),
    ]
    sections = tuple(section for section in built if section is not None)
    return Document(f"adaptlab report: {inputs.name}", subtitle, sections)


# --------------------------------------------------------------------------- recommendation


REASONS_SHOWN = 3
"""Findings the recommendation opens with; the rest are folded away under one line."""


def recommendation(data: ReportData) -> Section:
    decision = data.decision
    chosen = decision.recommended
    ranked = decision.by_priority()
    shown, folded = ranked[:REASONS_SHOWN], ranked[REASONS_SHOWN:]
    blocks: list[Block] = [
        Paragraph(
            f"Recommended: {chosen} (confidence: {decision.confidence}). "
            f"Runner-up: {decision.runner_up or 'none'}."
        ),
        Paragraph(_recommended_facts(data)),
        Paragraph(
            f"Why (the {len(shown)} most telling of {len(ranked)} findings: about {chosen} "
            "first, then about runs it beat, then about the runner-up):"
            if folded
            else "Why (the decision rules that fired):"
        ),
        Bullets(tuple(_cite(f) for f in shown) or ("no rule fired about it",)),
    ]
    more = _more_findings(data, folded)
    if more is not None:
        blocks.append(more)
    blocks.append(Paragraph(_ranking_text(data)))
    return Section("recommendation", "Recommendation", tuple(blocks))


def _more_findings(data: ReportData, folded: tuple[Finding, ...]) -> Details | None:
    """The fired findings past the first few, and every tuned run against the prompted base,
    folded under one line that says how many there are."""
    blocks: list[Block] = []
    if folded:
        blocks += [Paragraph("Other findings:"), Bullets(tuple(_cite(f) for f in folded))]
    # Every tuned run against the well-prompted base, also where it wins (the rule is quiet
    # then): by how much training beat a good prompt is the question a team lead asks first.
    prompted = [f for f in data.decision.findings if f.rule == "tuned_vs_prompted" and f.other]
    if prompted:
        blocks += [
            Paragraph("Each tuned run against the well-prompted base:"),
            Bullets(tuple(_cite(f) for f in prompted)),
        ]
    if not blocks:
        return None
    parts = [f"{len(folded)} more finding{'' if len(folded) == 1 else 's'}"] if folded else []
    if prompted:
        parts.append("each tuned run against the well-prompted base")
    return Details("; ".join(parts), tuple(blocks))


def _recommended_facts(data: ReportData) -> str:
    chosen = data.decision.recommended
    row = next(r for r in data.rows if r["strategy"] == chosen)
    metric = data.inputs.metric
    low, high = row[f"{metric}_ci"]
    level = _level(data)
    quality = (
        f"{chosen} scored {data.metric_words} {row[metric] * 100:.1f}% "
        f"({level} CI {low * 100:.1f}–{high * 100:.1f})"
    )
    cost = data.deployment.breakdown(chosen)
    if cost is None:
        return f"{quality}; its deployment cost is unknown ({data.deployment.unknown[chosen]})."
    return (
        f"{quality}; projected cost over {data.horizon}: ${cost.total:,.2f} (training "
        f"${cost.training:,.2f}, {cost.retunes} re-tunes ${cost.retuning:,.2f}, serving "
        f"{cost.requests:,.0f} requests ${cost.serving:,.2f})."
    )


def _ranking_text(data: ReportData) -> str:
    fired = sorted({f.rule for f in data.decision.findings if f.fired})
    counts = ", ".join(f"{rule} ×{len(data.decision.fired(rule))}" for rule in fired)
    return (
        f"Ranking: {' > '.join(data.decision.ranking)}. A run whose {data.metric_words} is not "
        "significantly higher (paired bootstrap) than a cheaper run's loses to the cheaper one; "
        "of the runs left, the dearest is recommended: the most quality a significant "
        f"difference shows to be worth paying for. Rules that fired: {counts or 'none'}."
    )


def _cite(finding: Finding) -> str:
    return f"[{finding.rule}] {finding.message}"


def _level(data: ReportData) -> str:
    return f"{round(float(data.inputs.comparison.get('confidence', 0.95)) * 100)}%"


# --------------------------------------------------------------------------- problems


def problems(data: ReportData) -> Section | None:
    """Runs left out and costs that could not be projected, each naming the file at fault."""
    lines = [f"run '{name}' left out: {why}" for name, why in data.inputs.left_out.items()]
    lines += [
        f"cost of '{name}' unknown (counts as dearest): {why}"
        for name, why in data.deployment.unknown.items()
    ]
    if not lines:
        return None
    blocks: list[Block] = [Notice(line) for line in lines]
    blocks.append(Paragraph("The rest of the report is built from the runs that could be read."))
    return Section("problems", "Problems", tuple(blocks))


# --------------------------------------------------------------------------- leaderboard


def leaderboard(data: ReportData) -> Section:
    comparison = data.inputs.comparison
    totals = data.deployment.totals()
    ranks = {name: i + 1 for i, name in enumerate(data.decision.ranking)}
    headers = (*leaderboard_headers(comparison), f"cost {data.horizon} ($)", "decision rank")
    rows = tuple(
        (
            *leaderboard_cells(row),
            _money(totals.get(str(row["strategy"]))),
            str(ranks.get(str(row["strategy"]), "—")),
        )
        for row in data.rows
    )
    text = (
        f"Best on {data.metric_words}: {comparison['best']}. In brackets: the {_level(data)} "
        "bootstrap CI of each score. Δ is the paired-bootstrap difference to the best run on "
        "the same eval items, in points; * marks one whose CI excludes 0 (significant). Decision "
        "rank is the order the rules leave (1: recommended)."
    )
    sampled = [
        f"{row['strategy']} was scored on a fixed sample of {row['n']:,} eval examples; its Δ "
        "is on that sample."
        for row in data.rows
        if row.get("sampled")
    ]
    blocks: list[Block] = [Table(headers, rows, id="leaderboard-table"), Paragraph(text)]
    if sampled:
        blocks.append(Bullets(tuple(sampled)))
    return Section("leaderboard", "Leaderboard", tuple(blocks))


# --------------------------------------------------------------------------- quality plots


def quality(data: ReportData) -> Section:
    latency = {
        str(r["strategy"]): float(r["latency_batch1_p50_ms"])
        for r in data.rows
        if r.get("latency_batch1_p50_ms") is not None
    }
    cost_plot = _quality_image(
        data,
        data.deployment.totals(),
        "plot-quality-cost",
        "projected cost",
        f"projected total cost over {data.horizon} ($)",
    )
    latency_plot = _quality_image(
        data, latency, "plot-quality-latency", "latency", "median latency per request, batch 1 (ms)"
    )
    text = (
        "The dashed line joins the frontier: runs that no cheaper (or faster) run beats. A run "
        "below it is dominated. The frontier ignores the CIs; the recommendation does not: "
        "it also drops frontier runs whose gain over a cheaper one is not significant."
    )
    blocks = (Image(cost_plot), Image(latency_plot), Paragraph(text))
    return Section("quality", "Quality against cost and latency", blocks)


def _quality_image(
    data: ReportData, x: Mapping[str, float], plot_id: str, against: str, x_label: str
) -> Plot:
    return quality_plot(
        _points(data.rows, data.inputs.metric, x),
        plot_id=plot_id,
        title=f"{data.metric_words[:1].upper()}{data.metric_words[1:]} against {against}",
        x_label=x_label,
        metric=data.metric_words,
        recommended=data.decision.recommended,
        colours=data.colours,
    )


def _points(rows: list[dict[str, Any]], metric: str, x: Mapping[str, float]) -> list[Point]:
    points = []
    for row in rows:
        name = str(row["strategy"])
        if name in x:
            low, high = row[f"{metric}_ci"]
            points.append(Point(name, float(x[name]), float(row[metric]), low, high))
    return points


# --------------------------------------------------------------------------- deployment


def deployment(data: ReportData) -> Section:
    projected = data.deployment
    inputs_text = projection_inputs(projected.settings, data.profiles)
    rows = []
    for name in data.inputs.runs:
        cost = projected.breakdown(name)
        costs = projected.costs.get(name)
        if cost is None or costs is None:
            rows.append((name, "—", "—", "—", "—", "—"))
            continue
        rows.append(
            (
                name,
                _money(cost.training),
                f"{_money(cost.retuning)} ({cost.retunes}×)",
                _money(costs.per_request * 1_000_000),
                _money(cost.serving),
                _money(cost.total),
            )
        )
    headers = (
        "strategy",
        "training $",
        "re-tuning $",
        "serving $ per 1M requests",
        f"serving $ over {data.horizon}",
        "total $",
    )
    blocks: list[Block] = [Paragraph(f"Assumptions: {inputs_text}."), Table(headers, tuple(rows))]
    if projected.costs:
        curves = projected.curves()
        short = _short_inputs(projected.settings)
        plot = cost_curves_plot(
            curves,
            recommended=data.decision.recommended,
            colours=data.colours,
            inputs_text=short,
        )
        blocks.append(Image(plot))
    blocks += _break_even_blocks(data)
    return Section("deployment", "Deployment cost over time", tuple(blocks))


def projection_inputs(settings: ProjectionConfig, profiles: Mapping[str, HardwareProfile]) -> str:
    """The projection's assumptions in words, each price with its source."""
    every = settings.retune_every_months
    retunes = retune_count(settings.months, every)
    retuning = (
        "never re-tuned"
        if every is None
        else (f"re-tuned every {_number(every)} months ({retunes} re-tunes)")
    )
    train, serve = profiles[settings.training_hardware], profiles[settings.serving_hardware]
    mode = {
        "batch_1": "each request alone (measured median batch-1 latency)",
        "batched": "requests in batches (measured per-example time at batch 32)",
    }[settings.serving_mode]
    return (
        f"{settings.requests_per_day:,.0f} requests a day for {_number(settings.months)} months, "
        f"{retuning}; training priced on {settings.training_hardware} "
        f"(${train.price_per_hour:g}/h, {train.price_source or 'no source given'}), serving on "
        f"{settings.serving_hardware} (${serve.price_per_hour:g}/h), {mode}. Serving is the "
        "marginal cost at full use of the machine (idle capacity is not charged)"
        + _scaling_note(settings)
    )


def _scaling_note(settings: ProjectionConfig) -> str:
    """Runs were timed on the measured profile; elsewhere their time is an estimate."""
    if {settings.training_hardware, settings.serving_hardware} <= {MEASURED_PROFILE}:
        return ""
    return (
        f". Runs were timed on {MEASURED_PROFILE}; on other hardware their time is estimated "
        "from FLOPs (training: 6·N·T for full training, less for adapters and frozen encoders, "
        "T = the training set's tokens × epochs; serving: 2·N per token computed) at the "
        "profile's assumed utilisation, a rough guide rather than a measurement"
    )


def _short_inputs(settings: ProjectionConfig) -> str:
    every = settings.retune_every_months
    retune = "no re-tuning" if every is None else f"re-tune every {_number(every)} mo"
    return f"{settings.requests_per_day:,.0f} requests/day, {retune}"


def _break_even_blocks(data: ReportData) -> list[Block]:
    chosen = data.decision.recommended
    evens = data.deployment.break_evens(chosen)
    if not evens:
        return []
    text = (
        f"Break-even of {chosen} against each other run: the traffic after which the one that "
        "costs more up front (training) but less per request (serving, re-tunes spread over "
        "the requests between them) becomes the cheaper one in total."
    )
    return [Paragraph(text), Bullets(tuple(even.describe() for even in evens))]


# --------------------------------------------------------------------------- per class / slot


PLURAL = {"class": "classes", "slot": "slots"}


def per_label(data: ReportData) -> Section | None:
    if data.inputs.task == "generation":
        return None  # free text has no classes or slots; see the examples instead
    generative = data.inputs.task == "generative"
    what = "slot" if generative else "class"
    scores = {
        name: label_scores(record.eval.raw, generative) for name, record in data.inputs.runs.items()
    }
    scores = {name: s for name, s in scores.items() if s}
    title = f"Per-{what} results"
    if not scores:
        return Section(f"per-{what}", title, (Paragraph(f"No per-{what} scores in eval.json."),))
    anchor = data.decision.recommended if data.decision.recommended in scores else None
    ordered = hardest_first(scores, anchor)
    shown = ordered[:PER_LABEL_PLOT_LIMIT]
    which = f"the {len(shown)} hardest of {len(ordered)}" if len(shown) < len(ordered) else "all"
    by = f"lowest F1 of {anchor}, the recommendation" if anchor else "lowest mean F1"
    plot_title = f"F1 per {what} ({which} {PLURAL[what]}, {by}, first)"
    plot = per_label_plot(scores, shown, what=what, title=plot_title)
    runs = list(scores)
    rows = tuple(
        (label, *(_score(scores[run].get(label)) for run in runs))
        for label in ordered[:PER_LABEL_TABLE_LIMIT]
    )
    text = f"F1 of the {len(rows)} hardest {PLURAL[what]} ({by}):"
    blocks = (Image(plot), Paragraph(text), Table((what, *runs), rows))
    return Section(f"per-{what}", title, blocks)


def hardest_first(scores: Mapping[str, Mapping[str, float]], anchor: str | None) -> list[str]:
    """Labels from the lowest F1 up: the ``anchor`` run's (where the chosen model fails is
    what a reader acts on), ties and labels it lacks by the mean over all runs."""
    labels = sorted({label for per_run in scores.values() for label in per_run})

    def key(label: str) -> tuple[float, float]:
        own = scores[anchor].get(label, math.inf) if anchor else 0.0
        return own, _mean_score(scores, label)

    return sorted(labels, key=key)


def label_scores(evaluation: Mapping[str, Any], generative: bool) -> dict[str, float]:
    """Class -> F1 (``metrics.per_class_f1``) or slot -> F1 (``metrics.per_slot.<slot>.f1``)."""
    metrics = evaluation.get("metrics") or {}
    if generative:
        per_slot = metrics.get("per_slot") or {}
        return {slot: float(c["f1"]) for slot, c in per_slot.items() if c.get("f1") is not None}
    return {label: float(f1) for label, f1 in (metrics.get("per_class_f1") or {}).items()}


def _mean_score(scores: Mapping[str, Mapping[str, float]], label: str) -> float:
    values = [s[label] for s in scores.values() if label in s]
    return sum(values) / len(values)


# --------------------------------------------------------------------------- examples


def examples(data: ReportData) -> Section | None:
    """Free text: the recommended run's largest wins and losses against the well-prompted
    base (the best prompted run; the base model's run when the recommendation is prompted)."""
    if data.inputs.task != "generation":
        return None
    title = "Examples: where the recommendation wins and loses"
    runs = data.inputs.runs
    chosen = runs.get(data.decision.recommended)
    other = _prompted_rival(data, chosen)
    folder = data.inputs.experiment_folder
    if chosen is None or other is None or folder is None:
        text = "Not shown: it needs a recommended run, a prompted or base run to set it against "
        text += "and the experiment's prepared eval set."
        return Section("examples", title, (Paragraph(text),))
    metric = data.inputs.metric
    try:
        wins, losses = compared_examples(chosen, other, metric, read_eval_records(folder))
    except (RunError, OSError) as exc:
        return Section("examples", title, (Notice(f"Examples not shown: {exc}"),))
    what = "sentence " + data.metric_words if metric in ("bleu", "chrf") else data.metric_words
    text = (
        f"{chosen.name} (recommended) against {other.name} on the eval items both answered, "
        f"ranked by the difference in {what} per item: the {len(wins)} largest wins and the "
        f"{len(losses)} largest losses, each with its input, both answers and the references."
    )
    blocks: list[Block] = [Paragraph(text)]
    for heading, shown in (("Largest wins", wins), ("Largest losses", losses)):
        rows = tuple(
            (
                str(example.index),
                f"{example.difference * 100:+.1f}",
                example.request,
                example.answer,
                example.other_answer,
                " | ".join(example.references),
            )
            for example in shown
        )
        headers = ("item", "Δ", "input", chosen.name, other.name, "references")
        blocks.append(Paragraph(f"{heading} of {chosen.name}:"))
        blocks.append(Table(headers, rows) if rows else Paragraph("None."))
    return Section("examples", title, tuple(blocks))


def human_preference(data: ReportData) -> Section | None:
    """The blind ratings of ``adaptlab rate``: per pair of runs, wins, ties and both-bad counts,
    each run's win rate with its bootstrap interval, and Cohen's κ between raters."""
    rated = data.inputs.comparison.get("human_ratings")
    if not rated:
        return None
    title = "Human preference"
    if rated.get("problem"):
        return Section(
            "human-preference", title, (Notice(f"Ratings not read: {rated['problem']}"),)
        )
    level = round(float(rated.get("confidence", 0.95)) * 100)
    text = (
        "Raters saw one eval input and two anonymised answers, sides balanced at random "
        "(adaptlab rate), and chose A, B, tie or both bad. A run's win rate counts a tie as half a "
        f"win, over the items rated (each item once, raters averaged), with its {level}% "
        "bootstrap interval over items; κ is Cohen's, on the items two raters both rated."
    )
    rows, notes = [], []
    for pair in rated.get("pairs") or []:
        first, second = pair["runs"]

        kappas = "; ".join(
            f"{k['raters'][0]}/{k['raters'][1]}: "
            + ("—" if k.get("kappa") is None else f"{k['kappa']:.2f}")
            + f" (n={k['n']})"
            for k in pair.get("kappa") or []
        )
        wins = pair.get("wins") or {}
        rows.append(
            (
                f"{first} vs {second}",
                _count(pair.get("items")),
                ", ".join(pair.get("raters") or []) or "—",
                f"{wins.get(first, 0)} / {wins.get(second, 0)}",
                f"{pair.get('ties', 0)} / {pair.get('both_bad', 0)}",
                _win_rate(pair, first),
                _win_rate(pair, second),
                kappas or "—",
            )
        )
        if pair.get("stale"):
            notes.append(
                f"{first} vs {second}: {pair['stale']} ratings of answers that have changed since "
                "are left out" + (f" ({pair['problem']})" if pair.get("problem") else "")
            )
    headers = (
        "pair",
        "items",
        "raters",
        "wins (first / second)",
        "ties / both bad",
        "win rate, first",
        "win rate, second",
        "κ",
    )
    blocks: list[Block] = [Paragraph(text), Table(headers, tuple(rows))]
    if notes:
        blocks.append(Bullets(tuple(notes)))
    return Section("human-preference", title, tuple(blocks))


def _win_rate(pair: Mapping[str, Any], run: str) -> str:
    value = (pair.get("win_rate") or {}).get(run)
    interval = (pair.get("win_rate_ci") or {}).get(run)
    if value is None or interval is None:
        return "—"
    return f"{value * 100:.1f}% [{interval[0] * 100:.1f}, {interval[1] * 100:.1f}]"


def _prompted_rival(data: ReportData, chosen: RunRecord | None) -> RunRecord | None:
    if chosen is None:
        return None
    for role in ("prompted", "base"):
        rivals = [
            record
            for name, record in data.inputs.runs.items()
            if name != chosen.name and record.profile is not None and record.profile.role == role
        ]
        if rivals:
            return max(rivals, key=lambda record: record.eval.score)
    return None


# --------------------------------------------------------------------------- calibration


def calibration(data: ReportData) -> Section:
    title = "Calibration"
    if data.inputs.task in ("generative", "generation"):
        text = (
            "Not measured: generated answers carry no class probabilities, so there is no "
            "confidence to calibrate (the calibration_regression rule has nothing to read)."
        )
        return Section("calibration", title, (Paragraph(text),))
    reliability = {
        name: record.eval.raw["reliability"]
        for name, record in data.inputs.runs.items()
        if record.eval.raw.get("reliability")
    }
    ece = {str(r["strategy"]): r.get("ece") for r in data.rows}
    blocks: list[Block] = []
    if reliability:
        blocks.append(Image(calibration_plot(reliability, ece, colours=data.colours)))
    settings = data.decision_settings
    text = (
        "Each point is a bin of eval examples by the model's confidence in its answer; on the "
        "dotted diagonal, a model that says 80% is right 80% of the time. ECE is the average "
        "gap, weighted by the bin's size. Flagged (calibration_regression) when ECE rises "
        f"{settings.ece_regression:g} or the confidently-wrong rate "
        f"{settings.confident_wrong_regression:g} (absolute) above the base model's."
    )
    rows = tuple(
        (str(r["strategy"]), _fixed(r.get("ece"), 3), _percent(r.get("confident_wrong_rate")))
        for r in data.rows
    )
    blocks += [Paragraph(text), Table(("strategy", "ECE", "confidently wrong"), rows)]
    return Section("calibration", title, tuple(blocks))


# --------------------------------------------------------------------------- forgetting


def forgetting(data: ReportData) -> Section:
    title = "Forgetting"
    changes = {
        str(r["strategy"]): (r.get("forgetting"), r.get("perplexity_ratio"))
        for r in data.rows
        if r.get("forgetting") is not None or r.get("perplexity_ratio") is not None
    }
    if not changes:
        text = (
            "Not measured: adaptlab measures forgetting (general-instruction pass rate, "
            "held-out perplexity) on generative runs' language models; "
            + (
                "classification runs have none."
                if data.inputs.task == "classification"
                else "retention was switched off (compare.retention.enabled)."
            )
        )
        return Section("forgetting", title, (Paragraph(text),))
    settings = data.decision_settings
    plot = forgetting_plot(
        changes,
        pass_rate_threshold=settings.forgetting_regression,
        perplexity_threshold=settings.perplexity_regression,
        colours=data.colours,
    )
    rows = tuple(_forgetting_row(r) for r in data.rows if str(r["strategy"]) in changes)
    headers = ("strategy", "instruction pass rate", "Δ vs base (points)", "perplexity", "× base")
    text = (
        "Against the base model: the pass rate on adaptlab's fixed general instructions and "
        "perplexity on held-out general text. Flagged (forgetting_regression) at a drop of "
        f"{settings.forgetting_regression * 100:g} points or {settings.perplexity_regression:g}× "
        "the base model's perplexity."
    )
    return Section("forgetting", title, (Image(plot), Paragraph(text), Table(headers, rows)))


def _forgetting_row(row: Mapping[str, Any]) -> tuple[str, ...]:
    lost = row.get("forgetting")
    return (
        str(row["strategy"]),
        _percent(row.get("instruction_pass_rate")),
        "—" if lost is None else f"{(0.0 - lost) * 100:+.1f}",
        _fixed(row.get("perplexity"), 2),
        _fixed(row.get("perplexity_ratio"), 3),
    )


# --------------------------------------------------------------------------- data report


def data_summary(data: ReportData) -> Section:
    report, lock = data.inputs.data_report, data.inputs.eval_lock
    title = "Data"
    if report is None:
        text = "No data report (data/data_report.json) in the experiment folder."
        return Section("data", title, (Paragraph(text),))
    blocks: list[Block] = [Table(*_sources_table(report))]
    guidance = [f"{g.get('level', '')}: {g.get('message', '')}" for g in report.get("guidance", [])]
    if guidance:
        blocks += [Paragraph("Guidance from the data report:"), Bullets(tuple(guidance))]
    blocks += [
        Paragraph("Cleaning and the locked eval set:"),
        Bullets(tuple(_data_facts(report, lock))),
    ]
    return Section("data", title, tuple(blocks))


def _sources_table(
    report: Mapping[str, Any],
) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    headers = ("role", "file", "format", "read", "valid", "after dedup", "errors", "warnings")
    rows = tuple(
        (
            role,
            str(source.get("path", "")),
            str(source.get("format", "")),
            *(_count(source.get(k)) for k in ("records_read", "valid", "after_dedup", "errors")),
            _count(source.get("warnings")),
        )
        for role, source in (report.get("sources") or {}).items()
    )
    return headers, rows


def _data_facts(report: Mapping[str, Any], lock: Mapping[str, Any] | None) -> list[str]:
    facts = []
    for role, dup in (report.get("duplicates") or {}).items():
        facts.append(
            f"duplicates ({role}): {dup.get('exact_groups', 0):,} exact and "
            f"{dup.get('near_groups', 0):,} near groups, {dup.get('dropped', 0):,} dropped"
        )
    contamination = report.get("contamination")
    if contamination:
        facts.append(
            f"contamination: {contamination.get('eval_items', 0):,} eval items also in train "
            f"({contamination.get('exact', 0):,} exact, {contamination.get('near', 0):,} near)"
        )
    pii = (report.get("pii") or {}).get("counts") or {}
    found = sum(sum(counts.values()) for counts in pii.values())
    action = "scrubbed" if (report.get("pii") or {}).get("scrubbed") else "kept"
    facts.append(f"PII found and {action}: {found:,}")
    labels = report.get("labels")
    if labels:
        facts.append(
            f"labels: {labels.get('classes')} classes, {labels.get('min_per_class')}–"
            f"{labels.get('max_per_class')} training examples per class"
        )
    if lock:
        facts.append(
            f"eval set locked: sha256 {lock.get('eval_sha256', '?')}, {_count(lock.get('size'))} "
            f"examples ({lock.get('source', '?')})"
        )
    return facts


# --------------------------------------------------------------------------- lineage


def lineage(data: ReportData) -> Section:
    headers = (
        "run",
        "strategy",
        "train data sha256",
        "eval set sha256",
        "base model",
        "config sha256",
        "seed",
        "code",
        "finished",
    )
    kinds = data.inputs.kinds
    rows = []
    blocks: list[Block] = []
    for name, record in data.inputs.runs.items():
        manifest = record.manifest.raw
        rows.append(
            (
                name,
                kinds.get(name, name),
                _short(manifest.get("train_sha256")),
                _short(manifest.get("eval_sha256")),
                _base_model(manifest),
                _short(manifest.get("config_sha256")),
                str(manifest.get("seed", "—")),
                str(manifest.get("code_version", "—")),
                str(manifest.get("created_at", "—")),
            )
        )
        text = f"# {record.folder / 'manifest.json'}\n{json.dumps(manifest, indent=2)}\n"
        if record.config_yaml:
            text += f"\n# {record.folder / 'config.yaml'}\n{record.config_yaml}"
        blocks.append(Code(f"{name}: manifest.json and config.yaml", text, "yaml"))
    intro = Paragraph(
        "Where each result comes from: the data and eval set it was computed from (sha256), the "
        "base model (with its weights' fingerprint), its resolved config and the code version; "
        "hashes are shortened here and complete in each run's manifest below."
    )
    return Section("lineage", "Lineage", (intro, Table(headers, tuple(rows)), *blocks))


# --------------------------------------------------------------------------- formatting


def _base_model(manifest: Mapping[str, Any]) -> str:
    """The base model with its weights' fingerprint, and any other model the run used (an
    LLM prompted, a teacher)."""
    models = {str(manifest.get("base_model", "?")): manifest.get("base_model_fingerprint")}
    models.update(manifest.get("other_models") or {})
    return "; ".join(f"{name} ({_short(fingerprint)})" for name, fingerprint in models.items())


def _money(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.2f}" if value >= 0.01 or value == 0 else f"{value:.2g}"


def _number(value: float) -> str:
    return f"{value:g}"


def _short(value: Any) -> str:
    return "—" if not value else f"{str(value)[:12]}…"


def _count(value: Any) -> str:
    return "—" if value is None else f"{int(value):,}"


def _score(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _fixed(value: Any, digits: int) -> str:
    return "—" if value is None else f"{float(value):.{digits}f}"


def _percent(value: Any) -> str:
    return "—" if value is None else f"{float(value) * 100:.1f}%"
