"""The comparison of finished runs: leaderboard rows, paired differences, leaderboard columns.

Built from run folders alone (:func:`adaptlab.runs.read_run`), below both ``compare`` (which
writes ``comparison.json`` after running the strategies) and the report (which rebuilds it when
it is stale and pairs every two runs for the decision rules). The paired bootstrap of two runs
on the eval items both scored lives here once (:func:`paired_difference`): accuracy from
per-item correctness, slot F1 from per-item slot counts (pooled).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, get_args

import numpy as np

from adaptlab.config import CompareConfig, GenerationMetric, OutOfScopeMetric
from adaptlab.data.lock import require_same_eval
from adaptlab.evaluate.bootstrap import (
    paired_bootstrap,
    paired_bootstrap_corpus,
    paired_bootstrap_micro_f1,
)
from adaptlab.evaluate.free_text import CORPUS_STATS_METRICS, corpus_score_01, metric_interval
from adaptlab.evaluate.latency import Latency, summarise_rounds
from adaptlab.evaluate.open_set import auroc_or_half, precision_of_rejections
from adaptlab.ratings import DATABASE, RatingError, human_ratings_summary
from adaptlab.runs import PRIMARY_METRIC, RunError, RunRecord, RunTiming, Timing, read_run


@dataclass(frozen=True)
class Difference:
    """Quality of one run minus another's on the same eval items, with its CI."""

    difference: float
    low: float
    high: float
    n: int = field(default=0, compare=False)
    """Eval items both runs scored (0: not recorded); not part of equality."""

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0

    def flipped(self) -> Difference:
        """The other run minus this one."""
        return Difference(-self.difference, -self.high, -self.low, self.n)

    def to_dict(self) -> dict[str, Any]:
        return {
            "difference": self.difference,
            "low": self.low,
            "high": self.high,
            "significant": self.significant,
            "n": self.n,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> Difference | None:
        if raw is None:
            return None
        return cls(
            float(raw["difference"]), float(raw["low"]), float(raw["high"]), int(raw.get("n", 0))
        )


def per_item(record: RunRecord, metric: str | None = None) -> np.ndarray | None:
    """The run's per-item scores on its eval items (``record.indices``) in ``metric`` (by
    default its primary one): correctness of a classifier, slot counts of a slot extractor, a
    free-text run's per-example scores or, for BLEU and chrF++, the per-example statistics
    their corpus scores pool; ``None`` when its predictions lack them or cannot be read."""
    try:
        arrays = record.predictions
    except RunError:
        return None
    if record.kind == "generative":
        counts: np.ndarray | None = arrays.get("counts")
        return counts
    if record.kind == "generation":
        metric = metric or record.eval.primary_metric
        name = f"{metric}_stats" if metric in CORPUS_STATS_METRICS else metric
        found: np.ndarray | None = arrays.get(name)
        return found
    if metric == "micro_f1" or (metric is None and record.eval.multi_label):
        label_counts: np.ndarray | None = arrays.get("counts")  # multi-label: (tp, fp, fn)
        return label_counts
    if metric not in (None, "accuracy"):  # an open-set metric, kept per query (NaN: n/a)
        open_set: np.ndarray | None = arrays.get(metric)
        return open_set
    probabilities, gold = arrays.get("probabilities"), arrays.get("gold")
    if probabilities is None or gold is None:
        return None
    inside = gold != -1  # closed-set accuracy: out-of-scope queries (gold -1) left out
    correct: np.ndarray = np.where(inside, probabilities.argmax(axis=1) == gold, np.nan)
    return correct


TEXT_METRICS: tuple[str, ...] = get_args(GenerationMetric)
"""The free-text metrics a difference is reported for (each on 0-1): those a run may be
ranked on."""


def paired_difference(
    a: RunRecord, b: RunRecord, settings: CompareConfig, metric: str | None = None
) -> Difference | None:
    """``a - b`` in ``metric`` (by default the primary one) on the eval items both scored
    (paired bootstrap); ``None`` when they share no item or either lacks per-item scores."""
    scores_a, scores_b = per_item(a, metric), per_item(b, metric)
    if scores_a is None or scores_b is None:
        return None
    shared, in_a, in_b = np.intersect1d(a.indices, b.indices, return_indices=True)
    if len(shared) == 0:
        return None
    options: dict[str, Any] = {
        "names": (a.name, b.name),
        "resamples": settings.bootstrap_resamples,
        "confidence": settings.confidence,
    }
    pair = scores_a[in_a], scores_b[in_b]
    if a.kind == "classification" and (metric or a.eval.primary_metric) == "micro_f1":
        result = paired_bootstrap_micro_f1(*pair, metric="micro_f1", **options)
        return Difference(result.difference, result.low, result.high, len(shared))
    if a.kind == "classification":  # a metric over some queries only: the others are NaN
        applies = ~(np.isnan(pair[0]) | np.isnan(pair[1]))
        pair = pair[0][applies], pair[1][applies]
        if not len(pair[0]):
            return None
    if a.kind == "generative":
        result = paired_bootstrap_micro_f1(*pair, metric="slot_f1", **options)
    elif a.kind == "generation":
        metric = metric or a.eval.primary_metric
        if metric in CORPUS_STATS_METRICS:
            score_of = corpus_score_01(metric)
            result = paired_bootstrap_corpus(*pair, score_of, metric=metric, **options)
        else:
            result = paired_bootstrap(*pair, metric=metric, **options)
    else:
        result = paired_bootstrap(*pair, metric=metric or "accuracy", **options)
    return Difference(result.difference, result.low, result.high, len(pair[0]))


LABEL_SET_PAIRED = ("micro_f1", "example_f1", "subset_accuracy")
"""Multi-label metrics paired against the best run: micro-F1 on per-record counts, example F1
and subset accuracy as means over records."""

OPEN_SET_PAIRED = ("overall_accuracy", "in_scope_accuracy", "out_of_scope_recall")
"""Open-set metrics that are means of per-query scores (paired like accuracy)."""


def open_set_differences(
    a: RunRecord, b: RunRecord, settings: CompareConfig
) -> dict[str, Difference]:
    """``a - b`` in every open-set metric on the queries both scored (paired bootstrap):
    the per-query ones as accuracy is; out-of-scope precision and AUROC, which are not means
    over queries, by resampling queries and recomputing both runs' values on each resample."""
    found = {
        metric: difference
        for metric in OPEN_SET_PAIRED
        if (difference := paired_difference(a, b, settings, metric)) is not None
    }
    try:
        arrays_a, arrays_b = a.predictions, b.predictions
    except RunError:
        return found
    shared, in_a, in_b = np.intersect1d(a.indices, b.indices, return_indices=True)
    if not len(shared) or "rejected" not in arrays_a or "rejected" not in arrays_b:
        return found
    inside = arrays_a["gold"][in_a] != -1
    n = len(shared)
    # paired_bootstrap applies one statistic to each system's resampled scores: give it query
    # positions (a's 0..n-1, b's n..2n-1) and let the statistic look both runs' values up.
    positions = np.arange(n, dtype=np.float64)
    both_inside = np.concatenate([inside, inside])
    for metric, values, statistic in (
        ("out_of_scope_precision", "rejected", precision_of_rejections),
        ("auroc", "score", auroc_or_half),
    ):
        joined = np.concatenate([arrays_a[values][in_a], arrays_b[values][in_b]])

        def at(rows: np.ndarray, joined: np.ndarray = joined, statistic: Any = statistic) -> float:
            index = rows.astype(np.int64)
            return float(statistic(joined[index], both_inside[index]))

        result = paired_bootstrap(
            positions,
            positions + n,
            metric=metric,
            names=(a.name, b.name),
            resamples=settings.bootstrap_resamples,
            confidence=settings.confidence,
            statistic=at,
        )
        found[metric] = Difference(result.difference, result.low, result.high, n)
    return found


def pairwise_differences(
    records: Sequence[RunRecord], settings: CompareConfig
) -> dict[tuple[str, str], Difference]:
    """``(a, b) -> a - b`` for every two runs that share eval items (each pair once)."""
    pairs = {}
    for a, b in combinations(records, 2):
        metric = ranking_metric(a.kind, settings, (a, b))
        difference = paired_difference(a, b, settings, metric)
        if difference is not None:
            pairs[(a.name, b.name)] = difference
    return pairs


def read_runs(folders: Sequence[Path]) -> tuple[list[RunRecord], list[str]]:
    """The finished runs in ``folders``, and a message for each one that cannot be read."""
    records, problems = [], []
    for folder in folders:
        try:
            records.append(read_run(folder))
        except RunError as exc:
            problems.append(str(exc))
    return records, problems


METRIC_WORDS = {
    "accuracy": "accuracy",
    "slot_f1": "slot F1 (micro)",
    "rougeL": "ROUGE-L F1",
    "rouge1": "ROUGE-1 F1",
    "rouge2": "ROUGE-2 F1",
    "bleu": "BLEU",
    "chrf": "chrF++",
    "embedding_similarity": "embedding similarity",
    "exact_match": "exact match",
    "token_f1": "token F1",
    "overall_accuracy": "accuracy over all queries",
    "in_scope_accuracy": "in-scope accuracy",
    "out_of_scope_recall": "out-of-scope recall",
    "micro_f1": "micro-F1",
}


def score(record: RunRecord) -> float:
    """The run's primary metric (accuracy, micro slot F1, or its free-text metric) on its
    eval items."""
    return record.eval.score


def build_comparison(
    folders: Sequence[Path], settings: CompareConfig, timing: Timing | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Leaderboard data from run directories; unreadable runs are named and left out.

    ``timing``: the experiment's ``latency.json`` (:func:`adaptlab.runs.read_timing`); the
    classification runs it timed together get their latency from it (:func:`serving_latency`),
    the others keep the one measured alone at evaluation."""
    results, problems = read_runs(folders)
    if not results:
        why = "; ".join(problems) or f"none of {len(folders)} run folders finished"
        raise RunError(f"no finished runs to compare: {why}")
    require_same_eval({r.name: r.manifest.eval_sha256 for r in results})
    kinds = {r.kind for r in results}
    if len(kinds) > 1:
        named = ", ".join(f"{r.name} ({r.kind})" for r in results)
        raise RunError(f"runs of different task kinds cannot be compared: {named}")
    kind = kinds.pop()
    metric = ranking_metric(kind, settings, results)
    scored = {r.name: metric_score(r, metric, settings) for r in results}
    best = max(results, key=lambda r: (not r.eval.sampled, scored[r.name][0]))
    rows = [_row(result, best, settings, metric, scored[result.name]) for result in results]
    served = serving_latency(results, timing, settings)
    for row in rows:
        row.update(served[row["strategy"]])
    rows.sort(key=lambda row: -row["score"])
    comparison = {
        "task": kind,
        "metric": metric,
        "best": best.name,
        "eval_sha256": best.manifest.eval_sha256,
        "confidence": settings.confidence,
        "rows": rows,
        "problems": problems,
    }
    return comparison, problems


def serving_latency(
    records: Sequence[RunRecord], timing: Timing | None, settings: CompareConfig
) -> dict[str, dict[str, Any]]:
    """Run name -> its leaderboard row's latency fields.

    A classification run that ``timing`` timed (as it is now: the same manifest ``created_at``)
    gets ``latency_measured: "interleaved"`` and its batch-1 median, p95 and batch-32 time per
    example from those rounds, with the medians' intervals (``latency_batch1_p50_ci``,
    ``latency_batch32_per_example_ci``, ms). Runs that share an inference graph
    (``serving_graph``) compute the same thing per request and differ only in the noise of
    their timings, so they all get the figures of their pooled rounds and are named together
    in ``latency_pooled_with``: none is ranked cheaper to serve on noise. Every other run keeps
    what it measured alone at evaluation (``latency_measured: "alone"``), with the intervals
    ``eval.json`` holds (``None`` in folders written before they were recorded)."""
    timed = _timed_now(records, timing)
    together: dict[str, list[str]] = {}
    for name, run in sorted(timed.items()):
        if run.graph is not None:
            together.setdefault(run.graph, []).append(name)
    summaries: dict[tuple[str, ...], dict[str, Any]] = {}  # one bootstrap per pooled group
    fields = {}
    for record in records:
        if record.name in timed:
            run = timed[record.name]
            group = together.get(run.graph, []) if run.graph is not None else []
            pooled = group if len(group) > 1 else [record.name]
            key = (*pooled, *sorted(map(str, run.rounds_ms)))
            if key not in summaries:
                summaries[key] = _interleaved_latency(run, [timed[n] for n in pooled], settings)
            fields[record.name] = {
                **_alone_latency(record),
                **summaries[key],
                "latency_measured": "interleaved",
                "serving_graph": run.graph,
                "latency_pooled_with": pooled if len(pooled) > 1 else None,
            }
        else:
            fields[record.name] = _alone_latency(record)
    return fields


def _timed_now(records: Sequence[RunRecord], timing: Timing | None) -> dict[str, RunTiming]:
    """The classification runs ``timing`` holds, each timed as it is now (a run redone since
    was not the one timed)."""
    if timing is None:
        return {}
    return {
        record.name: timing.runs[record.name]
        for record in records
        if record.kind == "classification"
        and record.name in timing.runs
        and timing.runs[record.name].manifest_created_at == record.manifest.created_at
    }


def _interleaved_latency(
    own: RunTiming, runs: Sequence[RunTiming], settings: CompareConfig
) -> dict[str, Any]:
    """Batch-1 and batch-32 figures from the rounds of ``runs`` (``own`` among them) pooled;
    a batch size the row's own run was not timed at is left to its eval-time figures."""
    fields: dict[str, Any] = {}
    one = _pooled(runs, 1, settings) if 1 in own.rounds_ms else None
    many = _pooled(runs, 32, settings) if 32 in own.rounds_ms else None
    if one is not None:
        fields["latency_batch1_p50_ms"] = one.p50_ms
        fields["latency_batch1_p95_ms"] = one.p95_ms
        fields["latency_batch1_p50_ci"] = list(one.p50_ci)
    if many is not None:
        fields["latency_batch32_per_example_ms"] = many.per_example_ms
        fields["latency_batch32_per_example_ci"] = list(many.per_example_ci)
    return fields


def _pooled(runs: Sequence[RunTiming], batch_size: int, settings: CompareConfig) -> Latency:
    """The summary of the runs' rounds at ``batch_size``, round r of every run in one cluster:
    interleaved, they were timed in the same minutes, under the same load, so they rise and
    fall together and are not independent draws."""
    series = [run.rounds_ms[batch_size] for run in runs if batch_size in run.rounds_ms]
    clusters = [
        [ms / 1000.0 for rounds in series if index < len(rounds) for ms in rounds[index]]
        for index in range(max(len(rounds) for rounds in series))
    ]
    return summarise_rounds(
        clusters, batch_size, resamples=settings.bootstrap_resamples, confidence=settings.confidence
    )


def _alone_latency(record: RunRecord) -> dict[str, Any]:
    """The intervals of the latency a run measured alone (``eval.json``), and what it was."""
    if record.kind == "classification":
        latency = record.eval.latency
        intervals = {
            "latency_batch1_p50_ci": _interval(latency.get("batch_1", {}).get("p50_ci")),
            "latency_batch32_per_example_ci": _interval(
                latency.get("batch_32", {}).get("per_example_ci")
            ),
        }
    else:  # a generator's, per request
        served = record.eval.raw.get("cost", {}).get("latency", {})
        intervals = {"latency_batch1_p50_ci": _interval(served.get("p50_ci"))}
    return {
        **intervals,
        "latency_measured": "alone",
        "serving_graph": None,
        "latency_pooled_with": None,
    }


def _interval(value: Any) -> list[float] | None:
    """``[low, high]`` when ``value`` is two numbers, else ``None`` (not recorded)."""
    if isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value):
        return [float(value[0]), float(value[1])]
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def human_ratings(experiment_folder: Path, settings: CompareConfig) -> dict[str, Any] | None:
    """The blind preference ratings of ``adaptlab rate`` in ``experiment_folder`` (win rates with
    bootstrap intervals, Cohen's κ between raters; :func:`adaptlab.ratings.human_ratings_summary`),
    ``None`` when nobody has rated; a database that cannot be read is a ``problem``, never a
    failed comparison."""
    try:
        return human_ratings_summary(
            experiment_folder,
            resamples=settings.bootstrap_resamples,
            confidence=settings.confidence,
        )
    except (RatingError, OSError, sqlite3.Error) as exc:
        return {"database": DATABASE, "problem": f"{experiment_folder / DATABASE}: {exc}"}


def ranking_metric(kind: str, settings: CompareConfig, records: Sequence[RunRecord] = ()) -> str:
    """What runs of ``kind`` are ranked on: accuracy, slot F1, the configured free-text
    metric (``compare.generation_metric``), or for classifiers that reject out-of-scope
    queries the configured open-set one (``compare.out_of_scope.rank_on``)."""
    if kind == "generation":
        return settings.generation_metric
    if kind == "classification" and records and all(r.eval.multi_label for r in records):
        return "micro_f1"
    if kind == "classification" and records and all(r.eval.out_of_scope for r in records):
        return settings.out_of_scope.rank_on
    return PRIMARY_METRIC[kind]


def metric_score(
    record: RunRecord, metric: str, settings: CompareConfig
) -> tuple[float, tuple[float, float]]:
    """The run's value of ``metric`` and its bootstrap interval: the primary metric's as
    ``eval.json`` recorded it; for a free-text run ranked on another metric (the config's
    ``compare.generation_metric`` changed after it ran), the corpus value from ``eval.json``
    and an interval from its per-example scores, so no run has to be redone for it."""
    if metric == record.eval.primary_metric:
        return record.eval.score, record.eval.interval
    if record.eval.out_of_scope is not None:  # rank_on changed after it ran: eval.json has it
        interval = record.eval.out_of_scope.get("intervals", {}).get(metric)
        value = record.eval.metrics.get(metric)
        if value is None or interval is None:
            raise RunError(f"{record.folder}: no '{metric}' with an interval to rank it on")
        return float(value), (float(interval[0]), float(interval[1]))
    value = record.eval.metrics.get(metric)
    values = per_item(record, metric)
    if record.kind != "generation" or value is None or values is None:
        raise RunError(f"{record.folder}: no per-example '{metric}' to rank it on")
    interval = metric_interval(
        metric, values, resamples=settings.bootstrap_resamples, confidence=settings.confidence
    )
    return float(value), interval


def _row(
    result: RunRecord,
    best: RunRecord,
    settings: CompareConfig,
    metric: str,
    scored: tuple[float, tuple[float, float]],
) -> dict[str, Any]:
    if result.kind == "generative":
        measured = {**_generative_fields(result), **_retention_fields(result)}
    elif result.kind == "generation":
        measured = {
            **_text_fields(result, best, settings, metric, scored[1]),
            **_generation_cost_fields(result),
            **_retention_fields(result),
        }
    else:
        measured = _accuracy_fields(result)
    return {
        "strategy": result.name,
        "registered_strategy": result.strategy,
        "task": result.kind,
        "n": result.eval.n,
        "sampled": result.eval.sampled,
        "score": scored[0],
        **measured,
        "vs_best": (
            (measured["vs_best_all"] or {}).get(metric)
            if result.kind == "generation"
            else _difference_to(result, best, settings, metric)
        ),
        **(
            {
                "open_set_vs_best": {
                    metric: difference.to_dict()
                    for metric, difference in open_set_differences(result, best, settings).items()
                }
            }
            if result.eval.out_of_scope is not None and result.name != best.name
            else {}
        ),
        **(
            {
                "label_sets_vs_best": {
                    metric: difference.to_dict()
                    for metric in LABEL_SET_PAIRED
                    if (difference := paired_difference(result, best, settings, metric))
                }
            }
            if result.eval.multi_label is not None and result.name != best.name
            else {}
        ),
        "size_on_disk_bytes": result.cost.size_on_disk_bytes,
        "trainable_params": result.cost.trainable_params,
        "total_params": result.cost.total_params,
        "fit_wall_s": result.cost.fit_wall_s,
        # share of the machine other processes used during the fit (cost/contention.py)
        "fit_contention": result.cost.raw.get("fit_contention"),
        "peak_memory_bytes": result.cost.peak_rss_bytes,
    }


OPEN_SET_METRICS = (
    "overall_accuracy",
    "in_scope_accuracy",
    "out_of_scope_recall",
    "out_of_scope_precision",
    "out_of_scope_f1",
    "auroc",
    "in_scope_rejected",
)


def _multi_label_fields(result: RunRecord) -> dict[str, Any]:
    metrics = result.eval.metrics
    latency = result.eval.latency
    section = result.eval.multi_label or {}
    return {
        "primary_metric": "micro_f1",
        "micro_f1": metrics["micro_f1"],
        "micro_f1_ci": list(result.eval.interval),
        "macro_f1": metrics["macro_f1"],
        "macro_f1_ci": section.get("macro_f1_ci"),
        "subset_accuracy": metrics["subset_accuracy"],
        "example_f1": metrics["example_f1"],
        "ece": metrics["ece"],
        "latency_batch1_p50_ms": latency.get("batch_1", {}).get("p50_ms"),
        "latency_batch1_p95_ms": latency.get("batch_1", {}).get("p95_ms"),
        "latency_batch32_per_example_ms": latency.get("batch_32", {}).get("per_example_ms"),
    }


def _accuracy_fields(result: RunRecord) -> dict[str, Any]:
    if result.eval.multi_label is not None:
        return _multi_label_fields(result)
    metrics = result.eval.metrics
    latency = result.eval.latency
    open_set = result.eval.out_of_scope
    rejection = (
        {}
        if open_set is None
        else {
            "out_of_scope": {
                key: open_set.get(key)
                for key in ("label", "threshold", "rule", "target", "score", "auroc_ci")
            },
            "primary_metric": result.eval.primary_metric,
            **{name: metrics.get(name) for name in OPEN_SET_METRICS},
            f"{result.eval.primary_metric}_ci": list(result.eval.interval),
        }
    )
    return {
        **rejection,
        "accuracy": metrics["accuracy"],
        "accuracy_ci": list(result.eval.interval),
        "macro_f1": metrics["macro_f1"],
        "ece": metrics["ece"],
        "confident_wrong_rate": metrics["confident_wrong_rate"],
        "latency_batch1_p50_ms": latency.get("batch_1", {}).get("p50_ms"),
        "latency_batch1_p95_ms": latency.get("batch_1", {}).get("p95_ms"),
        "latency_batch32_per_example_ms": latency.get("batch_32", {}).get("per_example_ms"),
    }


def _generative_fields(result: RunRecord) -> dict[str, Any]:
    metrics = result.eval.metrics
    return {
        "slot_f1": metrics["slot_f1"],
        "slot_f1_ci": list(result.eval.interval),
        "slot_precision": metrics["slot_precision"],
        "slot_recall": metrics["slot_recall"],
        "json_valid_rate": metrics["json_valid_rate"],
        "exact_match": metrics["exact_match"],
        **_generation_cost_fields(result),
    }


def _text_fields(
    result: RunRecord,
    best: RunRecord,
    settings: CompareConfig,
    primary: str,
    interval: tuple[float, float],
) -> dict[str, Any]:
    """A free-text run's corpus metrics (0-1), the ranking metric's interval, and the paired
    difference to the best run in every metric of :data:`TEXT_METRICS` (``vs_best_all``)."""
    metrics = result.eval.metrics
    differences = {}
    if result.name != best.name:
        for metric in TEXT_METRICS:
            difference = paired_difference(result, best, settings, metric)
            differences[metric] = None if difference is None else difference.to_dict()
    return {
        **{metric: metrics.get(metric) for metric in (*TEXT_METRICS, "length_ratio")},
        f"{primary}_ci": list(interval),
        "primary_metric": primary,
        "unfinished": result.eval.raw.get("unfinished"),
        "vs_best_all": differences or None,
    }


def _generation_cost_fields(result: RunRecord) -> dict[str, Any]:
    cost = result.eval.raw.get("cost", {})
    latency = cost.get("latency", {})
    prompt = result.eval.raw.get("tokens", {}).get("prompt", {})
    return {
        "latency_batch1_p50_ms": latency.get("p50_ms"),
        "latency_batch1_p95_ms": latency.get("p95_ms"),
        "output_tokens_per_s": cost.get("output_tokens_per_s"),
        "prompt_tokens_per_request": prompt.get("mean"),
        "prompt_build_p50_ms": cost.get("prompt_build_latency", {}).get("p50_ms"),
        **_retrieval_fields(result),
    }


def _retrieval_fields(result: RunRecord) -> dict[str, Any]:
    """A retrieval run's grounding, its retriever's recall and its index (``None`` each for a
    closed-book run)."""
    grounding = result.eval.grounding or {}
    retrieval = result.eval.retrieval or {}
    used = (retrieval.get("by_retriever") or {}).get(retrieval.get("used"), {})
    facts = result.cost.raw
    return {
        "groundedness": grounding.get("groundedness"),
        "groundedness_ci": grounding.get("groundedness_ci"),
        "citation_rate": grounding.get("citation_rate"),
        "citation_accuracy": grounding.get("citation_accuracy"),
        "retriever": retrieval.get("used"),
        "retrieved_k": retrieval.get("k"),
        "retrieval_recall_at_k": used.get(f"recall@{retrieval.get('k')}"),
        "index_build_s": facts.get("index_build_s"),
        "index_bytes": facts.get("index_bytes"),
    }


def _retention_fields(result: RunRecord) -> dict[str, Any]:
    """The change against the base model (``None`` where retention was not measured)."""
    change = result.eval.raw.get("retention", {}).get("vs_base", {})
    keys = ("forgetting", "instruction_pass_rate", "perplexity", "perplexity_ratio")
    return {key: change.get(key) for key in keys}


def _difference_to(
    result: RunRecord, best: RunRecord, settings: CompareConfig, metric: str
) -> dict[str, Any] | None:
    """The paired difference of the ranking metric against the best run, as
    ``comparison.json`` records it (``None`` for the best itself, or with no shared items)."""
    if result.name == best.name:
        return None
    difference = paired_difference(result, best, settings, metric)
    return None if difference is None else difference.to_dict()


# (markdown header, compact header for the terminal) of each leaderboard column, per task kind
COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "classification": (
        ("strategy", "strategy"),
        ("accuracy", "accuracy"),
        ("Δ vs best ({level}% CI)", "Δ vs best ({level}% CI)"),
        ("macro-F1", "macro-F1"),
        ("ECE", "ECE"),
        ("confidently wrong", "conf. wrong"),
        ("p50 ms (batch 1)", "p50 ms b1"),
        ("ms/example (batch 32)", "ms/ex b32"),
        ("size MB", "size MB"),
        ("trainable params", "trainable"),
        ("fit s", "fit s"),
        ("peak MB", "peak MB"),
    ),
    "generative": (
        ("strategy", "strategy"),
        ("slot F1", "slot F1"),
        ("Δ vs best ({level}% CI)", "Δ vs best ({level}% CI)"),
        ("JSON valid", "JSON valid"),
        ("exact match", "exact"),
        ("general instructions (Δ pts vs base)", "general (Δ)"),
        ("held-out perplexity (× base)", "ppl (× base)"),
        ("p50 ms (batch 1)", "p50 ms b1"),
        ("output tokens/s", "out tok/s"),
        ("prompt tokens/request", "prompt tok"),
        ("size MB", "size MB"),
        ("trainable params", "trainable"),
        ("fit s", "fit s"),
        ("peak MB", "peak MB"),
    ),
}


TEXT_COLUMNS = {
    "rougeL": ("ROUGE-L", "ROUGE-L"),
    "bleu": ("BLEU", "BLEU"),
    "chrf": ("chrF++", "chrF++"),
    "embedding_similarity": ("embedding sim.", "emb. sim"),
}
"""The free-text metrics shown beside the primary one (which is not repeated)."""


OPEN_SET_COLUMNS = (
    ("strategy", "strategy"),
    ("{primary}", "{primary}"),
    ("Δ vs best ({level}% CI)", "Δ vs best ({level}% CI)"),
    ("in-scope accuracy", "in-scope"),
    ("out-of-scope recall", "oos recall"),
    ("out-of-scope precision", "oos prec."),
    ("AUROC", "AUROC"),
    ("threshold", "thr."),
    ("closed-set accuracy", "closed acc."),
    *COLUMNS["classification"][-6:],
)
"""Classifiers that reject out-of-scope queries: the ranking metric, the open-set ones, and the
closed-set accuracy on in-scope queries (no rejection)."""


def _open_set(comparison: dict[str, Any]) -> bool:
    return comparison.get("metric") in get_args(OutOfScopeMetric)


MULTI_LABEL_COLUMNS = (
    ("strategy", "strategy"),
    ("micro-F1", "micro-F1"),
    ("Δ vs best ({level}% CI)", "Δ vs best ({level}% CI)"),
    ("macro-F1", "macro-F1"),
    ("subset accuracy", "subset acc."),
    ("example F1", "example F1"),
    ("ECE (mean per label)", "ECE"),
    *COLUMNS["classification"][-6:],
)
"""Multi-label classifiers: micro-F1 ranks, with macro-F1 (interval), subset accuracy,
example F1 and the per-label calibration error averaged."""


def _columns(comparison: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    kind = comparison.get("task", "classification")
    if kind == "classification" and comparison.get("metric") == "micro_f1":
        return MULTI_LABEL_COLUMNS
    if kind == "classification" and _open_set(comparison):
        return OPEN_SET_COLUMNS
    if kind != "generation":
        return COLUMNS[kind]
    primary = comparison["metric"]
    shown = tuple(pair for metric, pair in TEXT_COLUMNS.items() if metric != primary)
    return (
        ("strategy", "strategy"),
        ("{primary}", "{primary}"),
        ("Δ vs best ({level}% CI)", "Δ vs best ({level}% CI)"),
        *shown,
        ("length ratio", "len"),
        ("general instructions (Δ pts vs base)", "general (Δ)"),
        *COLUMNS["generative"][-7:],
    )


def leaderboard_headers(comparison: dict[str, Any], compact: bool = False) -> list[str]:
    """Column titles for the comparison's task kind (``compact``: for a terminal)."""
    level = round(comparison["confidence"] * 100)
    primary = METRIC_WORDS.get(comparison.get("metric", ""), comparison.get("metric", ""))
    return [pair[compact].format(level=level, primary=primary) for pair in _columns(comparison)]


def leaderboard_markdown(comparison: dict[str, Any]) -> str:
    headers = leaderboard_headers(comparison)
    lines = [
        "| " + " | ".join(headers) + " |",
        "|---|" + "---:|" * (len(headers) - 1),
    ]
    for row in comparison["rows"]:
        lines.append("| " + " | ".join(leaderboard_cells(row)) + " |")
    lines.append("")
    metric = METRIC_WORDS[comparison.get("metric", "accuracy")]
    lines.append(
        f"Best: **{comparison['best']}**. Δ is the paired-bootstrap difference in "
        f"{metric} to the best run on the same eval items; * marks a significant one."
    )
    if comparison.get("task") == "generation":
        lines.append(
            "Free-text metrics against every reference of each item: ROUGE F1 (stemmed, best "
            "reference) and embedding similarity are means over items, BLEU and chrF++ corpus "
            "scores (sacrebleu), all × 100; the length ratio is answer words over the closest "
            "reference's."
        )
    if comparison.get("task") in ("generative", "generation"):
        lines.append(
            "Retention (catastrophic forgetting): the pass rate on adaptlab's fixed general "
            "instructions, Δ in points against the base model (a drop is the `forgetting` the "
            "decision rules read), and perplexity on held-out BBC News text, × the base "
            "model's; — where not measured."
        )
    groups = {tuple(row.get("latency_pooled_with") or ()) for row in comparison["rows"]}
    pooled = sorted(", ".join(group) for group in groups if group)
    if pooled:
        lines.append(
            "Latency: runs that serve the same inference graph are priced on their calls timed "
            f"together, pooled ({'; '.join(pooled)}): they compute the same thing per request."
        )
    for row in comparison["rows"]:
        if row["sampled"]:
            lines.append(
                f"- {row['strategy']} was scored on a fixed sample of {row['n']:,} eval "
                "examples (too slow for the whole set); its Δ is on that sample."
            )
    return "\n".join(lines) + "\n"


def leaderboard_cells(row: dict[str, Any]) -> list[str]:
    name = row["strategy"] + (" (sample)" if row["sampled"] else "")
    if row.get("task") == "generation":
        low, high = row[f"{row['primary_metric']}_ci"]
        measured = [
            f"{row['score'] * 100:.2f} [{low * 100:.1f}, {high * 100:.1f}]",
            _delta(row["vs_best"]),
            *(
                _number(_percent(row.get(metric)), "{:.1f}")
                for metric in TEXT_COLUMNS
                if metric != row["primary_metric"]
            ),
            _number(row.get("length_ratio"), "{:.2f}"),
            _retention_cells(row)[0],
            _latency_cell(row),
            _number(row["output_tokens_per_s"], "{:.1f}"),
            _number(row["prompt_tokens_per_request"], "{:.0f}"),
        ]
    elif row.get("task") == "generative":
        low, high = row["slot_f1_ci"]
        measured = [
            f"{row['slot_f1'] * 100:.2f} [{low * 100:.1f}, {high * 100:.1f}]",
            _delta(row["vs_best"]),
            f"{row['json_valid_rate'] * 100:.1f}%",
            f"{row['exact_match'] * 100:.1f}%",
            *_retention_cells(row),
            _latency_cell(row),
            _number(row["output_tokens_per_s"], "{:.1f}"),
            _number(row["prompt_tokens_per_request"], "{:.0f}"),
        ]
    elif row.get("primary_metric") == "micro_f1":
        low, high = row["micro_f1_ci"]
        macro = row.get("macro_f1_ci") or [None, None]
        measured = [
            f"{row['micro_f1'] * 100:.2f} [{low * 100:.1f}, {high * 100:.1f}]",
            _delta(row["vs_best"]),
            _points_with_interval(row["macro_f1"], macro),
            f"{row['subset_accuracy'] * 100:.1f}%",
            f"{row['example_f1'] * 100:.1f}",
            f"{row['ece']:.3f}",
            _latency_cell(row),
            _number(row["latency_batch32_per_example_ms"], "{:.2f}"),
        ]
    elif row.get("out_of_scope") is not None:
        low, high = row[f"{row['primary_metric']}_ci"]
        measured = [
            f"{row['score'] * 100:.2f}% [{low * 100:.1f}, {high * 100:.1f}]",
            _delta(row["vs_best"]),
            *(
                _number(_percent(row.get(name)), "{:.1f}%")
                for name in ("in_scope_accuracy", "out_of_scope_recall", "out_of_scope_precision")
            ),
            _number(row.get("auroc"), "{:.3f}"),
            _number(row["out_of_scope"]["threshold"], "{:.3f}"),
            f"{row['accuracy'] * 100:.2f}%",
            _latency_cell(row),
            _number(row["latency_batch32_per_example_ms"], "{:.2f}"),
        ]
    else:
        low, high = row["accuracy_ci"]
        measured = [
            f"{row['accuracy'] * 100:.2f}% [{low * 100:.1f}, {high * 100:.1f}]",
            _delta(row["vs_best"]),
            f"{row['macro_f1'] * 100:.2f}",
            f"{row['ece']:.3f}",
            f"{row['confident_wrong_rate'] * 100:.1f}%",
            _latency_cell(row),
            _number(row["latency_batch32_per_example_ms"], "{:.2f}"),
        ]
    return [name, *measured, *_cost_cells(row)]


def _latency_cell(row: dict[str, Any]) -> str:
    """The batch-1 median with its interval: ``6.1 [5.8, 6.5]``."""
    value, interval = row.get("latency_batch1_p50_ms"), row.get("latency_batch1_p50_ci")
    if value is None or not interval or None in interval:
        return _number(value, "{:.1f}")
    return f"{value:.1f} [{interval[0]:.1f}, {interval[1]:.1f}]"


def _retention_cells(row: dict[str, Any]) -> list[str]:
    """Pass rate on the general instructions with its change in points against the base
    model, and held-out perplexity with its ratio to the base's; "—" where not measured."""
    rate, lost = row.get("instruction_pass_rate"), row.get("forgetting")
    general = "—" if rate is None else f"{rate * 100:.1f}%"
    if rate is not None and lost is not None:
        general += f" ({(0.0 - lost) * 100:+.1f})"  # 0.0 - x: an unchanged model shows +0.0
    perplexity, ratio = row.get("perplexity"), row.get("perplexity_ratio")
    held_out = "—" if perplexity is None else f"{perplexity:.2f} (×{ratio:.3f})"
    return [general, held_out]


def _delta(difference: dict[str, Any] | None) -> str:
    """A paired difference in points (×100), its CI, and * when significant."""
    if difference is None:
        return "—"
    return (
        f"{difference['difference'] * 100:+.1f} [{difference['low'] * 100:+.1f}, "
        f"{difference['high'] * 100:+.1f}]{'*' if difference['significant'] else ''}"
    )


def _points_with_interval(value: float, interval: Sequence[float | None]) -> str:
    low, high = interval
    if low is None or high is None:
        return f"{value * 100:.2f}"
    return f"{value * 100:.2f} [{low * 100:.1f}, {high * 100:.1f}]"


def _cost_cells(row: dict[str, Any]) -> list[str]:
    size, peak = row["size_on_disk_bytes"], row["peak_memory_bytes"]
    return [
        _number(None if size is None else size / 2**20, "{:.1f}"),
        _number(row["trainable_params"], "{:,}"),
        _number(row["fit_wall_s"], "{:.1f}"),
        _number(None if peak is None else peak / 2**20, "{:.0f}"),
    ]


def _percent(value: float | None) -> float | None:
    return None if value is None else value * 100


def _number(value: Any, pattern: str) -> str:
    return "—" if value is None else pattern.format(value)
