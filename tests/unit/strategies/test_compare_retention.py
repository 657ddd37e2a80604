"""Retention through ``compare``: every generative run's eval.json gets its retention and its
change against the base model, measured once per experiment; the comparison rows and the
leaderboard carry the forgetting.

The base model is the tiny Llama trained a few steps on general (replay) text, and one run
prompts the untrained tiny Llama instead: its held-out perplexity must come out worse than the
base's, while the run that prompts the base model itself shows no change at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.unit.evaluate.test_forgetting import SMALL, replay_trained_llm
from tests.unit.strategies.test_generative import DECODING, chat_experiment

from adaptlab.compare import BASE_RETENTION, base_retention, compare
from adaptlab.comparison import leaderboard_cells, leaderboard_headers
from adaptlab.config import ExperimentConfig
from adaptlab.models.encoder import model_fingerprint


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))


def retention_experiment(
    tmp_path: Path, base: Path, other: Path, tiny_encoder: Path, **retention: Any
) -> ExperimentConfig:
    return chat_experiment(
        tmp_path,
        base,
        tiny_encoder,
        model={"base_model": str(base), "sequence_len": 32},
        strategies={
            "prompt": {"decoding": DECODING},
            "prompt_other": {"strategy": "prompt", "model": str(other), "decoding": DECODING},
        },
        compare={
            "latency_budget_s": 0.05,
            "bootstrap_resamples": 200,
            "retention": {**SMALL.model_dump(), **retention},
        },
    )


def test_compare_measures_retention_against_the_base_once(
    tmp_path: Path, tiny_llm: Path, tiny_encoder: Path
) -> None:
    base = replay_trained_llm(tiny_llm, tmp_path / "base")
    config = retention_experiment(tmp_path, base, tiny_llm, tiny_encoder)
    messages: list[str] = []

    result = compare(config, ["prompt", "prompt_other"], log=messages.append)

    assert result.failures == {}
    assert sum("measuring the base model's retention" in m for m in messages) == 1
    runs = result.folder / "runs"
    evaluations = {
        n: json.loads((runs / n / "eval.json").read_text()) for n in ("prompt", "prompt_other")
    }
    for measured in (e["retention"] for e in evaluations.values()):
        assert measured["perplexity"]["tokens"] == 8 * 63
        assert measured["instructions"]["asked"] == 6
        assert measured["vs_base"]["base_model"] == str(base)
    same = evaluations["prompt"]["retention"]["vs_base"]
    assert same["forgetting"] == 0.0 and same["perplexity_ratio"] == pytest.approx(1.0)
    assert same["instructions_lost"] == []
    other = evaluations["prompt_other"]["retention"]["vs_base"]
    assert other["perplexity_ratio"] > 1.2 and other["nll_increase"] > 0
    assert other["forgetting"] == pytest.approx(
        other["base_instruction_pass_rate"] - other["instruction_pass_rate"]
    )

    cached = json.loads((result.folder / BASE_RETENTION).read_text())
    assert cached["key"]["model_fingerprint"] == model_fingerprint(str(base))
    assert cached["retention"]["perplexity"]["perplexity"] == other["base_perplexity"]

    rows = {row["strategy"]: row for row in result.comparison["rows"]}
    for name, evaluation in evaluations.items():
        change = evaluation["retention"]["vs_base"]
        assert rows[name]["forgetting"] == change["forgetting"]
        assert rows[name]["perplexity_ratio"] == change["perplexity_ratio"]
        assert rows[name]["instruction_pass_rate"] == change["instruction_pass_rate"]
    board = (result.folder / "leaderboard.md").read_text()
    header = board.splitlines()[0]
    assert "| general instructions (Δ pts vs base) | held-out perplexity (× base) |" in header
    cells = dict(
        zip(leaderboard_headers(result.comparison), leaderboard_cells(rows["prompt"]), strict=True)
    )
    assert cells["general instructions (Δ pts vs base)"].endswith("% (+0.0)")
    assert cells["held-out perplexity (× base)"].endswith(" (×1.000)")
    assert "Retention (catastrophic forgetting)" in board


def test_the_base_measurement_is_reused_until_its_settings_change(
    tmp_path: Path, tiny_llm: Path, tiny_encoder: Path
) -> None:
    config = retention_experiment(tmp_path, tiny_llm, tiny_llm, tiny_encoder)
    messages: list[str] = []
    first = base_retention(config, messages.append)
    assert base_retention(config, messages.append) == first
    assert len(messages) == 1

    fewer = retention_experiment(tmp_path, tiny_llm, tiny_llm, tiny_encoder, instructions=5)
    assert base_retention(fewer, messages.append)["instructions"]["asked"] == 5
    assert len(messages) == 2
    # A corrupt cache file is measured again, not trusted.
    (tmp_path / "runs" / "chat" / BASE_RETENTION).write_text("{not json")
    assert base_retention(fewer, messages.append)["instructions"]["asked"] == 5
    assert len(messages) == 3


def test_retention_can_be_switched_off(tmp_path: Path, tiny_llm: Path, tiny_encoder: Path) -> None:
    config = retention_experiment(tmp_path, tiny_llm, tiny_llm, tiny_encoder, enabled=False)

    result = compare(config, ["prompt"], log=lambda _: None)

    evaluation = json.loads((result.folder / "runs" / "prompt" / "eval.json").read_text())
    assert "retention" not in evaluation
    assert not (result.folder / BASE_RETENTION).exists()
    (row,) = result.comparison["rows"]
    assert row["forgetting"] is None and row["perplexity_ratio"] is None
    cells = dict(zip(leaderboard_headers(result.comparison), leaderboard_cells(row), strict=True))
    assert cells["general instructions (Δ pts vs base)"] == "—"
    assert cells["held-out perplexity (× base)"] == "—"
