"""Retrieval over the chunks of a document collection: dense, sparse (BM25) and hybrid, scored.

Every retriever answers ``retrieve(queries, k)`` with, per query, up to ``k`` hits
``(chunk_index, score)``, best first; ``chunk_index`` indexes the chunk texts it was built on.

- **dense**: a sentence encoder (the bundled all-MiniLM-L6-v2 by default) embeds the chunks
  once, through the shared embedding cache (keyed by model and texts), and each query the same
  way; the score is the cosine similarity (embeddings are normalised: a dot product). Search is
  exact, one PyTorch matrix product, up to :data:`EXACT_SEARCH_LIMIT` chunks, and goes through
  an HNSW graph (faiss ``IndexHNSWFlat``, Malkov & Yashunin 2018) above it.
- **sparse**: BM25 (Robertson & Zaragoza 2009) by ``bm25s``, over its own tokenizer (lower
  case, English stop words removed, Snowball stemming through PyStemmer). Only chunks sharing
  a term with the query are returned: a zero score is no evidence, and must not earn a rank in
  a fusion.
- **hybrid**: reciprocal-rank fusion of the two rankings (Cormack, Clarke & Büttcher 2009,
  "Reciprocal Rank Fusion outperforms Condorcet and individual Rank Learning Methods"):
  ``score(c) = Σ_r 1 / (60 + rank_r(c))`` over the retrievers ``r`` that returned chunk ``c``
  at 1-based rank ``rank_r(c)``. RRF needs no score calibration between a cosine and a BM25
  score, which is why it is the usual fusion of the two.

When a query's gold documents are known, :func:`score_retrieval` gives recall@k (the share of
queries with a chunk of a gold document among their top ``k``) and the mean reciprocal rank.

Where the ANN index starts to pay, measured on the 2-core development machine (x86-64 VM; torch
and faiss on 2 threads each) while another benchmark kept both cores busy, so only ratios
within a row mean much (batch-64 times under ~40 ms are mostly scheduling: the same 2k product
took 24.0 ms in one run and 1.6 in the other). Commands:
``python bench/ann_threshold.py --ef-search 128 512`` (random unit vectors, the hard case for
HNSW: no neighbourhoods to exploit) and ``python bench/ann_threshold.py --ef-search 64 128
--clusters 1000`` (noisy copies of 1,000 centres, nearer to real embeddings). 384-d, top 10,
median ms per query batch, HNSW M=32, efConstruction=80, efSearch=128:

    vectors  data       HNSW build s   exact b1 / b64 ms   HNSW b1 / b64 ms   HNSW recall@10
      2,000  random            0.8        0.08 /  24.0       0.09 /  16.0          0.997
      2,000  clustered         0.3        0.12 /   1.6       0.11 /   4.3          1.000
     20,000  random            7.4        2.3  /  40.0       0.29 /  40.0          0.628
     20,000  clustered         6.3        4.2  /  18.2       0.19 /  40.0          1.000
    100,000  random           80.8       15.8  / 116.0       1.25 /  88.0          0.283
    100,000  clustered        35.3       17.4  / 141.1       0.08 /  32.0          1.000
    500,000  random          756.7       76.4  / 649.6       2.45 / 156.0          0.073
    500,000  clustered       159.0       85.4  / 784.8       0.07 /  32.0          0.983

(efSearch=512 on random vectors: recall 0.961 / 0.642 / 0.255 at 20k / 100k / 500k, for
1.3 / 2.9 / 8.7 ms per query. usearch 2.26, measured once at 20k random by an earlier version
of the script: 17.0 s to build against faiss's 9.1 s and 1.0 ms per query against 0.34 at the
same recall, so faiss it is.)

Per single query HNSW is faster from ~20k on, but there exact search costs 2-4 ms, nothing
beside generating an answer, and HNSW costs a rebuild whenever the collection changes plus
recall. Per eval batch HNSW first wins at 100k (1.3-4.4x). At 500k exact search costs 76-85 ms
per query and 0.65-0.8 s per batch of 64: a real share of a request. Hence
:data:`EXACT_SEARCH_LIMIT` = 100,000 chunks (exact up to it, HNSW past it): a collection of
20 million tokens (~80 MB of text) at 200 tokens a chunk.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from safetensors.torch import save_file

from adaptlab.models.bundled import MINILM
from adaptlab.models.encoder import FrozenEncoder

Hit = tuple[int, float]
"""One retrieved chunk: its index in the collection's chunk list, and its score."""

RetrieverKind = Literal["dense", "sparse", "hybrid"]
RETRIEVER_KINDS: tuple[RetrieverKind, ...] = ("dense", "sparse", "hybrid")

EXACT_SEARCH_LIMIT = 100_000  # chunks; measured, see the module docstring
# HNSW graph settings: 32 links per node and a wider search than faiss's defaults (40 / 16),
# which on random 384-d vectors recall too little of the exact top 10 (see the table above).
HNSW_LINKS = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
RRF_K = 60  # Cormack et al. 2009: k = 60 "was fixed during a pilot investigation"
HYBRID_DEPTH = 100  # hits each retriever contributes to the fusion
DEFAULT_MAX_LENGTH = 256  # all-MiniLM-L6-v2's own limit, in word pieces
# Scores for at most this many query-chunk pairs at a time (a 256 MiB float32 block).
_SCORE_BLOCK = 1 << 26


class Retriever(Protocol):
    """Anything that ranks chunks for queries."""

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Per query, up to ``k`` hits ``(chunk_index, score)``, best first."""
        ...


# --------------------------------------------------------------------------- vector search


class VectorIndex(Protocol):
    """Top-``k`` inner-product search over fixed, normalised vectors."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, indices)``, each ``(len(queries), min(k, size))``, best first."""
        ...

    def size_bytes(self) -> int:
        """Memory the index holds (what serving it costs)."""
        ...


@dataclass
class ExactIndex:
    """Brute force: every query against every vector, one matrix product (PyTorch, not numpy:
    see :func:`adaptlab.models.retrieval.similarities` on the two thread pools)."""

    vectors: np.ndarray

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        matrix = torch.from_numpy(np.ascontiguousarray(self.vectors, dtype=np.float32))
        k = min(k, len(self.vectors))
        block = max(1, _SCORE_BLOCK // max(1, len(self.vectors)))
        scores, indices = [], []
        for start in range(0, len(queries), block):
            rows = torch.from_numpy(np.ascontiguousarray(queries[start : start + block]))
            top = (rows.float() @ matrix.T).topk(k, dim=1)
            scores.append(top.values.numpy())
            indices.append(top.indices.numpy())
        if not scores:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        return np.concatenate(scores), np.concatenate(indices)

    def size_bytes(self) -> int:
        return int(self.vectors.nbytes)


@dataclass
class HnswIndex:
    """Approximate search through a faiss HNSW graph (inner product on normalised vectors)."""

    index: Any
    ef_search: int = HNSW_EF_SEARCH

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        links: int = HNSW_LINKS,
        ef_construction: int = HNSW_EF_CONSTRUCTION,
        ef_search: int = HNSW_EF_SEARCH,
    ) -> HnswIndex:
        import faiss  # only collections past the threshold need it

        index = faiss.IndexHNSWFlat(vectors.shape[1], links, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return cls(index, ef_search)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, int(self.index.ntotal))
        self.index.hnsw.efSearch = max(self.ef_search, k)
        scores, indices = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, indices.astype(np.int64)

    def size_bytes(self) -> int:
        import faiss

        return int(faiss.serialize_index(self.index).nbytes)


def vector_index(vectors: np.ndarray, exact_limit: int = EXACT_SEARCH_LIMIT) -> VectorIndex:
    """Exact search up to ``exact_limit`` vectors, an HNSW index past it."""
    if len(vectors) <= exact_limit:
        return ExactIndex(vectors)
    return HnswIndex.build(vectors)


def _hits(scores: np.ndarray, indices: np.ndarray) -> list[list[Hit]]:
    # faiss marks "fewer than k found" with index -1
    return [
        [(int(i), float(s)) for s, i in zip(row_scores, row_indices, strict=True) if i >= 0]
        for row_scores, row_indices in zip(scores.tolist(), indices.tolist(), strict=True)
    ]


# --------------------------------------------------------------------------- the retrievers


@dataclass
class DenseRetriever:
    """Cosine similarity of sentence embeddings."""

    encoder: FrozenEncoder
    index: VectorIndex

    @classmethod
    def build(
        cls,
        texts: Sequence[str],
        model: str = MINILM,
        max_length: int = DEFAULT_MAX_LENGTH,
        exact_limit: int = EXACT_SEARCH_LIMIT,
    ) -> DenseRetriever:
        """Load encoder ``model`` and embed ``texts`` (cached per model and texts)."""
        _require_texts(texts)
        encoder = FrozenEncoder.load(model, max_length)
        return cls(encoder, vector_index(encoder.embed_cached(model, texts), exact_limit))

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        _require_k(k)
        if not queries:
            return []
        return _hits(*self.index.search(self.encoder.embed(queries), k))


@dataclass
class SparseRetriever:
    """BM25 through ``bm25s``; ``stemmer`` is a Snowball language (PyStemmer) or None."""

    model: Any
    stemmer: str | None = "english"
    stopwords: str | None = "en"

    @classmethod
    def build(
        cls,
        texts: Sequence[str],
        stemmer: str | None = "english",
        stopwords: str | None = "en",
        k1: float = 1.5,
        b: float = 0.75,
    ) -> SparseRetriever:
        import bm25s

        _require_texts(texts)
        model = bm25s.BM25(k1=k1, b=b)
        model.index(_bm25_tokens(texts, stemmer, stopwords, ids=True), show_progress=False)
        return cls(model, stemmer, stopwords)

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        _require_k(k)
        if not queries:
            return []
        tokens = _bm25_tokens(queries, self.stemmer, self.stopwords, ids=False)
        k = min(k, int(self.model.scores["num_docs"]))
        indices, scores = self.model.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return [
            [hit for hit in row if hit[1] > 0]
            for row in _hits(np.asarray(scores), np.asarray(indices))
        ]


def _bm25_tokens(
    texts: Sequence[str], stemmer: str | None, stopwords: str | None, ids: bool
) -> Any:
    import bm25s

    stem = None
    if stemmer is not None:
        import Stemmer

        stem = Stemmer.Stemmer(stemmer).stemWords
    return bm25s.tokenize(
        list(texts), stopwords=stopwords or [], stemmer=stem, return_ids=ids, show_progress=False
    )


@dataclass
class HybridRetriever:
    """Reciprocal-rank fusion of several retrievers' rankings (dense and sparse)."""

    retrievers: Sequence[Retriever]
    rrf_k: int = RRF_K
    depth: int = HYBRID_DEPTH
    weights: Sequence[float] | None = None
    """Each retriever's weight in the fusion; None: 1 each (plain RRF)."""

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        _require_k(k)
        depth = max(k, self.depth)
        rankings = [retriever.retrieve(queries, depth) for retriever in self.retrievers]
        fused = []
        for query in range(len(queries)):
            ranked = [[index for index, _ in hits[query]] for hits in rankings]
            fused.append(reciprocal_rank_fusion(ranked, self.rrf_k, self.weights)[:k])
        return fused


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[int]], k: int = RRF_K, weights: Sequence[float] | None = None
) -> list[Hit]:
    """Items of every ranking by ``Σ w_r / (k + rank)`` (1-based ranks, ``w_r`` ranking r's
    weight, 1 when ``weights`` is None), highest first.

    Ties go to the smaller item index, so the order is deterministic; the sums are exact-rounded
    (``math.fsum``), so equal rank patterns give equal scores whatever the order of the lists.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings) or min(weights, default=0.0) < 0:
        raise ValueError(f"weights {weights}: one non-negative weight per ranking")
    terms: dict[int, list[float]] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, item in enumerate(ranking, start=1):
            terms.setdefault(item, []).append(weight / (k + rank))
    fused = [(item, math.fsum(values)) for item, values in terms.items()]
    return sorted(fused, key=lambda hit: (-hit[1], hit[0]))


def build_retriever(
    kind: RetrieverKind,
    texts: Sequence[str],
    model: str = MINILM,
    max_length: int = DEFAULT_MAX_LENGTH,
    exact_limit: int = EXACT_SEARCH_LIMIT,
) -> Retriever:
    """A retriever of ``kind`` over the chunk ``texts`` (``model`` embeds for dense/hybrid)."""
    if kind == "sparse":
        return SparseRetriever.build(texts)
    dense = DenseRetriever.build(texts, model, max_length, exact_limit)
    if kind == "dense":
        return dense
    if kind == "hybrid":
        return HybridRetriever([dense, SparseRetriever.build(texts)])
    raise ValueError(f"kind must be one of {', '.join(RETRIEVER_KINDS)}, got {kind!r}")


CHUNKS_FILE = "chunks.jsonl"
VECTORS_FILE = "vectors.safetensors"
INDEX_FILE = "index.json"


@dataclass
class CollectionIndex:
    """Every retriever over one chunked collection, saved in a folder of its own: the chunks
    (``chunks.jsonl``: id, document id, text), the dense vectors (safetensors) and the
    settings (``index.json``). BM25 is rebuilt from the texts on load (a second or so for
    100k chunks); the vectors are not re-embedded.

    ``build_seconds`` is what building cost when it was measured: embedding the chunks (or
    reading them from the embedding cache, ``vectors_cached``) and indexing them for BM25.
    """

    chunk_ids: list[str]
    chunk_documents: list[str]
    chunk_texts: list[str]
    dense: DenseRetriever
    sparse: SparseRetriever
    encoder_name: str
    build_seconds: float = 0.0
    vectors_cached: bool = False
    dense_weight: float = 1.0
    """The dense ranking's weight in the hybrid fusion (BM25's is 1); see
    :func:`tune_dense_weight`."""

    @classmethod
    def build(
        cls,
        chunk_ids: Sequence[str],
        chunk_documents: Sequence[str],
        chunk_texts: Sequence[str],
        model: str = MINILM,
        max_length: int = DEFAULT_MAX_LENGTH,
        exact_limit: int = EXACT_SEARCH_LIMIT,
    ) -> CollectionIndex:
        from adaptlab.models.encoder import embedding_cache_path

        _require_texts(chunk_texts)
        cached = embedding_cache_path(model, chunk_texts, max_length).is_file()
        start = time.perf_counter()
        dense = DenseRetriever.build(chunk_texts, model, max_length, exact_limit)
        sparse = SparseRetriever.build(chunk_texts)
        seconds = time.perf_counter() - start
        return cls(
            list(chunk_ids),
            list(chunk_documents),
            list(chunk_texts),
            dense,
            sparse,
            model,
            seconds,
            cached,
        )

    @property
    def retrievers(self) -> dict[str, Retriever]:
        return {
            "dense": self.dense,
            "sparse": self.sparse,
            "hybrid": HybridRetriever([self.dense, self.sparse], weights=(self.dense_weight, 1.0)),
        }

    def size_bytes(self) -> int:
        """What the index holds in memory: the dense vectors (or graph) and BM25's sparse
        score matrix and vocabulary."""
        scores = self.sparse.model.scores
        sparse = sum(int(np.asarray(v).nbytes) for v in scores.values() if hasattr(v, "nbytes"))
        vocabulary = sum(len(str(t)) + 8 for t in self.sparse.model.vocab_dict)
        return self.dense.index.size_bytes() + sparse + vocabulary

    def save(self, folder: Path) -> None:
        """The chunks, vectors and settings into ``folder`` (made whole or not at all)."""
        from adaptlab.paths import write_folder

        index = self.dense.index
        vectors = index.vectors if isinstance(index, ExactIndex) else _hnsw_vectors(index)

        def write(staging: Path) -> None:
            rows = zip(self.chunk_ids, self.chunk_documents, self.chunk_texts, strict=True)
            lines = [
                json.dumps({"id": i, "document_id": d, "text": t}, ensure_ascii=False)
                for i, d, t in rows
            ]
            (staging / CHUNKS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
            save_file(
                {"vectors": torch.from_numpy(np.ascontiguousarray(vectors))},
                str(staging / VECTORS_FILE),
            )
            settings = {
                "encoder": self.encoder_name,
                "max_length": self.dense.encoder.max_length,
                "chunks": len(self.chunk_ids),
                "build_seconds": round(self.build_seconds, 3),
                "vectors_cached": self.vectors_cached,
                "dense_weight": self.dense_weight,
                "stemmer": self.sparse.stemmer,
                "stopwords": self.sparse.stopwords,
            }
            (staging / INDEX_FILE).write_text(json.dumps(settings, indent=2) + "\n")

        write_folder(folder, write)

    @classmethod
    def load(cls, folder: Path, exact_limit: int = EXACT_SEARCH_LIMIT) -> CollectionIndex:
        """An index saved by :meth:`save`; safetensors and JSON only."""
        from safetensors.numpy import load_file

        settings = json.loads((folder / INDEX_FILE).read_text(encoding="utf-8"))
        rows = [
            json.loads(line)
            for line in (folder / CHUNKS_FILE).read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        texts = [str(row["text"]) for row in rows]
        vectors = load_file(str(folder / VECTORS_FILE))["vectors"]
        if len(vectors) != len(rows):
            raise ValueError(
                f"{folder}: {len(vectors)} vectors for {len(rows)} chunks; the index is damaged"
            )
        encoder = FrozenEncoder.load(settings["encoder"], int(settings["max_length"]))
        dense = DenseRetriever(encoder, vector_index(vectors, exact_limit))
        sparse = SparseRetriever.build(texts, settings["stemmer"], settings["stopwords"])
        return cls(
            [str(row["id"]) for row in rows],
            [str(row["document_id"]) for row in rows],
            texts,
            dense,
            sparse,
            settings["encoder"],
            float(settings["build_seconds"]),
            bool(settings["vectors_cached"]),
            float(settings.get("dense_weight", 1.0)),
        )


DENSE_WEIGHTS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
"""The dense weights :func:`tune_dense_weight` tries (0 would drop dense retrieval)."""


def tune_dense_weight(
    index: CollectionIndex,
    queries: Sequence[str],
    gold: Sequence[Collection[str]],
    k: int,
    weights: Sequence[float] = DENSE_WEIGHTS,
) -> tuple[float, dict[float, float]]:
    """The dense weight of the hybrid fusion with the highest recall@``k`` on ``queries``
    (training questions that name their gold documents, never eval ones), and each weight's
    recall; ties go to the larger weight (the plain fusion's 1 first). A sentence encoder
    trained on general text can rank a specialised collection worse than BM25 does, and then
    an equal vote in the fusion costs recall (COVID-QA: bench/RESULTS.md)."""
    if len(queries) != len(gold) or not queries:
        raise ValueError("tuning needs queries, each with its gold documents")
    dense = index.dense.retrieve(queries, HYBRID_DEPTH)
    sparse = index.sparse.retrieve(queries, HYBRID_DEPTH)
    recall = {}
    for weight in weights:
        fused = [
            reciprocal_rank_fusion([[i for i, _ in a], [i for i, _ in b]], RRF_K, (weight, 1.0))[:k]
            for a, b in zip(dense, sparse, strict=True)
        ]
        recall[weight] = score_retrieval(fused, index.chunk_documents, gold, (k,)).recall[k]
    best = max(sorted(recall, reverse=True), key=lambda w: recall[w])
    return best, recall


def _hnsw_vectors(index: Any) -> np.ndarray:
    """The vectors an HNSW index was built from (faiss keeps them: ``IndexHNSWFlat``)."""
    graph = index.index
    return np.asarray(graph.reconstruct_n(0, int(graph.ntotal)), dtype=np.float32)


def _require_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def _require_texts(texts: Sequence[str]) -> None:
    if not texts:
        raise ValueError("no chunk texts to index: the collection has no chunks")


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class QueryScore:
    """One query: the 1-based rank of its first chunk from a gold document (None: not in the
    hits scored) and whether one was within each k."""

    first_gold_rank: int | None
    hit_at: dict[int, bool]

    @property
    def reciprocal_rank(self) -> float:
        return 0.0 if self.first_gold_rank is None else 1.0 / self.first_gold_rank


@dataclass(frozen=True)
class RetrievalScores:
    """recall@k for each k and MRR, averaged over the queries, and each query's own."""

    recall: dict[int, float]
    mrr: float
    per_query: list[QueryScore] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "queries": len(self.per_query),
            **{f"recall@{k}": value for k, value in self.recall.items()},
            "mrr": self.mrr,
        }


def score_retrieval(
    hits: Sequence[Sequence[Hit]],
    chunk_documents: Sequence[str],
    gold: Sequence[Collection[str]],
    ks: Sequence[int] = (1, 5, 20),
) -> RetrievalScores:
    """recall@k for every ``k`` in ``ks`` and MRR over the top ``max(ks)`` hits.

    ``chunk_documents[i]`` is the document id of chunk ``i``; ``gold[q]`` the ids of the
    documents that answer query ``q``. recall@k is the share of queries with at least one
    chunk of a gold document among their top ``k`` hits (several chunks of one document count
    once: it is a hit rate, the usual "recall" of retrieval for QA). The reciprocal rank is
    ``1 / r`` for the first such chunk at 1-based rank ``r`` within the top ``max(ks)``, else 0.
    """
    if len(hits) != len(gold):
        raise ValueError(f"hits ({len(hits)} queries) and gold ({len(gold)}) differ in length")
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be non-empty and each >= 1, got {list(ks)}")
    depth = max(ks)
    per_query = []
    for number, (ranked, wanted) in enumerate(zip(hits, gold, strict=True)):
        if not wanted:
            raise ValueError(f"query {number} names no gold document: it cannot be scored")
        rank = next(
            (r for r, (i, _) in enumerate(ranked[:depth], 1) if chunk_documents[i] in wanted),
            None,
        )
        per_query.append(QueryScore(rank, {k: rank is not None and rank <= k for k in ks}))
    count = max(1, len(per_query))
    return RetrievalScores(
        recall={k: sum(q.hit_at[k] for q in per_query) / count for k in ks},
        mrr=sum(q.reciprocal_rank for q in per_query) / count,
        per_query=per_query,
    )
