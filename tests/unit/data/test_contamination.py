"""Train/eval contamination (adaptlab.data.contamination)."""

from __future__ import annotations

import pytest

from adaptlab.data.contamination import (
    ContaminationError,
    Overlap,
    decontaminate_train,
    find_contamination,
    require_clean,
)
from adaptlab.data.dedup import normalize, shingles

TRAIN = [
    "How do I top up my account with a card?",  # 0
    "I ordered a new debit card two weeks ago and it has still not arrived",  # 1
    "What is the exchange rate when I pay in euros abroad?",  # 2
    "how do i top up my account with a card",  # 3 (exact duplicate of 0 inside train)
    "Can I get a refund for something I bought last week?",  # 4
    "I ordered a new debit card two weeks ago and it has still not arrived, yet",  # 5 (near 1)
]
EVAL = [
    "Why was my transfer declined?",  # 0 clean
    "HOW DO I TOP UP MY ACCOUNT WITH A CARD",  # 1 exact: train 0 and 3
    "I ordered a new debit card two weeks ago and it has still not arrived yet",  # 2 near 1, 5
    "Can I get a card in the EU?",  # 3 clean
    "What is the exchange rate when I pay in euros abroad!!",  # 4 exact: train 2
]


def shingle_jaccard(a: str, b: str) -> float:
    sa, sb = shingles(normalize(a), 5), shingles(normalize(b), 5)
    return len(sa & sb) / len(sa | sb)


def test_exact_and_near_overlaps_with_their_train_indices() -> None:
    overlaps = find_contamination(TRAIN, EVAL)
    assert [(o.eval_index, o.train_indices, o.kind) for o in overlaps] == [
        (1, (0, 3), "exact"),
        (2, (1, 5), "near"),
        (4, (2,), "exact"),
    ]
    assert overlaps[0].similarity == 1.0
    best = max(shingle_jaccard(EVAL[2], TRAIN[1]), shingle_jaccard(EVAL[2], TRAIN[5]))
    assert overlaps[1].similarity == pytest.approx(best)
    assert 0.85 <= best < 1.0


def test_exact_only() -> None:
    overlaps = find_contamination(TRAIN, EVAL, near=False)
    assert [(o.eval_index, o.train_indices, o.kind) for o in overlaps] == [
        (1, (0, 3), "exact"),
        (4, (2,), "exact"),
    ]


def test_exact_match_also_lists_near_train_items() -> None:
    train = [
        "my card has still not arrived yet",
        "my card has still not arrived yet!",
        "my card has still not arrived",  # near: 0.86
        "my card still has not arrived yet",  # word order: 0.53, not a match
    ]
    overlaps = find_contamination(train, ["My card has still not arrived yet."])
    assert overlaps == [Overlap(0, (0, 1, 2), "exact", 1.0)]


def test_clean_sets_give_nothing() -> None:
    assert find_contamination(TRAIN, [EVAL[0], EVAL[3]]) == []
    assert find_contamination(TRAIN, []) == []
    assert find_contamination([], EVAL) == []


def test_threshold_controls_near_matches() -> None:
    assert find_contamination(TRAIN, [EVAL[2]], near_threshold=0.99) == []


def test_parameters_are_validated() -> None:
    with pytest.raises(ValueError, match=r"near_threshold must be in \(0, 1\], got -0.1"):
        find_contamination(TRAIN, EVAL, near_threshold=-0.1)
    with pytest.raises(ValueError, match="num_perm must be >= 16, got 4"):
        find_contamination(TRAIN, EVAL, num_perm=4)
    with pytest.raises(ValueError, match="ngram must be >= 1, got 0"):
        find_contamination(TRAIN, EVAL, ngram=0)


# --- require_clean -------------------------------------------------------------------------


def test_require_clean_raises_with_counts_and_remedies() -> None:
    overlaps = find_contamination(TRAIN, EVAL)
    with pytest.raises(ContaminationError) as info:
        require_clean(overlaps, allow_contaminated=False, source="eval.csv")
    assert str(info.value) == (
        "eval.csv: 3 eval items also appear in the training data (2 exact, 1 near); "
        "first few eval lines: 1, 2, 4; pass --allow-contaminated to proceed anyway (recorded), "
        "or --decontaminate to drop them from train"
    )


def test_require_clean_reports_line_numbers_and_truncates() -> None:
    overlaps = [Overlap(i, (0,), "near", 0.9) for i in range(8)]
    with pytest.raises(ContaminationError, match=r"lines: 2, 3, 4, 5, 6 \.\.\. and 3 more;"):
        require_clean(overlaps, allow_contaminated=False, source="x", line_of=lambda i: i + 2)


def test_require_clean_passes_when_allowed_or_clean() -> None:
    overlaps = find_contamination(TRAIN, EVAL)
    assert overlaps  # the same overlaps that raise when not allowed (test above) ...
    with pytest.raises(ContaminationError):
        require_clean(overlaps, allow_contaminated=False, source="eval.csv")
    # ... pass when allowed, and no overlaps pass either way: nothing raised, nothing returned
    assert require_clean(overlaps, allow_contaminated=True, source="eval.csv") is None  # type: ignore[func-returns-value]
    assert require_clean([], allow_contaminated=False, source="eval.csv") is None  # type: ignore[func-returns-value]


# --- decontaminate_train -------------------------------------------------------------------


def test_decontaminate_train_drops_every_matched_train_item() -> None:
    overlaps = find_contamination(TRAIN, EVAL)
    kept = decontaminate_train(len(TRAIN), overlaps)
    assert kept == [4]
    assert find_contamination([TRAIN[i] for i in kept], EVAL) == []


def test_decontaminate_train_checks_indices() -> None:
    assert decontaminate_train(3, []) == [0, 1, 2]
    with pytest.raises(ValueError, match="overlap train index 7 is outside range"):
        decontaminate_train(3, [Overlap(0, (7,), "exact", 1.0)])
