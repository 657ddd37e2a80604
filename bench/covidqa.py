"""Benchmark: retrieval-augmented generation on COVID-QA with SmolLM2-135M.

    python bench/covidqa.py [--strategies a,b] [--out DIR] [--no-run]

1. ``adaptlab data convert covidqa`` (in process) of ../shared/data/covidqa's training and test
   questions (runs/covidqa/train.jsonl and test.jsonl, each naming its gold passage).
2. ``adaptlab compare configs/covidqa.yaml``: closed-book prompt and sft_lora, rag and rag_sft
   over the 1,781 passages, on the same fixed sample of test questions (``eval_limit``).
3. Retrieval on all 264 test questions: recall@1/5/20 and MRR of dense (MiniLM), BM25 and
   hybrid (reciprocal-rank fusion) over the prepared chunks.

Prints one JSON object: the retrieval table, the leaderboard rows (ROUGE-L and token F1 with
intervals, groundedness, citation accuracy, latency, prompt tokens, cost), issue 15's goals
(hybrid recall@5 at or above dense and BM25; rag against closed-book prompt and rag_sft
against rag, paired bootstrap) and the wall time. bench/RESULTS.md records it.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from benchlib import ROOT, arguments, comparison_for, paired

DATA = ROOT / ".." / "shared" / "data" / "covidqa"
EXPERIMENT = "covidqa"
METRICS = ("rougeL", "token_f1", "embedding_similarity")
PAIRS = (("rag", "prompt"), ("rag_sft", "rag"), ("rag", "sft_lora"), ("rag_sft", "sft_lora"))


def prepare() -> None:
    from adaptlab.data.convert import convert_covidqa

    folder = ROOT / "runs" / "covidqa"
    folder.mkdir(parents=True, exist_ok=True)
    convert_covidqa(DATA / "questions_train.jsonl", folder / "train.jsonl")
    convert_covidqa(DATA / "questions_test.jsonl", folder / "test.jsonl")


def questions(name: str) -> tuple[list[str], list[list[str]]]:
    """The converted questions of ``name`` (train or test) and their gold passages."""
    from adaptlab.data.formats import read_rows

    rows = [row for _, row in read_rows(ROOT / "runs" / "covidqa" / f"{name}.jsonl")]
    asked = [str(row["messages"][0]["content"]) for row in rows]  # type: ignore[index]
    return asked, [list(row["documents"]) for row in rows]  # type: ignore[index]


def retrieval(out: Path, k: int = 3) -> dict[str, Any]:
    """recall@k and MRR of each retriever on every test question, over the prepared chunks:
    hybrid with the dense weight tuned on the training questions (recall@``k``, the preset's
    k, as rag and rag_sft tune it) and with equal weights (plain RRF)."""
    from adaptlab.data.documents import read_collection
    from adaptlab.models.document_retrieval import (
        CollectionIndex,
        HybridRetriever,
        score_retrieval,
        tune_dense_weight,
    )

    collection = read_collection(out / EXPERIMENT / "data")
    chunks = collection.chunks
    start = time.perf_counter()
    index = CollectionIndex.build(
        [c.id for c in chunks], [c.document_id for c in chunks], [c.text for c in chunks]
    )
    build_s = time.perf_counter() - start
    index.dense_weight, tuning = tune_dense_weight(index, *questions("train"), k)
    asked, gold = questions("test")
    retrievers = {
        **index.retrievers,
        "hybrid_equal_weights": HybridRetriever([index.dense, index.sparse]),
    }
    table = {}
    for kind, retriever in retrievers.items():
        start = time.perf_counter()
        hits = retriever.retrieve(asked, 20)
        seconds = time.perf_counter() - start
        scores = score_retrieval(hits, index.chunk_documents, gold, (1, 3, 5, 20))
        table[kind] = {**scores.to_dict(), "ms_per_query": 1000 * seconds / len(asked)}
    recall5 = {kind: row["recall@5"] for kind, row in table.items()}
    return {
        "chunks": len(chunks),
        "index_build_s": round(build_s, 2),
        "vectors_cached": index.vectors_cached,
        "index_bytes": index.size_bytes(),
        "dense_weight_tuned_on_train": index.dense_weight,
        "train_recall_at_k_by_dense_weight": tuning,
        "by_retriever": table,
        "hybrid_recall5_at_or_above_both": recall5["hybrid"]
        >= max(recall5["dense"], recall5["sparse"]),
    }


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    if not args.no_run:
        prepare()
    comparison = comparison_for(args, "covidqa.yaml", EXPERIMENT)
    runs = args.out / EXPERIMENT / "runs"
    rows = {row["strategy"]: row for row in comparison["rows"]}
    summary = {
        "bench": EXPERIMENT,
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "retrieval_all_test_questions": retrieval(args.out),
        "pairs": {
            f"{a}-{b}": {metric: paired(runs, a, b, metric) for metric in METRICS}
            for a, b in PAIRS
            if a in rows and b in rows
        },
        "runs": {
            name: {
                "eval": {
                    key: json.loads((runs / name / "eval.json").read_text()).get(key)
                    for key in ("grounding", "retrieval", "metrics", "tokens")
                },
                "cost": json.loads((runs / name / "cost.json").read_text()),
            }
            for name in rows
        },
        "leaderboard": comparison["rows"],
        "compare_wall_s": comparison["compare_wall_s"],
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
