"""The pieces every fine-tuned sentence classifier shares: examples, the loss, freezing, fitting.

Strategies differ in which parameters train (``freeze``) and, for distillation, in the loss;
the rest is here once and the training itself is ``train.loop.train``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from adaptlab.models.encoder import pad_values, tokenize
from adaptlab.train.batching import pad_collate
from adaptlab.train.fit import run_loop
from adaptlab.train.loop import LossFunction, TrainResult, TrainTask

if TYPE_CHECKING:  # importing strategies.base at run time would import every strategy
    from adaptlab.strategies.base import ClassificationTask, RunContext


def classification_examples(
    tokenizer: Any, texts: Sequence[str], labels: np.ndarray, max_length: int
) -> list[dict[str, Any]]:
    """Tokenised examples with their label id (and their index, for cached teacher logits).

    Label sets (``labels`` an ``(n, num_labels)`` 0/1 matrix) give each example its row as a
    list of floats instead: the binary cross-entropy's targets, one per label.
    """
    examples: list[dict[str, Any]] = tokenize(tokenizer, texts, max_length)
    label_sets = np.ndim(labels) == 2
    for index, (example, label) in enumerate(zip(examples, labels, strict=True)):
        example["labels"] = [float(value) for value in label] if label_sets else int(label)
        example["index"] = index
    return examples


def cross_entropy_sum(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the batch and the number of examples (the loop averages)."""
    logits = model(batch["input_ids"], batch["attention_mask"])
    loss = nn.functional.cross_entropy(logits.float(), batch["labels"], reduction="sum")
    return loss, int(batch["labels"].numel())


def binary_cross_entropy_sum(
    model: nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, int]:
    """Binary cross-entropy with logits, summed over every label of every example, and the
    number of examples (the loop averages per example).

    Label sets: each label is its own yes/no question, ``−Σ_l [y_l log σ(z_l) + (1 − y_l)
    log(1 − σ(z_l))]`` per example, so a record may have none, one or several labels. Summed
    over the labels rather than averaged, each label's logit gets the gradient
    ``σ(z_l) − y_l`` whatever the number of labels, as a softmax logit gets ``p_l − y_l``: the
    learning rates tuned for cross-entropy suit it.
    """
    logits = model(batch["input_ids"], batch["attention_mask"])
    targets = batch["labels"].float()
    loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), targets, reduction="sum")
    return loss, int(targets.shape[0])


def classification_loss(task: ClassificationTask) -> LossFunction:
    """Cross-entropy over the labels, or binary cross-entropy per label for label sets."""
    return binary_cross_entropy_sum if task.multi_label else cross_entropy_sum


def freeze(model: nn.Module, except_: Callable[[str], bool] = lambda name: False) -> None:
    """Stop gradients for every parameter whose name ``except_`` does not accept."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad = except_(name)


def fit_classifier(
    run: RunContext,
    model: nn.Module,
    tokenizer: Any,
    loss: LossFunction | None = None,
    examples: Sequence[Mapping[str, Any]] | None = None,
) -> TrainResult:
    """Train ``model`` on the run's training set with the shared loop; record what it cost.

    ``loss`` defaults to the task's (:func:`classification_loss`)."""
    if loss is None:
        loss = classification_loss(run.task)
    if examples is None:
        task = run.task
        examples = classification_examples(
            tokenizer, task.train_texts, task.train_labels, run.max_length
        )
    padding = pad_values(tokenizer)
    train_task = TrainTask(
        model=model,
        train_data=examples,
        collate=lambda batch: pad_collate(batch, padding),
        loss=loss,
        length=lambda example: len(example["input_ids"]),
    )
    return run_loop(run, train_task)
