"""Multi-label thresholds and metrics on hand-made probabilities, against counts done by hand
and against scikit-learn's own F1s."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from adaptlab.evaluate.multilabel import (
    DEFAULT_THRESHOLD,
    example_f1,
    label_ece,
    macro_f1_interval,
    multi_label_metrics,
    predicted_sets,
    record_counts,
    tune_thresholds,
)

NAMES = ("why", "spa", "broken")
PROBABILITIES = np.array(
    [[0.9, 0.2, 0.6], [0.3, 0.8, 0.1], [0.55, 0.45, 0.7], [0.1, 0.1, 0.2], [0.7, 0.9, 0.4]]
)
GOLD = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1]])


def test_the_thresholds_maximise_validation_micro_f1_label_by_label() -> None:
    thresholds = tune_thresholds(PROBABILITIES, GOLD)
    best = f1_score(GOLD, predicted_sets(PROBABILITIES, thresholds), average="micro")
    assert best >= f1_score(GOLD, predicted_sets(PROBABILITIES, [0.5] * 3), average="micro")
    for label in range(len(NAMES)):  # no single label's other candidate does better
        for candidate in PROBABILITIES[:, label]:
            changed = thresholds.copy()
            changed[label] = candidate
            other = f1_score(GOLD, predicted_sets(PROBABILITIES, changed), average="micro")
            assert other <= best + 1e-12


def test_a_rare_label_at_the_floor_is_not_predicted_for_every_record() -> None:
    """One positive among 40 records, with the model's floor probability for every record:
    the label's own F1 would pick the floor (F1 0.05 > 0) and flood the eval set; micro-F1
    keeps it off."""
    probabilities = np.full((40, 2), 0.005)
    gold = np.zeros((40, 2), dtype=int)
    probabilities[:20, 0], gold[:20, 0] = 0.9, 1  # a well-predicted common label
    gold[30, 1] = 1  # the rare one, at the floor like every other record
    thresholds = tune_thresholds(probabilities, gold)
    assert predicted_sets(probabilities, thresholds)[:, 1].sum() == 0


def test_a_label_without_validation_positives_keeps_the_default() -> None:
    gold = GOLD.copy()
    gold[:, 1] = 0
    assert tune_thresholds(PROBABILITIES, gold)[1] == DEFAULT_THRESHOLD


def test_the_metrics_equal_scikit_learns_and_the_hand_counts() -> None:
    thresholds = np.array([0.5, 0.5, 0.5])
    metrics, arrays = multi_label_metrics(PROBABILITIES, GOLD, thresholds, NAMES)
    predicted = predicted_sets(PROBABILITIES, thresholds)
    assert metrics["micro_f1"] == pytest.approx(f1_score(GOLD, predicted, average="micro"))
    assert metrics["macro_f1"] == pytest.approx(f1_score(GOLD, predicted, average="macro"))
    assert metrics["subset_accuracy"] == pytest.approx(3 / 5)  # records 0, 1, 3 exact
    # record 3: empty predicted empty -> 1; record 2: {why, broken} vs {why}: 2*1/(2+1) = 2/3
    assert arrays["example_f1"][3] == 1.0
    assert arrays["example_f1"][2] == pytest.approx(2 / 3)
    assert metrics["no_label_records"] == 1
    assert arrays["counts"].tolist()[4] == [2, 0, 1]  # spa, why found; broken missed
    assert set(metrics["per_label_f1"]) == set(NAMES)


def test_counts_and_example_f1_of_sets() -> None:
    counts = record_counts([[1, 0], [0, 0], [1, 1]], [[1, 1], [0, 0], [0, 1]])
    assert counts.tolist() == [[1, 0, 1], [0, 0, 0], [1, 1, 0]]
    assert example_f1(counts).tolist() == pytest.approx([2 / 3, 1.0, 2 / 3])


def test_per_label_calibration_error_is_zero_when_frequencies_match() -> None:
    probabilities = np.array([[0.25], [0.25], [0.25], [0.25]])
    assert label_ece(probabilities, np.array([[1], [0], [0], [0]]))[0] == pytest.approx(0.0)
    assert label_ece(probabilities, np.array([[1], [1], [1], [1]]))[0] == pytest.approx(0.75)


def test_the_macro_f1_interval_holds_the_value() -> None:
    predicted = predicted_sets(PROBABILITIES, [0.5, 0.5, 0.5])
    low, high = macro_f1_interval(predicted, GOLD, resamples=200, confidence=0.9)
    value = f1_score(GOLD, predicted, average="macro")
    assert low <= value <= high
