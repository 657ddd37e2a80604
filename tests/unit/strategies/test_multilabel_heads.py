"""Label sets in frozen's one-vs-rest head and SetFit's shots and pairs: labels without both
positive and negative records, the pair rule, per-label sampling, and no multi-label export."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load, save
from sklearn.linear_model import LogisticRegression

from adaptlab.strategies.frozen import HeadConfig, LinearHeadClassifier, _fit_head, _head_from
from adaptlab.strategies.setfit import generate_pairs, same_class, sample_shots, shots_per_class

# Two clusters of embeddings; label 0 is the first cluster, label 1 the second, label 2 is
# never present (no positive) and label 3 always (no negative).
RNG = np.random.default_rng(0)
X = np.vstack([RNG.normal(1.0, 0.3, (10, 4)), RNG.normal(-1.0, 0.3, (10, 4))]).astype(np.float32)
Y = np.zeros((20, 4), dtype=np.int64)
Y[:10, 0] = 1
Y[10:, 1] = 1
Y[:, 3] = 1


def reloaded(kind: str, tensors: dict[str, np.ndarray]) -> Any:
    """The head as ``load`` rebuilds it, after a trip through safetensors bytes."""
    return _head_from(kind, load(save(tensors)), multi_label=True)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("settings", [{}, {"head": "mlp", "hidden_size": 8, "max_iter": 300}])
def test_one_vs_rest_gives_constant_labels_their_training_frequency(
    settings: dict[str, Any],
) -> None:
    head, tensors = _fit_head(HeadConfig(**settings), X, Y, 4, seed=0)

    probabilities = head(X)

    assert probabilities.shape == (20, 4)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    np.testing.assert_array_equal(probabilities[:, 2], 0.0)  # no positive record
    np.testing.assert_array_equal(probabilities[:, 3], 1.0)  # no negative record
    assert (probabilities[:10, 0] > 0.5).all() and (probabilities[10:, 0] < 0.5).all()
    np.testing.assert_array_equal(reloaded(head_kind(settings), tensors)(X), probabilities)


def head_kind(settings: dict[str, Any]) -> str:
    return str(settings.get("head", "logistic"))


def test_one_vs_rest_logistic_is_a_binary_logistic_regression_per_label() -> None:
    config = HeadConfig()
    head, _ = _fit_head(config, X, Y, 4, seed=0)

    for label in (0, 1):
        alone = LogisticRegression(C=config.regularization_c, max_iter=config.max_iter)
        expected = alone.fit(X, Y[:, label]).predict_proba(X)[:, 1]
        np.testing.assert_allclose(head(X)[:, label], expected, atol=1e-5)


def test_a_multi_label_head_refuses_export_with_a_clear_error() -> None:
    head, _ = _fit_head(HeadConfig(), X, Y, 4, seed=0)
    classifier = LinearHeadClassifier(encoder=None, head=head, label_names=list("abcd"))  # type: ignore[arg-type]

    with pytest.raises(ValueError, match="multi-label export is not supported yet"):
        classifier.export_parts()


# --------------------------------------------------------------------------- SetFit

SETS = np.array(
    [
        [1, 0, 0],  # 0
        [1, 1, 0],  # 1
        [0, 1, 0],  # 2
        [0, 0, 1],  # 3
        [0, 0, 1],  # 4
        [0, 0, 0],  # 5: no label
        [0, 0, 0],  # 6: no label
    ]
)


def test_shots_sharing_a_label_are_the_same_class_and_unlabelled_ones_never_are() -> None:
    same = same_class(SETS)

    assert same[0, 1] and same[1, 2] and not same[0, 2]  # sharing is not transitive
    assert same[3, 4] and not same[2, 3]
    assert not same[5, 6] and not same[5, 0]  # SetFit's rule: no common label, negative
    assert same.diagonal().all()


def test_label_set_pairs_follow_the_rule_and_are_balanced() -> None:
    pairs = generate_pairs(SETS, iterations=3, seed=0)

    shares = (SETS[pairs.first] * SETS[pairs.second]).sum(axis=1) > 0
    np.testing.assert_array_equal(pairs.targets, shares.astype(np.float32))
    assert set(pairs.first.tolist()) == {0, 1, 2, 3, 4}  # shots without a label: no anchors
    assert {5, 6} <= set(pairs.second[pairs.targets == 0].tolist())  # but negatives
    assert int(shares.sum()) == int((~shares).sum()) == 3 * 5
    assert (pairs.first != pairs.second).all()


def test_label_set_pairs_need_a_shared_label_and_a_disjoint_pair() -> None:
    with pytest.raises(ValueError, match="no label in common"):
        generate_pairs(np.array([[1, 1], [1, 0], [1, 0]]), 1, seed=0)  # all share label 0
    with pytest.raises(ValueError, match="sharing a label"):
        generate_pairs(np.array([[1, 0], [0, 1], [0, 0]]), 1, seed=0)


def label_sets(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n, 4)) < [0.5, 0.3, 0.1, 0.0]).astype(np.int64)  # label 3: never


def test_shots_are_drawn_per_label_and_unlabelled_records_are_drawn_too() -> None:
    sets = label_sets(60, seed=1)
    shots = sample_shots(sets, 4, seed=0)
    chosen = sets[shots]

    assert len(set(shots.tolist())) == len(shots) and (np.diff(shots) > 0).all()
    carried = chosen.sum(axis=0)
    assert (carried >= np.minimum(4, sets.sum(axis=0))).all()  # every label filled
    unlabelled = int((~sets.any(axis=1)).sum())
    assert int((~chosen.any(axis=1)).sum()) == min(4, unlabelled)
    labelled = int(chosen.any(axis=1).sum())
    assert labelled <= 4 * 3  # a record counts for each of its labels
    np.testing.assert_array_equal(shots, sample_shots(sets, 4, seed=0))


def test_labels_short_of_shots_are_reported_by_name() -> None:
    sets = label_sets(60, seed=1)
    chosen = sets[sample_shots(sets, 4, seed=0)]

    names = ("a", "b", "c", "never")
    short = shots_per_class(chosen, 4, names)

    carried = chosen.sum(axis=0)
    assert short == {name: int(n) for name, n in zip(names, carried, strict=True) if n < 4}
    assert short["never"] == 0
