"""Classification metrics: hand-computed F1, exact ECE on constructed sets, input validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from adaptlab.evaluate.metrics import (
    classification_metrics,
    expected_calibration_error,
    reliability_bins,
)

LABELS = ["card", "loan", "fraud", "unused"]


def one_hot_probabilities(predicted: list[int], confidence: list[float], k: int) -> np.ndarray:
    """Rows with ``confidence`` on the predicted class and the rest spread over the others."""
    rows = np.zeros((len(predicted), k))
    for row, (label, top) in enumerate(zip(predicted, confidence, strict=True)):
        rows[row, :] = (1 - top) / (k - 1)
        rows[row, label] = top
    return rows


def calibrated_set(confidences: list[float], per_bin: int) -> tuple[np.ndarray, np.ndarray]:
    """``per_bin`` examples at each confidence, exactly that share of them correct."""
    confidence, correct = [], []
    for value in confidences:
        right = round(value * per_bin)
        confidence += [value] * per_bin
        correct += [True] * right + [False] * (per_bin - right)
    return np.array(confidence), np.array(correct)


def test_hand_computed_accuracy_and_f1_with_label_names() -> None:
    gold = np.array([0, 0, 1, 2])
    predicted = [0, 1, 1, 1]
    probabilities = one_hot_probabilities(predicted, [0.7, 0.6, 0.8, 0.5], k=4)
    metrics = classification_metrics(probabilities, gold, LABELS)
    # card: TP 1, 2 gold, 1 predicted -> 2/3; loan: TP 1, 1 gold, 3 predicted -> 1/2; fraud: 0.
    assert metrics.per_class_f1 == pytest.approx({"card": 2 / 3, "loan": 0.5, "fraud": 0.0})
    assert "unused" not in metrics.per_class_f1
    assert metrics.accuracy == 0.5
    assert metrics.macro_f1 == pytest.approx((2 / 3 + 0.5) / 3)
    assert metrics.macro_f1 == pytest.approx(f1_score(gold, predicted, average="macro"))
    assert metrics.n == 4


def test_macro_f1_matches_sklearn_on_random_predictions() -> None:
    rng = np.random.default_rng(3)
    probabilities = rng.dirichlet(np.full(6, 0.3), size=200)
    gold = rng.integers(0, 6, size=200)
    metrics = classification_metrics(probabilities, gold, [f"c{i}" for i in range(6)])
    predicted = probabilities.argmax(axis=1)
    assert metrics.macro_f1 == pytest.approx(f1_score(gold, predicted, average="macro"))
    assert metrics.accuracy == pytest.approx(np.mean(predicted == gold))


def test_perfectly_calibrated_set_has_zero_ece() -> None:
    confidence, correct = calibrated_set([0.55, 0.65, 0.75, 0.85, 0.95], per_bin=20)
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.0, abs=1e-12)


def test_overconfident_set_has_its_constructed_gap() -> None:
    # 30 examples at 0.95 with 18 right (gap 0.35), 10 at 0.75 with 5 right (gap 0.25).
    confidence = np.concatenate([np.full(30, 0.95), np.full(10, 0.75)])
    correct = np.array([True] * 18 + [False] * 12 + [True] * 5 + [False] * 5)
    expected = 30 / 40 * 0.35 + 10 / 40 * 0.25
    assert expected_calibration_error(confidence, correct) == pytest.approx(expected)


def test_gaps_cancel_within_a_bin_but_not_across_bins() -> None:
    # 15 bins put 0.81 in (0.8, 0.867] (right: under-confident by 0.19) and 0.79 in
    # (0.733, 0.8] (wrong: over-confident by 0.79); eq. 3 adds the two gaps.
    confidence = np.array([0.81, 0.81, 0.79, 0.79])
    correct = np.array([True, True, False, False])
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.5 * 0.19 + 0.5 * 0.79)
    # In one bin they cancel down to |accuracy 0.5 - mean confidence 0.8|.
    assert expected_calibration_error(confidence, correct, bins=1) == pytest.approx(0.3)


def test_classification_metrics_reports_the_ece_of_its_confidences() -> None:
    predicted = [0] * 10 + [1] * 10
    probabilities = one_hot_probabilities(predicted, [0.9] * 20, k=2)
    gold = np.array([0] * 6 + [1] * 4 + [1] * 6 + [0] * 4)  # 60 % right at 0.9 confidence
    metrics = classification_metrics(probabilities, gold, ["no", "yes"])
    assert metrics.ece == pytest.approx(0.3)


def test_confident_wrong_rate_counts_wrong_at_or_above_threshold_over_all_examples() -> None:
    predicted = [1, 1, 1, 1, 0, 0, 2, 2, 2, 2]
    confidence = [0.95, 0.9, 0.99, 0.89, 0.95, 0.97, 0.5, 0.6, 0.4, 0.45]
    gold = np.array([0, 0, 0, 0, 0, 0, 2, 2, 2, 2])
    probabilities = one_hot_probabilities(predicted, confidence, k=3)
    metrics = classification_metrics(probabilities, gold, ["a", "b", "c"])
    # Wrong at >= 0.9: 0.95, 0.9, 0.99; the wrong one at 0.89 does not count; the rest are right.
    assert metrics.confident_wrong_rate == pytest.approx(3 / 10)
    assert metrics.confident_wrong_threshold == 0.9
    stricter = classification_metrics(
        probabilities, gold, ["a", "b", "c"], confident_threshold=0.98
    )
    assert stricter.confident_wrong_rate == pytest.approx(1 / 10)


def test_reliability_bins_put_edges_in_the_lower_bin_and_mark_empty_bins() -> None:
    confidence = np.array([0.0, 0.2, 0.21, 0.6, 0.6, 1.0])
    correct = np.array([False, True, True, True, False, True])
    bins = reliability_bins(confidence, correct, bins=5)
    assert [b["lower"] for b in bins] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert [b["upper"] for b in bins] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert [b["count"] for b in bins] == [2, 1, 2, 0, 1]
    assert bins[0]["accuracy"] == 0.5 and bins[0]["confidence"] == pytest.approx(0.1)
    assert bins[2]["accuracy"] == 0.5 and bins[2]["confidence"] == pytest.approx(0.6)
    assert bins[3]["accuracy"] is None and bins[3]["confidence"] is None
    gaps = sum(
        b["count"] * abs(b["accuracy"] - b["confidence"])
        for b in bins
        if b["accuracy"] is not None and b["confidence"] is not None
    )
    assert expected_calibration_error(confidence, correct, bins=5) == pytest.approx(gaps / 6)


def test_to_dict_is_json_ready_and_a_copy() -> None:
    metrics = classification_metrics(np.array([[0.2, 0.8]]), np.array([1]), ["no", "yes"])
    payload = metrics.to_dict()
    payload["per_class_f1"]["yes"] = -1.0
    assert metrics.per_class_f1 == {"yes": 1.0}
    assert json.loads(json.dumps(metrics.to_dict()))["per_class_f1"] == {"yes": 1.0}


@pytest.mark.parametrize(
    ("probabilities", "gold", "message"),
    [
        (np.array([0.5, 0.5]), np.array([0]), r"shape \(2,\): expected \(n, k\)"),
        (np.zeros((0, 2)), np.array([], dtype=int), r"shape \(0, 2\)"),
        (np.array([[0.2, 0.3, 0.5]]), np.array([0]), "3 columns but label_names has 2"),
        (np.array([[np.nan, 1.0]]), np.array([0]), "row 0 is not finite"),
        (np.array([[1.5, -0.5]]), np.array([0]), "row 0 has a negative entry"),
        (np.array([[0.5, 0.5], [2.0, 3.0]]), np.array([0, 1]), "row 1 sums to 5.*logits"),
        (np.array([[0.5, 0.5]]), np.array([2]), r"gold\[0\] = 2: .* \[0, 2\)"),
        (np.array([[0.5, 0.5]]), np.array([-1]), r"gold\[0\] = -1"),
        (np.array([[0.5, 0.5]]), np.array([0.0]), "gold has dtype float64"),
        (np.array([[0.5, 0.5]]), np.array([0, 1]), r"gold has shape \(2,\): expected \(1,\)"),
    ],
)
def test_bad_inputs_are_refused_with_the_field_named(
    probabilities: np.ndarray, gold: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        classification_metrics(probabilities, gold, ["no", "yes"])


def test_row_sums_within_tolerance_are_accepted() -> None:
    metrics = classification_metrics(np.array([[0.3, 0.6995]]), np.array([1]), ["no", "yes"])
    assert metrics.accuracy == 1.0


def test_bad_settings_are_refused() -> None:
    probabilities, gold = np.array([[0.5, 0.5]]), np.array([0])
    with pytest.raises(ValueError, match="names must be unique"):
        classification_metrics(probabilities, gold, ["x", "x"])
    with pytest.raises(ValueError, match=r"confident_threshold = 0: must be in \(0, 1\]"):
        classification_metrics(probabilities, gold, ["no", "yes"], confident_threshold=0)
    with pytest.raises(ValueError, match="bins = 0: must be >= 1"):
        classification_metrics(probabilities, gold, ["no", "yes"], bins=0)


def test_calibration_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match=r"confidence must be finite and in \[0, 1\]"):
        expected_calibration_error(np.array([1.2]), np.array([True]))
    with pytest.raises(ValueError, match="correct must hold only booleans or 0/1"):
        expected_calibration_error(np.array([0.5]), np.array([2]))
    with pytest.raises(ValueError, match=r"correct has shape \(2,\): expected \(1,\)"):
        reliability_bins(np.array([0.5]), np.array([True, False]))
    with pytest.raises(ValueError, match=r"confidence has shape \(0,\)"):
        expected_calibration_error(np.array([]), np.array([]))
