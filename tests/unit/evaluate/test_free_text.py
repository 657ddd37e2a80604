"""Free-text metrics equal the libraries called directly, and the corpus statistics rebuild the
corpus scores on any resample (what a paired bootstrap on BLEU and chrF needs)."""

from __future__ import annotations

import numpy as np
import pytest
import sacrebleu
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score.rouge_scorer import RougeScorer

from adaptlab.evaluate.bootstrap import paired_bootstrap, paired_bootstrap_corpus
from adaptlab.evaluate.free_text import (
    corpus_from_stats,
    corpus_scorer,
    embedding_similarity,
    normalise_answer,
    score_free_text,
)

# E2E-like: a meaning representation's description, one to three references each.
ANSWERS = [
    "The Eagle is a cheap coffee shop near Burger King.",
    "Zizzi serves Italian food in the city centre and is family friendly.",
    "Aromi is a pub.",
    "the golden curry, a fast food place by the river, has a low rating",
]
REFERENCES = [
    ["The Eagle is a low-priced coffee shop near Burger King.", "Near Burger King, The Eagle."],
    ["Zizzi is a family-friendly Italian restaurant in the city centre."],
    ["Aromi is a pub in riverside.", "There is a pub called Aromi.", "Aromi: a pub."],
    ["The Golden Curry is a fast food place by the river with a low customer rating."],
]


def streams(references: list[list[str]]) -> list[list[str | None]]:
    width = max(map(len, references))
    return [[r[k] if k < len(r) else None for r in references] for k in range(width)]


def test_corpus_bleu_and_chrf_equal_sacrebleu_with_variable_references() -> None:
    scores = score_free_text(ANSWERS, REFERENCES)
    bleu = sacrebleu.corpus_bleu(ANSWERS, streams(REFERENCES)).score
    chrf = sacrebleu.corpus_chrf(ANSWERS, streams(REFERENCES), word_order=2).score
    assert scores.corpus["bleu"] == pytest.approx(bleu, abs=1e-9)
    assert scores.corpus["chrf"] == pytest.approx(chrf, abs=1e-9)
    assert 0 < bleu < 100 and 0 < chrf < 100


def test_rouge_is_the_best_reference_f1_averaged_as_rouge_score_does() -> None:
    scores = score_free_text(ANSWERS, REFERENCES)
    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for kind in ("rouge1", "rouge2", "rougeL"):
        direct = [
            100 * scorer.score_multi(r, a)[kind].fmeasure
            for a, r in zip(ANSWERS, REFERENCES, strict=True)
        ]
        np.testing.assert_allclose(scores.per_example[kind], direct)
        assert scores.corpus[kind] == pytest.approx(float(np.mean(direct)))


def test_sentence_scores_equal_sacrebleus_sentence_scores() -> None:
    scores = score_free_text(ANSWERS, REFERENCES)
    for i, (answer, refs) in enumerate(zip(ANSWERS, REFERENCES, strict=True)):
        bleu = sacrebleu.sentence_bleu(answer, refs).score
        chrf = sacrebleu.sentence_chrf(answer, refs, word_order=2).score
        assert scores.per_example["bleu"][i] == pytest.approx(bleu)
        assert scores.per_example["chrf"][i] == pytest.approx(chrf)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, len(ANSWERS) - 1), min_size=1, max_size=12))
def test_corpus_statistics_rebuild_the_corpus_score_of_any_resample(picks: list[int]) -> None:
    scores = score_free_text(ANSWERS, REFERENCES)
    answers = [ANSWERS[i] for i in picks]
    refs = [REFERENCES[i] for i in picks]
    bleu = sacrebleu.corpus_bleu(answers, streams(refs)).score
    chrf = sacrebleu.corpus_chrf(answers, streams(refs), word_order=2).score
    assert corpus_from_stats("bleu", scores.stats["bleu"][picks]) == pytest.approx(bleu)
    assert corpus_from_stats("chrf", scores.stats["chrf"][picks]) == pytest.approx(chrf)


@pytest.mark.parametrize(
    ("answer", "reference", "same"),
    [
        ("The Eagle is a pub.", "eagle is pub", True),
        ("  Aromi,   a PUB!  ", "aromi pub", True),
        ("Ｚｉｚｚｉ", "zizzi", True),  # fullwidth letters, NFKC
        ("The Eagle is a pub.", "The Eagle is a bar.", False),
    ],
)
def test_exact_match_after_normalisation(answer: str, reference: str, same: bool) -> None:
    assert (normalise_answer(answer) == normalise_answer(reference)) is same
    scores = score_free_text([answer], [[reference]])
    assert scores.per_example["exact_match"][0] == float(same)


def test_length_ratio_uses_the_closest_reference() -> None:
    scores = score_free_text(["one two three four"], [["a b", "a b c d e", "a b c d e f g h"]])
    # four words; the closest reference has five (|4-5| = 1 beats |4-2| = 2)
    assert scores.per_example["length_ratio"][0] == pytest.approx(4 / 5)
    assert scores.corpus["length_ratio"] == pytest.approx(4 / 5)


def test_embedding_similarity_takes_the_best_reference() -> None:
    vocabulary = ["pub", "cheap", "river", "italian", "coffee"]

    def embed(texts: list[str]) -> np.ndarray:  # bag of words over a fixed vocabulary
        return np.array([[t.lower().count(w) for w in vocabulary] for t in texts], dtype=float)

    answers = ["a cheap pub", "italian coffee", ""]
    references = [["a river pub", "cheap pub here"], ["coffee"], ["pub"]]
    got = embedding_similarity(answers, references, embed)
    assert got[0] == pytest.approx(1.0)  # the second reference has the same words
    assert got[1] == pytest.approx(1 / np.sqrt(2))
    assert got[2] == 0.0  # an empty answer is not similar to anything


@pytest.mark.parametrize(
    ("answers", "references", "message"),
    [
        (["a"], [["a"], ["b"]], "1 answers but 2 reference lists"),
        (["a"], [[]], "example 0: references must be a non-empty list"),
        (["a"], ["a"], "example 0: references must be a non-empty list"),
        (["a", "b"], [["a"], ["b", 3]], "example 1: reference 1 is not non-empty text"),
        (["a"], [["  "]], "example 0: reference 0 is not non-empty text"),
        ([None], [["a"]], "example 0: the answer is NoneType"),
    ],
)
def test_bad_inputs_name_the_example(answers: list, references: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        score_free_text(answers, references)


SYSTEM_B = [
    "The Eagle coffee shop is near Burger King and cheap.",
    "Zizzi is an Italian place.",
    "Aromi is a pub in riverside.",
    "The Golden Curry is a fast food place by the river with a low customer rating.",
]


@pytest.mark.parametrize("metric", ["bleu", "chrf"])
def test_the_paired_corpus_bootstrap_centres_on_the_corpus_difference(metric: str) -> None:
    a, b = score_free_text(ANSWERS, REFERENCES), score_free_text(SYSTEM_B, REFERENCES)
    result = paired_bootstrap_corpus(
        a.stats[metric], b.stats[metric], corpus_scorer(metric), metric=metric, resamples=300
    )
    assert result.difference == pytest.approx(a.corpus[metric] - b.corpus[metric])
    assert result.low <= result.difference <= result.high
    same = paired_bootstrap_corpus(
        a.stats[metric], a.stats[metric], corpus_scorer(metric), metric=metric, resamples=300
    )
    assert (same.difference, same.low, same.high) == (0.0, 0.0, 0.0)


def test_the_corpus_bootstrap_is_not_the_mean_of_sentence_scores() -> None:
    """Corpus BLEU pools n-grams: its interval differs from one over mean sentence BLEU."""
    a, b = score_free_text(ANSWERS, REFERENCES), score_free_text(SYSTEM_B, REFERENCES)
    pooled = paired_bootstrap_corpus(
        a.stats["bleu"], b.stats["bleu"], corpus_scorer("bleu"), metric="bleu", resamples=300
    )
    averaged = paired_bootstrap(
        a.per_example["bleu"], b.per_example["bleu"], metric="bleu", resamples=300
    )
    assert pooled.difference != pytest.approx(averaged.difference)


def test_corpus_bootstrap_refuses_statistics_that_are_not_counts() -> None:
    with pytest.raises(ValueError, match="stats_a must hold non-negative integer statistics"):
        paired_bootstrap_corpus(
            np.array([[0.5]]), np.array([[1]]), corpus_scorer("bleu"), metric="bleu"
        )
