"""LoRA fine-tuning of the real bundled SmolLM2-135M-Instruct for a few steps, through the
strategy and the shared loop: the loss on the training conversations falls, and the saved
adapter reloads (onto a freshly loaded base) to the same logits and the same answers.

About a minute on two CPU cores (the base model is converted from its GGUF once per cache).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.unit.strategies.conftest import chat_records

from adaptlab.config import ExperimentConfig, TrainConfig
from adaptlab.evaluate.generation import generate_chat
from adaptlab.models.bundled import BUNDLED, SMOLLM2, package_dir
from adaptlab.models.causal_lm import CausalLM
from adaptlab.strategies.base import (
    GenerativeTask,
    RunContext,
    get_strategy,
    merged_train_config,
    strategy_config,
)
from adaptlab.train.chat import ChatCollator, chat_loss, pad_token_id
from adaptlab.train.sft import TunedGenerator, sft_examples

pytestmark = pytest.mark.integration


def chat_task() -> GenerativeTask:
    train, evaluation = chat_records()
    return GenerativeTask(
        ("people", "date", "time", "first_name", "last_name"),
        [record["messages"] for record in train],
        [record["messages"] for record in evaluation],
        [json.loads(record["messages"][-1]["content"]) for record in evaluation],
        "train-sha",
        "eval-sha",
    )


def mean_loss(lm: CausalLM, task: GenerativeTask) -> float:
    """Mean next-token loss of the answers of every training conversation."""
    records = [{"messages": record} for record in task.train_records]
    rows, _ = sft_examples(lm.tokenizer, records, 256, packing=True)
    batch = ChatCollator(pad_token_id(lm.tokenizer))(rows)
    with torch.no_grad():
        total, count = chat_loss(lm.model.eval(), batch)
    return float(total) / int(count)


def test_lora_on_smollm2_lowers_the_loss_and_reloads_to_the_same_outputs(
    tmp_path: Path,
) -> None:
    if package_dir(BUNDLED[SMOLLM2].package) is None:
        pytest.skip(f"{SMOLLM2} is not installed: {BUNDLED[SMOLLM2].install}")
    torch.set_num_threads(2)
    task = chat_task()
    settings = {"decoding": {"max_new_tokens": 24}}
    experiment = ExperimentConfig.model_validate(
        {
            "model": {"base_model": SMOLLM2, "sequence_len": 256},
            "strategies": {"sft_lora": settings},
        }
    )
    config = strategy_config("sft_lora", settings)
    train = merged_train_config(
        TrainConfig(max_steps=6, micro_batch_size=2, warmup_ratio=0.0),
        {"max_steps", "micro_batch_size", "warmup_ratio"},
        config,
    )
    folder = tmp_path / "runs" / "sft_lora"
    folder.mkdir(parents=True)
    run = RunContext("sft_lora", folder, task, experiment, config, train, tmp_path / "runs")
    before = mean_loss(CausalLM.load(SMOLLM2), task)

    fitted = get_strategy("sft_lora").fit(run)

    assert isinstance(fitted, TunedGenerator)
    after = mean_loss(fitted.lm, task)
    assert after < before - 0.1, (before, after)
    assert run.facts["trainable_params"] < run.facts["total_params"] / 20  # adapters only
    reloaded = get_strategy("sft_lora").load(run)
    assert isinstance(reloaded, TunedGenerator)
    conversations = fitted.conversations(task.eval_requests[:3])
    prompt = reloaded.lm.tokenizer.apply_chat_template(
        conversations[0], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded.lm.model(prompt).logits, fitted.lm.model(prompt).logits, atol=1e-4, rtol=1e-4
        )
    answers = [g.token_ids for g in generate_chat(fitted.lm, conversations, fitted.decoding)]
    again = [g.token_ids for g in generate_chat(reloaded.lm, conversations, reloaded.decoding)]
    assert again == answers
