"""Label sets for the two strategies that train nothing: zero_shot and llm_prompt.

zero_shot gives each label sigmoid(temperature * (cosine - centre)); llm_prompt asks for every
category that applies (or none) and gives each label 1 - (1 - p)^2, p its probability of being
the first answer. Mechanics run on the tiny encoder and the tiny random Llama
(``tests/unit/strategies/conftest.py``); one integration test asks the real bundled SmolLM2.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from tests.unit.models.test_causal_lm import naive_constrained, naive_scores
from tests.unit.strategies.conftest import TOPICS, RunFactory, copy_run

from adaptlab.models.bundled import BUNDLED, SMOLLM2, package_dir
from adaptlab.models.causal_lm import CausalLM
from adaptlab.models.encoder import softmax
from adaptlab.strategies.base import ClassificationTask, RunContext, get_strategy
from adaptlab.strategies.llm_prompt import (
    DEFAULT_INSTRUCTION,
    MULTI_LABEL_INSTRUCTION,
    NO_LABEL,
    PROMPT,
    LlmPromptConfig,
    PromptClassifier,
    PromptSpec,
    named_in_two_answers,
)
from adaptlab.strategies.zero_shot import META, NearestLabelClassifier, ZeroShotConfig

TEXTS = ["my card and the pin please", "refund this receipt and wire the payee", "hello"]
TOPICS_AS_WORDS = list(TOPICS)  # the tiny task's label names read as words unchanged


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Few-shot embeddings cached by one test must not answer for another."""
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))


def multi_label_run(
    make_run: RunFactory, task: ClassificationTask, name: str, **settings: Any
) -> RunContext[Any]:
    return dataclasses.replace(make_run(name, settings), task=task)


# zero_shot ----------------------------------------------------------------------------------


@dataclass
class FixedEncoder:
    """Stands in for the sentence encoder: each text's embedding is given."""

    vectors: dict[str, np.ndarray]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.vectors[text] for text in texts]).astype(np.float32)


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float64)
    return vector / np.linalg.norm(vector)


def expected(cosines: list[float], temperature: float, centre: float) -> np.ndarray:
    return 1 / (1 + np.exp(-temperature * (np.array(cosines) - centre)))


def test_zero_shot_gives_each_label_the_sigmoid_of_its_own_scaled_cosine() -> None:
    labels = np.stack([unit(1, 0, 0), unit(0.6, 0.8, 0), unit(0, 0, 1)]).astype(np.float32)
    encoder = FixedEncoder(
        {
            "first": unit(1, 0, 0),  # cosines 1, 0.6, 0
            "none": unit(0, -1, 0),  # cosines 0, -0.8, 0: no label fits
            "two": unit(0, 0.6, 0.8),  # cosines 0, 0.48, 0.8
        }
    )
    classifier = NearestLabelClassifier(
        encoder,  # a stand-in with FrozenEncoder's embed
        labels,
        temperature=20.0,
        label_names=["a", "b", "c"],
        multi_label=True,
        centre=0.5,
    )
    probabilities = classifier.predict_proba(["first", "none", "two"])
    np.testing.assert_allclose(probabilities[0], expected([1, 0.6, 0], 20, 0.5), atol=1e-6)
    np.testing.assert_allclose(probabilities[1], expected([0, -0.8, 0], 20, 0.5), atol=1e-6)
    np.testing.assert_allclose(probabilities[2], expected([0, 0.48, 0.8], 20, 0.5), atol=1e-6)
    # Not one distribution: no label, or two labels, can be likely at once.
    assert probabilities[1].sum() < 0.01 and probabilities[2].sum() > 1.2

    # A label's probability depends on its own vector only.
    moved = labels.copy()
    moved[2] = unit(1, 1, 1)
    other = dataclasses.replace(classifier, label_vectors=moved).predict_proba(["first"])
    np.testing.assert_allclose(other[0, :2], probabilities[0, :2], rtol=0, atol=1e-7)

    # Single-label mode is the softmax over the same scaled cosines, as before.
    single = dataclasses.replace(classifier, multi_label=False).predict_proba(["first"])
    np.testing.assert_allclose(single[0], softmax(np.array([[1, 0.6, 0]]) * 20)[0], atol=1e-6)


def test_zero_shot_centre_moves_the_half_point() -> None:
    labels = np.stack([unit(1, 0), unit(0, 1)]).astype(np.float32)
    encoder = FixedEncoder({"text": unit(0.3, np.sqrt(1 - 0.3**2))})  # cosine 0.3 with "a"
    classifier = NearestLabelClassifier(
        encoder,  # a stand-in with FrozenEncoder's embed
        labels,
        temperature=10.0,
        label_names=["a", "b"],
        multi_label=True,
        centre=0.3,
    )
    probability = classifier.predict_proba(["text"])[0]
    assert probability[0] == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(ValidationError, match="centre"):
        ZeroShotConfig(centre=1.5)


def test_zero_shot_fit_reads_no_training_label_and_load_keeps_the_mode(
    make_run: RunFactory,
    tiny_multilabel_task: ClassificationTask,
    tiny_task: ClassificationTask,
    tmp_path: Path,
) -> None:
    run = multi_label_run(make_run, tiny_multilabel_task, "zero_shot", centre=0.4)
    strategy = get_strategy("zero_shot")
    probabilities = strategy.fit(run).predict_proba(TEXTS)
    meta = json.loads((run.folder / META).read_text())
    assert meta["multi_label"] is True and meta["centre"] == 0.4

    garbled = dataclasses.replace(
        tiny_multilabel_task, train_labels=1 - tiny_multilabel_task.train_labels
    )
    again = multi_label_run(make_run, garbled, "zero_shot", centre=0.4)
    np.testing.assert_array_equal(strategy.fit(again).predict_proba(TEXTS), probabilities)

    # The run folder alone says it is multi-label, whatever task the loading context holds.
    copied = dataclasses.replace(copy_run(run, tmp_path / "copy"), task=tiny_task)
    loaded = strategy.load(copied)
    np.testing.assert_array_equal(loaded.predict_proba(TEXTS), probabilities)
    with pytest.raises(ValueError, match="multi-label export"):
        loaded.export_parts()


# llm_prompt ---------------------------------------------------------------------------------


def test_the_label_set_prompt_says_several_or_none_may_apply() -> None:
    names = ["card_arrival", "refund"]
    spec = PromptSpec.from_config(LlmPromptConfig(), names, multi_label=True)
    assert spec.multi_label
    assert spec.system.startswith(MULTI_LABEL_INSTRUCTION)
    assert "several categories or to none of them" in spec.system
    assert "reply none if no category applies" in spec.system
    # "none" is an answer, not a category of the list.
    assert spec.system.endswith("Categories:\n- card arrival\n- refund")
    assert spec.answers == ["card arrival", "refund", NO_LABEL]
    # Single-label prompts are unchanged; an instruction of one's own is kept.
    single = PromptSpec.from_config(LlmPromptConfig(), names)
    assert single.system.startswith(DEFAULT_INSTRUCTION) and single.answers == spec.label_texts
    own = PromptSpec.from_config(LlmPromptConfig(instruction="List them."), names, True)
    assert own.system.startswith("List them.")


def test_a_label_that_reads_none_is_refused_on_label_sets_only() -> None:
    with pytest.raises(ValueError, match="'none' is the answer for no label"):
        PromptSpec.from_config(LlmPromptConfig(), ["none", "refund"], multi_label=True)
    assert PromptSpec.from_config(LlmPromptConfig(), ["none", "refund"]).label_texts[0] == "none"


def fitted(
    make_run: RunFactory, task: ClassificationTask, tiny_llm: Path, **settings: Any
) -> tuple[RunContext[Any], PromptClassifier]:
    run = multi_label_run(make_run, task, "llm_prompt", model=str(tiny_llm), **settings)
    classifier = get_strategy("llm_prompt").fit(run)
    assert isinstance(classifier, PromptClassifier)
    return run, classifier


@pytest.mark.parametrize("scoring", ["constrained", "sum"])
def test_each_label_gets_its_chance_of_being_named_in_two_answers(
    make_run: RunFactory, tiny_multilabel_task: ClassificationTask, tiny_llm: Path, scoring: str
) -> None:
    """The answers are the labels and "none", scored after the full prompt as one label is;
    a label's probability is 1 - (1 - p)^2 of its first-answer probability p."""
    _, classifier = fitted(
        make_run, tiny_multilabel_task, tiny_llm, scoring=scoring, temperature=2.0
    )
    lm = classifier.lm
    scores = classifier.label_scores(TEXTS)
    assert scores.shape == (len(TEXTS), 4)  # three labels, then none
    naive = naive_constrained if scoring == "constrained" else naive_scores
    answers = [lm.encode(f"{answer}<|im_end|>") for answer in [*TOPICS_AS_WORDS, "none"]]
    for row, text in enumerate(TEXTS):
        prompt = lm.encode(lm.chat(classifier.messages(text), add_generation_prompt=True))
        np.testing.assert_allclose(scores[row], naive(lm, prompt, answers).numpy(), atol=1e-4)

    first = softmax(scores / 2.0)
    probabilities = classifier.predict_proba(TEXTS)
    np.testing.assert_allclose(probabilities, 1 - (1 - first[:, :3]) ** 2, atol=1e-12)
    assert ((probabilities > 0) & (probabilities < 1)).all()
    assert not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)


def test_two_labels_sharing_the_first_answer_both_pass_one_half() -> None:
    """Where the model splits its first answer between two labels, both get more than one
    half; a label it never names keeps about twice its tiny chance, still ranked."""
    first = np.array([[0.5, 0.5, 0.0, 0.0], [0.0, 1e-30, 1e-20, 1.0]])  # none is last
    probabilities = named_in_two_answers(first)
    np.testing.assert_allclose(probabilities[0], [0.75, 0.75, 0.0], atol=1e-12)
    np.testing.assert_allclose(probabilities[1], [0.0, 2e-30, 2e-20], rtol=1e-9, atol=0)


def test_the_cost_facts_count_one_pass_over_the_text_and_the_answers(
    make_run: RunFactory, tiny_multilabel_task: ClassificationTask, tiny_llm: Path
) -> None:
    run, classifier = fitted(make_run, tiny_multilabel_task, tiny_llm)
    assert len(classifier.tree.paths) == 4  # the three labels and none
    facts = run.facts
    own = np.mean([len(classifier.context_ids(t)) for t in tiny_multilabel_task.train_texts])
    assert facts["prompt_tokens_per_request"] == round(classifier.cache.prefix_length + own, 1)
    assert facts["forward_tokens_per_request"] == round(own + len(classifier.tree.branching), 1)
    assert facts["answer_tokens_scored"] == len(classifier.tree)


def test_label_set_runs_load_as_label_sets(
    make_run: RunFactory,
    tiny_multilabel_task: ClassificationTask,
    tiny_task: ClassificationTask,
    tiny_llm: Path,
    tmp_path: Path,
) -> None:
    run, classifier = fitted(make_run, tiny_multilabel_task, tiny_llm)
    before = classifier.predict_proba(TEXTS)
    assert json.loads((run.folder / PROMPT).read_text())["multi_label"] is True
    # The run folder alone says it is multi-label, whatever task the loading context holds.
    copied = dataclasses.replace(copy_run(run, tmp_path / "copy"), task=tiny_task)
    after = get_strategy("llm_prompt").load(copied).predict_proba(TEXTS)
    np.testing.assert_array_equal(before, after)


def test_few_shot_answers_with_each_neighbours_label_set(
    make_run: RunFactory,
    tiny_multilabel_task: ClassificationTask,
    tiny_llm: Path,
    tiny_encoder: Path,
) -> None:
    task = tiny_multilabel_task
    _, classifier = fitted(make_run, task, tiny_llm, few_shot_k=3, retriever=str(tiny_encoder))
    retriever = classifier.retriever
    assert retriever is not None
    shown = []
    for text in task.eval_texts:
        nearest = retriever.nearest([text], 3)[0]
        turns = classifier.messages(text, classifier._examples([text])[0])
        assert [turns[i]["content"] for i in (1, 3, 5)] == [task.train_texts[i] for i in nearest]
        for i, answer in zip(nearest, (turns[2], turns[4], turns[6]), strict=True):
            names = [task.label_names[j] for j in np.flatnonzero(task.train_labels[i])]
            assert answer == {"role": "assistant", "content": ", ".join(names) or "none"}
            shown.append(len(names))
        assert turns[7] == {"role": "user", "content": text}
    assert {0, 1, 2} <= set(shown)  # examples with no label, one and two were all shown


@pytest.mark.integration
def test_real_smollm2_gives_each_label_its_own_probability() -> None:
    if package_dir(BUNDLED[SMOLLM2].package) is None:
        pytest.skip(f"{SMOLLM2} is not installed: {BUNDLED[SMOLLM2].install}")
    torch.set_num_threads(2)
    names = ["card_problem", "money_transfer", "refund"]
    spec = PromptSpec.from_config(LlmPromptConfig(), names, multi_label=True)
    classifier = PromptClassifier(spec, CausalLM.load(SMOLLM2))
    texts = [
        "My card was swallowed by the ATM and I need my money back.",
        "Can I wire 500 euros to a friend?",
        "What is the weather like today?",
    ]
    probabilities = classifier.predict_proba(texts)
    assert probabilities.shape == (3, 3)
    assert ((probabilities > 0) & (probabilities < 1)).all()
    assert not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)
