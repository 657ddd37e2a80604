"""Classification metrics from predicted probabilities: accuracy, macro-F1 and calibration.

Accuracy and F1 come from scikit-learn. Calibration is the expected calibration error of Guo et
al. (2017), "On Calibration of Modern Neural Networks", eq. 3, over equal-width confidence bins,
and the share of examples that are *confidently wrong*: a model that is wrong and says it is
90 % sure misleads its users more than one that is wrong and unsure, and accuracy cannot tell
the two apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypedDict

import numpy as np
import numpy.typing as npt
from sklearn.metrics import accuracy_score, f1_score

DEFAULT_BINS = 15
"""Guo et al. (2017) report ECE over 15 bins; ECE depends on the bin count, so keep it fixed."""

DEFAULT_CONFIDENT_THRESHOLD = 0.9
"""A wrong prediction at or above this confidence counts as confidently ("fluently") wrong."""

ROW_SUM_TOLERANCE = 1e-3
"""How far a probability row may sum from 1: float16/bfloat16 softmax outputs miss by ~1e-4."""

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class ClassificationMetrics:
    """Accuracy, macro-F1 and calibration of one system on one eval set."""

    accuracy: float
    macro_f1: float
    per_class_f1: dict[str, float]
    """Label name -> F1, for the labels in gold ∪ predicted (the ones macro-F1 averages)."""
    ece: float
    """Expected calibration error (Guo et al., 2017, eq. 3), in [0, 1]."""
    confident_wrong_rate: float
    """Share of *all* examples predicted wrong with confidence >= the threshold."""
    confident_wrong_threshold: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (``per_class_f1`` copied too, so editing it leaves this intact)."""
        return asdict(self)


class ReliabilityBin(TypedDict):
    """One bar of a reliability diagram (Guo et al., 2017, fig. 1): the bin (lower, upper]."""

    lower: float
    upper: float
    count: int
    accuracy: float | None
    """Share correct in the bin; None when the bin is empty."""
    confidence: float | None
    """Mean confidence in the bin; None when the bin is empty."""


def classification_metrics(
    probabilities: npt.ArrayLike,
    gold: npt.ArrayLike,
    label_names: Sequence[str],
    confident_threshold: float = DEFAULT_CONFIDENT_THRESHOLD,
    bins: int = DEFAULT_BINS,
) -> ClassificationMetrics:
    """Accuracy, macro-F1, per-class F1, ECE and confidently-wrong rate of ``(n, k)`` probabilities.

    The prediction is the argmax of a row and its confidence the row's maximum. Macro-F1 is the
    unweighted mean of per-class F1 over the labels that occur in gold ∪ predicted (scikit-learn's
    default label set; ``zero_division=0``): a label that neither the data nor the model uses
    says nothing about the model, and counting it as F1 = 0 would let the size of the label list
    move the score. ``per_class_f1`` holds exactly the averaged labels.
    """
    probabilities = checked_probabilities(probabilities, label_names)
    gold = checked_labels("gold", gold, len(label_names), length=len(probabilities))
    if not 0 < confident_threshold <= 1:
        raise ValueError(f"confident_threshold = {confident_threshold}: must be in (0, 1]")
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    correct = predicted == gold
    present = np.union1d(gold, predicted)
    per_class = f1_score(gold, predicted, labels=present, average=None, zero_division=0)
    return ClassificationMetrics(
        accuracy=float(accuracy_score(gold, predicted)),
        # scikit-learn's average="macro" is this same mean over the same labels.
        macro_f1=float(np.mean(per_class)),
        per_class_f1={
            label_names[label]: float(score)
            for label, score in zip(present.tolist(), per_class.tolist(), strict=True)
        },
        ece=expected_calibration_error(confidence, correct, bins),
        confident_wrong_rate=float(np.mean(~correct & (confidence >= confident_threshold))),
        confident_wrong_threshold=confident_threshold,
        n=len(gold),
    )


def expected_calibration_error(
    confidence: npt.ArrayLike, correct: npt.ArrayLike, bins: int = DEFAULT_BINS
) -> float:
    """ECE = sum_m |B_m|/n * |acc(B_m) - conf(B_m)| (Guo et al., 2017, eq. 3).

    ``B_m`` holds the examples whose confidence lies in ((m-1)/M, m/M] for M equal-width bins
    (a confidence of exactly 0 joins the first bin). Gaps cancel within a bin but not across bins.
    """
    counts, correct_sums, confidence_sums = _bin_sums(confidence, correct, bins)
    # |B_m|/n * |acc - conf| = |sum of correct - sum of confidence in B_m| / n.
    return float(np.abs(correct_sums - confidence_sums).sum() / counts.sum())


def reliability_bins(
    confidence: npt.ArrayLike, correct: npt.ArrayLike, bins: int = DEFAULT_BINS
) -> list[ReliabilityBin]:
    """Every bin of :func:`expected_calibration_error`, empty ones included, for the plot."""
    counts, correct_sums, confidence_sums = _bin_sums(confidence, correct, bins)
    edges = _bin_edges(bins)
    return [
        ReliabilityBin(
            lower=float(edges[m]),
            upper=float(edges[m + 1]),
            count=int(counts[m]),
            accuracy=float(correct_sums[m] / counts[m]) if counts[m] else None,
            confidence=float(confidence_sums[m] / counts[m]) if counts[m] else None,
        )
        for m in range(bins)
    ]


def checked_probabilities(probabilities: npt.ArrayLike, label_names: Sequence[str]) -> FloatArray:
    """``probabilities`` as float64 ``(n, k)``, refused unless every row is a distribution."""
    array = np.asarray(probabilities, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"probabilities has shape {array.shape}: expected (n, k) with n >= 1")
    if array.shape[1] != len(label_names):
        raise ValueError(
            f"probabilities has {array.shape[1]} columns but label_names has "
            f"{len(label_names)} names: expected one column per label"
        )
    if len(set(label_names)) != len(label_names):
        raise ValueError(f"label_names = {list(label_names)}: names must be unique")
    _check_rows_are_distributions(array)
    return array


def checked_labels(name: str, labels: npt.ArrayLike, n_labels: int, *, length: int) -> IndexArray:
    """``labels`` as int64 class indices, refused unless 1-D, ``length`` long, in [0, n_labels)."""
    array = np.asarray(labels)
    if array.ndim != 1 or len(array) != length:
        raise ValueError(f"{name} has shape {array.shape}: expected ({length},)")
    if array.dtype.kind not in "iu":
        raise ValueError(f"{name} has dtype {array.dtype}: expected integer class indices")
    outside = np.flatnonzero((array < 0) | (array >= n_labels))
    if outside.size:
        first = int(outside[0])
        raise ValueError(
            f"{name}[{first}] = {array[first]}: class indices must be in [0, {n_labels})"
        )
    return array.astype(np.int64)


def _check_rows_are_distributions(probabilities: FloatArray) -> None:
    """Refuse non-finite or negative entries and rows that do not sum to 1."""
    bad_rows = np.flatnonzero(~np.isfinite(probabilities).all(axis=1))
    if bad_rows.size:
        raise ValueError(
            f"probabilities row {bad_rows[0]} is not finite: {probabilities[bad_rows[0]]}"
        )
    negative = np.flatnonzero((probabilities < 0).any(axis=1))
    if negative.size:
        raise ValueError(f"probabilities row {negative[0]} has a negative entry: expected >= 0")
    sums = probabilities.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1) > ROW_SUM_TOLERANCE)
    if off.size:
        raise ValueError(
            f"probabilities row {off[0]} sums to {sums[off[0]]:.6g}: every row must sum to 1 "
            f"within {ROW_SUM_TOLERANCE} ({off.size} rows do not; pass softmax outputs, not logits)"
        )


def _bin_sums(
    confidence: npt.ArrayLike, correct: npt.ArrayLike, bins: int
) -> tuple[IndexArray, FloatArray, FloatArray]:
    """Per bin: example count, number correct, sum of confidence."""
    if bins < 1:
        raise ValueError(f"bins = {bins}: must be >= 1")
    confidence_array, correct_array = _checked_confidence(confidence, correct)
    # searchsorted(side="left") - 1 puts edges[m] < c <= edges[m + 1] into bin m, as in eq. 3.
    bin_of = np.clip(np.searchsorted(_bin_edges(bins), confidence_array, side="left") - 1, 0, None)
    counts = np.bincount(bin_of, minlength=bins).astype(np.int64)
    # Weighted bincounts are float64; the stubs type every bincount as integer.
    correct_sums = np.bincount(bin_of, correct_array, bins).astype(np.float64, copy=False)
    confidence_sums = np.bincount(bin_of, confidence_array, bins).astype(np.float64, copy=False)
    return counts, correct_sums, confidence_sums


def _bin_edges(bins: int) -> FloatArray:
    return np.linspace(0.0, 1.0, bins + 1)


def _checked_confidence(
    confidence: npt.ArrayLike, correct: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Confidence in [0, 1] and correctness as 0/1, both 1-D, non-empty, of equal length."""
    confidence_array = np.asarray(confidence, dtype=np.float64)
    correct_array = np.asarray(correct, dtype=np.float64)
    if confidence_array.ndim != 1 or confidence_array.size == 0:
        raise ValueError(f"confidence has shape {confidence_array.shape}: expected (n,), n >= 1")
    if correct_array.shape != confidence_array.shape:
        raise ValueError(
            f"correct has shape {correct_array.shape}: expected {confidence_array.shape}, "
            "the shape of confidence"
        )
    if not np.all((confidence_array >= 0) & (confidence_array <= 1)):
        raise ValueError("confidence must be finite and in [0, 1]")
    if not np.all((correct_array == 0) | (correct_array == 1)):
        raise ValueError("correct must hold only booleans or 0/1")
    return confidence_array, correct_array
