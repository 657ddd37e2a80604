"""Retrieval over document chunks (adaptlab.models.document_retrieval): scoring against
hand-computed values, reciprocal-rank fusion, BM25, dense search, exact against HNSW."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adaptlab.data.documents import ChunkSettings, Document, chunk_collection
from adaptlab.models.document_retrieval import (
    DenseRetriever,
    ExactIndex,
    Hit,
    HnswIndex,
    HybridRetriever,
    SparseRetriever,
    build_retriever,
    reciprocal_rank_fusion,
    score_retrieval,
    vector_index,
)


class WhitespaceTokenizer:
    def __call__(self, text: str, **_: Any) -> dict[str, Any]:
        spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
        return {"input_ids": list(range(len(spans))), "offset_mapping": spans}


# A tiny collection: four documents, one topic each; "fruit" is long enough for two chunks.
DOCUMENTS = [
    Document(
        "fruit",
        "Bananas are yellow and sweet. Apples grow on trees in orchards. "
        "Cherries are small red stone fruits.",
        "fruit.txt",
    ),
    Document("space", "The rocket launched from the pad at dawn. Astronauts orbit Earth.", "x"),
    Document("cooking", "Simmer the sauce slowly and stir it often.", "cooking.txt"),
    Document("sport", "The striker scored twice in the final match.", "sport.txt"),
]
CHUNKS = chunk_collection(DOCUMENTS, WhitespaceTokenizer(), ChunkSettings(12, 0))
CHUNK_DOCUMENTS = [c.document_id for c in CHUNKS]


def test_the_tiny_collection_is_what_the_hand_computations_assume() -> None:
    assert [c.id for c in CHUNKS] == ["fruit#0", "fruit#1", "space#0", "cooking#0", "sport#0"]


# --- scoring ---------------------------------------------------------------------------------


def test_recall_and_mrr_match_hand_computed_values() -> None:
    hits: list[list[Hit]] = [
        [(2, 0.9), (0, 0.8), (1, 0.7)],  # gold fruit: first at rank 2
        [(3, 0.9), (4, 0.5)],  # gold sport: rank 2
        [(0, 0.9), (1, 0.8), (2, 0.1)],  # gold space: rank 3
        [(4, 0.3)],  # gold cooking: never retrieved
        [(1, 0.6), (3, 0.4)],  # gold {cooking, fruit}: rank 1 (fruit#1)
    ]
    gold = [{"fruit"}, {"sport"}, {"space"}, {"cooking"}, {"cooking", "fruit"}]
    scores = score_retrieval(hits, CHUNK_DOCUMENTS, gold, ks=(1, 2, 3))
    assert [q.first_gold_rank for q in scores.per_query] == [2, 2, 3, None, 1]
    # recall@1: only query 5; @2: queries 1, 2, 5; @3: 1, 2, 3, 5
    assert scores.recall == {1: 1 / 5, 2: 3 / 5, 3: 4 / 5}
    assert scores.mrr == pytest.approx((1 / 2 + 1 / 2 + 1 / 3 + 0 + 1) / 5)
    assert scores.to_dict() == {
        "queries": 5,
        "recall@1": 0.2,
        "recall@2": 0.6,
        "recall@3": 0.8,
        "mrr": pytest.approx(0.46667, abs=1e-5),
    }


def test_mrr_counts_only_the_top_max_k_hits() -> None:
    hits: list[list[Hit]] = [[(2, 1.0), (3, 0.9), (0, 0.8)]]  # gold fruit at rank 3
    scores = score_retrieval(hits, CHUNK_DOCUMENTS, [{"fruit"}], ks=(1, 2))
    assert scores.mrr == 0.0 and scores.per_query[0].first_gold_rank is None


def test_scoring_refuses_queries_without_gold_and_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="query 0 names no gold document"):
        score_retrieval([[(0, 1.0)]], CHUNK_DOCUMENTS, [set()])
    with pytest.raises(ValueError, match="differ in length"):
        score_retrieval([[(0, 1.0)]], CHUNK_DOCUMENTS, [])
    with pytest.raises(ValueError, match="ks"):
        score_retrieval([], CHUNK_DOCUMENTS, [], ks=(0,))


def test_bm25_recall_on_the_tiny_collection_matches_hand_computed_values() -> None:
    retriever = SparseRetriever.build([c.text for c in CHUNKS])
    queries = [
        "Are bananas yellow?",  # fruit#0, the only chunk with either word
        "When did the rocket launch?",  # space#0 ("rocket", "launched" -> "launch")
        "Who scored in the final?",  # sport#0; gold says cooking: no shared term
        "stone cherries",  # fruit#1
    ]
    hits = retriever.retrieve(queries, k=3)
    assert [[i for i, _ in row] for row in hits] == [[0], [2], [4], [1]]
    gold = [{"fruit"}, {"space"}, {"cooking"}, {"fruit", "sport"}]
    scores = score_retrieval(hits, CHUNK_DOCUMENTS, gold, ks=(1, 3))
    assert scores.recall == {1: 0.75, 3: 0.75} and scores.mrr == 0.75


# --- reciprocal-rank fusion ------------------------------------------------------------------


def test_rrf_matches_the_hand_computed_fused_order() -> None:
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 1, 4]], k=60)
    # 1: 1/61 + 1/62, 3: 1/63 + 1/61, 2: 1/62, 4: 1/63
    assert [item for item, _ in fused] == [1, 3, 2, 4]
    assert [score for _, score in fused] == pytest.approx(
        [1 / 61 + 1 / 62, 1 / 61 + 1 / 63, 1 / 62, 1 / 63]
    )


def test_rrf_ties_go_to_the_smaller_index_whatever_the_list_order() -> None:
    assert [i for i, _ in reciprocal_rank_fusion([[6, 5], [5, 6]])] == [5, 6]
    assert [i for i, _ in reciprocal_rank_fusion([[5, 6], [6, 5]])] == [5, 6]
    three = [[7, 8, 9], [8, 9, 7], [9, 7, 8]]  # every item once at each rank: a three-way tie
    for order in (three, three[::-1], three[1:] + three[:1]):
        assert [i for i, _ in reciprocal_rank_fusion(order)] == [7, 8, 9]


def test_rrf_with_k_zero_is_the_sum_of_reciprocal_ranks() -> None:
    assert reciprocal_rank_fusion([[4, 2], [2]], k=0) == [(2, 1.5), (4, 1.0)]


class FixedRetriever:
    def __init__(self, ranking: Sequence[int]) -> None:
        self.ranking = list(ranking)
        self.asked: list[int] = []

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        self.asked.append(k)
        return [[(i, 1.0) for i in self.ranking[:k]] for _ in queries]


def test_hybrid_fuses_its_retrievers_rankings_and_cuts_to_k() -> None:
    dense, sparse = FixedRetriever([1, 2, 3]), FixedRetriever([3, 1, 4])
    hybrid = HybridRetriever([dense, sparse], depth=10)
    hits = hybrid.retrieve(["q1", "q2"], k=2)
    assert [[i for i, _ in row] for row in hits] == [[1, 3], [1, 3]]
    assert dense.asked == sparse.asked == [10]  # each contributes its top `depth`


# --- sparse ----------------------------------------------------------------------------------


def test_bm25_finds_the_obvious_document_and_stems() -> None:
    texts = ["The runner runs every morning.", "Taxes are due in April.", "Cats sleep a lot."]
    stemmed = SparseRetriever.build(texts)
    hits = stemmed.retrieve(["running", "tax deadline April"], k=2)
    assert [[i for i, _ in row] for row in hits] == [[0], [1]]
    assert all(score > 0 for row in hits for _, score in row)
    plain = SparseRetriever.build(texts, stemmer=None)
    assert plain.retrieve(["running"], k=2) == [[]]  # "running" is not "runs" unstemmed


def test_bm25_returns_no_hit_for_unknown_terms_or_stop_words_and_caps_k() -> None:
    retriever = SparseRetriever.build(["alpha beta", "beta gamma", "delta"])
    hits = retriever.retrieve(["zebra", "the and of", "beta"], k=10)
    assert hits[:2] == [[], []]
    assert sorted(i for i, _ in hits[2]) == [0, 1]  # only chunks sharing a term
    assert retriever.retrieve([], k=3) == []
    with pytest.raises(ValueError, match="k must be >= 1"):
        retriever.retrieve(["beta"], k=0)


# --- dense and the vector indexes ------------------------------------------------------------


def unit_vectors(count: int, dims: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, dims)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_exact_and_hnsw_agree_on_the_top_1() -> None:
    vectors = unit_vectors(3_000, 32, seed=0)
    targets = np.random.default_rng(1).choice(len(vectors), 50, replace=False)
    queries = vectors[targets] + 0.05 * unit_vectors(50, 32, seed=2)
    exact_scores, exact = ExactIndex(vectors).search(queries, 5)
    hnsw_scores, hnsw = HnswIndex.build(vectors).search(queries, 5)
    assert (exact[:, 0] == targets).all()
    assert (hnsw[:, 0] == exact[:, 0]).all()
    assert hnsw_scores[:, 0] == pytest.approx(exact_scores[:, 0], abs=1e-5)
    assert (np.diff(exact_scores, axis=1) <= 0).all()  # best first


def test_exact_search_caps_k_and_works_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    import adaptlab.models.document_retrieval as module

    monkeypatch.setattr(module, "_SCORE_BLOCK", 8)  # two vectors -> four queries per block
    vectors = unit_vectors(2, 8, seed=3)
    scores, indices = ExactIndex(vectors).search(unit_vectors(9, 8, seed=4), k=5)
    assert scores.shape == indices.shape == (9, 2)
    expected = np.argsort(-(unit_vectors(9, 8, seed=4) @ vectors.T), axis=1)
    assert (indices == expected).all()


def test_vector_index_is_exact_up_to_the_limit_and_hnsw_past_it() -> None:
    vectors = unit_vectors(20, 8, seed=5)
    assert isinstance(vector_index(vectors, exact_limit=20), ExactIndex)
    index = vector_index(vectors, exact_limit=19)
    assert isinstance(index, HnswIndex)
    assert index.size_bytes() > vectors.nbytes  # the graph comes on top of the vectors


def test_dense_retriever_with_the_tiny_encoder_returns_valid_ranked_hits(
    tiny_encoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))
    texts = [c.text for c in CHUNKS]
    dense = DenseRetriever.build(texts, model=str(tiny_encoder), max_length=32)
    hits = dense.retrieve(["yellow bananas", "rocket launch", "stir the sauce"], k=3)
    for row in hits:
        indices = [i for i, _ in row]
        assert len(row) == 3 and len(set(indices)) == 3
        assert all(0 <= i < len(texts) for i in indices)
        assert [s for _, s in row] == sorted((s for _, s in row), reverse=True)
    # a chunk's own text finds that chunk first (cosine 1 with itself)
    assert [row[0][0] for row in dense.retrieve(texts, k=1)] == list(range(len(texts)))
    # the chunk embeddings went through the shared cache, and past the limit HNSW agrees
    assert list((tmp_path / "cache" / "embeddings").glob("*.safetensors"))
    approximate = DenseRetriever.build(texts, str(tiny_encoder), 32, exact_limit=0)
    assert isinstance(approximate.index, HnswIndex)
    assert [row[0][0] for row in approximate.retrieve(texts, k=1)] == list(range(len(texts)))


def test_build_retriever_makes_each_kind(
    tiny_encoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))
    texts = [c.text for c in CHUNKS]
    for kind in ("dense", "sparse", "hybrid"):
        retriever = build_retriever(kind, texts, model=str(tiny_encoder), max_length=32)
        hits = retriever.retrieve(["Which fruits are yellow?"], k=2)
        assert len(hits) == 1 and 1 <= len(hits[0]) <= 2
    # BM25 matches fruit#0 ("yellow") and fruit#1 ("fruits") only; each then has at least
    # 1/62 + 1/65 against at most 1/61 for a chunk only the (random) dense encoder ranks
    hybrid = build_retriever("hybrid", texts, model=str(tiny_encoder), max_length=32)
    assert {i for i, _ in hybrid.retrieve(["Which fruits are yellow?"], k=2)[0]} == {0, 1}
    with pytest.raises(ValueError, match="kind must be one of"):
        build_retriever("fuzzy", texts)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no chunk texts"):
        SparseRetriever.build([])


# --- weighted fusion and its tuning ----------------------------------------------------------


def test_weighted_rrf_scales_each_rankings_votes() -> None:
    # item 0 is first for ranking A, item 1 first for ranking B
    fused = reciprocal_rank_fusion([[0, 1], [1, 0]], k=0, weights=(0.25, 1.0))
    assert fused == [(1, pytest.approx(0.25 / 2 + 1.0)), (0, pytest.approx(0.25 + 1.0 / 2))]
    assert reciprocal_rank_fusion([[0], [1]], k=60, weights=None) == reciprocal_rank_fusion(
        [[0], [1]], k=60, weights=(1.0, 1.0)
    )
    with pytest.raises(ValueError, match="one non-negative weight per ranking"):
        reciprocal_rank_fusion([[0], [1]], weights=(1.0,))
    with pytest.raises(ValueError, match="one non-negative weight per ranking"):
        reciprocal_rank_fusion([[0], [1]], weights=(-1.0, 1.0))


class Fixed:
    """A retriever whose ranking per query is given."""

    def __init__(self, rankings: list[list[int]]) -> None:
        self.rankings = rankings

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        return [[(i, 1.0) for i in self.rankings[q][:k]] for q, _ in enumerate(queries)]


def test_tuning_picks_the_dense_weight_with_the_best_recall_and_ties_go_up() -> None:
    from adaptlab.models.document_retrieval import CollectionIndex, tune_dense_weight

    # Two queries whose gold chunk BM25 ranks 2nd and dense ranks 4th, with dense's own first
    # choice each time a wrong chunk that BM25 ranks 3rd. With BM25's first choice at 1, the
    # gold chunk is in the fused top 1 only when dense's vote counts little.
    dense = Fixed([[3, 4, 2, 0], [3, 4, 2, 1]])
    sparse = Fixed([[2, 0, 3], [2, 1, 3]])
    index: Any = CollectionIndex.__new__(CollectionIndex)
    index.dense, index.sparse = dense, sparse
    index.chunk_documents = ["fruit", "fruit", "space", "cooking", "sport"]
    gold = [{"fruit"}, {"fruit"}]

    weight, recall = tune_dense_weight(index, ["q1", "q2"], gold, k=2)

    # k=2: BM25 puts chunk 2 (space) then the gold chunk; dense puts 3 and 4 (both wrong) first
    for w, value in recall.items():
        fused = [
            [i for i, _ in reciprocal_rank_fusion([d, s], 60, (w, 1.0))[:2]]
            for d, s in (([3, 4, 2, 0], [2, 0, 3]), ([3, 4, 2, 1], [2, 1, 3]))
        ]
        hits = sum(any(index.chunk_documents[i] == "fruit" for i in row) for row in fused)
        assert value == hits / 2
    best = max(recall.values())
    assert recall[weight] == best and weight == max(w for w, v in recall.items() if v == best)
    assert recall[0.25] == 1.0 and recall[1.0] == 0.0  # dense's equal vote pushes gold out
