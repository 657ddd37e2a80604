"""Exact and near-duplicate detection (adaptlab.data.dedup)."""

from __future__ import annotations

import csv
import time
from collections.abc import Hashable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptlab.data import dedup
from adaptlab.data.contamination import find_contamination
from adaptlab.data.dedup import (
    DuplicateGroup,
    find_duplicates,
    keep_indices,
    normalize,
    shingles,
)

BANKING77 = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "banking77"

# 15 words; the variants below change exactly one word.
SENTENCE = "I ordered a new debit card two weeks ago and it has still not arrived"
ONE_WORD_CHANGED = SENTENCE.replace(" has ", " had ")  # Jaccard 0.857
DIFFERENT = "What is the exchange rate when I pay in euros with my card abroad"


def shingle_jaccard(a: str, b: str, ngram: int = 5) -> float:
    """Reference Jaccard of the character shingle sets, computed on the strings themselves."""
    sa, sb = shingles(normalize(a), ngram), shingles(normalize(b), ngram)
    return len(sa & sb) / len(sa | sb)


# --- normalize -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("How do I top up?", "how do i top up"),
        ("  how do i\t top\n\nup  ", "how do i top up"),
        ('"Where is my card?!"', "where is my card"),
        ("¿Dónde está?", "dónde está"),
        ("don't", "don't"),  # inner punctuation is part of the text
        ("top-up $5", "top-up $5"),  # symbols are kept
        ("STRASSE", "strasse"),
        ("Straße", "strasse"),  # casefold, not lower
        ("ｃａｒｄ\u00a0ｐｉｎ", "card pin"),  # NFKC: full-width letters, no-break space
        ("?!...", ""),
        ("", ""),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@given(st.text(max_size=40))
def test_normalize_is_idempotent(text: str) -> None:
    assert normalize(normalize(text)) == normalize(text)


# --- exact duplicates ------------------------------------------------------------------------


def test_exact_duplicates_keep_first_occurrence() -> None:
    texts = ["How do I top up?", "Where is my card", "how do i  top up", " HOW DO I TOP UP!!"]
    groups = find_duplicates(texts, near=False)
    assert groups == [DuplicateGroup("exact", 0, (2, 3), 1.0, False)]
    assert keep_indices(len(texts), groups) == [0, 1]


def test_exact_duplicates_with_conflicting_labels_are_flagged() -> None:
    texts = ["Is my card lost?", "is my card lost", "Top up failed", "top up failed!"]
    labels = ["lost_card", "card_arrival", "top_up_failed", "top_up_failed"]
    groups = find_duplicates(texts, labels)
    assert [(g.keep, g.drop, g.conflicting_labels) for g in groups] == [
        (0, (1,), True),
        (2, (3,), False),
    ]


def test_missing_labels_do_not_count_as_a_conflict() -> None:
    groups = find_duplicates(["hello there", "Hello there."], [None, "greet"])
    assert groups[0].conflicting_labels is False


def test_labels_must_match_texts() -> None:
    with pytest.raises(ValueError, match="labels must have the same length as texts, got 1"):
        find_duplicates(["a", "b"], ["x"])


# --- near duplicates -------------------------------------------------------------------------


def test_one_word_changed_is_a_near_duplicate_at_the_default_threshold() -> None:
    texts = [SENTENCE, DIFFERENT, ONE_WORD_CHANGED]
    groups = find_duplicates(texts)
    assert len(groups) == 1
    group = groups[0]
    assert (group.kind, group.keep, group.drop) == ("near", 0, (2,))
    assert group.similarity == pytest.approx(shingle_jaccard(SENTENCE, ONE_WORD_CHANGED))
    assert 0.85 <= group.similarity < 1.0


def test_clearly_different_sentences_are_not_grouped() -> None:
    texts = [
        SENTENCE,
        DIFFERENT,
        "Can I get a refund for a purchase I made last week",
        "How do I change the PIN of my card",
    ]
    assert find_duplicates(texts) == []


def test_meaning_changing_short_edit_stays_below_the_default() -> None:
    # Found on banking77: one word that changes the request scores 0.83, below 0.85.
    texts = ["Can I get a card in the EU?", "Can I get a card in the US?"]
    assert 0.8 < shingle_jaccard(*texts) < dedup.DEFAULT_NEAR_THRESHOLD
    assert find_duplicates(texts) == []
    assert len(find_duplicates(texts, near_threshold=0.8)) == 1


def test_near_groups_chain_and_report_lowest_similarity_to_keep() -> None:
    a = "please tell me why my card payment was declined at the shop today"
    b = "please tell me why my card payment was declined at the shop yesterday"
    c = "please tell me why my card payment was refused at the shop yesterday"
    # a~b 0.80 and b~c 0.74 pass 0.7; a~c 0.58 does not, yet c joins through b.
    assert shingle_jaccard(a, c) < 0.7 <= min(shingle_jaccard(a, b), shingle_jaccard(b, c))
    groups = find_duplicates([a, b, c], near_threshold=0.7)
    assert [(g.keep, g.drop) for g in groups] == [(0, (1, 2))]
    assert groups[0].similarity == pytest.approx(shingle_jaccard(a, c))


def test_exact_drops_are_not_compared_again() -> None:
    texts = [SENTENCE, SENTENCE.upper(), ONE_WORD_CHANGED, ONE_WORD_CHANGED + "!"]
    groups = find_duplicates(texts)
    assert [(g.kind, g.keep, g.drop) for g in groups] == [
        ("exact", 0, (1,)),
        ("exact", 2, (3,)),
        ("near", 0, (2,)),
    ]
    assert keep_indices(len(texts), groups) == [0]


def test_short_texts_use_the_whole_string_as_one_shingle() -> None:
    assert shingles("hi", 5) == {"hi"}
    assert shingles("", 5) == {""}
    assert shingles("hello", 5) == {"hello"}
    assert shingles("hello!", 5) == {"hello", "ello!"}
    assert find_duplicates(["hi", "ho", "hi?"]) == [DuplicateGroup("exact", 0, (2,), 1.0, False)]


class _AllCandidatesLSH:
    """An LSH whose every answer is a false positive candidate: it returns all indexed keys."""

    b, r = 2, 64  # read by the cached parameter lookup if it runs while this is patched in

    def __init__(self, **_: object) -> None:
        self._keys: list[Hashable] = []

    def insert(self, key: Hashable, _minhash: object, check_duplication: bool = True) -> None:
        self._keys.append(key)

    def query(self, _minhash: object) -> list[Hashable]:
        return list(self._keys)


def test_lsh_false_positives_never_drop_data(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pairs just below the threshold: if LSH proposes them, verification must reject them.
    texts = [SENTENCE, ONE_WORD_CHANGED, *(SENTENCE.replace("debit", w) for w in ("blue", "gold"))]
    sims = [shingle_jaccard(texts[0], t) for t in texts[2:]]
    assert all(0.75 < s < 0.85 for s in sims), sims
    assert shingle_jaccard(texts[2], texts[3]) < 0.85
    expected = [DuplicateGroup("near", 0, (1,), shingle_jaccard(SENTENCE, ONE_WORD_CHANGED), False)]
    assert find_duplicates(texts) == expected
    monkeypatch.setattr(dedup, "MinHashLSH", _AllCandidatesLSH)
    assert find_duplicates(texts) == expected


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(["card", "my", "top", "up", "why", "is", "pending"]), max_size=6))
def test_every_near_drop_is_verified(words: list[str]) -> None:
    # Texts built from few words produce many candidate pairs on both sides of the threshold.
    texts = [" ".join(words[i:] + words[:i]) for i in range(len(words))] + [" ".join(words)]
    for group in find_duplicates(texts, near_threshold=0.6, num_perm=32):
        members = (group.keep, *group.drop)
        for item in group.drop:
            if group.kind == "exact":
                assert normalize(texts[item]) == normalize(texts[group.keep])
            else:
                assert (
                    max(shingle_jaccard(texts[item], texts[o]) for o in members if o != item) >= 0.6
                )


def test_deterministic() -> None:
    texts = [SENTENCE, ONE_WORD_CHANGED, DIFFERENT] * 3 + [f"{SENTENCE} {i}" for i in range(30)]
    assert find_duplicates(texts) == find_duplicates(texts)


def test_progress_is_cumulative_and_ends_at_len() -> None:
    texts = [f"message number {i} about my card" for i in range(1200)]
    seen: list[int] = []
    find_duplicates(texts, progress=seen.append)
    assert seen == sorted(seen)
    assert seen[-1] == len(texts)
    assert len(seen) > 1


# --- keep_indices, validation, empty input ---------------------------------------------------


def test_keep_indices() -> None:
    groups = [
        DuplicateGroup("exact", 0, (3, 5), 1.0, False),
        DuplicateGroup("near", 1, (2,), 0.9, False),
    ]
    assert keep_indices(7, groups) == [0, 1, 4, 6]
    assert keep_indices(3, []) == [0, 1, 2]
    with pytest.raises(ValueError, match="group index 5 is outside range"):
        keep_indices(4, groups)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"near_threshold": 0.0}, r"near_threshold must be in \(0, 1\], got 0.0"),
        ({"near_threshold": 1.5}, r"near_threshold must be in \(0, 1\], got 1.5"),
        ({"num_perm": 8}, "num_perm must be >= 16, got 8"),
        ({"ngram": 0}, "ngram must be >= 1, got 0"),
    ],
)
def test_parameter_validation(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        find_duplicates(["a"], **kwargs)  # type: ignore[arg-type]


def test_extreme_thresholds_work() -> None:
    texts = ["aaaaaa", "aaaaaaaa", SENTENCE, ONE_WORD_CHANGED]
    # 1.0: only identical shingle sets ("aaaaa" both); datasketch alone refuses this threshold.
    groups = find_duplicates(texts, near_threshold=1.0, num_perm=16)
    assert [(g.keep, g.drop) for g in groups] == [(0, (1,))]
    # 0.01: any shared shingle (" card") is enough; "aaaaa" shares none with the sentences.
    groups = find_duplicates([*texts, DIFFERENT], near_threshold=0.01)
    assert [(g.keep, g.drop) for g in groups] == [(0, (1,)), (2, (3, 4))]


def test_empty_input() -> None:
    assert find_duplicates([]) == []
    assert find_duplicates([], []) == []
    assert keep_indices(0, []) == []


# --- property: no distinct text is ever lost -------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="ab A?!. \t", max_size=8), max_size=25))
def test_every_distinct_normalized_text_keeps_a_representative(texts: list[str]) -> None:
    kept = keep_indices(len(texts), find_duplicates(texts, near=False))
    assert {normalize(texts[i]) for i in kept} == {normalize(t) for t in texts}
    assert len(kept) == len({normalize(t) for t in texts})  # and exactly one each
    assert all(normalize(texts[i]) != normalize(texts[j]) for i in kept for j in kept if i < j)


# --- banking77 -------------------------------------------------------------------------------


def read_banking77(name: str) -> tuple[list[str], list[str]]:
    with (BANKING77 / name).open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["category"] for r in rows]


def require_banking77() -> None:
    if not (BANKING77 / "train.csv").exists():
        pytest.skip(f"banking77 not found at {BANKING77}")


@pytest.mark.integration
def test_banking77_duplicates_and_contamination() -> None:
    require_banking77()
    train, train_labels = read_banking77("train.csv")
    test, _ = read_banking77("test.csv")

    start = time.perf_counter()
    groups = find_duplicates(train, train_labels)
    dedup_seconds = time.perf_counter() - start
    overlaps = find_contamination(train, test)
    contamination_seconds = time.perf_counter() - start - dedup_seconds

    exact = [g for g in groups if g.kind == "exact"]
    near = [g for g in groups if g.kind == "near"]
    print(
        f"\nbanking77 train ({len(train)}): {len(exact)} exact groups, {len(near)} near groups, "
        f"{sum(g.conflicting_labels for g in groups)} with conflicting labels, "
        f"{len(train) - len(keep_indices(len(train), groups))} dropped ({dedup_seconds:.2f}s)"
        f"\nbanking77 test ({len(test)}) in train: {sum(o.kind == 'exact' for o in overlaps)} "
        f"exact, {sum(o.kind == 'near' for o in overlaps)} near ({contamination_seconds:.2f}s)"
    )
    assert exact, "banking77 train has exact duplicates (after normalisation)"
    assert any(o.kind == "exact" for o in overlaps), "banking77 test has queries found in train"
    for overlap in (o for o in overlaps if o.kind == "exact"):
        form = normalize(test[overlap.eval_index])
        assert any(normalize(train[i]) == form for i in overlap.train_indices)
