"""Benchmark: where an ANN index starts to pay against exact search (issue 15, item 2).

Random unit vectors of 384 dimensions (all-MiniLM-L6-v2's width), searched for their top 10 by
inner product (= cosine) two ways:

- exact: one PyTorch matrix product and ``topk``, as ``adaptlab.models.document_retrieval`` does
  below its threshold;
- ANN: the module's HNSW graph (faiss ``IndexHNSWFlat``), built with its settings, searched
  with each ``--ef-search`` width.

For each size it prints one JSON line: build seconds (the index only; exact has none),
milliseconds per query batch (batch 1 = one request, batch 64 = an eval pass), the ratio
exact/ANN (> 1: the index pays) and the ANN's recall@10 against the exact top 10. Random
vectors are the hard case for HNSW (no clusters to exploit): real embeddings recall more.

    python bench/ann_threshold.py [--sizes 2000 20000 100000 500000]
        [--ef-search 64 128 256] [--clusters 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from adaptlab.models.document_retrieval import HNSW_EF_SEARCH

DIMENSIONS = 384
TOP_K = 10


def unit_vectors(count: int, seed: int, clusters: int = 0) -> np.ndarray:
    """Gaussian directions; with ``clusters``, noisy copies of that many centres instead (closer
    to real sentence embeddings, whose neighbourhoods HNSW exploits)."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, DIMENSIONS), dtype=np.float32)
    if clusters:
        centres = np.random.default_rng(0).standard_normal((clusters, DIMENSIONS), dtype=np.float32)
        vectors = centres[rng.integers(0, clusters, count)] + 0.5 * vectors
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def median_ms(
    search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray, repeats: int
) -> float:
    search(queries)  # warm-up: first calls page the vectors in
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        search(queries)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def exact_search(vectors: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    matrix = torch.from_numpy(vectors)

    def search(queries: np.ndarray) -> np.ndarray:
        scores = torch.from_numpy(queries) @ matrix.T
        return scores.topk(TOP_K, dim=1).indices.numpy()

    return search


Search = Callable[[np.ndarray], np.ndarray]


def faiss_index(vectors: np.ndarray) -> Callable[[int], Search]:
    """The module's own index (same links and construction width); efSearch varies."""
    from adaptlab.models.document_retrieval import HnswIndex

    index = HnswIndex.build(vectors)

    def with_ef(ef_search: int) -> Search:
        index.ef_search = ef_search
        return lambda queries: index.search(queries, TOP_K)[1]

    return with_ef


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f) & set(t)) for f, t in zip(found.tolist(), truth.tolist(), strict=True))
    return hits / truth.size


def measure(
    count: int, ef_searches: list[int], clusters: int, repeats: int
) -> list[dict[str, object]]:
    vectors = unit_vectors(count, seed=0, clusters=clusters)
    queries = unit_vectors(64, seed=1, clusters=clusters)
    exact = exact_search(vectors)
    exact_ms = {batch: median_ms(exact, queries[:batch], repeats) for batch in (1, 64)}
    start = time.perf_counter()
    index = faiss_index(vectors)
    build_s = time.perf_counter() - start
    rows = []
    for ef_search in ef_searches:
        ann = index(ef_search)
        row: dict[str, object] = {
            "vectors": count,
            "data": f"{clusters} clusters" if clusters else "random",
            "build_s": round(build_s, 2),
            "ef_search": ef_search,
        }
        for batch in (1, 64):
            ann_ms = median_ms(ann, queries[:batch], repeats)
            row[f"exact_ms_b{batch}"] = round(exact_ms[batch], 3)
            row[f"ann_ms_b{batch}"] = round(ann_ms, 3)
            row[f"exact_over_ann_b{batch}"] = round(exact_ms[batch] / ann_ms, 2)
        row["ann_recall_at_10"] = round(recall(ann(queries), exact(queries)), 3)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2_000, 20_000, 100_000, 500_000])
    parser.add_argument("--ef-search", type=int, nargs="+", default=[HNSW_EF_SEARCH])
    parser.add_argument("--clusters", type=int, default=0, help="0: plain random vectors")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(
        json.dumps(
            {
                "machine": platform.processor() or platform.machine(),
                "cpus": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "load_average_1m": round(os.getloadavg()[0], 2),
            }
        ),
        flush=True,
    )
    for count in args.sizes:
        for row in measure(count, args.ef_search, args.clusters, args.repeats):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
