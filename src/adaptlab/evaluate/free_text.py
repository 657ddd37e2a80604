"""Reference metrics for answers that are free text: BLEU and chrF++ (sacrebleu), ROUGE-1/2/L
(rouge-score, stemmed), exact match after normalisation, the length ratio, and the embedding
similarity to the best reference.

Every metric comes per corpus and per example, against one or several references per example
(E2E NLG has up to a few dozen). The corpus values are the libraries' own: BLEU and chrF++ are
``sacrebleu.corpus_bleu`` / ``corpus_chrf(word_order=2)`` over the same answers and references,
ROUGE the mean over examples of the best reference's F1 (``RougeScorer.score_multi``), as the
rouge-score package aggregates.

Corpus BLEU and chrF are not means of sentence scores, so an interval on a difference must
resample the corpus statistics, not the sentence scores. :class:`FreeTextScores` keeps each
example's sufficient statistics (n-gram matches and totals, lengths) and
:func:`corpus_from_stats` turns any resample of them into the corpus score, as sacrebleu's own
paired bootstrap does. The per-example sentence scores are there to rank examples (the
largest wins and losses), not to average.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

CORPUS_METRICS: tuple[str, ...] = (
    "bleu",
    "chrf",
    "rouge1",
    "rouge2",
    "rougeL",
    "exact_match",
    "token_f1",
    "length_ratio",
)
ROUGE_TYPES: tuple[str, ...] = ("rouge1", "rouge2", "rougeL")
StatsMetric = Literal["bleu", "chrf"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalise_answer(text: str) -> str:
    """SQuAD-style normalisation for exact match: Unicode NFKC, lower case, punctuation and the
    articles a/an/the removed, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def answer_tokens(text: str) -> list[str]:
    """An answer's words after :func:`normalise_answer`: the tokens SQuAD's F1 counts."""
    return normalise_answer(text).split()


def token_f1(answer: str, reference: str) -> float:
    """SQuAD's token F1 (Rajpurkar et al. 2016, the official v1.1 script): the harmonic mean
    of precision and recall of the normalised answer's tokens against the reference's, each
    shared token counted at most as often as it occurs in both; two empty texts score 1."""
    mine, theirs = answer_tokens(answer), answer_tokens(reference)
    if not mine or not theirs:
        return float(mine == theirs)
    shared = sum((Counter(mine) & Counter(theirs)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(mine), shared / len(theirs)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class FreeTextScores:
    """Corpus scores (``corpus[name]`` for each of :data:`CORPUS_METRICS`, BLEU, chrF and ROUGE
    on 0-100, exact match a share, the length ratio answer words / closest reference words),
    per-example scores of the same names, and the per-example corpus statistics of BLEU and
    chrF (rows of :func:`corpus_from_stats`)."""

    corpus: dict[str, float]
    per_example: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]

    @property
    def n(self) -> int:
        return len(self.per_example["exact_match"])


def _bleu() -> Any:
    from sacrebleu.metrics.bleu import BLEU

    return BLEU()


def _sentence_bleu() -> Any:
    from sacrebleu.metrics.bleu import BLEU

    return BLEU(effective_order=True)  # sacrebleu's recommendation for sentence-level BLEU


def _chrf() -> Any:
    from sacrebleu.metrics.chrf import CHRF

    return CHRF(word_order=2)  # chrF++


_METRICS: dict[str, Callable[[], Any]] = {"bleu": _bleu, "chrf": _chrf}


def check_references(answers: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    """Refuse inputs no metric can score, naming the example: lengths that differ, an answer
    that is not a string, an example without references or with one that is not a string."""
    if len(answers) != len(references):
        raise ValueError(f"{len(answers)} answers but {len(references)} reference lists")
    if not answers:
        raise ValueError("no answers to score")
    for index, (answer, refs) in enumerate(zip(answers, references, strict=True)):
        if not isinstance(answer, str):
            raise ValueError(f"example {index}: the answer is {type(answer).__name__}, not text")
        if isinstance(refs, str) or not refs:
            raise ValueError(f"example {index}: references must be a non-empty list of strings")
        for position, ref in enumerate(refs):
            if not isinstance(ref, str) or not ref.strip():
                raise ValueError(f"example {index}: reference {position} is not non-empty text")


def _streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Per-example reference lists as sacrebleu's reference streams, ``None`` where an example
    has fewer references than the most (sacrebleu skips those)."""
    width = max(len(refs) for refs in references)
    return [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]


def corpus_scorer(metric: StatsMetric) -> Callable[[np.ndarray], float]:
    """The corpus score of ``metric`` from summed per-example statistics (one row of
    :attr:`FreeTextScores.stats` summed over any subset or resample), as sacrebleu computes it;
    what :func:`adaptlab.evaluate.bootstrap.paired_bootstrap_corpus` takes."""
    scorer = _METRICS[metric]()

    def score(totals: np.ndarray) -> float:
        return float(scorer._compute_score_from_stats([int(v) for v in totals]).score)

    return score


CORPUS_STATS_METRICS: tuple[StatsMetric, ...] = ("bleu", "chrf")
"""Metrics whose corpus score pools per-example statistics (``<metric>_stats``), not a mean."""


def corpus_score_01(metric: StatsMetric) -> Callable[[np.ndarray], float]:
    """:func:`corpus_scorer` on 0-1, as adaptlab records every score."""
    scorer = corpus_scorer(metric)
    return lambda totals: scorer(totals) / 100.0


def metric_interval(
    metric: str, values: np.ndarray, *, resamples: int, confidence: float
) -> tuple[float, float]:
    """The bootstrap interval of one run's ``metric`` (0-1) from its per-example ``values``:
    the corpus statistics of BLEU and chrF++ (resampled into corpus scores), the per-example
    scores of the others (a mean)."""
    from adaptlab.evaluate.bootstrap import bootstrap_interval, corpus_interval

    if metric in CORPUS_STATS_METRICS:
        score = corpus_score_01(metric)
        return corpus_interval(values, score, resamples=resamples, confidence=confidence)
    return bootstrap_interval(values, resamples=resamples, confidence=confidence)


def corpus_from_stats(metric: StatsMetric, stats: np.ndarray) -> float:
    """The corpus score of ``metric`` from per-example statistics rows (any subset or
    resample of :attr:`FreeTextScores.stats`)."""
    return corpus_scorer(metric)(np.asarray(stats, dtype=np.int64).sum(axis=0))


def score_free_text(answers: Sequence[str], references: Sequence[Sequence[str]]) -> FreeTextScores:
    """Score ``answers[i]`` against ``references[i]`` (one or more strings each)."""
    from rouge_score.rouge_scorer import RougeScorer

    check_references(answers, references)
    hypotheses = list(answers)
    streams = _streams(references)
    corpus: dict[str, float] = {}
    per_example: dict[str, np.ndarray] = {}
    stats: dict[str, np.ndarray] = {}
    for name, make in _METRICS.items():
        scorer = make()
        rows = scorer._extract_corpus_statistics(hypotheses, streams)
        stats[name] = np.asarray(rows, dtype=np.int64)
        corpus[name] = float(scorer.corpus_score(hypotheses, streams).score)
    pairs = list(zip(hypotheses, references, strict=True))
    sentence_bleu, chrf = _sentence_bleu(), _chrf()
    per_example["bleu"] = np.array(
        [sentence_bleu.sentence_score(h, list(r)).score for h, r in pairs]
    )
    per_example["chrf"] = np.array([chrf.sentence_score(h, list(r)).score for h, r in pairs])
    rouge = RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    best = [rouge.score_multi(list(r), h) for h, r in zip(hypotheses, references, strict=True)]
    for kind in ROUGE_TYPES:
        per_example[kind] = np.array([100.0 * scores[kind].fmeasure for scores in best])
        corpus[kind] = float(per_example[kind].mean())
    per_example["exact_match"] = np.array(
        [
            float(any(normalise_answer(h) == normalise_answer(ref) for ref in r))
            for h, r in zip(hypotheses, references, strict=True)
        ]
    )
    corpus["exact_match"] = float(per_example["exact_match"].mean())
    per_example["token_f1"] = np.array(
        [max(token_f1(h, ref) for ref in r) for h, r in zip(hypotheses, references, strict=True)]
    )
    corpus["token_f1"] = float(per_example["token_f1"].mean())
    lengths = np.array(
        [_lengths(h, r) for h, r in zip(hypotheses, references, strict=True)], dtype=float
    )
    per_example["length_ratio"] = lengths[:, 0] / lengths[:, 1]
    corpus["length_ratio"] = float(lengths[:, 0].sum() / lengths[:, 1].sum())
    return FreeTextScores(corpus, per_example, stats)


def _lengths(answer: str, refs: Sequence[str]) -> tuple[int, int]:
    """Answer words and the word count of the reference closest in length (ties: the shorter),
    as BLEU's brevity penalty picks it."""
    words = len(answer.split())
    closest = min((len(ref.split()) for ref in refs), key=lambda n: (abs(n - words), n))
    return words, max(closest, 1)


def embedding_similarity(
    answers: Sequence[str],
    references: Sequence[Sequence[str]],
    embed: Callable[[Sequence[str]], np.ndarray],
) -> np.ndarray:
    """Per example, the cosine between the answer and its most similar reference, with
    ``embed`` mapping texts to vectors (the bundled MiniLM's sentence embeddings in compare).
    An empty answer scores 0."""
    check_references(answers, references)
    flat = [ref for refs in references for ref in refs]
    vectors = _unit(np.asarray(embed([*answers, *flat]), dtype=np.float64))
    answer_vectors, ref_vectors = vectors[: len(answers)], vectors[len(answers) :]
    scores, start = [], 0
    for index, refs in enumerate(references):
        block = ref_vectors[start : start + len(refs)]
        start += len(refs)
        best = float((block @ answer_vectors[index]).max()) if answers[index].strip() else 0.0
        scores.append(best)
    return np.array(scores)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: np.ndarray = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    return unit


__all__ = [
    "CORPUS_METRICS",
    "ROUGE_TYPES",
    "FreeTextScores",
    "check_references",
    "corpus_from_stats",
    "corpus_scorer",
    "embedding_similarity",
    "normalise_answer",
    "score_free_text",
]
