"""Out-of-scope rejection: the threshold, what it rejects, and how well.

A deployed intent classifier meets queries that fit none of its intents. With
``data.out_of_scope_label`` every classifier gets the same rule: a query is rejected ("none of
the above") when its **score** — the largest probability among the in-scope labels, the
maximum softmax probability of Hendrycks & Gimpel (2017) — falls under a threshold, or when its
most probable column is the out-of-scope class (a model trained on out-of-scope examples).
Probabilities are what every strategy returns (a kNN vote, a zero-shot similarity softmax, an
LLM's constrained answer distribution); an energy score needs logits, which not all have, so
one score serves all and the comparison stays fair.

The threshold is chosen on a validation split of the training data, never on the eval set:

- ``in_scope_rejection`` (default): the ``target`` quantile of the in-scope validation scores,
  so about that share of in-scope queries is rejected (5%);
- ``joint_accuracy``: the threshold with the best accuracy over in-scope and out-of-scope
  validation queries (needs out-of-scope examples in train).

Metrics, per Larson et al. (EMNLP 2019): in-scope accuracy (a rejected in-scope query is wrong),
out-of-scope recall and precision, accuracy over all queries (a rejected out-of-scope query is
right), and the AUROC of the score separating in-scope from out-of-scope queries, which needs
no threshold. Each per-query score is kept for the paired bootstrap between runs (``NaN``
where a metric does not apply to the query).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

OUT_OF_SCOPE = -1
"""The gold label id of an out-of-scope query (and a rejected prediction)."""
SCORE = "max_probability"
"""The score thresholded: the largest in-scope probability."""
Rule = Literal["in_scope_rejection", "joint_accuracy"]
PER_QUERY = ("overall_accuracy", "in_scope_accuracy", "out_of_scope_recall")
"""Metrics kept per query (``predictions.safetensors``), for intervals and paired bootstraps."""


class OpenSetError(ValueError):
    """A threshold that cannot be chosen (no in-scope validation query, no out-of-scope one for
    ``joint_accuracy``)."""


@dataclass(frozen=True)
class Rejection:
    """The rule a run rejects queries by, and how it was chosen."""

    threshold: float
    rule: Rule
    target: float | None
    """``in_scope_rejection``'s share of in-scope validation queries to reject."""
    validation_n: int
    validation_out_of_scope: int
    validation_in_scope_rejected: float
    """The share of in-scope validation queries the threshold rejects."""
    out_of_scope_column: int | None
    score: str = SCORE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Rejection:
        return cls(**{key: raw[key] for key in cls.__dataclass_fields__ if key in raw})


def in_scope_scores(probabilities: npt.ArrayLike, out_of_scope_column: int | None) -> np.ndarray:
    """Each query's score: its largest probability among the in-scope columns."""
    values = np.asarray(probabilities, dtype=np.float64)
    if out_of_scope_column is not None:
        values = np.delete(values, out_of_scope_column, axis=1)
    scores: np.ndarray = values.max(axis=1)
    return scores


def predictions(probabilities: npt.ArrayLike, rejection: Rejection) -> np.ndarray:
    """Each query's predicted label id, or :data:`OUT_OF_SCOPE` when rejected."""
    values = np.asarray(probabilities, dtype=np.float64)
    best = values.argmax(axis=1)
    scores = in_scope_scores(values, rejection.out_of_scope_column)
    rejected = scores < rejection.threshold
    if rejection.out_of_scope_column is not None:
        rejected |= best == rejection.out_of_scope_column
    predicted: np.ndarray = np.where(rejected, OUT_OF_SCOPE, best)
    return predicted


def choose_threshold(
    probabilities: npt.ArrayLike,
    gold: npt.ArrayLike,
    *,
    rule: Rule,
    target: float,
    out_of_scope_column: int | None,
) -> Rejection:
    """The threshold ``rule`` picks on validation ``probabilities`` with labels ``gold``
    (:data:`OUT_OF_SCOPE` for out-of-scope queries)."""
    values = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(gold, dtype=np.int64)
    scores = in_scope_scores(values, out_of_scope_column)
    inside = labels != OUT_OF_SCOPE
    if not inside.any():
        raise OpenSetError("the validation split holds no in-scope query to set a threshold on")
    outside = int((~inside).sum())
    if rule == "in_scope_rejection":
        threshold = float(np.quantile(scores[inside], target, method="lower"))
        # 'lower' picks an observed score; a query scoring exactly it is kept (>=).
    else:
        if outside == 0:
            raise OpenSetError(
                "out_of_scope.rule joint_accuracy needs out-of-scope queries in the validation "
                "split: give train some records with the out-of-scope label, or use "
                "rule in_scope_rejection"
            )
        threshold = _best_joint_threshold(values, labels, scores, out_of_scope_column)
    rejected = float((scores[inside] < threshold).mean())
    return Rejection(
        threshold,
        rule,
        target if rule == "in_scope_rejection" else None,
        len(labels),
        outside,
        rejected,
        out_of_scope_column,
    )


def _best_joint_threshold(
    probabilities: np.ndarray,
    gold: np.ndarray,
    scores: np.ndarray,
    out_of_scope_column: int | None,
) -> float:
    """The candidate threshold (0 or an observed score) with the best accuracy over all
    validation queries; the lowest among ties (rejecting least)."""
    best_accuracy, best = -1.0, 0.0
    for candidate in np.unique(np.concatenate([[0.0], scores])):
        rule = Rejection(float(candidate), "joint_accuracy", None, 0, 0, 0.0, out_of_scope_column)
        accuracy = float((predictions(probabilities, rule) == gold).mean())
        if accuracy > best_accuracy:
            best_accuracy, best = accuracy, float(candidate)
    return best


def per_query(probabilities: npt.ArrayLike, gold: npt.ArrayLike, rejection: Rejection
              ) -> dict[str, np.ndarray]:  # fmt: skip
    """Per query: ``overall_accuracy`` (1/0), ``in_scope_accuracy`` (1/0, NaN for out-of-scope
    queries), ``out_of_scope_recall`` (1/0 rejected, NaN for in-scope ones), ``score`` and
    ``rejected`` (1/0)."""
    labels = np.asarray(gold, dtype=np.int64)
    predicted = predictions(probabilities, rejection)
    right = (predicted == labels).astype(np.float64)
    inside = labels != OUT_OF_SCOPE
    return {
        "overall_accuracy": right,
        "in_scope_accuracy": np.where(inside, right, np.nan),
        "out_of_scope_recall": np.where(inside, np.nan, right),
        "score": in_scope_scores(probabilities, rejection.out_of_scope_column),
        "rejected": (predicted == OUT_OF_SCOPE).astype(np.float64),
    }


def open_set_metrics(
    probabilities: npt.ArrayLike, gold: npt.ArrayLike, rejection: Rejection
) -> dict[str, float | None]:
    """In-scope accuracy, out-of-scope recall, precision and F1, accuracy over all queries,
    AUROC of the score, and the share of in-scope queries rejected (``None`` where undefined:
    no out-of-scope query, nothing rejected)."""
    labels = np.asarray(gold, dtype=np.int64)
    rows = per_query(probabilities, labels, rejection)
    inside = labels != OUT_OF_SCOPE
    rejected = predictions(probabilities, rejection) == OUT_OF_SCOPE
    recall = _mean(rows["out_of_scope_recall"][~inside])
    precision = _mean((~inside[rejected]).astype(np.float64))
    f1 = (
        None
        if recall is None or precision is None or recall + precision == 0
        else 2 * recall * precision / (recall + precision)
    )
    return {
        "overall_accuracy": _mean(rows["overall_accuracy"]),
        "in_scope_accuracy": _mean(rows["in_scope_accuracy"][inside]),
        "out_of_scope_recall": recall,
        "out_of_scope_precision": precision,
        "out_of_scope_f1": f1,
        "auroc": auroc(rows["score"], inside),
        "in_scope_rejected": _mean(rejected[inside].astype(np.float64)),
    }


def auroc(scores: npt.ArrayLike, in_scope: npt.ArrayLike) -> float | None:
    """The probability that an in-scope query scores above an out-of-scope one (ties count
    half): the area under the ROC curve; ``None`` without both kinds."""
    from sklearn.metrics import roc_auc_score

    positive = np.asarray(in_scope, dtype=bool)
    if positive.all() or not positive.any():
        return None
    return float(roc_auc_score(positive, np.asarray(scores, dtype=np.float64)))


def auroc_interval(
    scores: npt.ArrayLike,
    in_scope: npt.ArrayLike,
    *,
    resamples: int,
    confidence: float,
    seed: int = 0,
) -> tuple[float, float] | None:
    """A percentile bootstrap interval of :func:`auroc` (queries resampled with replacement;
    a resample without both kinds is drawn again)."""
    values = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(in_scope, dtype=bool)
    if positive.all() or not positive.any():
        return None
    rng = np.random.default_rng(seed)
    found: list[float] = []
    while len(found) < resamples:
        rows = rng.integers(0, len(values), len(values))
        value = auroc(values[rows], positive[rows])
        if value is not None:
            found.append(value)
    tail = (1 - confidence) / 2
    low, high = np.quantile(found, [tail, 1 - tail])
    return float(low), float(high)


def tradeoff_curve(
    scores: npt.ArrayLike, in_scope: npt.ArrayLike, points: int = 21
) -> list[dict[str, float]]:
    """The rejection trade-off as the threshold moves: at each threshold (quantiles of the
    scores), the share of in-scope queries rejected and of out-of-scope queries rejected
    (score only: a trained out-of-scope column is not applied)."""
    values = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(in_scope, dtype=bool)
    thresholds = np.unique(np.quantile(values, np.linspace(0, 1, points)))
    curve = []
    for threshold in thresholds:
        rejected = values < threshold
        curve.append(
            {
                "threshold": float(threshold),
                "in_scope_rejected": _mean(rejected[positive].astype(np.float64)) or 0.0,
                "out_of_scope_rejected": _mean(rejected[~positive].astype(np.float64)) or 0.0,
            }
        )
    return curve


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def precision_of_rejections(rejected: np.ndarray, inside: np.ndarray) -> float:
    """The share of rejected queries that are out of scope (0 when nothing is rejected)."""
    chosen = rejected.astype(bool)
    return float((~inside[chosen]).mean()) if chosen.any() else 0.0


def auroc_or_half(scores: np.ndarray, inside: np.ndarray) -> float:
    """:func:`auroc`, 0.5 (chance) for a resample without both kinds of query."""
    value = auroc(scores, inside)
    return 0.5 if value is None else value
