"""Tiny in-process models and data for the training-loop tests (imported by conftest.py and
run by ddp_worker.py; not a test module)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification

from adaptlab.config import TrainConfig
from adaptlab.train.batching import pad_collate
from adaptlab.train.loop import TrainTask

VOCAB = 100
PAD_ID = 0
NUM_LABELS = 3


def bert_config(dropout: float) -> BertConfig:
    return BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        num_labels=NUM_LABELS,
        pad_token_id=PAD_ID,
    )


def tiny_classifier(*, seed: int = 0, dropout: float = 0.0) -> BertForSequenceClassification:
    """The same weights for the same seed, whatever ran before."""
    torch.manual_seed(seed)
    return BertForSequenceClassification(bert_config(dropout))


def tiny_tagger(*, seed: int = 0, dropout: float = 0.0) -> BertForTokenClassification:
    torch.manual_seed(seed)
    return BertForTokenClassification(bert_config(dropout))


def synthetic_examples(count: int, *, seed: int = 0, max_len: int = 24) -> list[dict[str, Any]]:
    """Variable-length token id lists; the label is learnable (first content token mod 3)."""
    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(count):
        length = int(rng.integers(3, max_len + 1))
        ids = [int(token) for token in rng.integers(1, VOCAB, size=length)]
        tags = [token % NUM_LABELS for token in ids]
        examples.append(
            {"input_ids": ids, "attention_mask": [1] * length, "label": ids[0] % 3, "tags": tags}
        )
    return examples


def collate(examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    return pad_collate(examples, {"input_ids": PAD_ID, "attention_mask": 0, "tags": -100})


def example_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy summed over examples; items = examples."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(logits, batch["label"], reduction="sum"), torch.tensor(len(logits))


def token_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy summed over target tokens; items = target tokens."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    tags = batch["tags"]
    loss = F.cross_entropy(logits.flatten(0, 1), tags.flatten(), ignore_index=-100, reduction="sum")
    return loss, (tags != -100).sum()


def make_task(
    model: torch.nn.Module,
    examples: Sequence[Mapping[str, Any]],
    *,
    loss: Callable[[torch.nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, Any]] = (
        example_loss
    ),
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    greater_is_better: bool = False,
) -> TrainTask:
    return TrainTask(
        model=model,
        train_data=examples,
        collate=collate,
        loss=loss,
        length=lambda example: len(example["input_ids"]),
        evaluate=evaluate,
        greater_is_better=greater_is_better,
    )


def eval_loss_on(
    examples: Sequence[Mapping[str, Any]],
) -> Callable[[torch.nn.Module], dict[str, float]]:
    """An evaluate function: mean example loss on ``examples``."""

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        total, items = example_loss(model, collate(examples))
        return {"eval_loss": float(total / items)}

    return evaluate


def make_config(**overrides: Any) -> TrainConfig:
    settings: dict[str, Any] = {
        "learning_rate": 1e-3,
        "num_epochs": 1,
        "micro_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "warmup_ratio": 0.1,
        "weight_decay": 0.01,
        "max_grad_norm": 1.0,
        "seed": 7,
        "bf16": "false",
    }
    settings.update(overrides)
    return TrainConfig(**settings)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: param.detach().clone()
        for name, param in model.named_parameters()
        if param.requires_grad
    }


DDP_EXAMPLES = 42  # 10 global batches of 4 and one of 2: one example per process at the end


def ddp_config(micro_batch_size: int) -> TrainConfig:
    """The settings of the two-process test; the global batch is 4 in both set-ups."""
    return make_config(
        micro_batch_size=micro_batch_size,
        gradient_accumulation_steps=2,
        num_epochs=2,
        group_by_length=True,
        eval_steps=4,
    )


def ddp_task() -> TrainTask:
    """Evaluated on its training data, so that the best weights are the last ones."""
    examples = synthetic_examples(DDP_EXAMPLES)
    model = tiny_classifier(seed=3)  # dropout 0: masks differ when a batch is split in two
    return make_task(model, examples, evaluate=eval_loss_on(examples))
