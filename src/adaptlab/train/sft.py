"""Supervised fine-tuning of a chat model: what every SFT strategy shares.

A strategy decides where the weights start and which of them train (all, a LoRA adapter, an
adapter over a 4-bit base, random weights); the rest is here once. The training examples are
the task's chat records exactly as they are asked at evaluation (the data's own system turn,
the user's message) with the reference answer as the assistant turn, rendered by the model's
chat template with the loss on the assistant's tokens only (:mod:`adaptlab.train.chat`).
Packing puts several short conversations into one row, so a batch of restaurant8k's
~80-token records carries no padding. The training itself is ``train.loop.train``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from torch import nn

from adaptlab.evaluate.generation import DecodingConfig
from adaptlab.models.causal_lm import CausalLM
from adaptlab.paths import write_text_atomic
from adaptlab.train.chat import (
    IGNORE_INDEX,
    ChatCollator,
    Example,
    chat_loss,
    encode_chats,
    example_length,
    pack_examples,
    pad_token_id,
)
from adaptlab.train.fit import run_loop
from adaptlab.train.loop import LossFunction, TrainResult, TrainTask

if TYPE_CHECKING:  # strategies.base imports every strategy at run time
    from adaptlab.strategies.base import GenerativeTask, Messages, RunContext

GENERATOR_FILE = "generator.json"


@dataclass
class TunedGenerator:
    """A fine-tuned chat model answers each request as it comes: the conversation it was
    trained on is the request itself, with nothing added."""

    lm: CausalLM
    decoding: DecodingConfig

    def conversations(self, requests: Sequence[Messages]) -> list[Messages]:
        return [[dict(message) for message in request] for request in requests]


def training_records(task: GenerativeTask) -> list[dict[str, Any]]:
    """The task's training conversations as chat records (``{"messages": [...]}``)."""
    return [{"messages": record} for record in task.train_records]


def sft_examples(
    tokenizer: Any,
    records: Sequence[Mapping[str, Any]],
    sequence_len: int,
    *,
    packing: bool,
    replay_share: float = 0.0,
    replay: Callable[[int], Sequence[Example]] | None = None,
) -> tuple[list[Example], dict[str, Any]]:
    """Encoded (and, with ``packing``, packed) examples of ``records``, and what encoding
    reported (truncated and dropped records): the facts a run records so nothing is cut
    silently.

    With ``replay_share`` > 0, ``replay(count)`` windows of general text are added, as many as
    make that share of the *trained tokens*: a replay window trains every token while a chat
    example trains only its answer (a restaurant8k answer is ~15 tokens, a window 255), so a
    share counted in examples would let general text dominate the gradient.
    """
    data = encode_chats(tokenizer, records, sequence_len)
    if not data.examples:
        raise ValueError(
            f"no training example is left of the {len(records)} chat records: "
            f"{data.report.summary()}. Raise model.sequence_len or shorten the conversations."
        )
    extra: list[Example] = []
    if replay_share > 0:
        if replay is None:
            raise ValueError("replay_share > 0 needs a replay source")
        extra = list(replay(replay_windows(data.report.trained_tokens, replay_share, sequence_len)))
    examples = [*data.examples, *extra]
    report = {
        "records": data.report.records,
        "examples": len(data.examples),
        "truncated_records": len(data.report.truncated),
        "dropped_records": len(data.report.dropped),
        "tokens": data.report.tokens,
        "trained_tokens": data.report.trained_tokens,
        "replayed_examples": len(extra),
        "replayed_trained_tokens": sum(trained_count(example) for example in extra),
    }
    if packing:
        examples = pack_examples(examples, sequence_len)
        report["packed_rows"] = len(examples)
    return examples, report


@runtime_checkable
class SftDataSettings(Protocol):
    """The settings that decide an SFT run's training examples: ``SftConfig``'s (in
    ``strategies.sft_full``) and every config built on it. A protocol, so the cost estimate
    can tell an SFT run by its settings without importing the strategies."""

    @property
    def packing(self) -> bool: ...

    @property
    def replay_ratio(self) -> float: ...


def training_examples(
    run: RunContext[GenerativeTask], tokenizer: Any, config: SftDataSettings
) -> list[Example]:
    """The run's training conversations encoded (and packed), with replayed general text
    mixed in at ``replay_ratio``; what encoding cut or dropped goes into the run's facts."""
    records = training_records(run.task)

    def replay(count: int) -> list[Example]:
        from adaptlab.evaluate.forgetting import replay_examples  # BBC News: load on use

        # Indices above every chat record's, so packing and per-example losses keep them apart.
        seed = run.train.seed
        return replay_examples(tokenizer, count, run.max_length, seed, first_index=len(records))

    examples, report = sft_examples(
        tokenizer,
        records,
        run.max_length,
        packing=config.packing,
        replay_share=config.replay_ratio,
        replay=replay,
    )
    run.record(sft_data=report)
    return examples


def replay_windows(chat_tokens: int, share: float, sequence_len: int) -> int:
    """Windows of ``sequence_len`` tokens (``sequence_len - 1`` trained: the first is never
    predicted) that make ``share`` of all trained tokens next to ``chat_tokens``."""
    if not 0 <= share < 1:
        raise ValueError(f"replay share = {share}: must be in [0, 1)")
    wanted = share / (1 - share) * chat_tokens
    return math.ceil(wanted / (sequence_len - 1)) if wanted > 0 else 0


def trained_count(example: Mapping[str, Any]) -> int:
    return sum(label != IGNORE_INDEX for label in example["labels"])


def fit_causal_lm(
    run: RunContext[GenerativeTask],
    model: nn.Module,
    tokenizer: Any,
    examples: Sequence[Example],
    loss: LossFunction = chat_loss,
) -> TrainResult:
    """Train ``model`` (its trainable parameters) on ``examples`` with the shared loop and
    record what it cost, as ``fit_classifier`` does for classifiers."""
    train_task = TrainTask(
        model=model,
        train_data=examples,
        collate=ChatCollator(pad_token_id(tokenizer)),
        loss=loss,
        length=example_length,
    )
    model.train()
    result = run_loop(run, train_task)
    model.eval()
    return result


def save_generator_meta(folder: Path, **meta: Any) -> None:
    """``generator.json``: what loading needs besides the weights (decoding, base model)."""
    write_text_atomic(folder / GENERATOR_FILE, json.dumps(meta, indent=2) + "\n")


def read_generator_meta(folder: Path) -> dict[str, Any]:
    path = folder / GENERATOR_FILE
    try:
        meta: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the generator's settings ({exc})") from exc
    return meta
