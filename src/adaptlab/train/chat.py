"""Chat records to causal-LM training batches: the model's own chat template, loss on the
assistant's tokens only, truncation that is always reported, and sequence packing.

A conversation is rendered by the tokenizer's chat template exactly as the model will see it
when it is asked to answer. The assistant spans are found by rendering incrementally: the text
of messages ``[:i]`` with the generation prompt ends where assistant message ``i`` starts, and
the text of messages ``[:i + 1]`` ends where it stops; both must be prefixes of the whole
conversation's text. No role name is searched for, so a template's default system prompt, or
the word "assistant" in a user's message, cannot shift a span. The text is tokenised once and
character spans map to tokens through the tokenizer's offsets. Each assistant span is trained
up to and including the end-of-sequence token it contains (``<|im_end|>`` in ChatML): the model
must learn to stop, but what a template writes after that token (a newline) is never generated.
Assistant messages with ``"weight": 0`` (OpenAI fine-tuning format) stay in the context
without loss.

Packing concatenates several examples into one row of at most ``sequence_len`` tokens (best-fit
decreasing). Each example's position ids restart at 0 and its tokens attend only to earlier
tokens of the same example, through an explicit block-diagonal causal mask: a float additive
4-D mask, the form that both the ``sdpa`` and the ``eager`` attention of transformers apply
as given. Checked on transformers 5.23 with a Llama: a *boolean* 4-D mask is right under sdpa
but silently wrong under eager (it is added to the scores as 0/1); position ids alone isolate
sequences only when no attention mask is passed *and* ``use_cache=False`` — Llama builds a
KV cache by default even in training, and a cache turns transformers' packed-sequence detection
off, so the sequences silently attend to each other. ``isolation="position_ids"`` (no mask;
what flash-attention kernels need) is offered for GPUs, and the loss here passes
``use_cache=False`` so that it is isolated on CPU as well.
"""

from __future__ import annotations

import bisect
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
"""The label of a token that gets no loss (cross-entropy's ``ignore_index``)."""

Batch = dict[str, torch.Tensor]
Example = dict[str, Any]


class ChatDataWarning(UserWarning):
    """Records were truncated or dropped while encoding chat data."""


@dataclass(frozen=True)
class AssistantSpan:
    """Where one assistant message lies in the rendered conversation, in characters."""

    start: int
    end: int
    trained: bool
    """False for messages with weight 0: they stay in the context without loss."""


@dataclass(frozen=True)
class TruncatedRecord:
    index: int
    tokens: int
    """Tokens before truncation."""
    trained_tokens_cut: int
    """Assistant tokens with loss that truncation removed."""


@dataclass(frozen=True)
class DroppedRecord:
    index: int
    reason: str


@dataclass
class ChatReport:
    """What encoding did to the records: counts, and which records were cut or left out."""

    sequence_len: int
    records: int = 0
    tokens: int = 0
    """Tokens of the kept examples, after truncation."""
    trained_tokens: int = 0
    truncated: list[TruncatedRecord] = field(default_factory=list)
    dropped: list[DroppedRecord] = field(default_factory=list)

    @property
    def examples(self) -> int:
        return self.records - len(self.dropped)

    def summary(self) -> str:
        text = (
            f"{self.records} chat records -> {self.examples} examples "
            f"({self.tokens} tokens, {self.trained_tokens} with loss; "
            f"sequence_len {self.sequence_len})"
        )
        if self.truncated:
            cut = sum(record.trained_tokens_cut for record in self.truncated)
            text += (
                f"; {len(self.truncated)} truncated to sequence_len "
                f"(records {_index_list(r.index for r in self.truncated)}; "
                f"{cut} assistant tokens cut)"
            )
        if self.dropped:
            reasons = "; ".join(f"record {r.index}: {r.reason}" for r in self.dropped[:10])
            more = f"; and {len(self.dropped) - 10} more" if len(self.dropped) > 10 else ""
            text += f"; {len(self.dropped)} dropped ({reasons}{more})"
        return text


@dataclass
class ChatData:
    """Encoded examples, ready for :func:`pack_examples` or :class:`ChatCollator`, and the
    report of what encoding cut or left out.

    An example is ``{"input_ids", "labels", "index"}``: token ids, the same ids where the loss
    applies and ``IGNORE_INDEX`` elsewhere (unshifted, as in transformers), and the position of
    its record in the input. ``labels[0]`` is always ``IGNORE_INDEX``, so that when examples are
    packed no token is trained to predict the first token of the next example.
    """

    examples: list[Example]
    report: ChatReport


class TemplateMismatchError(ValueError):
    """The chat template does not render a conversation as an extension of its prefixes."""


# --------------------------------------------------------------------------- encoding


def render_chat(
    tokenizer: Any, messages: Sequence[Mapping[str, Any]]
) -> tuple[str, list[AssistantSpan]]:
    """The conversation as the template renders it, and where each assistant message lies."""
    _require_template(tokenizer)
    clean = _template_messages(messages)
    text = _render(tokenizer, clean, generation_prompt=False)
    spans = []
    for position, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        before = _render(tokenizer, clean[:position], generation_prompt=True)
        through = _render(tokenizer, clean[: position + 1], generation_prompt=False)
        for prefix, what in ((before, "the prompt before"), (through, "the text through")):
            if not text.startswith(prefix):
                raise TemplateMismatchError(
                    f"{what} message {position} (assistant) is not a prefix of the whole "
                    "conversation as the chat template renders it (templates that render "
                    "earlier turns differently, or need a user turn first, are not supported)"
                )
        if len(through) <= len(before):
            raise TemplateMismatchError(f"message {position} (assistant) renders as nothing")
        spans.append(AssistantSpan(len(before), len(through), message.get("weight", 1) != 0))
    return text, spans


def encode_chat(
    tokenizer: Any, messages: Sequence[Mapping[str, Any]]
) -> tuple[list[int], list[int]]:
    """Token ids of a conversation and its labels (see :class:`ChatData`), not truncated."""
    text, spans = render_chat(tokenizer, messages)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids: list[int] = list(encoding["input_ids"])
    offsets = [(int(start), int(end)) for start, end in encoding["offset_mapping"]]
    labels = [IGNORE_INDEX] * len(input_ids)
    for span in spans:
        if not span.trained:
            continue
        for position in _span_tokens(input_ids, offsets, span, tokenizer.eos_token_id):
            labels[position] = input_ids[position]
    if labels:
        labels[0] = IGNORE_INDEX
    return input_ids, labels


def encode_prompt(tokenizer: Any, messages: Sequence[Mapping[str, Any]]) -> list[int]:
    """Token ids that ask the model for the next assistant message, tokenised as in training:
    the template's special tokens are in the text, so the tokenizer adds none."""
    _require_template(tokenizer)
    clean = _template_messages(messages)
    text = _render(tokenizer, clean, generation_prompt=True)
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


def encode_chats(
    tokenizer: Any, records: Sequence[Mapping[str, Any]], sequence_len: int
) -> ChatData:
    """Encode chat records (``{"messages": [...]}``) into examples of at most ``sequence_len``.

    Longer examples keep their first ``sequence_len`` tokens and are reported; a record left
    with no token to train on (all its assistant tokens cut, every assistant message with
    weight 0, or a conversation the template cannot render incrementally) is dropped and
    reported. A :class:`ChatDataWarning` repeats the report when anything was cut or dropped.
    """
    if sequence_len < 2:
        raise ValueError(f"sequence_len = {sequence_len}: must be >= 2")
    _require_template(tokenizer)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("a fast tokenizer is needed: assistant spans map to tokens by offsets")
    report = ChatReport(sequence_len=sequence_len, records=len(records))
    examples = []
    for index, record in enumerate(records):
        example = _encode_record(tokenizer, index, record, report)
        if example is not None:
            examples.append(example)
            report.tokens += len(example["input_ids"])
            report.trained_tokens += sum(label != IGNORE_INDEX for label in example["labels"])
    if report.truncated or report.dropped:
        warnings.warn(report.summary(), ChatDataWarning, stacklevel=2)
    return ChatData(examples, report)


def _encode_record(
    tokenizer: Any, index: int, record: Mapping[str, Any], report: ChatReport
) -> Example | None:
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"record {index}: a non-empty 'messages' list is expected")
    try:
        input_ids, labels = encode_chat(tokenizer, messages)
    except TemplateMismatchError as error:
        report.dropped.append(DroppedRecord(index, f"chat template: {error}"))
        return None
    if all(label == IGNORE_INDEX for label in labels):
        report.dropped.append(DroppedRecord(index, "no assistant message with weight 1"))
        return None
    limit = report.sequence_len
    if len(input_ids) > limit:
        cut = sum(label != IGNORE_INDEX for label in labels[limit:])
        report.truncated.append(TruncatedRecord(index, len(input_ids), cut))
        input_ids, labels = input_ids[:limit], labels[:limit]
        if all(label == IGNORE_INDEX for label in labels):
            report.dropped.append(
                DroppedRecord(index, f"every assistant token lies past sequence_len {limit}")
            )
            return None
    return {"input_ids": input_ids, "labels": labels, "index": index}


def _template_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The messages as the template gets them: ``weight`` is ours, not the template's."""
    return [{key: value for key, value in m.items() if key != "weight"} for m in messages]


def _require_template(tokenizer: Any) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "the tokenizer has no chat template; use an instruction-tuned model or set "
            "tokenizer.chat_template"
        )


def _render(tokenizer: Any, messages: list[dict[str, Any]], *, generation_prompt: bool) -> str:
    from jinja2 import TemplateError

    try:
        text: str = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )
    except TemplateError as error:
        raise TemplateMismatchError(f"the chat template refused the messages: {error}") from error
    return text


def _span_tokens(
    input_ids: Sequence[int],
    offsets: Sequence[tuple[int, int]],
    span: AssistantSpan,
    eos_token_id: int | None,
) -> list[int]:
    """Positions of the tokens that carry any of the span's characters, up to its last EOS."""
    positions = [
        position
        for position, (start, end) in enumerate(offsets)
        if start < span.end and end > span.start
    ]
    ends = [p for p in positions if input_ids[p] == eos_token_id]
    return [p for p in positions if p <= ends[-1]] if ends else positions


def _index_list(indices: Iterable[int], limit: int = 10) -> str:
    values = list(indices)
    shown = ", ".join(str(value) for value in values[:limit])
    return shown + (f", ... ({len(values) - limit} more)" if len(values) > limit else "")


# --------------------------------------------------------------------------- packing


def pack_examples(examples: Sequence[Mapping[str, Any]], sequence_len: int) -> list[Example]:
    """Concatenate examples into rows of at most ``sequence_len`` tokens (best-fit decreasing).

    A row is ``{"input_ids", "labels", "position_ids", "sequence_index"}``: position ids restart
    at 0 with each example and ``sequence_index`` names each token's example (its ``index``).
    Every example lands in exactly one row, whole; the rows' order is by size, and the loop
    shuffles them.
    """
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (space left, bin), sorted: best fit is a bisection
    by_length = sorted(range(len(examples)), key=lambda i: -len(examples[i]["input_ids"]))
    for position in by_length:
        length = _checked_length(examples[position], sequence_len)
        slot = bisect.bisect_left(free, (length, -1))
        if slot == len(free):
            bins.append([position])
            bisect.insort(free, (sequence_len - length, len(bins) - 1))
        else:
            space, chosen = free.pop(slot)
            bins[chosen].append(position)
            bisect.insort(free, (space - length, chosen))
    return [_pack_row([examples[position] for position in row]) for row in bins]


def _checked_length(example: Mapping[str, Any], sequence_len: int) -> int:
    length = len(example["input_ids"])
    if length > sequence_len:
        raise ValueError(
            f"example {example.get('index')} has {length} tokens, more than sequence_len "
            f"{sequence_len}; encode with encode_chats(..., sequence_len) first"
        )
    if example["labels"][0] != IGNORE_INDEX:
        raise ValueError(
            f"example {example.get('index')}: labels[0] must be {IGNORE_INDEX}, or packing "
            "would train the previous example to predict this one's first token"
        )
    return length


def _pack_row(examples: Sequence[Mapping[str, Any]]) -> Example:
    row: Example = {"input_ids": [], "labels": [], "position_ids": [], "sequence_index": []}
    for example in examples:
        length = len(example["input_ids"])
        row["input_ids"].extend(example["input_ids"])
        row["labels"].extend(example["labels"])
        row["position_ids"].extend(range(length))
        row["sequence_index"].extend([example["index"]] * length)
    return row


def example_length(example: Mapping[str, Any]) -> int:
    """Tokens in an example or a packed row (``TrainTask.length``)."""
    return len(example["input_ids"])


# --------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class ChatCollator:
    """Examples or packed rows to a batch, padded on the right to the longest in the batch.

    Training pads on the right: with causal attention no real token sees a pad, and positions
    count from 0 without help (left padding is for batched generation). Examples give
    ``input_ids``, a 2-D ``attention_mask``, ``labels`` and ``sequence_index``. Packed rows give
    ``position_ids`` too and, with ``isolation="mask"``, a float ``(batch, 1, length, length)``
    block-diagonal causal mask (4 bytes per entry: 16 MB for 16 rows of 512); with
    ``"position_ids"`` no mask, for flash-attention kernels, which isolate by position ids.
    Padding in a packed row is a sequence of its own, so it is isolated the same way.
    """

    pad_token_id: int
    isolation: Literal["mask", "position_ids"] = "mask"
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> Batch:
        packed = {"position_ids" in example for example in examples}
        if len(packed) != 1:
            raise ValueError("a batch mixes packed rows and single examples")
        width = max(len(example["input_ids"]) for example in examples)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        if packed.pop():
            return self._packed(examples, width)
        return self._padded(examples, width)

    def _padded(self, examples: Sequence[Mapping[str, Any]], width: int) -> Batch:
        lengths = [len(example["input_ids"]) for example in examples]
        owners = [[example["index"]] * n for example, n in zip(examples, lengths, strict=True)]
        return {
            "input_ids": _pad([e["input_ids"] for e in examples], self.pad_token_id, width),
            "attention_mask": _pad([[1] * n for n in lengths], 0, width),
            "labels": _pad([e["labels"] for e in examples], IGNORE_INDEX, width),
            "sequence_index": _pad(owners, -1, width),
        }

    def _packed(self, examples: Sequence[Mapping[str, Any]], width: int) -> Batch:
        positions = [
            list(e["position_ids"]) + list(range(width - len(e["position_ids"]))) for e in examples
        ]
        batch = {
            "input_ids": _pad([e["input_ids"] for e in examples], self.pad_token_id, width),
            "labels": _pad([e["labels"] for e in examples], IGNORE_INDEX, width),
            "position_ids": torch.tensor(positions),
            "sequence_index": _pad([e["sequence_index"] for e in examples], -1, width),
        }
        if self.isolation == "mask":
            batch["attention_mask"] = block_causal_mask(batch["position_ids"])
        return batch


def _pad(rows: Sequence[Sequence[int]], value: int, width: int) -> torch.Tensor:
    return torch.tensor([list(row) + [value] * (width - len(row)) for row in rows])


def block_causal_mask(position_ids: torch.Tensor) -> torch.Tensor:
    """The additive ``(batch, 1, length, length)`` mask of packed rows: 0 where a token may
    attend (an earlier or the same token of its own sequence), the float32 minimum elsewhere.

    A sequence starts wherever the position id is 0. The diagonal is always open, so no row is
    fully masked (a fully masked softmax row is NaN).
    """
    segments = (position_ids == 0).cumsum(dim=-1)
    length = position_ids.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    allowed = (segments[:, :, None] == segments[:, None, :]) & causal
    mask = torch.zeros(allowed.shape, dtype=torch.float32)
    return mask.masked_fill(~allowed, torch.finfo(torch.float32).min)[:, None]


def pad_token_id(tokenizer: Any) -> int:
    """The id to pad with: the tokenizer's pad token, else its end-of-sequence token (the
    labels, not the pad id, decide what is trained)."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    raise ValueError("the tokenizer has neither a pad nor an end-of-sequence token")


# --------------------------------------------------------------------------- loss


def chat_loss(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy summed over the labelled tokens, and their count
    (``TrainTask.loss``: the loop divides by the count of the whole optimizer step)."""
    logits, targets, _ = trained_logits(model, batch)
    loss = F.cross_entropy(logits.float(), targets, reduction="sum")
    return loss, torch.tensor(targets.numel())


def sequence_losses(
    model: torch.nn.Module, batch: Batch
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per example of the batch (packed or not): its ``index``, summed loss and token count."""
    logits, targets, trained = trained_logits(model, batch)
    token_losses = F.cross_entropy(logits.float(), targets, reduction="none")
    owners = trained_owners(batch, trained)
    indices, slots = torch.unique(owners, return_inverse=True)
    sums = torch.zeros(len(indices), device=token_losses.device)
    sums = sums.index_add(0, slots, token_losses)
    return indices, sums, torch.bincount(slots, minlength=len(indices))


FORWARD_KEYS = ("input_ids", "attention_mask", "position_ids")


def trained_logits(
    model: torch.nn.Module, batch: Batch
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The logits of the positions whose next token is trained, ``(n, vocab)``, their target
    ids ``(n,)`` and the ``(batch, length)`` mask of those positions.

    Only those positions go through the output layer (``logits_to_keep`` with a boolean mask,
    transformers >= 5): in a chat example most tokens are prompt, and a 49k-word vocabulary
    makes the output layer and the softmax over every position a large share of a small
    model's step. A model that ignores the argument returns every position's logits, which
    are then selected here.
    """
    labels = batch["labels"]
    trained = torch.zeros_like(labels, dtype=torch.bool)
    trained[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    inputs = {key: batch[key] for key in FORWARD_KEYS if key in batch}
    # use_cache=False: a KV cache is useless in training, and its presence turns off the
    # packed-sequence detection that isolation="position_ids" relies on (module docstring).
    logits: torch.Tensor = model(**inputs, use_cache=False, logits_to_keep=trained).logits
    if logits.dim() == 3:  # the model computed every position
        logits = logits[trained]
    return logits, labels[:, 1:][trained[:, :-1]], trained


def trained_owners(batch: Batch, trained: torch.Tensor) -> torch.Tensor:
    """The example ``index`` of each trained position (in :func:`trained_logits`' order)."""
    return batch["sequence_index"][:, 1:][trained[:, :-1]]
