"""The report's sections, from the runs' measurements, the decision and the cost projection.

Order: the recommendation and its reasons first, then runs left out, the leaderboard, quality
against cost and latency, deployment cost over time, retrieval (where a run answered from
documents), per-class (or per-slot) results, calibration, forgetting, the data report's summary
and every run's lineage.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from adaptlab.comparison import (
    Difference,
    leaderboard_cells,
    leaderboard_headers,
    paired_difference,
)
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
    rejection_plot,
)
from adaptlab.runs import RunError, RunRecord
from adaptlab.stability import SeedPooled

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
    pooled: SeedPooled | None = None
    """Quality pooled over the seeds of ``compare --repeat``, where the decision used it."""

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
        stability(data),
        problems(data),
        leaderboard(data),
        quality(data),
        deployment(data),
        retrieval(data),
        out_of_scope(data),
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
            f"Recommended: {chosen} (confidence: {decision.confidence}){_tie_text(data)}. "
            f"Runner-up: {decision.runner_up or 'none'}."
        ),
        Paragraph(_recommended_facts(data)),
        *((Paragraph(_pooled_text(data)),) if data.pooled is not None else ()),
        *((Paragraph(text),) if (text := _one_seed_text(data)) else ()),
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


def _pooled_text(data: ReportData) -> str:
    pooled, stability = data.pooled, data.inputs.stability
    assert pooled is not None and stability is not None
    order = stability.seeds  # the experiment's own seed first
    *rest, last = [str(seed) for seed in order]
    seeds = f"{', '.join(rest)} and {last}" if rest else last
    chosen = data.decision.recommended
    mean = pooled.quality.get(chosen)
    low, high = pooled.intervals.get(chosen, (math.nan, math.nan))
    figure = (
        ""
        if mean is None
        else f" ({chosen}: {data.metric_words} {mean * 100:.1f}% over the seeds, "
        f"[{low * 100:.1f}, {high * 100:.1f}])"
    )
    return (
        f"Decided on the runs of seeds {seeds} together{figure}: each run's {data.metric_words} "
        "is its mean over the seeds, and every difference the rules read resamples the seeds "
        "as well as the eval items, so training-seed noise is inside the intervals. The figures "
        f"above and the leaderboard are seed {order[0]}'s alone."
    )


def _one_seed_text(data: ReportData) -> str:
    """Said where the pick or its runner-up trains and rests on one training seed: its
    intervals cover the eval items, not the seed (nothing where ``compare --repeat`` ran)."""
    if data.inputs.stability is not None:
        return ""
    decision = data.decision
    trained = [
        name
        for name in (decision.recommended, decision.runner_up)
        if name is not None
        and (record := data.inputs.runs.get(name)) is not None
        and record.profile is not None
        and record.profile.role == "tuned"
    ]
    if not trained:
        return ""
    recorded = (data.inputs.runs[name].manifest.raw.get("seed") for name in trained)
    seeds = sorted({int(seed) for seed in recorded if isinstance(seed, int)})
    which = f" ({', '.join(f'seed {seed}' for seed in seeds)})" if seeds else ""
    return (
        f"Decided on one training seed{which}: the intervals cover the eval items, not the "
        f"seed; {' and '.join(trained)} {'train' if len(trained) > 1 else 'trains'}, another "
        "seed may move the score, and a pick that rests on a difference near an interval's "
        "edge can change with it. "
        "`adaptlab compare --repeat 2` (or `compare.repeat: 2`) reruns the runs that train "
        "with a second seed and decides on both."
    )


def _tie_text(data: ReportData) -> str:
    """``, tied with full (the tie-break rule picked it: ...)``, or nothing without a tie."""
    decision = data.decision
    if not decision.tied_with:
        return ""
    why = "; ".join(f"over {name}: {decision.tie_reasons[name]}" for name in decision.tied_with)
    return (
        f", tied with {' and '.join(decision.tied_with)} in cost and {data.metric_words}; "
        "the tie-break rule (fewer trainable parameters, then the smaller artifact, then the "
        f"simpler strategy) picked it, {why}"
    )


def _ranking_text(data: ReportData) -> str:
    fired = sorted({f.rule for f in data.decision.findings if f.fired})
    counts = ", ".join(f"{rule} ×{len(data.decision.fired(rule))}" for rule in fired)
    margin = data.decision_settings.cost_tie_margin
    quality_margin = data.decision_settings.quality_margin
    if quality_margin > 0:
        clearly = (
            f"clearly higher (the paired bootstrap's {_level(data)} interval of the difference "
            f"wholly above the {quality_margin * 100:.1f}-point margin)"
        )
        shown = "a clear"
    else:
        clearly, shown = "significantly higher (paired bootstrap)", "a significant"
    return (
        f"Ranking: {' > '.join(data.decision.ranking)}. A run whose {data.metric_words} is not "
        f"{clearly} than a cheaper run's loses to the cheaper one; "
        "two runs cost the same when their projected costs' intervals overlap or differ by "
        f"less than {margin:.0%}, and then the better one wins, or with {data.metric_words} "
        "tied too the tie-break rule picks; of the runs left, the dearest is recommended: the "
        f"most quality {shown} difference shows to be worth paying for. Rules that "
        f"fired: {counts or 'none'}."
    )


def _cite(finding: Finding) -> str:
    return f"[{finding.rule}] {finding.message}"


def _level(data: ReportData) -> str:
    return f"{round(float(data.inputs.comparison.get('confidence', 0.95)) * 100)}%"


# --------------------------------------------------------------------------- stability


def stability(data: ReportData) -> Section | None:
    """The recommendation under each training seed (``compare --repeat``) and how much each
    run's quality moved between seeds, paired over the same eval items."""
    record = data.inputs.stability
    if record is None:
        return None
    seeds = record.seeds
    picks = "; ".join(
        f"seed {seed}: {name}"
        + (f" (tied with {', '.join(record.tied[seed])})" if record.tied.get(seed) else "")
        for seed, name in record.picks.items()
    )
    verdict = (
        f"The recommendation held under every seed tried ({picks})."
        if record.held
        else f"The recommendation changed with the training seed ({picks}): the pick rests on "
        "seed-to-seed noise, and the confidence above is lowered for it."
    )
    chosen = data.decision.recommended
    if data.pooled is not None and chosen not in record.picks.values():
        verdict += (
            f" Decided on every seed's runs together, the evidence picks {chosen} instead "
            "(the recommendation above): pooled over the seeds, a difference no single seed "
            "could resolve becomes clear, or one that a single seed called clear does not."
        )
    rows = []
    for change in record.changes:
        moved = change.difference
        rows.append(
            (
                change.run,
                f"{change.score * 100:.1f}",
                f"{change.other_score * 100:.1f} (seed {change.seed})",
                "—" if moved is None else _signed_interval(moved.difference, moved.low, moved.high),
                "—" if moved is None else ("yes" if moved.significant else "no"),
            )
        )
    headers = (
        "run",
        f"{data.metric_words} (seed {seeds[0]})",
        f"{data.metric_words} (other seed)",
        "Δ other − own [CI]",
        "significant",
    )
    gaps = [
        f"under seed {gap.seed}: {gap.first} − {gap.second} = "
        + (
            "not measured"
            if gap.difference is None
            else _signed_interval(
                gap.difference.difference, gap.difference.low, gap.difference.high
            )
            + (" (significant)" if gap.difference.significant else " (a tie)")
        )
        for gap in record.gaps
    ]
    failed = [
        f"seed {seed}: {name} failed ({why})"
        for seed, runs in record.failures.items()
        for name, why in runs.items()
    ]
    blocks: list[Block] = [
        Paragraph(
            f"The runs that train were rerun with {len(seeds) - 1} other seed"
            f"{'' if len(seeds) == 2 else 's'} (`adaptlab compare --repeat {len(seeds)}`; "
            "the runs that train nothing do not depend on it). " + verdict
        ),
        Table(headers, tuple(rows)),
        *(Notice(line) for line in failed),
    ]
    if gaps:
        blocks += [
            Paragraph(
                f"The picks compared on {data.metric_words} under each seed (paired bootstrap "
                "over the same eval items): where one seed finds a significant difference and "
                "another a tie, the pick moved on the quality difference between seeds, not on "
                "cost."
            ),
            Bullets(tuple(gaps)),
        ]
    return Section("stability", "Stability across training seeds", tuple(blocks))


def _signed_interval(value: float, low: float, high: float) -> str:
    return f"{value * 100:+.1f} [{low * 100:+.1f}, {high * 100:+.1f}]"


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
    blocks += _label_set_pairs(data)
    return Section("leaderboard", "Leaderboard", tuple(blocks))


LABEL_SET_PAIRS = {
    "micro_f1": "micro-F1",
    "example_f1": "example F1",
    "subset_accuracy": "subset accuracy",
}


def _label_set_pairs(data: ReportData) -> list[Block]:
    """Multi-label runs: each run minus the best in micro-F1 (per-record counts pooled), example
    F1 and subset accuracy (means over records), paired on the same records."""
    best = data.inputs.comparison.get("best")
    text = (
        f"Each run minus {best}, in points with the {_level(data)} paired-bootstrap interval "
        "over the same eval records (micro-F1 pools each resample's per-record counts; example "
        "F1, each record's own F1, and subset accuracy are means over records)."
    )
    return _paired_table(data, "label_sets_vs_best", LABEL_SET_PAIRS, text)


def _paired_table(
    data: ReportData, field: str, metrics: Mapping[str, str], text: str
) -> list[Block]:
    """``text`` and a table of each row's paired differences to the best run in ``metrics``
    (metric -> column title), read from the row's ``field``; nothing when no row has one."""
    rows = tuple(
        (
            str(row["strategy"]),
            *(_difference(Difference.from_dict(row[field].get(metric))) for metric in metrics),
        )
        for row in data.rows
        if row.get(field)
    )
    if not rows:
        return []
    return [Paragraph(text), Table(("strategy", *metrics.values()), rows)]


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
    intervals = projected.intervals()
    contended = {str(r["strategy"]): r.get("fit_contention") for r in data.rows}
    for name in data.inputs.runs:
        cost = projected.breakdown(name)
        costs = projected.costs.get(name)
        fit = _contention_cell(contended.get(name), data.decision_settings.contention_share)
        if cost is None or costs is None:
            rows.append((name, "—", "—", "—", "—", "—", fit))
            continue
        low, high = intervals[name]
        rows.append(
            (
                name,
                _money(cost.training),
                f"{_money(cost.retuning)} ({cost.retunes}×)",
                _money(costs.per_request * 1_000_000),
                _money(cost.serving),
                _money(cost.total) + ("" if low == high else f" [{_money(low)}, {_money(high)}]"),
                fit,
            )
        )
    headers = (
        "strategy",
        "training $",
        "re-tuning $",
        "serving $ per 1M requests",
        f"serving $ over {data.horizon}",
        "total $ [interval from latency]",
        "CPU used by others during the fit",
    )
    blocks: list[Block] = [
        Paragraph(f"Assumptions: {inputs_text}."),
        Table(headers, tuple(rows)),
        Paragraph(_noise_text(data)),
    ]
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


def _contention_cell(share: Any, threshold: float) -> str:
    """``3%``, or ``45% (contended: training cost overstated)`` at or past the threshold."""
    if share is None:
        return "—"
    flagged = float(share) >= threshold
    return f"{float(share):.0%}" + (" (contended: training cost overstated)" if flagged else "")


def _noise_text(data: ReportData) -> str:
    """How timing noise is kept out of the ranking: the interval, the pooled graphs, the
    margin."""
    groups = sorted(
        {tuple(r["latency_pooled_with"]) for r in data.rows if r.get("latency_pooled_with")}
    )
    pooled = (
        " Runs that serve the same inference graph are priced on their pooled timings: "
        + "; ".join(", ".join(group) for group in groups)
        + "."
        if groups
        else ""
    )
    margin = data.decision_settings.cost_tie_margin
    interleaved = any(r.get("latency_measured") == "interleaved" for r in data.rows)
    how = (
        "Latency is timed in interleaved rounds across the runs (warm-up discarded)"
        if interleaved
        else "Latency is timed for each run alone, after its evaluation (warm-up discarded)"
    )
    return (
        f"{how}; a total's interval carries the interval of the median latency. Two runs whose "
        f"intervals overlap or whose totals differ by less than {margin:.0%} count as equal in "
        "cost." + pooled
    )


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


# --------------------------------------------------------------------------- retrieval


RETRIEVER_WORDS = {
    "dense": "dense (sentence embeddings)",
    "sparse": "sparse (BM25)",
    "hybrid": "hybrid (reciprocal-rank fusion)",
}
"""How the retrieval table names the retrievers ``eval.json`` scores, in this order."""


def retrieval(data: ReportData) -> Section | None:
    """Answering from documents, where a run did: how well each retriever finds the gold
    documents at each depth k, every free-text run with and without retrieval side by side,
    the paired differences that say whether retrieval, fine-tuning or both answer best, and
    what retrieval's long prompt costs against a fine-tuned model's short one."""
    runs = data.inputs.runs.values()
    if not any(record.eval.retrieval or record.eval.grounding for record in runs):
        return None
    blocks = [
        *_recall_blocks(data),
        *_documents_against_closed_book(data),
        *_retrieval_pair_blocks(data),
        *_retrieval_cost_blocks(data),
    ]
    return Section("retrieval", "Retrieval: answering from documents", tuple(blocks))


def _retrieves(record: RunRecord) -> bool:
    return record.profile is not None and record.profile.retrieves


def _trains(record: RunRecord) -> bool:
    # A run without a recorded profile counts as tuned, as the decision rules read it.
    return record.profile is None or record.profile.role == "tuned"


def _closed_book(record: RunRecord) -> bool:
    return not _retrieves(record)


def _closed_book_tuned(record: RunRecord) -> bool:
    return _closed_book(record) and _trains(record)


def _best_run(data: ReportData, keep: Callable[[RunRecord], bool]) -> RunRecord | None:
    """The run ``keep`` accepts with the highest score the comparison ranks on."""
    scores = {str(row["strategy"]): float(row["score"]) for row in data.rows}
    kept = [r for r in data.inputs.runs.values() if r.name in scores and keep(r)]
    return max(kept, key=lambda record: scores[record.name], default=None)


def _recall_blocks(data: ReportData) -> list[Block]:
    """recall@k and MRR per retriever, from the best run that scored its retrieval."""
    source = _best_run(data, lambda r: bool((r.eval.retrieval or {}).get("by_retriever")))
    if source is None:
        text = (
            "Retrieval is not scored: no eval record names its gold documents, so recall@k and "
            "citation accuracy are not measured (groundedness is)."
        )
        return [Paragraph(text)]
    scored = source.eval.retrieval or {}
    by_retriever: dict[str, dict[str, Any]] = scored["by_retriever"]
    depths = sorted(
        {int(key.split("@")[1]) for one in by_retriever.values() for key in one if "@" in key}
    )
    order = [kind for kind in RETRIEVER_WORDS if kind in by_retriever]
    order += sorted(set(by_retriever) - set(order))
    rows = tuple(
        (
            RETRIEVER_WORDS.get(kind, kind),
            *(_percent(by_retriever[kind].get(f"recall@{k}")) for k in depths),
            _fixed(by_retriever[kind].get("mrr"), 3),
        )
        for kind in order
    )
    headers = ("retriever", *(f"recall@{k}" for k in depths), "MRR")
    text = (
        f"Every retriever on the same {_count(scored.get('queries_with_gold'))} eval questions "
        f"that name their gold document (of {_count(scored.get('queries'))}), over "
        f"{source.name}'s index of the collection. recall@k: the share of those questions with "
        "a chunk of a gold document among the top k retrieved; MRR: the mean of 1/rank of the "
        f"first such chunk (0 past rank {max(depths, default=0)}). Along a row, the effect of "
        "k: a run shown k chunks has a gold document in its prompt for at most recall@k of "
        f"the questions. The runs answered with: {_retrieval_settings(data)}."
    )
    blocks: list[Block] = [Table(headers, rows, id="retrieval-recall-table"), Paragraph(text)]
    differ = [
        record.name
        for record in data.inputs.runs.values()
        if (record.eval.retrieval or {}).get("by_retriever") not in (None, {}, by_retriever)
    ]
    if differ:
        blocks.append(
            Paragraph(
                f"{', '.join(differ)}: retrieval scored otherwise than {source.name}'s (another "
                "encoder or collection): see each run's eval.json."
            )
        )
    return blocks


def _retrieval_settings(data: ReportData) -> str:
    """Each retrieval run's retriever, k and that retriever's recall at that k."""
    described = []
    for record in data.inputs.runs.values():
        scored = record.eval.retrieval
        if not _retrieves(record) and scored is None:
            continue
        if scored is None:
            described.append(f"{record.name}: not recorded")
            continue
        used, k = scored.get("used"), scored.get("k")
        recall = ((scored.get("by_retriever") or {}).get(used) or {}).get(f"recall@{k}")
        found = "" if recall is None else f" (recall@{k} {_percent(recall)})"
        described.append(f"{record.name}: {RETRIEVER_WORDS.get(str(used), used)}, top {k}{found}")
    return "; ".join(described) or "none recorded"


def _documents_against_closed_book(data: ReportData) -> list[Block]:
    """Every free-text run, retrieval and closed book, on the comparison's own columns."""
    metric, level = data.inputs.metric, _level(data)
    headers = (
        "strategy",
        "answers from",
        "trains",
        f"{data.metric_words} ({level} CI)",
        "token F1",
        f"groundedness ({level} CI)",
        "citation accuracy",
        "prompt tokens/request",
        "p50 ms (batch 1)",
    )
    rows = []
    for row in data.rows:
        record = data.inputs.runs.get(str(row["strategy"]))
        rows.append(
            (
                str(row["strategy"]),
                "—" if record is None else ("documents" if _retrieves(record) else "closed book"),
                "—" if record is None else ("yes" if _trains(record) else "no"),
                _points_with_interval(row.get("score"), row.get(f"{metric}_ci")),
                _fixed(_times_100(row.get("token_f1")), 1),
                _points_with_interval(row.get("groundedness"), row.get("groundedness_ci")),
                _fixed(_times_100(row.get("citation_accuracy")), 1),
                _number_or_dash(row.get("prompt_tokens_per_request"), "{:,.0f}"),
                _number_or_dash(row.get("latency_batch1_p50_ms"), "{:,.1f}"),
            )
        )
    text = (
        "Answering from documents against closed book, × 100. Token F1: SQuAD's overlap of "
        "answer and reference words. Groundedness: the share of an answer's words found in the "
        "passages it was shown (lexical: it says the model used its context, not that it was "
        "right). Citation accuracy: the share of answers citing a passage of a gold document "
        "(citing none counts as wrong). Prompt tokens per request include the passages. — "
        "where not measured (a closed-book run is shown no passages)."
    )
    return [
        Paragraph("Every run, with and without retrieval:"),
        Table(headers, tuple(rows), id="retrieval-runs-table"),
        Paragraph(text),
    ]


def _retrieval_pairs(data: ReportData) -> list[tuple[str, RunRecord, RunRecord]]:
    """(what is compared, a, b) for the pairs that exist of: the best retrieval run against
    the best closed-book run and the best closed-book fine-tuned one, each run that retrieves
    and trains against the best that retrieves without training, and each retrieval run
    against the closed-book base; a pair named twice is shown once, with both names."""
    runs = list(data.inputs.runs.values())
    best = _best_run(data, _retrieves)
    alone = _best_run(data, lambda r: _retrieves(r) and not _trains(r))
    base = _best_run(
        data, lambda r: _closed_book(r) and r.profile is not None and r.profile.role == "base"
    )
    base = base or _best_run(data, lambda r: _closed_book(r) and not _trains(r))
    wanted = [
        ("best retrieval against best closed book", best, _best_run(data, _closed_book)),
        (
            "best retrieval against best closed-book fine-tuning",
            best,
            _best_run(data, _closed_book_tuned),
        ),
        *(
            ("retrieval with fine-tuning against retrieval alone", r, alone)
            for r in runs
            if _retrieves(r) and _trains(r)
        ),
        *(("retrieval against the closed-book base", r, base) for r in runs if _retrieves(r)),
    ]
    named: dict[tuple[str, str], tuple[list[str], RunRecord, RunRecord]] = {}
    for what, a, b in wanted:
        if a is None or b is None or a.name == b.name:
            continue
        labels, _, _ = named.setdefault((a.name, b.name), ([], a, b))
        labels.append(what)
    return [("; ".join(labels), a, b) for labels, a, b in named.values()]


def _retrieval_pair_blocks(data: ReportData) -> list[Block]:
    pairs = _retrieval_pairs(data)
    if not pairs:
        return []
    metric, level, settings = data.inputs.metric, _level(data), data.inputs.settings
    metrics = [metric] if metric == "token_f1" else [metric, "token_f1"]
    words = [data.metric_words, "token F1"][: len(metrics)]
    headers = ("comparison", "a − b", *(f"Δ {w} ({level} CI)" for w in words), "items")
    rows = []
    for what, a, b in pairs:
        found = [paired_difference(a, b, settings, m) for m in metrics]
        items = max((d.n for d in found if d is not None), default=None)
        rows.append((what, f"{a.name} − {b.name}", *(_difference(d) for d in found), _count(items)))
    text = (
        "Paired bootstrap on the eval items both runs answered: Δ is the first run's score "
        f"minus the second's, in points, with its {level} CI; * marks one whose CI excludes 0 "
        "(significant); — where a run's per-item scores are missing."
    )
    return [
        Paragraph("Retrieval, fine-tuning or both:"),
        Table(headers, tuple(rows), id="retrieval-pairs-table"),
        Paragraph(text),
    ]


def _retrieval_cost_blocks(data: ReportData) -> list[Block]:
    """What retrieval's long prompt costs on every request against a closed-book fine-tuned
    model's training and short prompt: each retrieval run's break-even traffic against the
    best closed-book fine-tuned run, the best retrieval run first."""
    tuned = _best_run(data, _closed_book_tuned)
    retrieving = [r for r in data.inputs.runs.values() if _retrieves(r)]
    best = _best_run(data, _retrieves)
    if best is None:
        return []
    if tuned is None:
        text = "No closed-book fine-tuned run to weigh retrieval's cost per request against."
        return [Paragraph(text)]
    rows = {str(row["strategy"]): row for row in data.rows}
    text = (
        f"The cost of retrieval: the passages go into every prompt ({best.name} sends "
        f"{_tokens(rows[best.name])} prompt tokens a request against {tuned.name}'s "
        f"{_tokens(rows[tuned.name])}), while fine-tuning pays for training and re-tuning up "
        f"front. Each run's projected cost over {data.horizon} at "
        f"{data.deployment.settings.requests_per_day:,.0f} requests a day, and its break-even "
        f"against {tuned.name}: the traffic after which the one dearer up front but cheaper "
        "per request costs less in total."
    )
    ordered = [best, *(r for r in retrieving if r.name != best.name)]
    lines = [_cost_line(data, tuned.name, rows, None)]
    lines += [_cost_line(data, r.name, rows, tuned.name) for r in ordered]
    blocks: list[Block] = [Paragraph(text), Bullets(tuple(lines))]
    build = rows[best.name].get("prompt_build_p50_ms")
    if build is not None:
        blocks.append(
            Paragraph(
                f"Retrieving the passages takes {float(build):,.1f} ms a request ({best.name}, "
                "median, batch 1), timed apart from generation: serving is priced on the "
                "generation latency, with the passages in the prompt, and leaves it out."
            )
        )
    return blocks


def _cost_line(
    data: ReportData, name: str, rows: Mapping[str, Mapping[str, Any]], against: str | None
) -> str:
    """One run's prompt, serving, training and total cost, and its break-even ``against``."""
    projected = data.deployment
    costs, cost = projected.costs.get(name), projected.breakdown(name)
    if costs is None or cost is None:
        return f"{name}: cost unknown ({projected.unknown.get(name, 'not projected')})."
    line = (
        f"{name}: {_tokens(rows[name])} prompt tokens a request, serving "
        f"${_money(costs.per_request * 1_000_000)} per 1M requests, training "
        f"${_money(costs.training)}, total ${_money(cost.total)}."
    )
    evens = [e for e in projected.break_evens(name) if e.b == against]
    return f"{line} {evens[0].describe()}" if evens else line


def _tokens(row: Mapping[str, Any]) -> str:
    return _number_or_dash(row.get("prompt_tokens_per_request"), "{:,.0f}")


def _difference(difference: Difference | None) -> str:
    """A paired difference in points (× 100) with its CI, * when significant."""
    if difference is None:
        return "—"
    return (
        f"{difference.difference * 100:+.1f} [{difference.low * 100:+.1f}, "
        f"{difference.high * 100:+.1f}]{'*' if difference.significant else ''}"
    )


def _times_100(value: Any) -> float | None:
    return None if value is None else float(value) * 100


def _points_with_interval(value: Any, interval: Any) -> str:
    if value is None:
        return "—"
    if not interval:
        return f"{float(value) * 100:.1f}"
    low, high = interval
    return f"{float(value) * 100:.1f} [{float(low) * 100:.1f}, {float(high) * 100:.1f}]"


def _number_or_dash(value: Any, pattern: str) -> str:
    return "—" if value is None else pattern.format(float(value))


# --------------------------------------------------------------------------- per class / slot


PLURAL = {"class": "classes", "slot": "slots"}


def out_of_scope(data: ReportData) -> Section | None:
    """Classifiers that reject out-of-scope queries: each run's trade-off curve, the threshold
    its rule chose on the validation split, and what it does on the eval set, with intervals."""
    sections = {
        name: record.eval.out_of_scope
        for name, record in data.inputs.runs.items()
        if record.eval.out_of_scope
    }
    if not sections:
        return None
    curves = {name: section.get("curve") or [] for name, section in sections.items()}
    chosen = {
        name: (float(record.eval.metrics["in_scope_rejected"]),
               float(record.eval.metrics["out_of_scope_recall"]))
        for name, record in data.inputs.runs.items()
        if name in sections and record.eval.metrics.get("out_of_scope_recall") is not None
    }  # fmt: skip
    any_section = next(iter(sections.values()))
    rule = (
        f"rejects {any_section['target'] * 100:g}% of the in-scope validation queries"
        if any_section["rule"] == "in_scope_rejection"
        else "gives the best accuracy over in-scope and out-of-scope validation queries"
    )
    text = (
        f"A query is rejected as '{any_section['label']}' when its score, the largest in-scope "
        "probability (max-softmax), falls under the run's threshold, or when a model trained "
        "on out-of-scope examples gives their class the most probability. Each run's threshold "
        f"was chosen on a validation split of train ({any_section['validation_n']:,} queries, "
        f"{any_section['validation_out_of_scope']:,} of them out of scope), never on the eval "
        f"set: the one that {rule}. AUROC needs no threshold: the chance that an in-scope "
        "query scores above an out-of-scope one. Runs are ranked on "
        f"{data.metric_words}."
    )
    rows = tuple(
        (
            name,
            _fixed(section.get("threshold"), 3),
            _percent(section.get("validation_in_scope_rejected")),
            *(_open_set_cell(data.inputs.runs[name], metric) for metric in OPEN_SET_SHOWN),
        )
        for name, section in sections.items()
    )
    headers = ("strategy", "threshold", "in-scope rejected (validation)", *OPEN_SET_SHOWN.values())
    blocks: list[Block] = [
        Image(rejection_plot(curves, chosen, colours=data.colours)),
        Paragraph(text),
        Table(headers, rows),
        *_open_set_pairs(data),
    ]
    return Section("out-of-scope", "Out-of-scope queries", tuple(blocks))


OPEN_SET_PAIRS = {
    "overall_accuracy": "accuracy over all queries",
    "in_scope_accuracy": "in-scope accuracy",
    "out_of_scope_recall": "out-of-scope recall",
    "out_of_scope_precision": "out-of-scope precision",
    "auroc": "AUROC (× 100)",
}


def _open_set_pairs(data: ReportData) -> list[Block]:
    """Each run minus the best one in every open-set metric, paired on the same queries."""
    best = data.inputs.comparison.get("best")
    text = (
        f"Each run minus {best} (the best on {data.metric_words}), in points with the "
        f"{_level(data)} paired-bootstrap interval over the same eval queries; * marks one "
        "that excludes zero."
    )
    return _paired_table(data, "open_set_vs_best", OPEN_SET_PAIRS, text)


OPEN_SET_SHOWN = {
    "in_scope_rejected": "in-scope rejected (eval)",
    "in_scope_accuracy": "in-scope accuracy",
    "out_of_scope_recall": "out-of-scope recall",
    "out_of_scope_precision": "out-of-scope precision",
    "auroc": "AUROC",
    "overall_accuracy": "accuracy over all queries",
}
"""The open-set figures of the out-of-scope table, by metric name."""


def _open_set_cell(record: RunRecord, metric: str) -> str:
    """A metric of the run's eval.json with its interval where one was recorded."""
    value = record.eval.metrics.get(metric)
    section = record.eval.out_of_scope or {}
    intervals = section.get("intervals", {})
    interval = section.get("auroc_ci") if metric == "auroc" else intervals.get(metric)
    if value is None:
        return "—"
    if metric == "auroc":
        shown = f"{value:.3f}"
        return shown if not interval else f"{shown} [{interval[0]:.3f}, {interval[1]:.3f}]"
    return _points_with_interval(value, interval)


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
    """Class -> F1 (``metrics.per_class_f1``; a multi-label run's ``metrics.per_label_f1``, each
    label's F1 at its tuned threshold) or slot -> F1 (``metrics.per_slot.<slot>.f1``)."""
    metrics = evaluation.get("metrics") or {}
    if generative:
        per_slot = metrics.get("per_slot") or {}
        return {slot: float(c["f1"]) for slot, c in per_slot.items() if c.get("f1") is not None}
    key = "per_label_f1" if evaluation.get("multi_label") else "per_class_f1"
    return {label: float(f1) for label, f1 in (metrics.get(key) or {}).items()}


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
    if data.inputs.comparison.get("metric") == "micro_f1":
        return _label_set_calibration(data, title)
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


def _label_set_calibration(data: ReportData, title: str) -> Section:
    """Multi-label runs: each label's probability is a yes/no forecast of its own; its expected
    calibration error is measured per label and averaged (the worst label named)."""
    rows = []
    for name, record in data.inputs.runs.items():
        per_label = record.eval.metrics.get("per_label_ece") or {}
        worst = max(per_label, key=per_label.__getitem__) if per_label else None
        rows.append(
            (
                name,
                _fixed(record.eval.metrics.get("ece"), 3),
                "—" if worst is None else f"{worst} ({per_label[worst]:.3f})",
            )
        )
    text = (
        "Each label's probability is a forecast of whether the record carries it: its expected "
        "calibration error (10 equal-width bins) is measured per label, and the mean over the "
        "labels is the run's ECE."
    )
    table = Table(("strategy", "ECE (mean per label)", "worst label"), tuple(rows))
    return Section("calibration", title, (Paragraph(text), table))


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
