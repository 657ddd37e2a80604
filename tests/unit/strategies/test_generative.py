"""Generative tasks through ``compare``: the task kind from the data's format, strategies that
refuse the other kind, ``prompt`` and ``few_shot`` (the schema in the system turn, retrieved
examples closest last, what a request costs), and run folders, comparison and leaderboard.

Everything runs on the tiny random Llama and tiny encoder: the answers are noise, so the
tests check the plumbing, not the scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from tests.unit.strategies.conftest import RunFactory, chat_records
from tests.unit.strategies.test_compare import experiment as classification_experiment

from adaptlab.compare import compare, runnable_here
from adaptlab.comparison import build_comparison
from adaptlab.config import CompareConfig, ExperimentConfig
from adaptlab.data.convert import DEFAULT_SLOT_SYSTEM_PROMPT, SLOT_ORDER
from adaptlab.data.lock import EvalLockError
from adaptlab.strategies.base import (
    GenerativeTask,
    StrategyUnavailableError,
    UnsupportedTaskError,
    get_strategy,
    require_supported,
    strategies_for,
)
from adaptlab.strategies.few_shot import FewShotConfig, FewShotGenerator, query_text
from adaptlab.strategies.prompt import DEFAULT_INSTRUCTION, PromptConfig, PromptGenerator

DECODING = {"max_new_tokens": 6}
TRAINED = ("sft_full", "sft_lora", "qlora", "sft_scratch", "distill_logit")


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path)


def chat_experiment(
    tmp_path: Path, tiny_llm: Path, tiny_encoder: Path, **changes: Any
) -> ExperimentConfig:
    train, evaluation = chat_records()
    raw: dict[str, Any] = {
        "name": "chat",
        "output_dir": str(tmp_path / "runs"),
        "data": {
            "train": write_jsonl(tmp_path / "train.jsonl", train),
            "eval": write_jsonl(tmp_path / "eval.jsonl", evaluation),
            "format": "chat",
        },
        # A chat record takes ~250 tokens of the tiny Llama's 400-word vocabulary.
        "model": {"base_model": str(tiny_llm), "sequence_len": 512},
        "train": {"max_steps": 2, "micro_batch_size": 8},
        "strategies": {
            "prompt": {"decoding": DECODING},
            "few_shot": {"k": 2, "retriever": str(tiny_encoder), "decoding": DECODING},
            **{name: {"decoding": DECODING} for name in TRAINED},
            # Two steps do not teach the tiny teacher to end its answers: learn the gold ones.
            "distill_seq": {"decoding": DECODING, "targets": "gold_where_labelled"},
        },
        "compare": {
            "latency_budget_s": 0.05,
            "bootstrap_resamples": 200,
            "retention": {"perplexity_tokens": 256, "window_tokens": 64, "instructions": 4},
        },
    }
    raw.update(changes)
    return ExperimentConfig.model_validate(raw)


def test_compare_on_chat_data_runs_the_generative_strategies(
    tmp_path: Path, tiny_llm: Path, tiny_encoder: Path
) -> None:
    result = compare(chat_experiment(tmp_path, tiny_llm, tiny_encoder), log=lambda _: None)

    assert result.failures == {}
    runs = result.folder / "runs"
    runnable = [
        n for n in strategies_for("generative") if torch.cuda.is_available() or n != "qlora"
    ]
    assert sorted(p.name for p in runs.iterdir()) == runnable
    for name in ("prompt", "few_shot"):
        files = {p.name for p in (runs / name).iterdir()}
        assert {
            "config.yaml",
            "eval.json",
            "cost.json",
            "manifest.json",
            "predictions.safetensors",
            "generations.jsonl",
            "prompt.json",
        } <= files
        evaluation = json.loads((runs / name / "eval.json").read_text())
        assert evaluation["task"] == "generative" and evaluation["n"] == 8
        metrics = evaluation["metrics"]
        for key in ("slot_f1", "slot_precision", "slot_recall", "json_valid_rate", "exact_match"):
            assert 0 <= metrics[key] <= 1
        assert set(metrics["per_slot"]) == set(SLOT_ORDER)
        cost = evaluation["cost"]
        assert cost["latency"]["batch_size"] == 1 and cost["latency"]["p50_ms"] > 0
        assert cost["output_tokens_per_s"] > 0 and cost["prompt_tokens"]["mean"] > 0
        assert evaluation["tokens"]["prompt"]["requests"] == 8
        arrays = load_file(str(runs / name / "predictions.safetensors"))
        assert arrays["counts"].shape == (8, 3) and arrays["counts"].dtype == np.int64
        np.testing.assert_array_equal(arrays["indices"], np.arange(8))
        answers = [json.loads(line) for line in (runs / name / "generations.jsonl").open()]
        assert [a["index"] for a in answers] == list(range(8))
        assert all(1 <= a["generated_tokens"] <= DECODING["max_new_tokens"] for a in answers)

    costs = {n: json.loads((runs / n / "cost.json").read_text()) for n in ("prompt", "few_shot")}
    assert (
        costs["few_shot"]["prompt_tokens_per_request"]
        > costs["prompt"]["prompt_tokens_per_request"]
    )
    manifests = {n: json.loads((runs / n / "manifest.json").read_text()) for n in costs}
    assert manifests["prompt"]["base_model"] == str(tiny_llm)
    assert list(manifests["few_shot"]["other_models"]) == [str(tiny_encoder)]

    comparison = json.loads((result.folder / "comparison.json").read_text())
    assert comparison["task"] == "generative" and comparison["metric"] == "slot_f1"
    assert {row["strategy"] for row in comparison["rows"]} == set(runnable)
    other = next(row for row in comparison["rows"] if row["strategy"] != comparison["best"])
    assert other["vs_best"]["n"] == 8
    for key in ("json_valid_rate", "exact_match", "latency_batch1_p50_ms"):
        assert other[key] is not None
    assert other["prompt_tokens_per_request"] > 0
    board = (result.folder / "leaderboard.md").read_text()
    assert board.startswith("| strategy | slot F1 | Δ vs best (95% CI) | JSON valid |")
    assert "slot F1 (micro)" in board and "prompt tokens/request" in board

    # Runs on another eval set must not be compared.
    manifest = json.loads((runs / "prompt" / "manifest.json").read_text())
    manifest["eval_sha256"] = "0" * 64
    (runs / "prompt" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EvalLockError, match="different eval sets"):
        build_comparison([runs / "prompt", runs / "few_shot"], CompareConfig())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_qlora_without_cuda_is_refused_by_name_and_left_out_of_the_default_list(
    tmp_path: Path, tiny_llm: Path, tiny_encoder: Path
) -> None:
    config = chat_experiment(tmp_path, tiny_llm, tiny_encoder)
    with pytest.raises(StrategyUnavailableError, match="'qlora' cannot run here: .*CUDA"):
        compare(config, ["prompt", "qlora"], log=lambda _: None)
    assert not (tmp_path / "runs" / "chat" / "runs").exists()  # refused before anything ran

    logged: list[str] = []
    listed = config.model_copy(
        update={"compare": config.compare.model_copy(update={"strategies": None})}
    )
    assert runnable_here(["prompt", "qlora"], listed, chosen=False, log=logged.append) == ["prompt"]
    assert logged and logged[0].startswith("[qlora] left out: qlora needs a CUDA GPU")


def test_classification_strategies_refuse_a_chat_task_before_anything_runs(
    tmp_path: Path, tiny_llm: Path, tiny_encoder: Path
) -> None:
    config = chat_experiment(tmp_path, tiny_llm, tiny_encoder)

    with pytest.raises(UnsupportedTaskError, match="strategy 'knn' handles classification") as info:
        compare(config, ["prompt", "knn"], log=lambda _: None)

    assert "generative task" in str(info.value) and "few_shot, prompt" in str(info.value)
    assert not (tmp_path / "runs" / "chat" / "runs").exists()


def test_generative_strategies_refuse_a_classification_task(
    tmp_path: Path, tiny_encoder: Path
) -> None:
    config = classification_experiment(tmp_path, tiny_encoder)

    with pytest.raises(UnsupportedTaskError, match="strategy 'few_shot' handles generative"):
        compare(config, ["few_shot"], log=lambda _: None)


def test_the_refusal_names_a_renamed_run_and_its_strategy() -> None:
    with pytest.raises(UnsupportedTaskError, match=r"'dora' \(strategy 'lora'\)"):
        require_supported("dora", get_strategy("lora"), "generative")
    require_supported("lora", get_strategy("lora"), "classification")
    assert {"prompt", "few_shot"}.isdisjoint(strategies_for("classification"))


def test_the_prompt_states_the_schema_and_replaces_the_datas_system_turn(
    make_run: RunFactory, tiny_chat_task: GenerativeTask
) -> None:
    run = make_run("prompt", {"decoding": DECODING})
    generator = get_strategy("prompt").fit(run)
    assert isinstance(generator, PromptGenerator)

    request = tiny_chat_task.eval_requests[0]
    assert request[0]["content"] == DEFAULT_SLOT_SYSTEM_PROMPT
    (conversation,) = generator.conversations([request])
    assert conversation == [
        {"role": "system", "content": f"{DEFAULT_INSTRUCTION}\n\nSlots: {', '.join(SLOT_ORDER)}"},
        request[1],
    ]
    assert "JSON object only" in DEFAULT_INSTRUCTION and "{}" in DEFAULT_INSTRUCTION
    assert run.facts["model"] == str(run.base_model) and run.facts["needs_base_model"] is True


def test_other_models_name_an_explicit_llm_and_the_retriever() -> None:
    assert PromptConfig().other_models() == []
    assert PromptConfig(model="some/llm").other_models() == ["some/llm"]
    assert FewShotConfig(retriever="some/encoder").other_models() == ["some/encoder"]
    both = FewShotConfig(model="some/llm", retriever="some/encoder")
    assert both.other_models() == ["some/llm", "some/encoder"]


def test_few_shot_shows_the_nearest_examples_closest_last(
    make_run: RunFactory, tiny_encoder: Path, tiny_chat_task: GenerativeTask
) -> None:
    settings = {"k": 2, "retriever": str(tiny_encoder), "decoding": DECODING}
    run = make_run("few_shot", settings)
    generator = get_strategy("few_shot").fit(run)
    assert isinstance(generator, FewShotGenerator)

    request = tiny_chat_task.eval_requests[3]
    index = generator.index
    similarity = index.encoder.embed([query_text(request)]) @ index.vectors.T
    nearest = np.argsort(similarity[0])[-2:]  # second nearest, then nearest
    (conversation,) = generator.conversations([request])

    train = tiny_chat_task.train_records
    shown = [(conversation[i]["content"], conversation[i + 1]["content"]) for i in (1, 3)]
    assert shown == [(train[i][1]["content"], train[i][2]["content"]) for i in nearest]
    assert [m["role"] for m in conversation] == ["system"] + ["user", "assistant"] * 2 + ["user"]
    assert conversation[0]["content"].endswith(f"Slots: {', '.join(SLOT_ORDER)}")
    assert conversation[-1] == request[-1]

    prompt_run = make_run("prompt", {"decoding": DECODING})
    get_strategy("prompt").fit(prompt_run)
    few_shot_tokens = run.facts["prompt_tokens_per_request"]
    assert few_shot_tokens > prompt_run.facts["prompt_tokens_per_request"]


@pytest.mark.integration
def test_real_smollm2_answers_with_and_without_examples(tmp_path: Path) -> None:
    from adaptlab.models.bundled import BUNDLED, MINILM, SMOLLM2, package_dir

    for name in (SMOLLM2, MINILM):
        if package_dir(BUNDLED[name].package) is None:
            pytest.skip(f"{name} is not installed: {BUNDLED[name].install}")
    import torch

    torch.set_num_threads(2)
    decoding = {"max_new_tokens": 32}
    config = chat_experiment(
        tmp_path,
        Path(SMOLLM2),
        Path(MINILM),
        model={"base_model": SMOLLM2, "sequence_len": 64},
        strategies={"prompt": {"decoding": decoding}, "few_shot": {"k": 3, "decoding": decoding}},
        compare={
            "strategies": ["prompt", "few_shot"],
            "latency_budget_s": 0.5,
            "bootstrap_resamples": 200,
            # Retention runs on the real model (and the base) too: a small measurement.
            "retention": {"perplexity_tokens": 512, "instructions": 6},
        },
    )

    result = compare(config, log=lambda _: None)

    assert result.failures == {}
    rows = {row["strategy"]: row for row in result.comparison["rows"]}
    assert (
        rows["few_shot"]["prompt_tokens_per_request"] > rows["prompt"]["prompt_tokens_per_request"]
    )
    for row in rows.values():
        assert 0 <= row["json_valid_rate"] <= 1 and row["latency_batch1_p50_ms"] > 0
