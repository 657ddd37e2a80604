"""Retention and forgetting (:mod:`adaptlab.evaluate.forgetting`) on a tiny random Llama: the
held-out / replay split of the general text, perplexity against a hand computation, the
instruction scoring rule, replay examples, and the effect of replay on fine-tuning."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.unit.models.test_causal_lm import build_tiny_llm
from tests.unit.strategies.conftest import chat_records

from adaptlab.config import RetentionConfig, TrainConfig
from adaptlab.data.demo import article_files, bbc_news_root, decode_article
from adaptlab.evaluate.forgetting import (
    INSTRUCTIONS,
    SHARED_PARAGRAPH_CHARS,
    Part,
    ask_instructions,
    clean_text,
    corpus_documents,
    documents,
    forgetting,
    held_out_windows,
    normalise_answer,
    paragraph_groups,
    passes,
    perplexity,
    replay_examples,
    retention,
)
from adaptlab.models.causal_lm import CausalLM
from adaptlab.train.chat import (
    IGNORE_INDEX,
    ChatCollator,
    Example,
    chat_loss,
    encode_chats,
    example_length,
    pad_token_id,
)
from adaptlab.train.loop import TrainTask, train

SMALL = RetentionConfig(perplexity_tokens=512, window_tokens=64, instructions=6, max_new_tokens=4)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # two contended cores: tiny models run faster single-threaded


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llm(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def tiny_lm(tiny_folder: Path) -> CausalLM:
    return CausalLM.load(str(tiny_folder))


def fine_tune(lm: CausalLM, examples: Sequence[Example], folder: Path, steps: int = 24) -> None:
    """A few steps of the shared training loop on ``examples`` (chat or replay), in place."""
    task = TrainTask(
        model=lm.model,
        train_data=list(examples),
        collate=ChatCollator(pad_token_id(lm.tokenizer)),
        loss=chat_loss,
        length=example_length,
    )
    config = TrainConfig(
        learning_rate=1e-2, micro_batch_size=4, max_steps=steps, warmup_ratio=0.0, seed=0
    )
    train(task, config, folder, show_progress=False)
    lm.model.eval()


def replay_trained_llm(folder: Path, work: Path) -> Path:
    """The tiny Llama of ``folder`` trained a few steps on replay text, saved in ``work``:
    a model that knows some general text (its held-out perplexity is lower)."""
    lm = CausalLM.load(str(folder))
    fine_tune(lm, replay_examples(lm.tokenizer, 96, 64, seed=0, first_index=0), work / "train")
    target = work / "model"
    lm.model.save_pretrained(target, safe_serialization=True)
    lm.tokenizer.save_pretrained(target)
    return target


# --------------------------------------------------------------------------- the split


def test_the_split_is_disjoint_complete_and_follows_the_text_not_the_file() -> None:
    held_out, replay = documents("held_out"), documents("replay")

    assert {d.key for d in held_out}.isdisjoint(d.key for d in replay)
    assert {d.text for d in held_out}.isdisjoint(d.text for d in replay)
    assert len(held_out) + len(replay) == len(corpus_documents()) == 2127
    assert 0.15 < len(held_out) / len(corpus_documents()) < 0.25
    # Every file's text, read again here, lands in exactly one part: both copies of an article
    # the corpus holds twice (under two names) land in the same one.
    parts = {d.text: d.part for d in corpus_documents()}
    copies: dict[str, list[str]] = {}
    for topic, path in article_files(bbc_news_root()):
        text = clean_text(decode_article(path.read_bytes()))
        copies.setdefault(text, []).append(f"{topic}/{path.name}")
        assert text in parts
    assert sum(len(names) for names in copies.values()) == 2225
    assert any(len(names) > 1 for names in copies.values())


def test_the_split_is_deterministic_and_keyed_by_the_hash_of_the_text() -> None:
    before = [(d.key, d.group, d.part) for d in corpus_documents()]
    corpus_documents.cache_clear()
    assert [(d.key, d.group, d.part) for d in corpus_documents()] == before
    members: dict[str, list[str]] = {}
    for document in corpus_documents():
        assert document.key == hashlib.sha256(document.text.encode()).hexdigest()
        assert (document.part == "held_out") == (int(document.group[:8], 16) % 5 == 0)
        members.setdefault(document.group, []).append(document.key)
    assert all(group == min(keys) for group, keys in members.items())
    assert max(len(keys) for keys in members.values()) > 1


def test_articles_sharing_a_paragraph_land_in_the_same_part() -> None:
    def paragraphs(part: Part) -> set[str]:
        return {
            paragraph
            for document in documents(part)
            for paragraph in document.text.split("\n\n")
            if len(paragraph) >= SHARED_PARAGRAPH_CHARS
        }

    assert paragraphs("held_out").isdisjoint(paragraphs("replay"))


def test_paragraph_groups_join_through_chains_whatever_the_order() -> None:
    shared_ab, shared_bc = "a paragraph that both a and b print, word for word", "x" * 40
    texts = {
        "k3": f"{shared_bc}\n\nonly in c, long enough to count as a paragraph of its own",
        "k1": f"intro of a\n\n{shared_ab}",
        "k2": f"{shared_ab}\n\n{shared_bc}",
        "k4": "short\n\nshort",
        "k5": "short",
    }
    expected = {"k1": "k1", "k2": "k1", "k3": "k1", "k4": "k4", "k5": "k5"}
    assert paragraph_groups(texts) == expected
    assert paragraph_groups(dict(reversed(texts.items()))) == expected


# --------------------------------------------------------------------------- perplexity


def naive_nll(lm: CausalLM, windows: Sequence[Sequence[int]]) -> tuple[float, int]:
    """Summed next-token NLL of the windows, one at a time, straight from the logits."""
    total, count = 0.0, 0
    with torch.no_grad():
        for window in windows:
            log_probs = torch.log_softmax(lm.model(torch.tensor([window])).logits[0].double(), -1)
            for position in range(len(window) - 1):
                total -= float(log_probs[position, window[position + 1]])
                count += 1
    return total, count


def test_perplexity_is_exp_of_the_mean_nll_computed_by_hand(tiny_lm: CausalLM) -> None:
    scored = perplexity(tiny_lm, tokens=256, window_tokens=64, batch_size=3)  # 4 windows: 3 + 1

    total, count = naive_nll(tiny_lm, held_out_windows(tiny_lm.tokenizer, 256, 64))
    assert scored.windows == 4 and scored.tokens == count == 4 * 63
    assert scored.nll == pytest.approx(total / count, rel=1e-5)
    assert scored.perplexity == pytest.approx(math.exp(scored.nll), rel=1e-12)
    assert perplexity(tiny_lm, 256, 64, batch_size=1).nll == pytest.approx(scored.nll, rel=1e-5)


def test_a_model_that_predicts_uniformly_has_the_vocabulary_size_as_perplexity(
    tiny_folder: Path,
) -> None:
    lm = CausalLM.load(str(tiny_folder))
    with torch.no_grad():
        lm.model.get_output_embeddings().weight.zero_()  # every logit 0: uniform next tokens

    scored = perplexity(lm, tokens=128, window_tokens=64)

    vocabulary = lm.model.get_output_embeddings().weight.shape[0]
    assert scored.perplexity == pytest.approx(vocabulary, rel=1e-5)


def test_too_few_tokens_or_held_out_text_name_the_setting(tiny_lm: CausalLM) -> None:
    with pytest.raises(ValueError, match=r"retention.perplexity_tokens = 32 is less than one"):
        perplexity(tiny_lm, tokens=32, window_tokens=64)
    with pytest.raises(ValueError, match="is in training mode"):
        tiny_lm.model.train()
        try:
            perplexity(tiny_lm, tokens=64, window_tokens=64)
        finally:
            tiny_lm.model.eval()


# --------------------------------------------------------------------------- instructions


@pytest.mark.parametrize(
    ("answer", "references", "expected"),
    [
        ("The capital of France is Paris.", ("paris",), True),
        ("PARIS!", ("paris",), True),
        ("6 * 7 = 42", ("42", "forty-two"), True),
        ("It is forty-two.", ("42", "forty-two"), True),
        ("Forty two", ("forty-two",), True),
        ("420", ("42",), False),
        ("The answer is 4.2", ("42",), False),
        ("micelle", ("mice",), False),
        ("Water is H₂O.", ("h2o",), True),
        ("Merci beaucoup", ("merci",), True),
        ("Ça va, café", ("ca va",), True),
        ("carbon\n  dioxide", ("carbon dioxide",), True),
        ("carbon monoxide", ("carbon dioxide", "co2"), False),
        ("", ("paris",), False),
        ("<|im_start|>", ("paris",), False),
    ],
)
def test_the_normalised_containment_rule(
    answer: str, references: tuple[str, ...], expected: bool
) -> None:
    assert passes(answer, references) is expected


def test_the_instruction_set_is_well_formed() -> None:
    assert 20 <= len(INSTRUCTIONS) <= 30
    assert len({i.id for i in INSTRUCTIONS}) == len(INSTRUCTIONS)
    for instruction in INSTRUCTIONS:
        assert all(normalise_answer(answer) for answer in instruction.answers), instruction.id
        assert passes(instruction.answers[0], instruction.answers)
        # A prompt that contained its own answer would pass a model that only repeats it.
        assert not passes(instruction.prompt, instruction.answers), instruction.id


def test_instructions_are_answered_and_scored_by_the_rule(tiny_lm: CausalLM) -> None:
    results = ask_instructions(tiny_lm, count=5, max_new_tokens=4, batch_size=2)

    assert results.ids == tuple(i.id for i in INSTRUCTIONS[:5])
    for answer, passed, instruction in zip(
        results.answers, results.passed, INSTRUCTIONS, strict=False
    ):
        assert passed is passes(answer, instruction.answers)
    assert results.pass_rate == sum(results.passed) / 5
    assert ask_instructions(tiny_lm, count=0).pass_rate is None
    with pytest.raises(ValueError, match=r"retention.instructions = 31: the set holds 30"):
        ask_instructions(tiny_lm, count=31)


# --------------------------------------------------------------------------- forgetting


def test_an_identical_model_shows_zero_forgetting(tiny_lm: CausalLM, tiny_folder: Path) -> None:
    base = retention(tiny_lm, SMALL)
    again = retention(CausalLM.load(str(tiny_folder)), SMALL)

    change = forgetting(base, again)
    assert change["forgetting"] == 0.0
    assert change["nll_increase"] == pytest.approx(0.0, abs=1e-9)
    assert change["perplexity_ratio"] == pytest.approx(1.0, abs=1e-9)
    assert change["instructions_lost"] == change["instructions_gained"] == []
    assert base["instructions"]["asked"] == 6 and base["perplexity"]["tokens"] == 8 * 63


def test_perturbed_weights_raise_perplexity_and_show_as_forgetting(
    tiny_folder: Path, tmp_path: Path
) -> None:
    trained = CausalLM.load(str(replay_trained_llm(tiny_folder, tmp_path)))
    base = retention(trained, SMALL)
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in trained.model.parameters():
            parameter.add_(parameter.std() * torch.randn_like(parameter))

    change = forgetting(base, retention(trained, SMALL))

    assert change["perplexity_ratio"] > 1.2
    assert change["nll_increase"] == pytest.approx(math.log(change["perplexity_ratio"]))
    expected = change["base_instruction_pass_rate"] - change["instruction_pass_rate"]
    assert change["forgetting"] == pytest.approx(expected)


def test_measurements_with_other_settings_are_not_compared(tiny_lm: CausalLM) -> None:
    base = retention(tiny_lm, SMALL)
    other = retention(tiny_lm, SMALL.model_copy(update={"instructions": 5}))
    with pytest.raises(ValueError, match="fingerprint"):
        forgetting(base, other)
    # The batch sizes change how fast, not what is measured.
    faster = SMALL.model_copy(update={"perplexity_batch_size": 8, "instruction_batch_size": 1})
    assert forgetting(base, retention(tiny_lm, faster))["forgetting"] == 0.0


def test_no_instructions_means_no_forgetting_score(tiny_lm: CausalLM) -> None:
    settings = SMALL.model_copy(update={"instructions": 0})
    measured = retention(tiny_lm, settings)
    change = forgetting(measured, measured)
    assert change["forgetting"] is None and change["perplexity_ratio"] == 1.0


# --------------------------------------------------------------------------- replay


def test_replay_examples_are_plain_language_modelling_windows(tiny_lm: CausalLM) -> None:
    examples = replay_examples(tiny_lm.tokenizer, 12, 48, seed=3, first_index=100)

    assert len(examples) == 12
    assert [e["index"] for e in examples] == list(range(100, 112))
    for example in examples:
        assert len(example["input_ids"]) == len(example["labels"]) == 48
        assert example["labels"][0] == IGNORE_INDEX  # never a target; packing needs it
        assert example["labels"][1:] == example["input_ids"][1:]
    assert replay_examples(tiny_lm.tokenizer, 12, 48, seed=3, first_index=100) == examples
    other_seed = replay_examples(tiny_lm.tokenizer, 12, 48, seed=4, first_index=100)
    assert [e["input_ids"] for e in other_seed] != [e["input_ids"] for e in examples]
    with pytest.raises(ValueError, match="first_index = -1"):
        replay_examples(tiny_lm.tokenizer, 1, 48, seed=3, first_index=-1)


def test_replay_text_comes_from_the_replay_part_only(tiny_lm: CausalLM) -> None:
    held_out = [d.text for d in documents("held_out")]
    replay = [d.text for d in documents("replay")]
    for example in replay_examples(tiny_lm.tokenizer, 20, 96, seed=0, first_index=0):
        text = tiny_lm.tokenizer.decode(example["input_ids"])
        longest = max(text.split("\n\n"), key=len)[1:-1]  # the ends may be cut mid-character
        assert len(longest) >= SHARED_PARAGRAPH_CHARS
        assert any(longest in article for article in replay)
        assert not any(longest in article for article in held_out)


def test_replay_during_fine_tuning_keeps_held_out_perplexity_lower(
    tiny_folder: Path, tmp_path: Path
) -> None:
    """The effect of mixing general text into chat fine-tuning: the same number of steps,
    one run on chat examples alone, one on chat examples with as many replay windows."""
    records, _ = chat_records()
    after: dict[str, float] = {}
    for mixed in (False, True):
        lm = CausalLM.load(str(tiny_folder))
        chats = encode_chats(lm.tokenizer, records, sequence_len=512).examples
        replay = replay_examples(lm.tokenizer, len(chats), 64, seed=0, first_index=len(records))
        examples: list[dict[str, Any]] = chats + (replay if mixed else [])
        assert len({e["index"] for e in examples}) == len(examples)
        fine_tune(lm, examples, tmp_path / str(mixed), steps=16)
        after[str(mixed)] = perplexity(lm, tokens=512, window_tokens=64).perplexity

    assert after["True"] < 0.8 * after["False"]
