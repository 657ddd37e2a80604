"""Groundedness, citations and SQuAD's token F1: each pinned on hand-worked cases."""

from __future__ import annotations

import pytest

from adaptlab.evaluate.free_text import score_free_text, token_f1
from adaptlab.evaluate.grounding import (
    citation_scores,
    cited_numbers,
    groundedness,
    strip_citations,
)


@pytest.mark.parametrize(
    ("answer", "numbers"),
    [
        ("It opens at nine [1].", [1]),
        ("At nine [2][1] and [2].", [2, 1]),
        ("Both [1, 3].", [1, 3]),
        ("No citation here.", []),
        ("A list [a] or [ 4 ] counts only digits.", [4]),
    ],
)
def test_cited_numbers_in_order_each_once(answer: str, numbers: list[int]) -> None:
    assert cited_numbers(answer) == numbers


def test_strip_citations_removes_the_markers_and_the_space_before() -> None:
    assert strip_citations("It opens at nine [1].") == "It opens at nine."
    assert strip_citations("[2] Two euros [1, 2]") == "Two euros"


def test_groundedness_is_the_share_of_answer_tokens_in_the_passages() -> None:
    passages = ["The library opens at nine.", "Parking costs two euros."]
    # normalised answer tokens: library, opens, at, ten -> 3 of 4 in the passages
    assert groundedness("The library opens at ten!", passages) == pytest.approx(3 / 4)
    assert groundedness("Two euros.", passages) == 1.0
    assert groundedness("", passages) == 0.0
    assert groundedness("anything", []) == 0.0


def test_citation_scores_count_only_numbers_of_passages_shown() -> None:
    shown = ["a.txt", "b.txt"]
    assert citation_scores("x [2]", shown, ["b.txt"]) == (1.0, 1.0)
    assert citation_scores("x [1]", shown, ["b.txt"]) == (1.0, 0.0)
    assert citation_scores("x [3]", shown, ["b.txt"]) == (0.0, 0.0)  # no passage 3
    assert citation_scores("x", shown, ["b.txt"]) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("answer", "reference", "expected"),
    [
        ("the cat sat", "a cat sat down", 2 * (2 / 2) * (2 / 3) / (2 / 2 + 2 / 3)),
        ("Two euros.", "two euros", 1.0),
        ("nine", "at ten", 0.0),
        ("", "", 1.0),
        ("", "something", 0.0),
        ("c b b", "b b b", 2 / 3),  # shared tokens count at most as often as on both sides
        ("a b b", "b b b", 0.8),  # "a" is an article: dropped, so precision is 1
    ],
)
def test_token_f1_is_squads(answer: str, reference: str, expected: float) -> None:
    assert token_f1(answer, reference) == pytest.approx(expected)


def test_token_f1_takes_the_best_reference_and_is_reported_per_example() -> None:
    scores = score_free_text(["two euros", "at nine"], [["2 euros", "two euros"], ["nine"]])

    assert list(scores.per_example["token_f1"]) == pytest.approx([1.0, 2 * 0.5 / 1.5])
    assert scores.corpus["token_f1"] == pytest.approx((1.0 + 2 / 3) / 2)
