"""Paired bootstrap: point estimates, interval behaviour, why pairing matters, and macro-F1."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from adaptlab.evaluate import bootstrap
from adaptlab.evaluate.bootstrap import (
    bootstrap_interval,
    cluster_median_interval,
    median_interval,
    paired_bootstrap,
    paired_bootstrap_f1,
    resampled_indices,
    two_sided_p_value,
)


def correctness(n: int, right: int, seed: int) -> np.ndarray:
    """1/0 scores with exactly ``right`` ones at random positions."""
    scores = np.zeros(n)
    scores[np.random.default_rng(seed).permutation(n)[:right]] = 1.0
    return scores


def better_by(n: int, right: int, extra: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """System a right on ``extra`` items that b gets wrong, and equal everywhere else."""
    b = correctness(n, right, seed)
    a = b.copy()
    a[np.flatnonzero(b == 0)[:extra]] = 1.0
    return a, b


def unpaired_interval(a: np.ndarray, b: np.ndarray, resamples: int, seed: int) -> float:
    """Width of the 95 % CI of mean(a) - mean(b) when a and b are resampled independently."""
    rng = np.random.default_rng(seed)
    n = len(a)
    means_a = a[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    means_b = b[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    low, high = np.quantile(means_a - means_b, [0.025, 0.975])
    return float(high - low)


def test_identical_systems_differ_by_zero_and_not_significantly() -> None:
    scores = correctness(500, 350, seed=1)
    result = paired_bootstrap(scores, scores.copy(), names=("x", "y"))
    assert result.difference == 0.0 and result.low == 0.0 and result.high == 0.0
    assert not result.significant()
    assert result.p_value == 1.0
    assert (result.a, result.b, result.metric, result.resamples) == ("x", "y", "accuracy", 2000)


def test_sixty_more_right_of_a_thousand_is_significant_around_0_06() -> None:
    a, b = better_by(1000, 640, extra=60)
    result = paired_bootstrap(a, b)
    assert result.difference == pytest.approx(0.06)
    assert 0.03 < result.low < 0.06 < result.high < 0.09
    assert result.significant()
    # No resample can favour b (a is never worse on any item): p is the add-one floor.
    assert result.p_value == pytest.approx(2 / 2001)
    reverse = paired_bootstrap(b, a)
    assert reverse.difference == pytest.approx(-0.06) and reverse.significant()
    assert (reverse.low, reverse.high) == pytest.approx((-result.high, -result.low))


def test_a_small_noisy_difference_is_not_significant() -> None:
    b = correctness(200, 140, seed=2)
    a = b.copy()
    a[np.flatnonzero(b == 0)[:3]] = 1.0  # a fixes 3 items
    a[np.flatnonzero(b == 1)[:2]] = 0.0  # and breaks 2
    result = paired_bootstrap(a, b)
    assert result.difference == pytest.approx(0.005)
    assert result.low < 0 < result.high and not result.significant()
    assert 0.3 < result.p_value <= 1.0


def test_interval_shrinks_with_the_number_of_items() -> None:
    small = paired_bootstrap(*better_by(400, 256, extra=24))
    large = paired_bootstrap(*better_by(4000, 2560, extra=240))
    assert small.difference == pytest.approx(large.difference)
    # Width scales as 1 / sqrt(n): ten times the items, about a third of the width.
    ratio = (large.high - large.low) / (small.high - small.low)
    assert 0.2 < ratio < 0.45


def test_same_seed_same_result_and_other_seed_other_interval() -> None:
    a, b = correctness(300, 200, seed=3), correctness(300, 190, seed=4)
    first = paired_bootstrap(a, b, seed=11)
    assert paired_bootstrap(a, b, seed=11) == first
    other = paired_bootstrap(a, b, seed=12)
    assert other.difference == first.difference
    assert (other.low, other.high) != (first.low, first.high)


def test_pairing_narrows_the_interval_for_correlated_systems() -> None:
    # a is b with 25 items fixed and 5 broken: the systems agree on 970 of 1,000 items. Item
    # difficulty is shared, so only the 30 disagreements carry information about a - b;
    # resampling the systems independently adds each one's full item-sampling noise.
    b = correctness(1000, 700, seed=5)
    a = b.copy()
    a[np.flatnonzero(b == 0)[:25]] = 1.0
    a[np.flatnonzero(b == 1)[:5]] = 0.0
    paired = paired_bootstrap(a, b)
    unpaired_width = unpaired_interval(a, b, resamples=2000, seed=0)
    assert paired.significant()
    assert (paired.high - paired.low) < unpaired_width / 3
    # Unpaired, the same data would not even show a difference.
    assert unpaired_width / 2 > paired.difference


def test_custom_statistic_uses_the_same_resamples_as_the_mean() -> None:
    a, b = correctness(250, 180, seed=6), correctness(250, 160, seed=7)
    default = paired_bootstrap(a, b, resamples=300)
    custom = paired_bootstrap(a, b, resamples=300, statistic=lambda s: float(np.mean(s)))
    assert custom.difference == pytest.approx(default.difference)
    assert (custom.low, custom.high) == pytest.approx((default.low, default.high))
    rng = np.random.default_rng(6)
    latency_a, latency_b = rng.exponential(1.0, 250), rng.exponential(2.0, 250)
    median = paired_bootstrap(
        latency_a, latency_b, resamples=300, statistic=np.median, metric="median_ms"
    )
    assert median.difference == np.median(latency_a) - np.median(latency_b)
    assert median.metric == "median_ms" and median.high < 0


def test_chunking_bounds_memory_without_changing_draw_shapes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bootstrap, "INDEX_CHUNK_ELEMENTS", 1000)
    chunks = list(resampled_indices(300, 250, seed=0))
    assert [chunk.shape for chunk in chunks] == [(3, 300)] * 83 + [(1, 300)]
    assert all(chunk.min() >= 0 and chunk.max() < 300 for chunk in chunks)
    a, b = better_by(300, 150, extra=30)
    result = paired_bootstrap(a, b, resamples=250)
    assert result.resamples == 250 and result.significant()


def test_bootstrap_interval_brackets_the_mean() -> None:
    scores = correctness(1000, 700, seed=8)
    low, high = bootstrap_interval(scores)
    # Normal approximation: 0.7 +- 1.96 * sqrt(0.7 * 0.3 / 1000) = 0.7 +- 0.0284.
    assert low == pytest.approx(0.7 - 0.0284, abs=0.006)
    assert high == pytest.approx(0.7 + 0.0284, abs=0.006)
    narrow_low, narrow_high = bootstrap_interval(scores, confidence=0.5)
    assert low < narrow_low < 0.7 < narrow_high < high
    assert bootstrap_interval(scores, seed=1) != (low, high)


def test_median_intervals_of_values_and_of_clusters() -> None:
    values = np.random.default_rng(3).normal(10.0, 1.0, 400)
    low, high = median_interval(values)
    # The median's standard error is about 1.2533 * sigma / sqrt(n) = 0.063.
    assert low == pytest.approx(np.median(values) - 1.96 * 0.063, abs=0.04)
    assert high == pytest.approx(np.median(values) + 1.96 * 0.063, abs=0.04)
    # Four clusters of the same 400 values: only four things vary, so the interval widens.
    clusters = np.sort(values).reshape(4, 100)
    cluster_low, cluster_high = cluster_median_interval(list(clusters))
    assert cluster_low < low and high < cluster_high
    with pytest.raises(ValueError, match="clusters is empty"):
        cluster_median_interval([])
    with pytest.raises(ValueError, match=r"clusters\[1\] has shape \(0,\)"):
        cluster_median_interval([[1.0], []])


def test_p_value_counts_ties_and_opposite_signs_and_never_reaches_zero() -> None:
    differences = np.array([0.1] * 90 + [0.0] * 6 + [-0.1] * 4)
    assert two_sided_p_value(0.05, differences) == pytest.approx(2 * 11 / 101)
    assert two_sided_p_value(-0.05, differences) == 1.0
    assert two_sided_p_value(0.05, np.full(100, 0.1)) == pytest.approx(2 / 101)
    assert two_sided_p_value(0.0, differences) == 1.0


def test_macro_f1_point_estimate_equals_sklearn_difference() -> None:
    rng = np.random.default_rng(9)
    gold = rng.integers(0, 12, size=400)
    pred_a = np.where(rng.random(400) < 0.7, gold, rng.integers(0, 12, size=400))
    pred_b = np.where(rng.random(400) < 0.5, gold, rng.integers(0, 13, size=400))
    result = paired_bootstrap_f1(pred_a, pred_b, gold, 13, names=("big", "small"), resamples=500)
    expected = f1_score(gold, pred_a, average="macro") - f1_score(gold, pred_b, average="macro")
    assert result.difference == pytest.approx(expected, abs=1e-12)
    assert result.metric == "macro_f1" and result.significant() and result.low > 0


def test_every_resampled_macro_f1_equals_sklearn_on_that_resample() -> None:
    rng = np.random.default_rng(10)
    gold = rng.integers(0, 8, size=60)
    pred_a = np.where(rng.random(60) < 0.6, gold, rng.integers(0, 9, size=60))
    pred_b = rng.integers(0, 9, size=60)
    rows = next(resampled_indices(60, 20, seed=0))
    differences = bootstrap._macro_f1_differences(pred_a[rows], pred_b[rows], gold[rows], 9)
    for row, difference in zip(rows, differences, strict=True):
        expected = f1_score(gold[row], pred_a[row], average="macro", zero_division=0) - f1_score(
            gold[row], pred_b[row], average="macro", zero_division=0
        )
        assert difference == pytest.approx(expected, abs=1e-12)


def test_identical_predictions_give_a_zero_f1_difference() -> None:
    gold = np.array([0, 1, 2, 2, 1, 0] * 20)
    pred = np.roll(gold, 1)
    result = paired_bootstrap_f1(pred, pred.copy(), gold, 3, resamples=100)
    assert (result.difference, result.low, result.high, result.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_to_dict_spells_out_significance() -> None:
    payload = paired_bootstrap(*better_by(1000, 640, extra=60), resamples=200).to_dict()
    assert payload["significant"] is True and payload["resamples"] == 200
    assert set(payload) >= {"metric", "a", "b", "difference", "low", "high", "p_value"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scores_b": np.ones(9)}, "scores_a has 10 items but scores_b has 9"),
        ({"scores_a": np.array([]), "scores_b": np.array([])}, r"scores_a has shape \(0,\)"),
        ({"scores_a": np.ones((10, 2))}, r"scores_a has shape \(10, 2\)"),
        ({"scores_b": np.full(10, np.nan)}, r"scores_b\[0\] is not finite"),
        ({"resamples": 99}, "resamples = 99: must be >= 100"),
        ({"confidence": 1.0}, r"confidence = 1.0: must be in \(0, 1\)"),
        ({"confidence": 0}, r"confidence = 0: must be in \(0, 1\)"),
    ],
)
def test_paired_bootstrap_refuses_bad_input(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"scores_a": np.ones(10), "scores_b": np.zeros(10), **kwargs}
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(**arguments)  # type: ignore[arg-type]


def test_f1_and_interval_refuse_bad_input() -> None:
    gold = np.array([0, 1, 2])
    with pytest.raises(ValueError, match="gold has 3 items but pred_b has 2"):
        paired_bootstrap_f1(gold, gold[:2], gold, 3)
    with pytest.raises(ValueError, match=r"pred_a\[2\] = 2: class indices must be in \[0, 2\)"):
        paired_bootstrap_f1(gold, gold, np.array([0, 1, 1]), 2)
    with pytest.raises(ValueError, match="n_labels = 0"):
        paired_bootstrap_f1(gold, gold, gold, 0)
    with pytest.raises(ValueError, match=r"gold has shape \(0,\)"):
        paired_bootstrap_f1(gold[:0], gold[:0], gold[:0], 3)
    with pytest.raises(ValueError, match="resamples = 10"):
        bootstrap_interval(np.ones(5), resamples=10)


def test_two_level_interval_widens_with_seed_to_seed_spread() -> None:
    from adaptlab.evaluate.bootstrap import two_level_interval

    rng = np.random.default_rng(3)
    items = rng.binomial(1, 0.9, 2000).astype(float)
    same = np.stack([items, items])  # two seeds that agree item by item
    apart = np.stack([items, np.roll(items, 1) * 0.0 + rng.binomial(1, 0.8, 2000)])
    low_same, high_same = two_level_interval(same, resamples=1000)
    low_apart, high_apart = two_level_interval(apart, resamples=1000)
    assert low_same <= items.mean() <= high_same
    assert high_apart - low_apart > 2 * (high_same - low_same)  # the seeds' 10 points apart
    one = two_level_interval(items[None, :], resamples=1000)  # one seed: items only
    assert one == pytest.approx((low_same, high_same), abs=0.01)
    with pytest.raises(ValueError, match="seeds, items"):
        two_level_interval(items, resamples=1000)
