"""The out-of-scope rule on hand-made probabilities: which threshold each rule picks, what it
rejects, and the metrics, each checked against a count done by hand."""

from __future__ import annotations

import numpy as np
import pytest

from adaptlab.evaluate.open_set import (
    OUT_OF_SCOPE,
    OpenSetError,
    Rejection,
    auroc,
    choose_threshold,
    open_set_metrics,
    per_query,
    predictions,
    tradeoff_curve,
)

# Two in-scope labels; rows 0-3 in scope, rows 4-5 out of scope.
PROBABILITIES = np.array(
    [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55], [0.52, 0.48], [0.3, 0.7]]
)
GOLD = np.array([0, 1, 0, 0, OUT_OF_SCOPE, OUT_OF_SCOPE])


def rule(threshold: float, column: int | None = None) -> Rejection:
    return Rejection(threshold, "in_scope_rejection", 0.05, 0, 0, 0.0, column)


def test_a_query_under_the_threshold_is_rejected_and_one_at_it_is_kept() -> None:
    assert predictions(PROBABILITIES, rule(0.6)).tolist() == [0, 1, 0, -1, -1, 1]
    assert predictions(PROBABILITIES, rule(0.0)).tolist() == [0, 1, 0, 1, 0, 1]


def test_the_out_of_scope_column_rejects_and_is_not_a_score() -> None:
    trained = np.array([[0.5, 0.2, 0.3], [0.1, 0.3, 0.6]])  # column 2: out of scope
    assert predictions(trained, rule(0.25, column=2)).tolist() == [0, -1]
    assert per_query(trained, [0, -1], rule(0.25, column=2))["score"].tolist() == [0.5, 0.3]


def test_in_scope_rejection_picks_an_observed_in_scope_score() -> None:
    scores = np.linspace(0.3, 0.99, 40)  # in-scope validation scores
    validation = np.stack([scores, 1 - scores], axis=1)
    chosen = choose_threshold(
        validation, np.zeros(40, dtype=int), rule="in_scope_rejection", target=0.1,
        out_of_scope_column=None,
    )  # fmt: skip
    assert chosen.threshold in scores
    assert chosen.validation_in_scope_rejected == pytest.approx(3 / 40)  # 0.1*39 -> index 3
    assert chosen.validation_out_of_scope == 0 and chosen.target == 0.1


def test_joint_accuracy_picks_the_best_threshold_and_needs_out_of_scope_queries() -> None:
    chosen = choose_threshold(
        PROBABILITIES, GOLD, rule="joint_accuracy", target=0.05, out_of_scope_column=None
    )
    # Thresholds 0.6 and 0.7 reject row 4 (0.52); 0.6 keeps row 2 (0.6) but rejects row 3
    # (wrong anyway): 4 of 6 right, the most any threshold gets, and 0.55 < 0.6 is the lowest.
    assert predictions(PROBABILITIES, chosen).tolist().count(OUT_OF_SCOPE) >= 1
    best = max(
        float((predictions(PROBABILITIES, rule(t)) == GOLD).mean())
        for t in [0.0, *PROBABILITIES.max(axis=1)]
    )
    assert float((predictions(PROBABILITIES, chosen) == GOLD).mean()) == best
    with pytest.raises(OpenSetError, match="needs out-of-scope queries"):
        choose_threshold(
            PROBABILITIES[:4], GOLD[:4], rule="joint_accuracy", target=0.05,
            out_of_scope_column=None,
        )  # fmt: skip


def test_the_metrics_are_the_hand_counts() -> None:
    measured = open_set_metrics(PROBABILITIES, GOLD, rule(0.6))
    # predicted [0, 1, 0, -1, -1, 1]: in scope right 3/4; out of scope rejected 1/2;
    # rejected 2, of which 1 out of scope; overall right 3 + 1 of 6.
    assert measured["in_scope_accuracy"] == pytest.approx(3 / 4)
    assert measured["out_of_scope_recall"] == pytest.approx(1 / 2)
    assert measured["out_of_scope_precision"] == pytest.approx(1 / 2)
    assert measured["out_of_scope_f1"] == pytest.approx(1 / 2)
    assert measured["overall_accuracy"] == pytest.approx(4 / 6)
    assert measured["in_scope_rejected"] == pytest.approx(1 / 4)
    # scores in scope 0.9 0.8 0.6 0.55, out 0.52 0.7: pairs ranked right 4 + 3 + 1 + 1 of 8
    assert measured["auroc"] == pytest.approx(6 / 8)
    rows = per_query(PROBABILITIES, GOLD, rule(0.6))
    assert np.isnan(rows["in_scope_accuracy"][4:]).all()
    assert np.isnan(rows["out_of_scope_recall"][:4]).all()


def test_auroc_without_both_kinds_is_undefined() -> None:
    assert auroc([0.1, 0.9], [True, True]) is None
    assert auroc([0.1, 0.9], [False, True]) == 1.0


def test_the_tradeoff_curve_rejects_more_of_both_as_the_threshold_rises() -> None:
    curve = tradeoff_curve(PROBABILITIES.max(axis=1), GOLD != OUT_OF_SCOPE, points=7)
    inside = [point["in_scope_rejected"] for point in curve]
    outside = [point["out_of_scope_rejected"] for point in curve]
    assert inside == sorted(inside) and outside == sorted(outside)
    assert curve[0]["in_scope_rejected"] == 0.0
