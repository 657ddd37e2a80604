"""Batched greedy generation from a causal LM, and what each request costs.

Decoding is transformers' own ``model.generate``: greedy, with a KV cache, over batches padded
on the LEFT, so every row's last prompt token sits in the last column and all rows append their
next token in the same column. ``generate`` derives each row's position ids from the attention
mask (``cumsum - 1``: a left-padded row still starts at position 0), masks the pads for every
later step, and stops a row when it emits a stop token (finished rows are fed pads, which are
cut off here, until the batch's last row stops or ``max_new_tokens`` is reached). A hand-written
loop would add nothing but a second place for those details to go wrong.

One trap of ``generate`` is handled here: settings that the call leaves unset are taken from
the checkpoint's ``generation_config.json``, so a hub model that ships ``do_sample=true`` or a
``repetition_penalty`` would silently stop being greedy. Every setting that changes which token
greedy decoding picks is pinned (:data:`PINNED_SETTINGS`); a checkpoint that sets one of the
rarer ones this module does not pin (:data:`REFUSED_SETTINGS`) is refused, not obeyed.

Requests are sorted by prompt length and cut into batches of similar lengths, so little compute
goes to padding; results come back in the order the requests were given. Prompts are token ids;
:func:`generate_chat` encodes chat messages with :func:`adaptlab.train.chat.encode_prompt`, the
same encoding training uses for the prefix it learns to continue.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Annotated, Any

import numpy as np
import torch
from annotated_types import Ge, Le
from pydantic import Field

from adaptlab.config import Section
from adaptlab.evaluate.latency import Latency, measure_latency
from adaptlab.models.causal_lm import CausalLM
from adaptlab.train.chat import encode_prompt, pad_token_id

PINNED_SETTINGS: dict[str, Any] = {
    "do_sample": False,
    "num_beams": 1,
    "num_return_sequences": 1,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "min_new_tokens": 0,  # takes precedence over a checkpoint's min_length
}
"""Generation settings fixed to plain greedy decoding whatever the checkpoint says."""

REFUSED_SETTINGS = (
    "bad_words_ids",
    "suppress_tokens",
    "begin_suppress_tokens",
    "sequence_bias",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "exponential_decay_length_penalty",
    "guidance_scale",
    "watermarking_config",
    "stop_strings",
    "constraints",
    "force_words_ids",
    "prompt_lookup_num_tokens",
    "assistant_early_exit",
    "penalty_alpha",
    "dola_layers",
)
"""Settings that would change greedy decoding and that a checkpoint may not set (see module)."""


class DecodingConfig(Section):
    """How generated answers are decoded (greedy) and batched."""

    max_new_tokens: Annotated[int, Ge(1), Le(4096)] = Field(
        64,
        description="Most tokens generated per request, the stop token included; a row that "
        "reaches it is reported as unfinished (restaurant8k answers need about 40).",
    )
    batch_size: Annotated[int, Ge(1), Le(1024)] = Field(
        16, description="Requests decoded together, grouped by prompt length."
    )
    use_cache: bool = Field(
        True, description="Reuse attention keys and values between steps (the KV cache)."
    )


@dataclass(frozen=True)
class Generation:
    """What the model answered to one request."""

    text: str
    """The generated tokens decoded, without the stop token (special tokens kept)."""
    token_ids: list[int]
    """Every token generated, the stop token included when there is one."""
    prompt_tokens: int
    finished: bool
    """True when a stop token ended the answer; False when ``max_new_tokens`` cut it."""

    @property
    def generated_tokens(self) -> int:
        """Tokens generated, the stop token included: each one cost a forward step."""
        return len(self.token_ids)


def stop_token_ids(lm: CausalLM) -> tuple[int, ...]:
    """The ids that end an answer: the tokenizer's end-of-sequence token (ChatML's
    ``<|im_end|>``) and those of the model's generation config, in that order."""
    model: Any = lm.model  # nn.Module in CausalLM's type; a transformers model here
    configured = model.generation_config.eos_token_id
    candidates = [
        lm.tokenizer.eos_token_id,
        *(configured if isinstance(configured, list) else [configured]),
    ]
    ids = tuple(dict.fromkeys(int(i) for i in candidates if i is not None))
    if not ids:
        raise ValueError(f"model '{lm.name}' names no end-of-sequence token to stop at")
    return ids


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices into ``lengths`` in batches of ``batch_size``, longest prompts first.

    Longest first, so a batch that does not fit in memory fails at once, not at the end. The
    sort is stable: equal lengths keep their input order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size = {batch_size}: must be >= 1")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def generate(
    lm: CausalLM,
    prompts: Sequence[Sequence[int]],
    config: DecodingConfig | None = None,
    *,
    stop_ids: Sequence[int] | None = None,
) -> list[Generation]:
    """Greedy answers to token-id ``prompts``, in their order.

    ``stop_ids`` defaults to :func:`stop_token_ids`; an empty sequence never stops early.
    """
    config = config or DecodingConfig()
    if lm.model.training:
        raise ValueError(f"model '{lm.name}' is in training mode (dropout on): call .eval() first")
    for index, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError(f"prompts[{index}] is empty: a prompt needs at least one token")
    stops = tuple(stop_token_ids(lm) if stop_ids is None else stop_ids)
    settings = _greedy_settings(lm, config, stops)
    results: list[Generation | None] = [None] * len(prompts)
    for batch in length_sorted_batches([len(p) for p in prompts], config.batch_size):
        rows = _generate_batch(lm, [prompts[i] for i in batch], settings)
        for index, row in zip(batch, rows, strict=True):
            results[index] = _generation(lm, prompts[index], row, stops)
    return [result for result in results if result is not None]


def generate_chat(
    lm: CausalLM,
    conversations: Sequence[Sequence[Mapping[str, Any]]],
    config: DecodingConfig | None = None,
) -> list[Generation]:
    """The next assistant message of each conversation, encoded as training encodes it."""
    prompts = [encode_prompt(lm.tokenizer, messages) for messages in conversations]
    return generate(lm, prompts, config)


def request_messages(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The messages of a chat record before its last assistant turn: what the model is asked
    (the last assistant turn is the reference answer)."""
    messages = record.get("messages")
    if not isinstance(messages, list):
        raise ValueError("the chat record has no 'messages' list")
    answers = [
        i for i, m in enumerate(messages) if isinstance(m, Mapping) and m.get("role") == "assistant"
    ]
    if not answers:
        raise ValueError("the chat record has no assistant message to compare against")
    return [dict(message) for message in messages[: answers[-1]]]


def _greedy_settings(lm: CausalLM, config: DecodingConfig, stops: tuple[int, ...]) -> Any:
    from transformers import GenerationConfig

    model: Any = lm.model
    checkpoint = model.generation_config
    refused = [name for name in REFUSED_SETTINGS if getattr(checkpoint, name, None) is not None]
    if refused:
        raise ValueError(
            f"model '{lm.name}': its generation config sets {', '.join(refused)}, which would "
            "change greedy decoding; clear them (model.generation_config) to evaluate it"
        )
    return GenerationConfig(  # type: ignore[no-untyped-call]
        **PINNED_SETTINGS,
        max_new_tokens=config.max_new_tokens,
        use_cache=config.use_cache,
        eos_token_id=list(stops),
        pad_token_id=pad_token_id(lm.tokenizer),
    )


def _generate_batch(
    lm: CausalLM, prompts: Sequence[Sequence[int]], settings: Any
) -> list[list[int]]:
    """The tokens generated for each prompt of one batch, padded on the left."""
    width = max(len(prompt) for prompt in prompts)
    pad = settings.pad_token_id
    model: Any = lm.model
    device = next(model.parameters()).device
    input_ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts], device=device)
    attention_mask = torch.tensor(
        [[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device
    )
    with torch.inference_mode():
        output = model.generate(
            input_ids=input_ids, attention_mask=attention_mask, generation_config=settings
        )
    generated: list[list[int]] = output[:, width:].tolist()
    return generated


def _generation(
    lm: CausalLM, prompt: Sequence[int], row: Sequence[int], stops: tuple[int, ...]
) -> Generation:
    """One row's answer, cut after its first stop token (what follows is padding)."""
    end = next((i for i, token in enumerate(row) if token in stops), None)
    token_ids = list(row if end is None else row[: end + 1])
    answer = token_ids if end is None else token_ids[:-1]
    text: str = lm.tokenizer.decode(answer, skip_special_tokens=False)
    return Generation(text, token_ids, len(prompt), finished=end is not None)


# --------------------------------------------------------------------------- cost


@dataclass(frozen=True)
class TokenStats:
    """Tokens per request over a set of requests."""

    requests: int
    mean: float
    p50: float
    p95: float
    max: int
    total: int

    @classmethod
    def of(cls, counts: Sequence[int]) -> TokenStats:
        if not counts:
            raise ValueError("no requests to count tokens over")
        values = np.asarray(counts, dtype=np.float64)
        p50, p95 = np.percentile(values, [50, 95])
        return cls(
            requests=len(counts),
            mean=float(values.mean()),
            p50=float(p50),
            p95=float(p95),
            max=int(values.max()),
            total=int(values.sum()),
        )


@dataclass(frozen=True)
class GenerationCost:
    """What answering one request at a time costs, measured on real requests.

    Every field covers the same measured requests (warm-up excluded).
    """

    latency: Latency
    """Per request at batch 1: tokenised prompt in, decoded answer out."""
    output_tokens_per_s: float
    """Generated tokens (stop tokens included) over the seconds spent generating them."""
    prompt_tokens: TokenStats
    """Prompt tokens per request: a few-shot prompt pays for its examples on every call."""
    generated_tokens: TokenStats

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


def measure_generation_cost(
    lm: CausalLM,
    prompts: Sequence[Sequence[int]],
    config: DecodingConfig | None = None,
    *,
    max_requests: int = 50,
    warmup: int = 3,
    time_budget_s: float = 30.0,
) -> GenerationCost:
    """Generate for ``prompts`` one at a time, in their order, and time each request.

    Timing follows :func:`adaptlab.evaluate.latency.measure_latency` (warm-up calls first, then
    up to ``max_requests`` timed calls within ``time_budget_s``, never fewer than 5). The cost
    of a request depends on how long the model's answer is, so the same requests must be used
    for every system being compared.
    """
    config = (config or DecodingConfig()).model_copy(update={"batch_size": 1})
    calls: list[tuple[Generation, float]] = []

    def answer(batch: Sequence[Sequence[int]]) -> None:
        start = time.perf_counter()
        (generation,) = generate(lm, batch, config)
        calls.append((generation, time.perf_counter() - start))

    latency = measure_latency(
        answer,
        prompts,
        batch_size=1,
        max_batches=max_requests,
        warmup=warmup,
        time_budget_s=time_budget_s,
    )
    measured = calls[-latency.samples :]
    generated = [generation.generated_tokens for generation, _ in measured]
    seconds = sum(duration for _, duration in measured)
    return GenerationCost(
        latency=latency,
        output_tokens_per_s=sum(generated) / seconds if seconds > 0 else 0.0,
        prompt_tokens=TokenStats.of([generation.prompt_tokens for generation, _ in measured]),
        generated_tokens=TokenStats.of(generated),
    )
