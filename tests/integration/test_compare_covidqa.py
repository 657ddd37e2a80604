"""``adaptlab compare`` on a COVID-QA slice (retrieval-augmented generation) with the real
SmolLM2 and MiniLM: closed-book prompt, rag and rag_sft from start to end, through the command
line, over the passages of five articles.

The recall each retrieval run reports is checked against the chunks its prompts actually
showed (``generations.jsonl``'s ``context``): the share of questions with a chunk of their gold
passage among the k shown is recall@k of the retriever used. (The hand-computed check on a
tiny collection is ``tests/unit/strategies/test_rag_compare.py``, which also shows a changed
collection rerunning the retrieval runs and no other.)

The slice: 15 training questions on three training articles, 6 test questions on two test
articles, their 43 passages; answers capped at 24 tokens; rag_sft takes 2 steps of 2 rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tests.integration.conftest import SHARED_DATA, require_shared
from typer.testing import CliRunner

from adaptlab.cli import app
from adaptlab.models.bundled import BUNDLED, SMOLLM2, package_dir

pytestmark = pytest.mark.integration

COVIDQA = SHARED_DATA / "covidqa"
RUNS = ("prompt", "rag", "rag_sft")


def adaptlab(*args: str) -> None:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output[-3000:]


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def slice_of(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Questions and passages of the first three training and two test articles."""
    train = jsonl(COVIDQA / "questions_train.jsonl")
    test = jsonl(COVIDQA / "questions_test.jsonl")
    train_articles = sorted({q["article_id"] for q in train})[:3]
    test_articles = sorted({q["article_id"] for q in test})[:2]
    articles = {*train_articles, *test_articles}
    passages = [p for p in jsonl(COVIDQA / "passages.jsonl") if p["article_id"] in articles]
    questions = write(
        tmp_path / "q_train.jsonl", [q for q in train if q["article_id"] in train_articles][:15]
    )
    held = write(
        tmp_path / "q_test.jsonl", [q for q in test if q["article_id"] in test_articles][:6]
    )
    return questions, held, write(tmp_path / "passages.jsonl", passages)


def test_compare_on_a_covidqa_slice_with_prompt_rag_and_rag_sft(tmp_path: Path) -> None:
    require_shared(COVIDQA / "passages.jsonl", COVIDQA / "questions_train.jsonl")
    if package_dir(BUNDLED[SMOLLM2].package) is None:
        pytest.skip(f"{SMOLLM2} is not installed: {BUNDLED[SMOLLM2].install}")
    questions, held, passages = slice_of(tmp_path)
    adaptlab("data", "convert", "covidqa", str(questions), str(tmp_path / "train.jsonl"))
    adaptlab("data", "convert", "covidqa", str(held), str(tmp_path / "test.jsonl"))
    config = yaml.safe_load((Path(__file__).parents[2] / "configs" / "covidqa.yaml").read_text())
    config.update(name="covidqa-slice", output_dir=str(tmp_path / "runs"))
    config["data"].update(
        train=str(tmp_path / "train.jsonl"),
        eval=str(tmp_path / "test.jsonl"),
        documents=str(passages),
    )
    config["train"] = {"max_steps": 2, "micro_batch_size": 2}
    config["compare"].update(strategies=list(RUNS), latency_budget_s=0.1, bootstrap_resamples=500)
    for name in RUNS:
        config["strategies"].setdefault(name, {})["decoding"] = {"max_new_tokens": 24}
    (tmp_path / "covidqa.yaml").write_text(yaml.safe_dump(config))
    adaptlab("compare", str(tmp_path / "covidqa.yaml"))

    folder = tmp_path / "runs" / "covidqa-slice"
    gold = [row["documents"] for row in jsonl(tmp_path / "test.jsonl")]
    comparison = json.loads((folder / "comparison.json").read_text())
    assert comparison["failures"] == {}
    assert {row["strategy"] for row in comparison["rows"]} == set(RUNS)
    for name in RUNS:
        run = folder / "runs" / name
        manifest = json.loads((run / "manifest.json").read_text())
        evaluation = json.loads((run / "eval.json").read_text())
        assert evaluation["n"] == 6 and 0 <= evaluation["metrics"]["token_f1"] <= 1
        if name == "prompt":
            assert "retrieval" not in evaluation and "documents_sha256" not in manifest
            continue
        rows = jsonl(run / "generations.jsonl")
        retrieval = evaluation["retrieval"]
        k = retrieval["k"]
        shown_gold = [
            any(chunk.rsplit("#", 1)[0] in gold[row["index"]] for chunk in row["context"])
            for row in rows
        ]
        assert all(len(row["context"]) == k for row in rows)
        recall = retrieval["by_retriever"][retrieval["used"]][f"recall@{k}"]
        assert recall == pytest.approx(sum(shown_gold) / len(rows))
        assert 0 <= evaluation["grounding"]["groundedness"] <= 1
        cost = json.loads((run / "cost.json").read_text())
        assert cost["index_chunks"] > 43 and cost["index_bytes"] > 0
        assert manifest["documents_sha256"] == manifest_lock(folder)
    assert "## Retrieval" in (folder / "report.md").read_text()


def manifest_lock(folder: Path) -> str:
    """The collection hash the experiment's eval lock records."""
    return str(json.loads((folder / "data" / "eval.lock").read_text())["documents"]["sha256"])
