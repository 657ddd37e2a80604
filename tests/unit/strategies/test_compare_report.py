"""``compare`` ends by writing the report: on the tiny encoder and on the tiny Llama (real
runs, seconds); every file it writes into the experiment folder is renamed into place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.unit.strategies.test_generative import chat_experiment
from tests.unit.writes import trace_writes, written_in_place

from adaptlab.compare import compare
from adaptlab.config import ExperimentConfig

TOPICS = {
    "cards": ["card", "pin", "atm", "contactless", "chip", "debit"],
    "refunds": ["refund", "return", "merchant", "dispute", "chargeback", "receipt"],
}


def test_compare_writes_the_report(tmp_path: Path, tiny_encoder: Path) -> None:
    rows = [
        {"text": f"question {n} about my {words[n % 6]} number {n * 7919}", "label": topic}
        for topic, words in TOPICS.items()
        for n in range(16)
    ]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows))
    experiment = ExperimentConfig.model_validate(
        {
            "name": "tiny",
            "output_dir": str(tmp_path / "runs"),
            "data": {"train": str(train), "val_set_size": 0.25},
            "model": {"base_model": str(tiny_encoder), "sequence_len": 32},
            "compare": {"latency_budget_s": 0.1, "bootstrap_resamples": 200},
        }
    )
    logs: list[str] = []
    with trace_writes() as writes:
        result = compare(experiment, ["zero_shot", "knn"], log=logs.append)
    # every file of the experiment folder (its runs, the comparison, the report) was written
    # under a temporary name and renamed into place
    assert written_in_place(writes, result.folder) == []
    html = (result.folder / "report.html").read_text()
    markdown = (result.folder / "report.md").read_text()
    assert not any(line.startswith("report not built") for line in logs), logs
    assert 'id="recommendation"' in html and 'id="plot-quality-cost"' in html
    recommended = markdown.split("Recommended: ")[1].split(" ")[0]
    assert recommended in {"zero_shot", "knn"}
    # the report shows exactly the comparison compare just wrote, and its data report
    assert f"Best on accuracy: {result.comparison['best']}." in markdown
    assert "## Data" in markdown and "after dedup" in markdown


def test_compare_on_chat_data_writes_the_generative_report(
    tmp_path: Path, tiny_llm: Path, tiny_encoder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))
    experiment = chat_experiment(tmp_path, tiny_llm, tiny_encoder)
    logs: list[str] = []
    with trace_writes() as writes:
        result = compare(experiment, ["prompt", "few_shot"], log=logs.append)
    assert written_in_place(writes, result.folder) == []
    assert not any(line.startswith("report not built") for line in logs), logs
    html = (result.folder / "report.html").read_text()
    for plot in ("plot-quality-cost", "plot-per-slot", "plot-forgetting"):
        assert f'id="{plot}"' in html
    assert "ranked on slot F1" in html
