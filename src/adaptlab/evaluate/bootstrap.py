"""Paired bootstrap confidence intervals for the difference between two systems.

Two systems scored on the *same* eval items share the items' difficulty: an item one gets wrong
the other likely gets wrong too. Resampling items with replacement and scoring both systems on
the same resampled items keeps that pairing, so the interval reflects only how the systems
*differ*, and is far narrower than two independent intervals would suggest (Koehn, 2004,
"Statistical Significance Tests for Machine Translation Evaluation"; Efron & Tibshirani, 1993,
"An Introduction to the Bootstrap", ch. 13, percentile intervals).

Resamples are drawn as a ``resamples x n`` index matrix in chunks of about
:data:`INDEX_CHUNK_ELEMENTS`, so memory stays bounded while numpy does the work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from adaptlab.evaluate.metrics import checked_labels

DEFAULT_RESAMPLES = 2000
MIN_RESAMPLES = 100
"""Fewer resamples than this make the 2.5 % tail a handful of values: the CI is noise."""

INDEX_CHUNK_ELEMENTS = 2**20
"""Indices drawn at once (8 MiB of int64; 10,000 resamples x 3,000 items would be 240 MiB).
Measured on 2 cores: peak 16 MiB for that mean bootstrap, 57 MiB for macro-F1 with 77 labels,
and no slower than 4x larger chunks, which fall out of cache."""

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.int64]
Statistic = Callable[[FloatArray], float]


@dataclass(frozen=True)
class PairedDifference:
    """metric(a) - metric(b) on one eval set, with its paired-bootstrap CI and p-value."""

    metric: str
    a: str
    b: str
    difference: float
    """metric(a) - metric(b) on the full eval set."""
    low: float
    high: float
    """Percentile CI of the difference at level ``confidence``."""
    confidence: float
    p_value: float
    """Two-sided; see :func:`two_sided_p_value`."""
    resamples: int

    def significant(self) -> bool:
        """Whether the CI excludes 0."""
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy, with ``significant`` spelled out."""
        return {**asdict(self), "significant": self.significant()}


def paired_bootstrap(
    scores_a: npt.ArrayLike,
    scores_b: npt.ArrayLike,
    *,
    metric: str = "accuracy",
    names: tuple[str, str] = ("a", "b"),
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
    statistic: Statistic | None = None,
) -> PairedDifference:
    """Paired bootstrap of ``statistic(a) - statistic(b)`` over per-example scores.

    ``scores_a[i]`` and ``scores_b[i]`` score the same eval item (e.g. 1/0 correctness). Each
    resample draws n item indices with replacement and applies them to *both* systems (Koehn,
    2004). The default statistic, the mean, is vectorised over resamples; a custom ``statistic``
    (a 1-D score array -> float) is called once per resample and system.
    """
    a = _checked_scores("scores_a", scores_a)
    b = _checked_scores("scores_b", scores_b)
    _check_same_length(("scores_a", len(a)), ("scores_b", len(b)))
    _check_settings(resamples, confidence)
    if statistic is None:
        per_item = a - b
        observed = float(per_item.mean())
        differences = _resampled(len(a), resamples, seed, lambda rows: per_item[rows].mean(axis=1))
    else:
        observed = float(statistic(a) - statistic(b))
        differences = _resampled(len(a), resamples, seed, _statistic_differences(statistic, a, b))
    return _summarised(metric, names, observed, differences, confidence)


def paired_bootstrap_f1(
    pred_a: npt.ArrayLike,
    pred_b: npt.ArrayLike,
    gold: npt.ArrayLike,
    n_labels: int,
    *,
    names: tuple[str, str] = ("a", "b"),
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """Paired bootstrap of macro-F1(a) - macro-F1(b) from predicted and gold class indices.

    Each system's macro-F1 on a (re)sample averages per-class F1 over the labels that occur in
    that sample's gold ∪ that system's predictions, exactly as scikit-learn's
    ``f1_score(gold, pred, average="macro", zero_division=0)`` would on the same sample; so the
    point estimate equals the difference of the two scikit-learn macro-F1s on the full set.
    Confusion counts come from one ``np.bincount`` over a whole chunk of resamples.
    """
    gold_array = _checked_class_indices("gold", gold, n_labels, None)
    a = _checked_class_indices("pred_a", pred_a, n_labels, len(gold_array))
    b = _checked_class_indices("pred_b", pred_b, n_labels, len(gold_array))
    _check_settings(resamples, confidence)

    def differences(rows: IndexArray) -> FloatArray:
        return _macro_f1_differences(a[rows], b[rows], gold_array[rows], n_labels)

    observed = float(differences(np.arange(len(gold_array))[np.newaxis, :])[0])
    resampled = _resampled(len(gold_array), resamples, seed, differences)
    return _summarised("macro_f1", names, observed, resampled, confidence)


def paired_bootstrap_micro_f1(
    counts_a: npt.ArrayLike,
    counts_b: npt.ArrayLike,
    *,
    metric: str = "micro_f1",
    names: tuple[str, str] = ("a", "b"),
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """Paired bootstrap of micro-F1(a) - micro-F1(b) from per-example match counts.

    ``counts_x[i]`` holds example i's (true positives, false positives, false negatives), e.g.
    the slot pairs of one answer. Micro-F1 pools the counts of the (re)sampled examples,
    F1 = 2 TP / (2 TP + FP + FN), 0 when that denominator is 0; it is not a mean of
    per-example scores, so the mean bootstrap cannot give it.
    """
    a = _checked_counts("counts_a", counts_a)
    b = _checked_counts("counts_b", counts_b)
    _check_same_length(("counts_a", len(a)), ("counts_b", len(b)))
    _check_settings(resamples, confidence)

    def differences(rows: IndexArray) -> FloatArray:
        return _micro_f1_rows(a[rows].sum(axis=1)) - _micro_f1_rows(b[rows].sum(axis=1))

    observed = float(differences(np.arange(len(a))[np.newaxis, :])[0])
    resampled = _resampled(len(a), resamples, seed, differences)
    return _summarised(metric, names, observed, resampled, confidence)


def paired_bootstrap_corpus(
    stats_a: npt.ArrayLike,
    stats_b: npt.ArrayLike,
    score: Callable[[IndexArray], float],
    *,
    metric: str,
    names: tuple[str, str] = ("a", "b"),
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """Paired bootstrap of a corpus metric that pools per-example statistics (BLEU's n-gram
    matches and lengths, chrF's character and word n-gram counts): each resample sums the
    resampled examples' rows and ``score`` turns the sums into the corpus score, as
    sacrebleu's own paired bootstrap does. Not a mean of sentence scores.

    ``stats_x`` is ``(n, k)`` non-negative integers, row i for eval item i. Each resample's
    sums are its draw counts times the rows, so memory stays at one chunk of indices.
    """
    a = _checked_stats("stats_a", stats_a)
    b = _checked_stats("stats_b", stats_b)
    _check_same_length(("stats_a", len(a)), ("stats_b", len(b)))
    _check_settings(resamples, confidence)
    n = len(a)

    def differences(rows: IndexArray) -> FloatArray:
        out = np.empty(len(rows), dtype=np.float64)
        for r, row in enumerate(rows):
            draws = np.bincount(row, minlength=n)
            out[r] = score(draws @ a) - score(draws @ b)
        return out

    observed = score(a.sum(axis=0)) - score(b.sum(axis=0))
    resampled = _resampled(n, resamples, seed, differences)
    return _summarised(metric, names, float(observed), resampled, confidence)


def _checked_stats(name: str, stats: npt.ArrayLike) -> IndexArray:
    array = np.asarray(stats)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} has shape {array.shape}: expected (n, k) with n, k >= 1")
    if not np.issubdtype(array.dtype, np.integer) or (array < 0).any():
        raise ValueError(f"{name} must hold non-negative integer statistics")
    return array.astype(np.int64)


def _micro_f1_rows(totals: IndexArray) -> FloatArray:
    """Micro-F1 of each row of ``(rows, 3)`` pooled (TP, FP, FN) counts."""
    hits = 2.0 * totals[:, 0]
    denominator = hits + totals[:, 1] + totals[:, 2]
    result: FloatArray = np.divide(
        hits, denominator, out=np.zeros(len(totals)), where=denominator > 0
    )
    return result


def bootstrap_interval(
    scores: npt.ArrayLike,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of one system's mean score (Efron & Tibshirani, 1993, ch. 13)."""
    values = _checked_scores("scores", scores)
    _check_settings(resamples, confidence)
    means = _resampled(len(values), resamples, seed, lambda rows: values[rows].mean(axis=1))
    return _percentile_interval(means, confidence)


def corpus_interval(
    stats: npt.ArrayLike,
    score: Callable[[IndexArray], float],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of one system's corpus metric from per-example statistics rows
    (BLEU's, chrF's): each resample sums its examples' rows and ``score`` turns the sums into
    the corpus score, as :func:`paired_bootstrap_corpus` does for a difference."""
    values = _checked_stats("stats", stats)
    _check_settings(resamples, confidence)
    n = len(values)

    def scores(rows: IndexArray) -> FloatArray:
        return np.array([score(np.bincount(row, minlength=n) @ values) for row in rows])

    return _percentile_interval(_resampled(n, resamples, seed, scores), confidence)


def micro_f1_interval(
    counts: npt.ArrayLike,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of one system's micro-F1 from per-example (TP, FP, FN) counts:
    each resample pools the counts of its examples, as :func:`paired_bootstrap_micro_f1`."""
    values = _checked_counts("counts", counts)
    _check_settings(resamples, confidence)
    scores = _resampled(
        len(values), resamples, seed, lambda rows: _micro_f1_rows(values[rows].sum(axis=1))
    )
    return _percentile_interval(scores, confidence)


def median_interval(
    values: npt.ArrayLike,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the median of ``values`` (independent draws, e.g. timed calls)."""
    array = _checked_scores("values", values)
    _check_settings(resamples, confidence)
    medians = _resampled(len(array), resamples, seed, lambda rows: np.median(array[rows], axis=1))
    return _percentile_interval(medians, confidence)


def cluster_median_interval(
    clusters: Sequence[npt.ArrayLike],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the median of the pooled values of ``clusters``, resampling
    whole clusters (Davison & Hinkley, 1997, "Bootstrap Methods and their Application", §3.8).

    Values within a cluster share a cause (calls timed in one round share the machine's load
    then), so they are not independent draws: resampling single values would hide how much the
    clusters differ, and the interval would be too narrow. Each resample draws as many clusters
    as there are, with replacement, and takes the median of all their values at once.
    """
    arrays = [_checked_scores(f"clusters[{i}]", values) for i, values in enumerate(clusters)]
    if not arrays:
        raise ValueError("clusters is empty: expected at least one cluster of values")
    _check_settings(resamples, confidence)
    # Clusters padded with NaN to one width make a matrix: a chunk of resampled cluster rows
    # is then one fancy index and one nanmedian, with no Python loop over resamples.
    padded = np.full((len(arrays), max(len(a) for a in arrays)), np.nan)
    for row, values in enumerate(arrays):
        padded[row, : len(values)] = values

    def medians(rows: IndexArray) -> FloatArray:
        chosen = padded[rows].reshape(len(rows), -1)
        result: FloatArray = np.nanmedian(chosen, axis=1)
        return result

    return _percentile_interval(_resampled(len(arrays), resamples, seed, medians), confidence)


def two_level_interval(
    values: npt.ArrayLike,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (training seeds x eval items; NaN:
    an item the metric does not apply to), resampling at both levels: each resample draws the
    items with replacement and then the seeds with replacement (Davison & Hinkley, 1997, §3.8,
    two-stage sampling). The interval then holds seed-to-seed variation as well as eval
    sampling (Bouthillier et al., 2021, "Accounting for Variance in Machine Learning
    Benchmarks"); with few seeds its seed level is rough (two seeds give three distinct
    draws)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"values: expected a (seeds, items) array, got shape {array.shape}")
    _check_settings(resamples, confidence)
    seeds = array.shape[0]
    draws = np.random.default_rng(seed + 1)  # the seed level, apart from the items' stream
    means = []
    for rows in resampled_indices(array.shape[1], resamples, seed):
        per_seed = np.nanmean(array[:, rows], axis=2)  # (seeds, rows)
        chosen = draws.integers(0, seeds, size=(len(rows), seeds))
        means.append(per_seed[chosen, np.arange(len(rows))[:, None]].mean(axis=1))
    return _percentile_interval(np.concatenate(means), confidence)


def two_sided_p_value(observed: float, differences: FloatArray) -> float:
    """Two-sided bootstrap p-value of ``observed`` given the resampled ``differences``.

    The share of resamples that do not agree in sign with the observed difference (the opposite
    sign, or zero), doubled for two sides and capped at 1, as in Koehn (2004): "a is better"
    holds at level p when it holds on all but a p share of resamples. The count gets the
    Monte-Carlo add-one correction, (k + 1) / (R + 1) (Davison & Hinkley, 1997, "Bootstrap
    Methods and their Application", ch. 4), so the smallest p-value is about 2 / R rather than 0:
    R resamples cannot show more. An observed difference of exactly 0 gives p = 1.
    """
    if observed == 0:
        return 1.0
    disagreeing = int(np.count_nonzero(np.sign(differences) != np.sign(observed)))
    return min(1.0, 2 * (disagreeing + 1) / (len(differences) + 1))


def resampled_indices(n: int, resamples: int, seed: int) -> Iterator[IndexArray]:
    """``resamples`` rows of n indices drawn with replacement, in chunks of bounded size."""
    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, INDEX_CHUNK_ELEMENTS // n)
    for start in range(0, resamples, rows_per_chunk):
        yield rng.integers(0, n, size=(min(rows_per_chunk, resamples - start), n))


def _resampled(
    n: int, resamples: int, seed: int, per_chunk: Callable[[IndexArray], FloatArray]
) -> FloatArray:
    """The statistic of every resample, ``per_chunk`` mapping a chunk of index rows to values."""
    return np.concatenate([per_chunk(rows) for rows in resampled_indices(n, resamples, seed)])


def _statistic_differences(
    statistic: Statistic, a: FloatArray, b: FloatArray
) -> Callable[[IndexArray], FloatArray]:
    def differences(rows: IndexArray) -> FloatArray:
        return np.array([statistic(a[row]) - statistic(b[row]) for row in rows], dtype=np.float64)

    return differences


def _macro_f1_differences(
    pred_a: IndexArray, pred_b: IndexArray, gold: IndexArray, n_labels: int
) -> FloatArray:
    """Row-wise macro-F1(a) - macro-F1(b) for ``(rows, n)`` arrays of class indices."""
    # Offsetting row r's labels by r * n_labels gives every (row, label) pair its own bincount
    # slot, so one call counts all rows at once.
    offsets = (np.arange(len(gold)) * n_labels)[:, np.newaxis]
    gold_slots = gold + offsets
    slots = len(gold) * n_labels
    gold_counts = np.bincount(gold_slots.ravel(), minlength=slots)
    f1_a = _macro_f1_rows(pred_a + offsets, gold_slots, gold_counts, slots, n_labels)
    f1_b = _macro_f1_rows(pred_b + offsets, gold_slots, gold_counts, slots, n_labels)
    return f1_a - f1_b


def _macro_f1_rows(
    pred_slots: IndexArray,
    gold_slots: IndexArray,
    gold_counts: npt.NDArray[np.intp],
    slots: int,
    n_labels: int,
) -> FloatArray:
    """Macro-F1 per row from offset labels; F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (gold + pred)."""
    pred_counts = np.bincount(pred_slots.ravel(), minlength=slots)
    hits = np.bincount(gold_slots[pred_slots == gold_slots], minlength=slots)
    support = (gold_counts + pred_counts).reshape(-1, n_labels)
    present = support > 0
    f1 = np.divide(
        2.0 * hits.reshape(-1, n_labels), support, out=np.zeros(support.shape), where=present
    )
    result: FloatArray = f1.sum(axis=1) / present.sum(axis=1)
    return result


def _summarised(
    metric: str,
    names: tuple[str, str],
    observed: float,
    differences: FloatArray,
    confidence: float,
) -> PairedDifference:
    low, high = _percentile_interval(differences, confidence)
    return PairedDifference(
        metric=metric,
        a=names[0],
        b=names[1],
        difference=observed,
        low=low,
        high=high,
        confidence=confidence,
        p_value=two_sided_p_value(observed, differences),
        resamples=len(differences),
    )


def _percentile_interval(values: FloatArray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def _checked_scores(name: str, scores: npt.ArrayLike) -> FloatArray:
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} has shape {array.shape}: expected (n,) with n >= 1")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}[{np.flatnonzero(~np.isfinite(array))[0]}] is not finite")
    return array


def _checked_counts(name: str, counts: npt.ArrayLike) -> IndexArray:
    array = np.asarray(counts)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] != 3:
        raise ValueError(
            f"{name} has shape {array.shape}: expected (n, 3) with n >= 1 "
            "(true positives, false positives, false negatives per example)"
        )
    if not np.issubdtype(array.dtype, np.integer) or (array < 0).any():
        raise ValueError(f"{name} must hold non-negative integer counts")
    return array.astype(np.int64)


def _checked_class_indices(
    name: str, labels: npt.ArrayLike, n_labels: int, length: int | None
) -> IndexArray:
    if n_labels < 1:
        raise ValueError(f"n_labels = {n_labels}: must be >= 1")
    array = np.asarray(labels)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} has shape {array.shape}: expected (n,) with n >= 1")
    if length is not None:
        _check_same_length(("gold", length), (name, len(array)))
    return checked_labels(name, array, n_labels, length=len(array))


def _check_same_length(first: tuple[str, int], second: tuple[str, int]) -> None:
    if first[1] != second[1]:
        raise ValueError(
            f"{first[0]} has {first[1]} items but {second[0]} has {second[1]}: paired scores "
            "must cover the same eval items in the same order"
        )


def _check_settings(resamples: int, confidence: float) -> None:
    if resamples < MIN_RESAMPLES:
        raise ValueError(f"resamples = {resamples}: must be >= {MIN_RESAMPLES}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence = {confidence}: must be in (0, 1), e.g. 0.95")
