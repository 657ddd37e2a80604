"""evaluate_generator: answers to the (sampled) eval requests scored against the right gold
frames, per-example arrays for paired comparisons, and the batch-1 cost facts.

The answers are scripted (``generate`` is replaced) so the scores are known; the cost is
measured on a tiny random Llama.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest
from tests.unit.models.test_causal_lm import build_tiny_llm
from tests.unit.strategies.conftest import chat_records

import adaptlab.evaluate.harness
from adaptlab.config import CompareConfig
from adaptlab.data.convert import SLOT_ORDER
from adaptlab.evaluate.bootstrap import micro_f1_interval
from adaptlab.evaluate.generation import DecodingConfig, Generation
from adaptlab.evaluate.harness import evaluate_generator
from adaptlab.models.causal_lm import CausalLM
from adaptlab.strategies.base import GenerativeTask, Generator, Messages

# Scripted answers for eval records 1, 3, 4 and 5 (see chat_records), with the counts each
# earns: (true positives, false positives, false negatives).
ANSWERS = {
    "book me in for tonight at 9": ('{"date": "tonight", "time": "9"}', (2, 0, 0)),
    "does the menu change weekly": ("{}", (0, 0, 0)),
    "eight people on wednesday": ('{"people": "8"}', (0, 1, 2)),  # wrong value, date missed
    "please hold a table at 7:45 for Ruth": ("Sure! 7:45 for Ruth.", (0, 0, 2)),
}


@dataclass
class EchoGenerator:
    """Asks the model each request as it stands."""

    lm: CausalLM
    decoding: DecodingConfig

    def conversations(self, requests: Sequence[Messages]) -> list[Messages]:
        return [list(request) for request in requests]


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> EchoGenerator:
    lm = CausalLM.load(str(build_tiny_llm(tmp_path_factory.mktemp("tiny-llama"))))
    return EchoGenerator(lm, DecodingConfig(max_new_tokens=3))


@pytest.fixture
def task() -> GenerativeTask:
    train, evaluation = chat_records()
    return GenerativeTask(
        SLOT_ORDER,
        [r["messages"] for r in train],
        [r["messages"] for r in evaluation],
        [json.loads(r["messages"][-1]["content"]) for r in evaluation],
        "train-sha",
        "eval-sha",
    )


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch, generator: EchoGenerator) -> None:
    """The harness's ``generate`` answers from :data:`ANSWERS`, by the utterance in the prompt."""

    def answer(
        lm: CausalLM, prompts: Sequence[Sequence[int]], config: DecodingConfig
    ) -> list[Generation]:
        results = []
        for prompt in prompts:
            text = lm.tokenizer.decode(list(prompt))
            (reply,) = [reply for utterance, (reply, _) in ANSWERS.items() if utterance in text]
            results.append(Generation(reply, [1, 2], len(prompt), finished=True))
        return results

    monkeypatch.setattr(adaptlab.evaluate.harness, "generate", answer)


def test_answers_are_scored_against_their_own_gold_frames(
    generator: EchoGenerator, task: GenerativeTask, scripted: None
) -> None:
    assert isinstance(generator, Generator)
    settings = CompareConfig(latency_budget_s=0.01, bootstrap_resamples=200)
    indices = np.array([1, 3, 4, 5])

    payload, answers = evaluate_generator(generator, task, settings, indices)

    counts = np.array([expected for _, expected in ANSWERS.values()])
    arrays = answers.arrays()
    np.testing.assert_array_equal(arrays["counts"], counts)
    np.testing.assert_array_equal(arrays["indices"], indices)
    np.testing.assert_array_equal(arrays["exact"], [1, 1, 0, 0])
    np.testing.assert_array_equal(arrays["json_valid"], [1, 1, 1, 0])
    assert [row["index"] for row in answers.rows()] == [1, 3, 4, 5]
    assert answers.rows()[3]["text"] == "Sure! 7:45 for Ruth."

    assert (payload["n"], payload["eval_size"], payload["sampled"]) == (4, 8, True)
    metrics = payload["metrics"]
    assert metrics["slot_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 4))
    assert (metrics["json_valid_rate"], metrics["exact_match"]) == (0.75, 0.5)
    assert payload["slot_f1_ci"] == list(micro_f1_interval(counts, resamples=200))
    assert payload["task"] == "generative" and payload["unfinished"] == 0
    assert payload["tokens"]["prompt"]["requests"] == 4


def test_cost_is_measured_one_request_at_a_time(
    generator: EchoGenerator, task: GenerativeTask
) -> None:
    settings = CompareConfig(latency_budget_s=0.01, bootstrap_resamples=200)

    payload, answers = evaluate_generator(generator, task, settings, np.array([0, 2]))

    cost = payload["cost"]
    assert cost["latency"]["batch_size"] == 1 and cost["latency"]["samples"] >= 5
    assert cost["latency"]["p95_ms"] >= cost["latency"]["p50_ms"] > 0
    assert cost["output_tokens_per_s"] > 0
    lengths = [g.prompt_tokens for g in answers.generations]  # the same requests, timed
    assert cost["prompt_tokens"]["max"] in lengths
    assert min(lengths) <= cost["prompt_tokens"]["mean"] <= max(lengths)
    assert cost["prompt_build_latency"]["batch_size"] == 1
    assert all(g.generated_tokens <= 3 for g in answers.generations)


def test_slot_f1_interval_brackets_the_pooled_score() -> None:
    counts = np.array([[1, 0, 1], [2, 1, 0], [0, 0, 1], [3, 0, 0]] * 5)
    low, high = micro_f1_interval(counts, resamples=500)
    tp, fp, fn = counts.sum(axis=0)
    assert low <= 2 * tp / (2 * tp + fp + fn) <= high
    assert micro_f1_interval(np.array([[1, 0, 0]] * 4), resamples=200) == (1.0, 1.0)
