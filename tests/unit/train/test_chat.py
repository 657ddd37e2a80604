"""The chat data pipeline: assistant-only labels from the real chat templates, truncation that
is reported, and packing that changes nothing but the speed (same per-example loss, position
ids restarting, no attention across sequences).

The model is the tiny random Llama of the causal-LM tests (2 layers, hidden 32, a ChatML
template); SmolLM2's real template is checked with its bundled tokenizer only.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from adaptlab_tests_train_tiny_task import make_config
from tests.unit.models.test_causal_lm import build_tiny_llm

from adaptlab.train.chat import (
    IGNORE_INDEX,
    ChatCollator,
    ChatDataWarning,
    block_causal_mask,
    chat_loss,
    encode_chat,
    encode_chats,
    encode_prompt,
    example_length,
    pack_examples,
    pad_token_id,
    sequence_losses,
)
from adaptlab.train.loop import TrainTask, train

WORDS = ["card", "transfer", "refund", "top up", "exchange rate", "pin", "atm", "wire", "payee"]
ANSWERS = ["cards", "transfers", "refunds", "card arrival", "exchange rate", "top up"]
# ChatML that renders earlier assistant turns differently from the last one, as templates of
# reasoning models do when they strip the thinking of earlier turns.
CHATML_HIDING_EARLIER_ANSWERS = (
    "{% for message in messages %}{% if message['role'] == 'assistant' and not loop.last %}"
    "{{ '<|im_start|>assistant\n(earlier answer)<|im_end|>\n' }}{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llm(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def tokenizer(tiny_folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_folder)


def tiny_model(folder: Path, attention: str = "sdpa") -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(
        folder, attn_implementation=attention
    )
    return model.eval()


def user(content: str) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(content: str, weight: int | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if weight is not None:
        message["weight"] = weight
    return message


def trained_texts(tokenizer: Any, input_ids: Sequence[int], labels: Sequence[int]) -> list[str]:
    """The decoded runs of consecutive labelled tokens."""
    runs: list[list[int]] = []
    previous = IGNORE_INDEX
    for token, label in zip(input_ids, labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            if previous == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(token)
        previous = label
    return [tokenizer.decode(run) for run in runs]


def template_ids(tokenizer: Any, messages: Sequence[Mapping[str, Any]]) -> list[int]:
    rendered = tokenizer.apply_chat_template(list(messages), tokenize=True)
    ids = rendered["input_ids"] if isinstance(rendered, Mapping) else rendered
    return list(ids)


def random_records(count: int, *, seed: int = 0, max_words: int = 12) -> list[dict[str, Any]]:
    """Single- and two-turn conversations of varied length, some with a weight-0 answer."""
    rng = random.Random(seed)
    records = []
    for _ in range(count):
        messages = [{"role": "system", "content": "You are a text classifier."}]
        for _turn in range(rng.choice([1, 1, 2])):
            messages.append(user(" ".join(rng.choices(WORDS, k=rng.randint(1, max_words)))))
            messages.append(assistant(rng.choice(ANSWERS)))
        if len(messages) == 5 and rng.random() < 0.5:
            messages[2]["weight"] = 0
        records.append({"messages": messages})
    return records


# --------------------------------------------------------------------------- masking


def test_single_turn_trains_the_answer_and_its_end_token_only(tokenizer: Any) -> None:
    messages = [
        {"role": "system", "content": "Categories: cards"},
        user("my card"),
        assistant("cards"),
    ]
    input_ids, labels = encode_chat(tokenizer, messages)
    assert input_ids == template_ids(tokenizer, messages)
    assert trained_texts(tokenizer, input_ids, labels) == ["cards<|im_end|>"]


def test_every_assistant_turn_is_trained_and_nothing_else(tokenizer: Any) -> None:
    # The user quotes the role name and the turn marker's text: a string search would trip.
    messages = [
        user("the assistant said: refund"),
        assistant("refunds"),
        user("assistant\ncards please"),
        assistant("card arrival"),
    ]
    input_ids, labels = encode_chat(tokenizer, messages)
    assert input_ids == template_ids(tokenizer, messages)
    assert trained_texts(tokenizer, input_ids, labels) == [
        "refunds<|im_end|>",
        "card arrival<|im_end|>",
    ]


def test_weight_zero_answers_stay_in_the_context_without_loss(tokenizer: Any) -> None:
    messages = [user("pin"), assistant("cards", weight=0), user("wire"), assistant("transfers", 1)]
    input_ids, labels = encode_chat(tokenizer, messages)
    assert "cards<|im_end|>" in tokenizer.decode(input_ids)
    assert trained_texts(tokenizer, input_ids, labels) == ["transfers<|im_end|>"]


def test_the_generation_prompt_is_the_training_prefix(tokenizer: Any) -> None:
    messages = [user("exchange rate please"), assistant("exchange rate")]
    input_ids, labels = encode_chat(tokenizer, messages)
    prompt = encode_prompt(tokenizer, messages[:1])
    first_trained = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    assert input_ids[:first_trained] == prompt


@pytest.mark.integration
def test_smollm2_template_injects_a_default_system_prompt_that_is_never_trained() -> None:
    from transformers import AutoTokenizer

    from adaptlab.models.bundled import ModelNotAvailable, smollm2_tokenizer_folder

    try:
        folder = smollm2_tokenizer_folder()
    except ModelNotAvailable as error:
        pytest.skip(str(error))
    smol = AutoTokenizer.from_pretrained(folder)
    answer = '{"people": "2", "time": "7pm"}'
    messages = [user("a table for 2 at 7pm"), assistant(answer)]
    input_ids, labels = encode_chat(smol, messages)
    assert input_ids == template_ids(smol, messages)
    assert "You are a helpful AI assistant named SmolLM" in smol.decode(input_ids)
    assert trained_texts(smol, input_ids, labels) == [answer + "<|im_end|>"]
    first_trained = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    assert input_ids[:first_trained] == encode_prompt(smol, messages[:1])

    own_system = [{"role": "system", "content": "Extract slots as JSON."}, *messages]
    input_ids, labels = encode_chat(smol, own_system)
    assert "SmolLM" not in smol.decode(input_ids)
    two_turns = [user("hi"), assistant("{}", weight=0), *messages]
    input_ids, labels = encode_chat(smol, two_turns)
    assert trained_texts(smol, input_ids, labels) == [answer + "<|im_end|>"]


def test_a_template_that_rewrites_earlier_turns_drops_only_those_records(
    tiny_folder: Path,
) -> None:
    from transformers import AutoTokenizer

    hiding = AutoTokenizer.from_pretrained(tiny_folder)
    hiding.chat_template = CHATML_HIDING_EARLIER_ANSWERS
    records = [
        {"messages": [user("pin"), assistant("cards")]},
        {"messages": [user("pin"), assistant("cards"), user("wire"), assistant("transfers")]},
    ]
    with pytest.warns(ChatDataWarning, match="record 1: chat template"):
        data = encode_chats(hiding, records, sequence_len=64)
    assert [example["index"] for example in data.examples] == [0]
    assert [dropped.index for dropped in data.report.dropped] == [1]


def test_a_tokenizer_without_a_chat_template_is_refused(tiny_folder: Path) -> None:
    from transformers import AutoTokenizer

    bare = AutoTokenizer.from_pretrained(tiny_folder)
    bare.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        encode_chats(bare, [{"messages": [user("pin"), assistant("cards")]}], sequence_len=64)


# --------------------------------------------------------------------------- truncation


def test_truncation_is_reported_and_records_left_without_targets_are_dropped(
    tokenizer: Any,
) -> None:
    records = [
        {"messages": [user("pin"), assistant("cards")]},
        {"messages": [user("pin"), assistant("exchange rate " * 20)]},  # cut inside the answer
        {"messages": [user("refund merchant receipt " * 20), assistant("refunds")]},  # answer cut
        {"messages": [user("pin"), assistant("cards", weight=0)]},  # nothing to train on
    ]
    full = [encode_chat(tokenizer, record["messages"]) for record in records]
    sequence_len = 32
    assert len(full[0][0]) <= sequence_len < min(len(full[1][0]), len(full[2][0]))
    with pytest.warns(ChatDataWarning, match=r"2 truncated to sequence_len \(records 1, 2;"):
        data = encode_chats(tokenizer, records, sequence_len)
    report = data.report
    assert [example["index"] for example in data.examples] == [0, 1]
    assert [(r.index, r.tokens) for r in report.truncated] == [
        (1, len(full[1][0])),
        (2, len(full[2][0])),
    ]
    kept_targets = sum(label != IGNORE_INDEX for label in full[1][1][:sequence_len])
    assert report.truncated[0].trained_tokens_cut == (
        sum(label != IGNORE_INDEX for label in full[1][1]) - kept_targets
    )
    assert [(r.index, r.reason) for r in report.dropped] == [
        (2, "every assistant token lies past sequence_len 32"),
        (3, "no assistant message with weight 1"),
    ]
    assert report.records == 4 and report.examples == 2
    assert data.examples[1]["input_ids"] == full[1][0][:sequence_len]
    assert report.tokens == sum(example_length(example) for example in data.examples)
    first_targets = sum(label != IGNORE_INDEX for label in full[0][1])
    assert report.trained_tokens == first_targets + kept_targets


def test_nothing_to_report_means_no_warning(tokenizer: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = encode_chats(tokenizer, random_records(5), sequence_len=128)
    assert not data.report.truncated and not data.report.dropped
    assert data.report.examples == 5


# --------------------------------------------------------------------------- packing


@pytest.fixture(scope="module")
def examples(tokenizer: Any) -> list[dict[str, Any]]:
    return encode_chats(tokenizer, random_records(14), sequence_len=96).examples


def test_packing_keeps_every_example_whole_once_with_positions_restarting(
    examples: list[dict[str, Any]],
) -> None:
    rows = pack_examples(examples, sequence_len=96)
    assert len(rows) < len(examples)
    seen: dict[int, dict[str, list[int]]] = {}
    for row in rows:
        assert len(row["input_ids"]) <= 96
        for position, (token, label, pos, owner) in enumerate(
            zip(
                row["input_ids"],
                row["labels"],
                row["position_ids"],
                row["sequence_index"],
                strict=True,
            )
        ):
            starts = position == 0 or owner != row["sequence_index"][position - 1]
            assert (pos == 0) == starts
            if starts:
                assert owner not in seen
                seen[owner] = {"input_ids": [], "labels": []}
            seen[owner]["input_ids"].append(token)
            seen[owner]["labels"].append(label)
    assert seen == {
        e["index"]: {"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples
    }


def test_packing_refuses_examples_it_cannot_pack_safely(examples: list[dict[str, Any]]) -> None:
    with pytest.raises(ValueError, match="more than sequence_len"):
        pack_examples(examples, sequence_len=8)
    first_labelled = dict(examples[0], labels=[7, *examples[0]["labels"][1:]])
    with pytest.raises(ValueError, match=r"labels\[0\]"):
        pack_examples([first_labelled], sequence_len=96)


def test_collate_pads_on_the_right_and_isolates_packed_padding(tokenizer: Any) -> None:
    pad = pad_token_id(tokenizer)
    short = {"input_ids": [5, 6], "labels": [IGNORE_INDEX, 6], "index": 3}
    long = {"input_ids": [7, 8, 9], "labels": [IGNORE_INDEX, IGNORE_INDEX, 9], "index": 4}
    batch = ChatCollator(pad, pad_to_multiple_of=4)([short, long])
    assert batch["input_ids"].tolist() == [[5, 6, pad, pad], [7, 8, 9, pad]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 0]]
    assert batch["labels"].tolist() == [[-100, 6, -100, -100], [-100, -100, 9, -100]]
    assert batch["sequence_index"].tolist() == [[3, 3, -1, -1], [4, 4, 4, -1]]

    row = pack_examples([short, long], sequence_len=8)[0]
    packed = ChatCollator(pad)([row, pack_examples([short], sequence_len=8)[0]])
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]
    allowed = packed["attention_mask"][1, 0] == 0
    assert allowed.tolist() == [
        [True, False, False, False, False],
        [True, True, False, False, False],
        [False, False, True, False, False],  # padding: a sequence of its own
        [False, False, True, True, False],
        [False, False, True, True, True],
    ]
    assert "attention_mask" not in ChatCollator(pad, isolation="position_ids")([row])
    with pytest.raises(ValueError, match="mixes packed rows"):
        ChatCollator(pad)([row, short])


def test_block_causal_mask_never_closes_a_whole_row() -> None:
    mask = block_causal_mask(torch.tensor([[0, 1, 0, 0, 1, 2]]))
    assert mask.shape == (1, 1, 6, 6)
    assert (mask[0, 0].diagonal() == 0).all()


def batches(items: Sequence[Mapping[str, Any]], collate: ChatCollator, size: int) -> list[Any]:
    return [collate(items[start : start + size]) for start in range(0, len(items), size)]


def losses_by_example(model: torch.nn.Module, batch_list: Sequence[Any]) -> dict[int, float]:
    found: dict[int, float] = {}
    with torch.no_grad():
        for batch in batch_list:
            indices, sums, counts = sequence_losses(model, batch)
            for index, total, count in zip(indices, sums, counts, strict=True):
                found[int(index)] = float(total / count)
    return found


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("isolation", ["mask", "position_ids"])
def test_packed_batches_give_each_example_its_unpacked_loss(
    tiny_folder: Path,
    tokenizer: Any,
    examples: list[dict[str, Any]],
    attention: str,
    isolation: str,
) -> None:
    model = tiny_model(tiny_folder, attention)
    pad = pad_token_id(tokenizer)
    padded = batches(examples, ChatCollator(pad), size=4)
    packed_collate = ChatCollator(pad, isolation=isolation)  # type: ignore[arg-type]
    packed = batches(pack_examples(examples, sequence_len=96), packed_collate, size=2)
    # Both sides pad, so padding is part of what must not matter.
    assert all(any((b["sequence_index"] == -1).any() for b in side) for side in (padded, packed))
    unpacked_losses = losses_by_example(model, padded)
    packed_losses = losses_by_example(model, packed)
    assert sorted(packed_losses) == sorted(unpacked_losses) == [e["index"] for e in examples]
    for index, loss in unpacked_losses.items():
        assert packed_losses[index] == pytest.approx(loss, abs=1e-5)
    with torch.no_grad():
        totals = [chat_loss(model, batch) for batch in padded]
        packed_totals = [chat_loss(model, batch) for batch in packed]
    assert sum(float(total) for total, _ in packed_totals) == pytest.approx(
        sum(float(total) for total, _ in totals), abs=1e-4
    )
    assert sum(int(count) for _, count in packed_totals) == sum(int(count) for _, count in totals)


def test_the_loss_is_the_answer_log_likelihood_and_nothing_else(
    tiny_folder: Path, tokenizer: Any
) -> None:
    """Against a naive computation that knows nothing of labels: one forward pass per
    conversation, summing -log p over the answer's tokens found from the generation prompt."""
    model = tiny_model(tiny_folder)
    records = [r for r in random_records(6, seed=1) if len(r["messages"]) == 3]
    data = encode_chats(tokenizer, records, sequence_len=96)
    expected_sum, expected_count = 0.0, 0
    with torch.no_grad():
        for record in records:
            messages = record["messages"]
            ids, _labels = encode_chat(tokenizer, messages)
            start = len(encode_prompt(tokenizer, messages[:-1]))
            answer = tokenizer(messages[-1]["content"] + "<|im_end|>", add_special_tokens=False)
            count = len(answer["input_ids"])
            assert ids[start : start + count] == answer["input_ids"]
            log_probs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
            for position in range(start, start + count):
                expected_sum -= float(log_probs[position - 1, ids[position]])
            expected_count += count
        total, count = chat_loss(model, ChatCollator(pad_token_id(tokenizer))(data.examples))
    assert int(count) == expected_count
    assert float(total) == pytest.approx(expected_sum, abs=1e-4)


class EveryPositionModel(torch.nn.Module):
    """A causal LM that ignores ``logits_to_keep`` (as models before transformers 5 do)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, logits_to_keep: Any = None, **inputs: Any) -> Any:
        return self.model(**inputs)


def test_a_model_computing_every_position_gives_the_same_loss(
    tiny_folder: Path, tokenizer: Any, examples: list[dict[str, Any]]
) -> None:
    model = tiny_model(tiny_folder)
    batch = ChatCollator(pad_token_id(tokenizer))(pack_examples(examples, 96)[:3])
    with torch.no_grad():
        kept, kept_count = chat_loss(model, batch)
        every, every_count = chat_loss(EveryPositionModel(model), batch)
        kept_rows = sequence_losses(model, batch)
        every_rows = sequence_losses(EveryPositionModel(model), batch)
    assert int(kept_count) == int(every_count) > 0
    torch.testing.assert_close(kept, every)
    for kept_part, every_part in zip(kept_rows, every_rows, strict=True):
        torch.testing.assert_close(kept_part, every_part)


def replace_tokens(row: dict[str, Any], owner: int, vocabulary: int) -> dict[str, Any]:
    """The row with every token of sequence ``owner`` replaced by another."""
    changed = dict(row, input_ids=list(row["input_ids"]))
    for position, index in enumerate(row["sequence_index"]):
        if index == owner:
            changed["input_ids"][position] = (changed["input_ids"][position] + 17) % vocabulary
    return changed


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("isolation", ["mask", "position_ids", None])
def test_no_token_attends_to_another_packed_sequence(
    tiny_folder: Path,
    tokenizer: Any,
    examples: list[dict[str, Any]],
    attention: str,
    isolation: str | None,
) -> None:
    """Changing the middle sequence of a row leaves the others' logits exactly as they were;
    without isolation (``None``: the row as one plain sequence) the sequence after it changes,
    which shows the check can fail."""
    model = tiny_model(tiny_folder, attention)
    row = pack_examples(examples[:3], sequence_len=3 * 96)[0]
    owners = list(dict.fromkeys(row["sequence_index"]))
    assert len(owners) == 3
    changed = replace_tokens(row, owners[1], len(tokenizer))
    collate = ChatCollator(pad_token_id(tokenizer), isolation=isolation or "position_ids")
    with torch.no_grad():
        logits = []
        for version in (row, changed):
            batch = collate([version])
            if isolation is None:
                batch = {"input_ids": batch["input_ids"]}
            logits.append(model(**batch, use_cache=False).logits[0])
    owner_of = torch.tensor(row["sequence_index"])
    middle = owner_of == owners[1]
    assert not torch.allclose(logits[0][middle], logits[1][middle])
    last = owner_of == owners[2]
    if isolation is None:
        assert not torch.allclose(logits[0][last], logits[1][last])
    else:
        torch.testing.assert_close(logits[1][~middle], logits[0][~middle], atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- the loop


def test_the_shared_loop_trains_on_packed_chat_data(
    tiny_folder: Path, tokenizer: Any, examples: list[dict[str, Any]], tmp_path: Path
) -> None:
    model = tiny_model(tiny_folder)
    rows = pack_examples(examples, sequence_len=96)
    collate = ChatCollator(pad_token_id(tokenizer))
    with torch.no_grad():
        before = chat_loss(model, collate(rows))
    task = TrainTask(
        model=model, train_data=rows, collate=collate, loss=chat_loss, length=example_length
    )
    config = make_config(learning_rate=1e-2, micro_batch_size=2, max_steps=4, warmup_ratio=0.0)
    result = train(task, config, tmp_path, show_progress=False)
    assert result.steps == 4 and result.skipped_steps == 0
    model.eval()
    with torch.no_grad():
        after = chat_loss(model, collate(rows))
    assert int(after[1]) == int(before[1])
    assert float(after[0]) < float(before[0])
