"""Multi-label classification: per-label thresholds, and the metrics of label sets.

A multi-label classifier gives each label its own probability; a label is predicted when its
probability reaches the label's threshold. The thresholds are tuned per label on a validation
split of the training data, never on the eval set, for the validation micro-F1 (the ranking
metric): each label's candidates are 0.5 and its observed validation probabilities, and label
by label (coordinate ascent, two passes) the candidate that gives the best micro-F1 with the
other labels' thresholds fixed is kept, the one nearest 0.5 among ties; a label without a
positive validation record keeps 0.5. Tuning each label for
its own F1 instead fails on rare labels: with one positive among 80 validation records whose
probability is the model's floor, predicting that label for every record has F1 0.02, more
than never predicting it (0), and floods every eval record with it (a kNN run on NLU++ lost
every exact match that way).

Metrics over the eval set:

- micro-F1: F1 of the pooled (tp, fp, fn) counts over every record and label (the ranking
  metric; its interval and the paired bootstrap between runs resample records with their
  counts, as slot F1 does);
- macro-F1: the mean F1 of the labels that occur in the gold sets or the predictions;
- subset accuracy: the share of records whose predicted set is exactly the gold set (an empty
  gold set predicted empty counts);
- example F1: the mean of each record's F1 (1 when both sets are empty), kept per record;
- per-label F1, and calibration per label: the expected calibration error of each label's
  probability as a binary forecast, averaged over the labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

DEFAULT_THRESHOLD = 0.5
ECE_BINS = 10


def tune_thresholds(
    probabilities: npt.ArrayLike, gold: npt.ArrayLike, passes: int = 2
) -> np.ndarray:
    """One threshold per label, chosen for the validation micro-F1 (see the module): starting
    from 0.5 everywhere, each label in turn takes the candidate that gives the best micro-F1
    with the other labels' thresholds fixed, the one nearest 0.5 among ties; ``passes`` times
    over the labels."""
    values = np.asarray(probabilities, dtype=np.float64)
    truth = np.asarray(gold, dtype=bool)
    labels = values.shape[1]
    candidates = [
        np.unique(np.concatenate([[DEFAULT_THRESHOLD], values[:, i]])) for i in range(labels)
    ]
    # each label's (tp, fp, fn) at each of its candidates
    counts = []
    for label in range(labels):
        predicted = values[None, :, label] >= candidates[label][:, None]
        positive = truth[:, label]
        counts.append(
            np.stack(
                [
                    (predicted & positive).sum(axis=1),
                    (predicted & ~positive).sum(axis=1),
                    (~predicted & positive).sum(axis=1),
                ],
                axis=1,
            )
        )
    chosen = [int(np.argmin(np.abs(c - DEFAULT_THRESHOLD))) for c in candidates]
    total = sum(counts[i][chosen[i]] for i in range(labels))
    learnable = [label for label in range(labels) if truth[:, label].any()]
    for _ in range(passes):
        for label in learnable:  # one without a positive validation record keeps 0.5
            others = total - counts[label][chosen[label]]
            tp, fp, fn = (others[None, :] + counts[label]).T
            f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
            best = np.flatnonzero(f1 == f1.max())
            distance = np.abs(candidates[label][best] - DEFAULT_THRESHOLD)
            chosen[label] = int(best[np.argmin(distance)])
            total = others + counts[label][chosen[label]]
    return np.array([candidates[i][chosen[i]] for i in range(labels)])


def predicted_sets(probabilities: npt.ArrayLike, thresholds: npt.ArrayLike) -> np.ndarray:
    """0/1 predictions: each label whose probability reaches its threshold."""
    values = np.asarray(probabilities, dtype=np.float64)
    chosen: np.ndarray = (values >= np.asarray(thresholds, dtype=np.float64)[None, :]).astype(
        np.int64
    )
    return chosen


def record_counts(predicted: npt.ArrayLike, gold: npt.ArrayLike) -> np.ndarray:
    """Per record: (true positives, false positives, false negatives) over its labels."""
    guess = np.asarray(predicted, dtype=bool)
    truth = np.asarray(gold, dtype=bool)
    return np.stack(
        [(guess & truth).sum(axis=1), (guess & ~truth).sum(axis=1), (~guess & truth).sum(axis=1)],
        axis=1,
    ).astype(np.int64)


def example_f1(counts: npt.ArrayLike) -> np.ndarray:
    """Each record's F1 from its counts; 1 for an empty set predicted empty."""
    tp, fp, fn = np.asarray(counts, dtype=np.float64).T
    denominator = 2 * tp + fp + fn
    scores: np.ndarray = np.where(denominator == 0, 1.0, 2 * tp / np.maximum(denominator, 1))
    return scores


def micro_f1(counts: npt.ArrayLike) -> float:
    tp, fp, fn = np.asarray(counts, dtype=np.float64).sum(axis=0)
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 1.0


def per_label_f1(
    predicted: npt.ArrayLike, gold: npt.ArrayLike, names: tuple[str, ...] | list[str]
) -> dict[str, float]:
    """Label -> F1, for the labels in the gold sets or the predictions (macro-F1's labels)."""
    guess = np.asarray(predicted, dtype=bool)
    truth = np.asarray(gold, dtype=bool)
    scores = {}
    for label, name in enumerate(names):
        tp = int((guess[:, label] & truth[:, label]).sum())
        fp = int((guess[:, label] & ~truth[:, label]).sum())
        fn = int((~guess[:, label] & truth[:, label]).sum())
        if tp + fp + fn:
            scores[name] = 2 * tp / (2 * tp + fp + fn)
    return scores


def macro_f1_of(predicted: np.ndarray, gold: np.ndarray) -> float:
    """Macro-F1 over the labels present in ``gold`` or ``predicted`` (vectorised: the
    bootstrap calls it per resample)."""
    tp = (predicted & gold).sum(axis=0)
    fp = (predicted & ~gold).sum(axis=0)
    fn = (~predicted & gold).sum(axis=0)
    present = (tp + fp + fn) > 0
    if not present.any():
        return 1.0
    return float((2 * tp[present] / (2 * tp[present] + fp[present] + fn[present])).mean())


def label_ece(probabilities: npt.ArrayLike, gold: npt.ArrayLike) -> np.ndarray:
    """Each label's expected calibration error as a binary forecast (equal-width bins)."""
    values = np.asarray(probabilities, dtype=np.float64)
    truth = np.asarray(gold, dtype=np.float64)
    bins = np.minimum((values * ECE_BINS).astype(int), ECE_BINS - 1)
    errors = np.zeros(values.shape[1])
    for label in range(values.shape[1]):
        total = 0.0
        for b in range(ECE_BINS):
            inside = bins[:, label] == b
            if inside.any():
                gap = abs(values[inside, label].mean() - truth[inside, label].mean())
                total += inside.sum() * gap
        errors[label] = total / len(values)
    return errors


def multi_label_metrics(
    probabilities: npt.ArrayLike,
    gold: npt.ArrayLike,
    thresholds: npt.ArrayLike,
    names: tuple[str, ...] | list[str],
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The metrics of ``eval.json`` and the per-record arrays kept for the bootstrap
    (``counts``, ``example_f1``, ``subset_accuracy``)."""
    truth = np.asarray(gold, dtype=np.int64)
    predicted = predicted_sets(probabilities, thresholds)
    counts = record_counts(predicted, truth)
    examples = example_f1(counts)
    exact = (predicted == truth).all(axis=1).astype(np.float64)
    ece = label_ece(probabilities, truth)
    metrics = {
        "micro_f1": micro_f1(counts),
        "macro_f1": macro_f1_of(predicted.astype(bool), truth.astype(bool)),
        "subset_accuracy": float(exact.mean()),
        "example_f1": float(examples.mean()),
        "ece": float(ece.mean()),
        "per_label_f1": per_label_f1(predicted, truth, names),
        "per_label_ece": {name: float(ece[i]) for i, name in enumerate(names)},
        "no_label_records": int((truth.sum(axis=1) == 0).sum()),
    }
    arrays = {"counts": counts, "example_f1": examples, "subset_accuracy": exact}
    return metrics, arrays


def macro_f1_interval(
    predicted: npt.ArrayLike,
    gold: npt.ArrayLike,
    *,
    resamples: int,
    confidence: float,
    seed: int = 0,
) -> tuple[float, float]:
    """A percentile bootstrap interval of macro-F1 (records resampled with replacement)."""
    guess = np.asarray(predicted, dtype=bool)
    truth = np.asarray(gold, dtype=bool)
    rng = np.random.default_rng(seed)
    values = [
        macro_f1_of(guess[rows], truth[rows])
        for rows in (rng.integers(0, len(truth), len(truth)) for _ in range(resamples))
    ]
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)
