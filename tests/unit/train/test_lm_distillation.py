"""Distilling a causal LM from cached top-k teacher logits (tiny random Llamas, packed chat
rows): the loss is zero when the student is the teacher, reading the teacher from the cache
equals running it on every batch, the top-k loss is the full-vocabulary one when k is the
vocabulary, and the cache is computed once."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.unit.models.test_causal_lm import build_tiny_llm
from tests.unit.train.test_chat import random_records

from adaptlab.train import distillation
from adaptlab.train.chat import (
    ChatCollator,
    encode_chats,
    pack_examples,
    pad_token_id,
    trained_logits,
)
from adaptlab.train.distillation import (
    TopLogits,
    cached_top_logits,
    half_depth_student,
    lm_kd_loss,
    online_lm_kd_loss,
    soft_target_loss,
)

DIVERGENCES = ["forward_kl", "reverse_kl", "jsd"]


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def teacher_and_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = build_tiny_llm(tmp_path_factory.mktemp("tiny-llama"))
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(
        folder
    )


@pytest.fixture(scope="module")
def rows(teacher_and_tokenizer: tuple[Any, Any]) -> list[dict[str, Any]]:
    _, tokenizer = teacher_and_tokenizer
    examples = encode_chats(tokenizer, random_records(10, seed=3), sequence_len=96).examples
    return pack_examples(examples, 96)


def collate(tokenizer: Any) -> ChatCollator:
    return ChatCollator(pad_token_id(tokenizer))


def top_logits(teacher: Any, tokenizer: Any, rows: list[dict[str, Any]], k: int) -> TopLogits:
    return cached_top_logits(
        teacher, rows, collate(tokenizer), k=k, teacher_key="teacher", batch_size=2
    )


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_kd_loss_is_zero_when_the_student_is_the_teacher(
    teacher_and_tokenizer: tuple[Any, Any], rows: list[dict[str, Any]], divergence: Any
) -> None:
    teacher, tokenizer = teacher_and_tokenizer
    top = top_logits(teacher, tokenizer, rows, k=16)
    loss = lm_kd_loss(top, temperature=2.0, alpha=0.0, divergence=divergence)
    with torch.no_grad():
        value, count = loss(copy.deepcopy(teacher), collate(tokenizer)(rows[:3]))
    assert int(count) > 0
    assert float(value) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_cached_teacher_logits_give_the_loss_and_gradients_of_the_teacher_run_per_batch(
    teacher_and_tokenizer: tuple[Any, Any], rows: list[dict[str, Any]], divergence: Any
) -> None:
    teacher, tokenizer = teacher_and_tokenizer
    settings = {"temperature": 2.0, "alpha": 0.3, "divergence": divergence}
    cached = lm_kd_loss(top_logits(teacher, tokenizer, rows, k=8), **settings)
    online = online_lm_kd_loss(teacher, 8, **settings)
    student = half_depth_student(teacher).train()
    batch = collate(tokenizer)(rows[2:5])  # rows in another grouping than the cache's batches

    gradients = []
    values = []
    for loss in (cached, online):
        student.zero_grad()
        value, count = loss(student, batch)
        value.backward()
        values.append((float(value.detach()), int(count)))
        gradients.append([p.grad.clone() for p in student.parameters() if p.grad is not None])

    assert values[0][1] == values[1][1]
    assert values[0][0] == pytest.approx(values[1][0], rel=1e-5)
    for cached_grad, online_grad in zip(*gradients, strict=True):
        torch.testing.assert_close(cached_grad, online_grad, rtol=1e-4, atol=1e-6)


def test_with_k_the_whole_vocabulary_the_loss_is_the_full_distribution_kd(
    teacher_and_tokenizer: tuple[Any, Any], rows: list[dict[str, Any]]
) -> None:
    teacher, tokenizer = teacher_and_tokenizer
    vocabulary = teacher.config.vocab_size
    student = half_depth_student(teacher)
    batch = collate(tokenizer)(rows[:4])
    loss = lm_kd_loss(top_logits(teacher, tokenizer, rows, k=vocabulary), temperature=3.0, alpha=0)

    with torch.no_grad():
        value, _ = loss(student, batch)
        expected = soft_target_loss(
            trained_logits(student, batch)[0], trained_logits(teacher, batch)[0], temperature=3.0
        )
    assert float(value) == pytest.approx(float(expected), rel=1e-5)


def test_teacher_logits_are_computed_once_then_read_from_the_cache(
    teacher_and_tokenizer: tuple[Any, Any],
    rows: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    teacher, tokenizer = teacher_and_tokenizer
    first = top_logits(teacher, tokenizer, rows, k=4)

    def no_teacher(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the teacher ran again")

    monkeypatch.setattr(distillation, "teacher_top_logits", no_teacher)
    again = top_logits(teacher, tokenizer, rows, k=4)
    torch.testing.assert_close(again.values, first.values)
    assert torch.equal(again.indices, first.indices) and torch.equal(again.offsets, first.offsets)
    with pytest.raises(AssertionError, match="ran again"):
        top_logits(teacher, tokenizer, rows, k=5)  # another k is another cache entry


def test_rows_encoded_differently_from_the_cache_are_refused(
    teacher_and_tokenizer: tuple[Any, Any], rows: list[dict[str, Any]]
) -> None:
    teacher, tokenizer = teacher_and_tokenizer
    top = top_logits(teacher, tokenizer, rows, k=4)
    shorter = [dict(row, labels=[-100] * 3 + list(row["labels"][3:])) for row in rows[:2]]
    shorter[0]["labels"][-2] = -100  # one trained position fewer than the cache holds
    loss = lm_kd_loss(top, temperature=1.0, alpha=0.5)
    with pytest.raises(ValueError, match="encoded differently"):
        loss(teacher, collate(tokenizer)(shorter))
