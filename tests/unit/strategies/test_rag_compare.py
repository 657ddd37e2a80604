"""Retrieval-augmented generation through ``compare``: a tiny collection of three documents,
questions naming their gold document, and the ``rag``/``rag_sft`` runs beside closed-book
``prompt``. BM25's ranking on this collection is worked out by hand below, so the recall in
``eval.json`` is checked against numbers computed without adaptlab; a changed collection
makes the retrieval runs stale and leaves the closed-book run alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.unit.strategies.test_generative import write_jsonl

from adaptlab.compare import compare
from adaptlab.config import ConfigError, ExperimentConfig
from adaptlab.data.lock import read_lock
from adaptlab.data.pipeline import check_data
from adaptlab.evaluate.grounding import groundedness, strip_citations

DOCUMENTS = {
    "library.txt": "The library opens at nine in the morning.",
    "parking.txt": "Parking costs two euros per hour.",
    "cafeteria.txt": "The cafeteria serves soup on Mondays.",
}
QUIET = {"log": lambda _: None}


def chat(question: str, answer: str, gold: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ],
        "documents": [gold],
    }


TRAIN = [
    chat("Which day is soup served?", "On Mondays.", "cafeteria.txt"),
    chat("What does parking cost per hour?", "Two euros.", "parking.txt"),
    chat("At what time is the library open?", "At nine.", "library.txt"),
]
EVAL = [
    # BM25 (stemmed, English stop words out): "library" and "open" (opens) occur only in
    # library.txt, which ranks first: a hit at 1.
    chat("When does the library open?", "At nine in the morning.", "library.txt"),
    # "parking" and "cost" (costs) only in parking.txt: a hit at 1.
    chat("How much does parking cost?", "Two euros per hour.", "parking.txt"),
    # "eat" occurs in no document: BM25 returns nothing (a zero score is no evidence), a miss
    # at every depth.
    chat("Where can I eat?", "In the cafeteria.", "cafeteria.txt"),
]
HAND_RECALL = {"recall@1": 2 / 3, "recall@5": 2 / 3, "recall@20": 2 / 3, "mrr": 2 / 3}


def write_documents(folder: Path, documents: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in documents.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def rag_experiment(
    tmp_path: Path,
    tiny_llm: Path,
    tiny_encoder: Path,
    strategies: list[str],
    documents: Path | None,
) -> ExperimentConfig:
    retrieval = {"k": 1, "retriever": "sparse", "encoder": str(tiny_encoder)}
    data: dict[str, Any] = {
        "train": write_jsonl(tmp_path / "train.jsonl", TRAIN),
        "eval": write_jsonl(tmp_path / "eval.jsonl", EVAL),
        "dedup": False,
        "chunk_tokens": 32,
        "chunk_overlap_tokens": 8,
    }
    if documents is not None:
        data["documents"] = str(documents)
    return ExperimentConfig.model_validate(
        {
            "name": "rag-tiny",
            "output_dir": str(tmp_path / "runs"),
            "data": data,
            "model": {"base_model": str(tiny_llm), "sequence_len": 256},
            "train": {"max_steps": 2, "micro_batch_size": 4},
            "strategies": {
                "rag": retrieval,
                "rag_sft": retrieval,
                "prompt": {},
            },
            "compare": {
                "strategies": strategies,
                "latency_budget_s": 0.05,
                "bootstrap_resamples": 200,
                "similarity_model": str(tiny_encoder),
                "retention": {"enabled": False},
            },
        }
    )


@pytest.fixture(scope="module")
def finished(
    tmp_path_factory: pytest.TempPathFactory, tiny_llm: Path, tiny_encoder: Path
) -> tuple[Path, ExperimentConfig, Any]:
    tmp_path = tmp_path_factory.mktemp("rag")
    documents = write_documents(tmp_path / "documents", DOCUMENTS)
    config = rag_experiment(
        tmp_path, tiny_llm, tiny_encoder, ["prompt", "rag", "rag_sft"], documents
    )
    return tmp_path, config, compare(config, **QUIET)


def read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def test_bm25_recall_in_eval_json_equals_the_hand_computed_ranking(
    finished: tuple[Path, ExperimentConfig, Any],
) -> None:
    _, _, result = finished
    assert result.failures == {}
    for name in ("rag", "rag_sft"):
        retrieval = read(result.folder / "runs" / name / "eval.json")["retrieval"]
        assert (retrieval["used"], retrieval["k"], retrieval["queries_with_gold"]) == (
            "sparse",
            1,
            3,
        )
        sparse = retrieval["by_retriever"]["sparse"]
        for key, value in HAND_RECALL.items():
            assert sparse[key] == pytest.approx(value), (name, key)
        assert set(retrieval["by_retriever"]) == {"dense", "sparse", "hybrid"}


def test_the_chunks_shown_are_bm25s_and_groundedness_is_measured_on_them(
    finished: tuple[Path, ExperimentConfig, Any],
) -> None:
    _, _, result = finished
    run = result.folder / "runs" / "rag"
    rows = [json.loads(line) for line in (run / "generations.jsonl").open()]
    assert [row["context"] for row in rows] == [["library.txt#0"], ["parking.txt#0"], []]
    chunks = {
        row["id"]: row["text"]
        for row in map(json.loads, (run / "index" / "chunks.jsonl").read_text().splitlines())
    }
    expected = [
        groundedness(strip_citations(row["text"]), [chunks[c] for c in row["context"]])
        for row in rows
    ]
    grounding = read(run / "eval.json")["grounding"]
    assert grounding["groundedness"] == pytest.approx(sum(expected) / len(expected))
    assert 0 <= grounding["citation_accuracy"] <= grounding["citation_rate"] <= 1


def test_cost_records_the_index_and_the_passages_in_every_prompt(
    finished: tuple[Path, ExperimentConfig, Any],
) -> None:
    _, _, result = finished
    runs = result.folder / "runs"
    rag, prompt = read(runs / "rag" / "cost.json"), read(runs / "prompt" / "cost.json")
    assert rag["index_chunks"] == 3 and rag["index_bytes"] > 0 and rag["index_build_s"] >= 0
    assert rag["prompt_tokens_per_request"] > prompt["prompt_tokens_per_request"]
    rows = {row["strategy"]: row for row in result.comparison["rows"]}
    assert rows["rag"]["retriever"] == "sparse" and rows["prompt"]["retriever"] is None
    assert rows["rag"]["retrieval_recall_at_k"] == pytest.approx(2 / 3)


def test_a_changed_collection_makes_the_retrieval_runs_stale_and_no_other(
    finished: tuple[Path, ExperimentConfig, Any], tiny_llm: Path, tiny_encoder: Path
) -> None:
    tmp_path, config, result = finished
    runs = result.folder / "runs"
    before = {name: read(runs / name / "manifest.json") for name in ("prompt", "rag")}
    locked = read_lock(result.folder / "data").documents
    assert locked is not None and locked["sha256"] == before["rag"]["documents_sha256"]

    unchanged = compare(config, ["prompt", "rag"], **QUIET)
    assert unchanged.failures == {}
    same = {name: read(runs / name / "manifest.json") for name in ("prompt", "rag")}
    assert same == before  # nothing changed: both skipped

    (tmp_path / "documents" / "parking.txt").write_text(
        "Parking is free on Sundays.", encoding="utf-8"
    )
    changed = compare(config, ["prompt", "rag"], **QUIET)
    assert changed.failures == {}
    after = {name: read(runs / name / "manifest.json") for name in ("prompt", "rag")}
    assert after["prompt"] == before["prompt"]  # closed book: still current
    assert after["rag"]["documents_sha256"] != before["rag"]["documents_sha256"]
    assert after["rag"]["created_at"] >= before["rag"]["created_at"]
    assert read_lock(result.folder / "data").documents["sha256"] == after["rag"]["documents_sha256"]


def test_a_retrieval_strategy_without_documents_is_refused_before_anything_runs(
    tmp_path: Path, tiny_llm: Path, tiny_encoder: Path
) -> None:
    config = rag_experiment(tmp_path, tiny_llm, tiny_encoder, ["prompt", "rag"], None)

    with pytest.raises(ConfigError, match=r"'rag'.*data\.documents"):
        compare(config, **QUIET)
    assert not (tmp_path / "runs" / "rag-tiny" / "runs" / "prompt").exists()


def test_a_gold_id_missing_from_the_collection_is_named_by_file_and_line(
    tmp_path: Path, tiny_llm: Path, tiny_encoder: Path
) -> None:
    documents = write_documents(tmp_path / "documents", DOCUMENTS)
    config = rag_experiment(tmp_path, tiny_llm, tiny_encoder, ["rag"], documents)
    records = [*EVAL[:2], chat("Is there a gym?", "No.", "gym.txt")]
    write_jsonl(tmp_path / "eval.jsonl", records)

    result = check_data(config.data, config.model)

    issues = [i for i in result.eval.loaded.issues if i.error == "unknown_document"]  # type: ignore[union-attr]
    assert [(i.line, i.field, i.severity) for i in issues] == [(3, "documents", "warning")]
    assert "gym.txt" in issues[0].message
    assert result.report["documents"]["documents"]["kept"] == 3


def test_without_documents_the_default_list_leaves_retrieval_out_and_says_why(
    tmp_path: Path, tiny_llm: Path, tiny_encoder: Path
) -> None:
    from adaptlab.compare import experiment_task, prepare_experiment_data, runnable_here

    config = rag_experiment(tmp_path, tiny_llm, tiny_encoder, ["prompt"], None)
    task = experiment_task(prepare_experiment_data(config, lambda i, *_: i, print))
    said: list[str] = []

    kept = runnable_here(
        ["prompt", "rag", "rag_sft"], config, chosen=False, log=said.append, task=task
    )

    assert kept == ["prompt"]
    assert [line.split("]")[0] for line in said] == ["[rag", "[rag_sft"]
    with pytest.raises(ConfigError, match="data.documents"):
        runnable_here(["prompt", "rag"], config, chosen=True, log=said.append, task=task)
