"""llm_prompt: the prompt, constrained label scoring, probabilities, save → load, few-shot.

Mechanics run on a tiny random Llama (see ``tests/unit/models/test_causal_lm.py``); one
integration test asks the real bundled SmolLM2.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.unit.models.test_causal_lm import naive_constrained, naive_scores
from tests.unit.strategies.conftest import RunFactory, copy_run

from adaptlab.models.bundled import BUNDLED, SMOLLM2, package_dir
from adaptlab.models.causal_lm import CausalLM
from adaptlab.models.encoder import softmax
from adaptlab.strategies.base import ClassificationTask, get_strategy
from adaptlab.strategies.llm_prompt import (
    PROMPT,
    LlmPromptConfig,
    PromptClassifier,
    PromptSpec,
    system_message,
)

TEXTS = ["my card and the pin please", "wire the payee by iban", "refund this receipt"]


@pytest.fixture(autouse=True)
def _private_cache(tiny_llm: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Few-shot embeddings cached by one test must not answer for another."""
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))


def fitted(make_run: RunFactory, tiny_llm: Path, **settings: object) -> PromptClassifier:
    run = make_run("llm_prompt", {"model": str(tiny_llm), **settings})
    classifier = get_strategy("llm_prompt").fit(run)
    assert isinstance(classifier, PromptClassifier)
    return classifier


def test_the_prompt_lists_every_label_as_words() -> None:
    config = LlmPromptConfig(descriptions={"top_up": "adding money"})
    spec = PromptSpec.from_config(config, ["card_arrival", "CardLinking", "top_up"])
    assert spec.label_texts == ["card arrival", "card linking", "adding money"]
    assert spec.system.endswith("Categories:\n- card arrival\n- card linking\n- adding money")
    assert spec.system.startswith(config.instruction)
    numbered = system_message("Pick one.", spec.label_texts, numbered=True)
    assert numbered == "Pick one.\n\nCategories:\n1. card arrival\n2. card linking\n3. adding money"


def test_labels_that_read_the_same_are_refused() -> None:
    with pytest.raises(ValueError, match="card arrival"):
        PromptSpec.from_config(LlmPromptConfig(), ["card_arrival", "CardArrival", "other"])


def test_the_cached_prefix_holds_the_labels_and_the_text_follows(
    make_run: RunFactory, tiny_llm: Path, tiny_task: ClassificationTask
) -> None:
    classifier = fitted(make_run, tiny_llm)
    assert classifier.spec.system in classifier.prefix
    lines = classifier.spec.system.splitlines()
    assert all(f"- {name}" in lines for name in tiny_task.label_names)
    rendered = classifier.lm.tokenizer.decode(classifier.context_ids(TEXTS[0]))
    assert rendered == f"{TEXTS[0]}<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("scoring", ["constrained", "sum", "mean"])
def test_probabilities_are_a_distribution_over_the_labels(
    make_run: RunFactory, tiny_llm: Path, tiny_task: ClassificationTask, scoring: str
) -> None:
    classifier = fitted(make_run, tiny_llm, scoring=scoring)
    probabilities = classifier.predict_proba(tiny_task.eval_texts)
    assert probabilities.shape == (len(tiny_task.eval_texts), tiny_task.num_labels)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)
    assert (probabilities > 0).all()


@pytest.mark.parametrize("scoring", ["constrained", "sum"])
def test_column_i_scores_label_i_as_the_answer(
    make_run: RunFactory, tiny_llm: Path, scoring: str
) -> None:
    """Each column is the naive score of that label's answer after the full prompt, in the
    task's label order; labels share their first token, so constrained scoring branches."""
    words = {"cards": "card problems", "transfers": "card transfers", "refunds": "refunds"}
    classifier = fitted(make_run, tiny_llm, scoring=scoring, descriptions=words)
    lm = classifier.lm
    scores = classifier.label_scores(TEXTS)
    naive = naive_constrained if scoring == "constrained" else naive_scores
    answers = [lm.encode(f"{label}<|im_end|>") for label in classifier.spec.label_texts]
    assert len({answer[0] for answer in answers}) < len(answers)
    for row, text in enumerate(TEXTS):
        prompt = lm.encode(lm.chat(classifier.messages(text), add_generation_prompt=True))
        np.testing.assert_allclose(scores[row], naive(lm, prompt, answers).numpy(), atol=1e-4)


def test_mean_scoring_and_temperature(make_run: RunFactory, tiny_llm: Path) -> None:
    words = {"descriptions": {"cards": "card problems at the atm"}}
    summed = fitted(make_run, tiny_llm, scoring="sum", **words).label_scores(TEXTS)
    classifier = fitted(make_run, tiny_llm, scoring="mean", temperature=2.0, **words)
    lengths = np.array(classifier.tree.lengths, dtype=np.float64)
    assert len(set(lengths)) > 1  # the labels' answers differ in length, so this can fail
    mean = summed / lengths * lengths.mean()
    np.testing.assert_allclose(classifier.label_scores(TEXTS), mean, atol=1e-9)
    np.testing.assert_allclose(classifier.predict_proba(TEXTS), softmax(mean / 2.0), atol=1e-9)


def test_fit_records_the_cost_facts(make_run: RunFactory, tiny_llm: Path) -> None:
    run = make_run("llm_prompt", {"model": str(tiny_llm)})
    classifier = get_strategy("llm_prompt").fit(run)
    assert isinstance(classifier, PromptClassifier)
    facts = run.facts
    assert facts["trainable_params"] == 0
    assert facts["total_params"] == classifier.lm.parameter_count() > 0
    assert facts["needs_base_model"] is False  # it serves its own LLM, not the base encoder
    assert facts["cached_prompt_tokens"] == len(classifier.lm.encode(classifier.prefix))
    own = np.mean([len(classifier.context_ids(t)) for t in run.task.train_texts])
    assert facts["prompt_tokens_per_request"] == round(facts["cached_prompt_tokens"] + own, 1)
    assert facts["answer_tokens_scored"] == len(classifier.tree)


def test_the_prompted_llm_and_the_retriever_count_as_models_of_the_run() -> None:
    # Their fingerprints go into the manifest and their weights into the size on disk.
    assert LlmPromptConfig(model="some/llm").other_models() == ["some/llm"]
    few_shot = LlmPromptConfig(model="some/llm", few_shot_k=4, retriever="some/encoder")
    assert few_shot.other_models() == ["some/llm", "some/encoder"]


def test_save_then_load_gives_identical_probabilities(
    make_run: RunFactory, tiny_llm: Path, tiny_task: ClassificationTask, tmp_path: Path
) -> None:
    run = make_run("llm_prompt", {"model": str(tiny_llm), "numbered": True, "scoring": "mean"})
    strategy = get_strategy("llm_prompt")
    before = strategy.fit(run).predict_proba(tiny_task.eval_texts)
    saved = json.loads((run.folder / PROMPT).read_text())
    assert saved["model"] == str(tiny_llm) and saved["scoring"] == "mean"
    after = strategy.load(copy_run(run, tmp_path / "copy")).predict_proba(tiny_task.eval_texts)
    np.testing.assert_array_equal(before, after)


def test_few_shot_shows_the_nearest_examples_closest_last(
    make_run: RunFactory,
    tiny_llm: Path,
    tiny_encoder: Path,
    tiny_task: ClassificationTask,
    tmp_path: Path,
) -> None:
    settings = {"few_shot_k": 2, "retriever": str(tiny_encoder)}
    run = make_run("llm_prompt", {"model": str(tiny_llm), **settings})
    strategy = get_strategy("llm_prompt")
    classifier = strategy.fit(run)
    assert isinstance(classifier, PromptClassifier) and classifier.retriever is not None
    text = tiny_task.eval_texts[0]
    similarity = classifier.retriever.encoder.embed([text]) @ classifier.retriever.vectors.T
    nearest = np.argsort(similarity[0])[-2:]  # second nearest, then nearest
    turns = classifier.messages(text, classifier._examples([text])[0])
    shown = [turns[i]["content"] for i in (1, 3)]
    assert shown == [tiny_task.train_texts[i] for i in nearest]
    names = tiny_task.label_names
    assert [turns[i]["content"] for i in (2, 4)] == [
        names[tiny_task.train_labels[i]] for i in nearest
    ]
    assert turns[5] == {"role": "user", "content": text}
    before = classifier.predict_proba(tiny_task.eval_texts)
    after = strategy.load(copy_run(run, tmp_path / "copy")).predict_proba(tiny_task.eval_texts)
    np.testing.assert_array_equal(before, after)


def test_long_texts_are_cut_to_max_text_tokens(make_run: RunFactory, tiny_llm: Path) -> None:
    classifier = fitted(make_run, tiny_llm, max_text_tokens=5)
    long_text = "my card and the pin please " * 20
    kept = classifier.messages(long_text)[-1]["content"]
    assert len(classifier.lm.encode(kept)) == 5
    assert long_text.startswith(kept)


@pytest.mark.integration
def test_real_smollm2_gives_valid_probabilities() -> None:
    if package_dir(BUNDLED[SMOLLM2].package) is None:
        pytest.skip(f"{SMOLLM2} is not installed: {BUNDLED[SMOLLM2].install}")
    torch.set_num_threads(2)
    spec = PromptSpec.from_config(LlmPromptConfig(), ["card_problem", "money_transfer", "refund"])
    classifier = PromptClassifier(spec, CausalLM.load(SMOLLM2))
    texts = [
        "My card was swallowed by the ATM.",
        "How do I send money to my sister's account abroad?",
        "The shop still has not given me my money back for the returned shoes.",
        "My card stopped working at the supermarket.",
        "Can I wire 500 euros to a friend?",
    ]
    probabilities = classifier.predict_proba(texts)
    assert probabilities.shape == (5, 3)
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)
