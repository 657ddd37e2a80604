"""Supervised fine-tuning strategies on the tiny Llama: the model is trained on exactly the
prompts it is asked at evaluation, DoRA is an option of sft_lora, qlora refuses a machine
without CUDA before loading anything, and data that leaves nothing to train on is an error.
(The generic checks — parameters change, save → load, no pickle — are in the matrix.)"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from tests.unit.strategies.conftest import RunFactory

from adaptlab.evaluate.generation import request_messages
from adaptlab.strategies.base import get_strategy
from adaptlab.strategies.qlora import QloraUnavailableError
from adaptlab.strategies.sft_full import training_examples
from adaptlab.train.chat import IGNORE_INDEX, encode_prompt
from adaptlab.train.sft import TunedGenerator, sft_examples


def test_training_examples_are_the_eval_prompts_followed_by_the_answer(
    make_run: RunFactory,
) -> None:
    run = make_run("sft_full", {"packing": False})
    generator = get_strategy("sft_full").fit(run)
    assert isinstance(generator, TunedGenerator)
    tokenizer = generator.lm.tokenizer
    examples = training_examples(run, tokenizer, run.config)  # type: ignore[arg-type]

    for example, record in zip(examples, run.task.train_records, strict=True):
        request = request_messages({"messages": record})
        prompt = encode_prompt(tokenizer, generator.conversations([request])[0])
        assert example["input_ids"][: len(prompt)] == prompt
        assert set(example["labels"][: len(prompt)]) == {IGNORE_INDEX}
        answer = tokenizer.decode(
            [t for t in example["labels"][len(prompt) :] if t != IGNORE_INDEX]
        )
        assert answer.startswith(record[-1]["content"])


def test_packing_changes_the_rows_not_the_trained_tokens(make_run: RunFactory) -> None:
    run = make_run("sft_full")
    tokenizer = get_strategy("sft_full").fit(run).lm.tokenizer  # type: ignore[union-attr]
    records = [{"messages": record} for record in run.task.train_records]

    packed, packed_report = sft_examples(tokenizer, records, 512, packing=True)
    single, single_report = sft_examples(tokenizer, records, 512, packing=False)

    assert len(packed) < len(single) == len(records)
    assert packed_report["trained_tokens"] == single_report["trained_tokens"]
    trained = sorted(t for row in packed for t in row["labels"] if t != IGNORE_INDEX)
    assert trained == sorted(t for row in single for t in row["labels"] if t != IGNORE_INDEX)


def test_dora_trains_a_magnitude_beside_the_low_rank_factors(make_run: RunFactory) -> None:
    plain = make_run("sft_lora")
    weighted = make_run("sft_lora", {"lora": {"use_dora": True}})
    get_strategy("sft_lora").fit(plain)
    get_strategy("sft_lora").fit(weighted)
    assert weighted.facts["trainable_params"] > plain.facts["trainable_params"]
    saved = load_file(weighted.folder / "adapter" / "adapter_model.safetensors")
    assert any("lora_magnitude_vector" in name for name in saved)


def test_conversations_too_long_for_sequence_len_are_an_error(make_run: RunFactory) -> None:
    run = make_run("sft_full")
    tokenizer = get_strategy("sft_full").fit(run).lm.tokenizer  # type: ignore[union-attr]
    records = [{"messages": record} for record in run.task.train_records]

    with pytest.warns(UserWarning), pytest.raises(ValueError, match="sequence_len"):
        sft_examples(tokenizer, records, 16, packing=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_qlora_without_cuda_stops_before_loading_anything(
    make_run: RunFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = make_run("qlora")

    def no_loading(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("qlora loaded a model on a machine without CUDA")

    monkeypatch.setattr("adaptlab.strategies.qlora.quantized_base", no_loading)
    with pytest.raises(QloraUnavailableError, match="CUDA.*sft_lora"):
        get_strategy("qlora").fit(run)
    assert not (run.folder / "adapter").exists()


def test_replay_ratio_is_the_share_of_trained_tokens_from_general_text(
    make_run: RunFactory,
) -> None:
    run = make_run("sft_full", {"replay_ratio": 0.2, "packing": False})
    tokenizer = get_strategy("sft_full").fit(run).lm.tokenizer  # type: ignore[union-attr]
    report = run.facts["sft_data"]
    replayed, chat = report["replayed_trained_tokens"], report["trained_tokens"]

    assert report["replayed_examples"] >= 1
    share = replayed / (replayed + chat)
    one_window = (run.max_length - 1) / (replayed + chat)
    assert 0.2 <= share < 0.2 + one_window  # as many windows as reach the share, no more
    examples = training_examples(run, tokenizer, run.config)  # type: ignore[arg-type]
    replay_rows = examples[len(run.task.train_records) :]
    assert len(replay_rows) == report["replayed_examples"]
    assert all(row["index"] >= len(run.task.train_records) for row in replay_rows)
