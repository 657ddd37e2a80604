"""Generation evaluation: batched greedy decoding, slot metrics, cost per request.

Decoding runs on the tiny random 2-layer Llama of ``test_causal_lm`` (well under a second to
build); its answers are gibberish, which is all the mechanics need. Slot metrics are checked on
hand-written answers with every number worked out below.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.unit.models.test_causal_lm import build_tiny_llm

from adaptlab.evaluate.bootstrap import paired_bootstrap_micro_f1, resampled_indices
from adaptlab.evaluate.generation import (
    DecodingConfig,
    Generation,
    generate,
    generate_chat,
    length_sorted_batches,
    measure_generation_cost,
    request_messages,
    stop_token_ids,
)
from adaptlab.evaluate.slots import (
    SlotCounts,
    normalise_value,
    paired_slot_differences,
    parse_answer,
    score_answer,
    slot_metrics,
)
from adaptlab.models.causal_lm import CausalLM
from adaptlab.train.chat import encode_prompt

TEXTS = [
    "a table for 2 at 7pm",
    "book for four people tomorrow night please, the name is Ann Lee",
    "hi",
    "refund",
    "can I get a table on friday at 8 for six",
]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on two contended cores run faster single-threaded
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llm(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def tiny_lm(tiny_folder: Path) -> CausalLM:
    return CausalLM.load(str(tiny_folder))


@pytest.fixture(scope="module")
def prompts(tiny_lm: CausalLM) -> list[list[int]]:
    """Prompts of 2 to 49 tokens: a batch of all five pads "hi" with 47 tokens."""
    encoded = [tiny_lm.encode(text) for text in TEXTS]
    assert len({len(p) for p in encoded}) == len(encoded)
    return encoded


def naive_greedy(
    lm: CausalLM, prompt: Sequence[int], max_new_tokens: int, stops: Sequence[int]
) -> list[int]:
    """One row, no padding, no cache: the full sequence through the model at every step."""
    sequence = list(prompt)
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            token = int(lm.model(input_ids=torch.tensor([sequence])).logits[0, -1].argmax())
            sequence.append(token)
            if token in stops:
                break
    return sequence[len(prompt) :]


def token_ids(generations: Sequence[Generation]) -> list[list[int]]:
    return [generation.token_ids for generation in generations]


# --------------------------------------------------------------------------- decoding


def test_batches_group_prompts_by_length_longest_first() -> None:
    assert length_sorted_batches([3, 9, 1, 9, 5], batch_size=2) == [[1, 3], [4, 0], [2]]
    assert length_sorted_batches([], batch_size=4) == []
    with pytest.raises(ValueError, match="batch_size"):
        length_sorted_batches([1], batch_size=0)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("batch_size", [2, 5])
def test_batched_left_padded_decoding_equals_one_at_a_time(
    tiny_lm: CausalLM, prompts: list[list[int]], attention: str, batch_size: int
) -> None:
    tiny_lm.model.set_attn_implementation(attention)
    try:
        one = generate(tiny_lm, prompts, DecodingConfig(max_new_tokens=10, batch_size=1))
        batched = generate(
            tiny_lm, prompts, DecodingConfig(max_new_tokens=10, batch_size=batch_size)
        )
    finally:
        tiny_lm.model.set_attn_implementation("sdpa")
    stops = stop_token_ids(tiny_lm)
    assert token_ids(batched) == token_ids(one)
    assert token_ids(one) == [naive_greedy(tiny_lm, p, 10, stops) for p in prompts]
    assert [g.text for g in batched] == [g.text for g in one]


def test_left_padded_rows_count_positions_from_their_first_token(tiny_lm: CausalLM) -> None:
    """Checked on the ids the model receives: with rotary embeddings (Llama) a row whose
    positions were all shifted by its padding would decode the same, so equal outputs alone
    cannot show the positions are right for models with absolute position embeddings."""
    short, long = tiny_lm.encode("hi"), tiny_lm.encode("a table for 2 at 7pm")
    calls: list[dict[str, torch.Tensor]] = []

    def spy(module: torch.nn.Module, args: object, kwargs: dict[str, object]) -> None:
        keys = ("input_ids", "position_ids", "attention_mask")
        calls.append(
            {key: kwargs[key].clone() for key in keys if isinstance(kwargs.get(key), torch.Tensor)}
        )

    hook = tiny_lm.model.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        generate(tiny_lm, [short, long], DecodingConfig(max_new_tokens=3), stop_ids=[])
    finally:
        hook.remove()
    pads = len(long) - len(short)
    prefill, *steps = calls
    assert prefill["input_ids"][1, pads:].tolist() == short  # the short row, padded on the left
    assert prefill["attention_mask"].tolist() == [[1] * len(long), [0] * pads + [1] * len(short)]
    assert prefill["position_ids"][0].tolist() == list(range(len(long)))
    assert prefill["position_ids"][1, pads:].tolist() == list(range(len(short)))
    assert len(steps) == 2  # the third token comes from the second step's logits
    for step, call in enumerate(steps):
        assert call["input_ids"].shape == (2, 1)  # one new token per row: the KV cache is used
        assert call["position_ids"].tolist() == [[len(long) + step], [len(short) + step]]
        assert call["attention_mask"][1].tolist() == [0] * pads + [1] * (len(short) + step + 1)


def test_generation_with_and_without_kv_cache_agree(
    tiny_lm: CausalLM, prompts: list[list[int]]
) -> None:
    cached = generate(tiny_lm, prompts, DecodingConfig(max_new_tokens=12, batch_size=5))
    uncached = generate(
        tiny_lm, prompts, DecodingConfig(max_new_tokens=12, batch_size=5, use_cache=False)
    )
    assert token_ids(cached) == token_ids(uncached)
    assert all(g.generated_tokens > 0 for g in cached)


def test_decoding_stops_at_the_stop_token_per_row(
    tiny_lm: CausalLM, prompts: list[list[int]]
) -> None:
    config = DecodingConfig(max_new_tokens=12, batch_size=5)
    free = token_ids(generate(tiny_lm, prompts, config, stop_ids=[]))
    assert all(len(row) == 12 for row in free)

    def stops_after(token: int) -> list[int]:
        """Tokens each row generates when ``token`` stops it (greedy: a prefix of its free run)."""
        return [row.index(token) + 1 if token in row else 12 for row in free]

    # The token that ends the rows at the most different steps, some rows never.
    stop = max(
        {token for row in free for token in row[1:]},
        key=lambda token: (12 in stops_after(token), len(set(stops_after(token)))),
    )
    lengths = stops_after(stop)
    assert 12 in lengths and len(set(lengths)) >= 3, "the random model gives no usable stop token"

    stopped = generate(tiny_lm, prompts, config, stop_ids=[stop])
    assert [g.generated_tokens for g in stopped] == lengths
    assert token_ids(stopped) == [row[:n] for row, n in zip(free, lengths, strict=True)]
    assert [g.finished for g in stopped] == [stop in row for row in free]
    for generation in stopped:
        answer = generation.token_ids[:-1] if generation.finished else generation.token_ids
        assert generation.text == tiny_lm.tokenizer.decode(answer)


def test_outputs_return_in_input_order(tiny_lm: CausalLM, prompts: list[list[int]]) -> None:
    shuffled = [prompts[i] for i in (3, 0, 4, 2, 1)]
    config = DecodingConfig(max_new_tokens=6, batch_size=2)
    results = generate(tiny_lm, shuffled, config)
    assert [g.prompt_tokens for g in results] == [len(p) for p in shuffled]
    singly = [generate(tiny_lm, [prompt], config)[0] for prompt in shuffled]
    assert token_ids(results) == token_ids(singly)
    assert generate(tiny_lm, [], config) == []


def test_checkpoint_generation_settings_cannot_change_greedy(
    tiny_folder: Path, tiny_lm: CausalLM, prompts: list[list[int]]
) -> None:
    config = DecodingConfig(max_new_tokens=8, batch_size=5)
    plain = generate(tiny_lm, prompts, config)
    sampling = CausalLM.load(str(tiny_folder))
    checkpoint = sampling.model.generation_config
    checkpoint.do_sample, checkpoint.temperature, checkpoint.top_k = True, 0.3, 3
    checkpoint.repetition_penalty, checkpoint.no_repeat_ngram_size = 1.5, 1
    checkpoint.min_new_tokens = 8
    assert token_ids(generate(sampling, prompts, config)) == token_ids(plain)

    checkpoint.suppress_tokens = [5]
    with pytest.raises(ValueError, match="suppress_tokens"):
        generate(sampling, prompts, config)


def test_bad_requests_are_refused(tiny_lm: CausalLM) -> None:
    with pytest.raises(ValueError, match=r"prompts\[1\] is empty"):
        generate(tiny_lm, [[5], []])
    with pytest.raises(ValueError, match="max_new_tokens"):
        DecodingConfig(max_new_tokens=0)
    tiny_lm.model.train()
    try:
        with pytest.raises(ValueError, match="training mode"):
            generate(tiny_lm, [[5]])
    finally:
        tiny_lm.model.eval()
    with pytest.raises(ValueError, match="no assistant message"):
        request_messages({"messages": [{"role": "user", "content": "hi"}]})


def test_chat_requests_are_encoded_as_in_training(tiny_lm: CausalLM) -> None:
    record = {
        "messages": [
            {"role": "system", "content": "Extract the slots as JSON."},
            {"role": "user", "content": "a table for 2 at 7pm"},
            {"role": "assistant", "content": '{"people": "2", "time": "7pm"}'},
        ]
    }
    asked = request_messages(record)
    assert asked == record["messages"][:2]
    config = DecodingConfig(max_new_tokens=5)
    (generation,) = generate_chat(tiny_lm, [asked], config)
    prompt = encode_prompt(tiny_lm.tokenizer, asked)
    assert generation.prompt_tokens == len(prompt)
    assert generation.token_ids == generate(tiny_lm, [prompt], config)[0].token_ids


def test_generation_cost_is_measured_one_request_at_a_time(
    tiny_lm: CausalLM, prompts: list[list[int]]
) -> None:
    config = DecodingConfig(max_new_tokens=4, batch_size=8)
    cost = measure_generation_cost(tiny_lm, prompts, config, max_requests=5, warmup=1)
    assert cost.latency.batch_size == 1 and cost.latency.samples == 5
    assert 0 < cost.latency.p50_ms <= cost.latency.p95_ms
    # One warm-up request (prompt 0), then prompts 1, 2, 3, 4 and 0 again.
    measured = [prompts[i] for i in (1, 2, 3, 4, 0)]
    assert cost.prompt_tokens.total == sum(len(p) for p in measured)
    assert cost.prompt_tokens.max == max(len(p) for p in measured)
    expected = [g.generated_tokens for g in generate(tiny_lm, measured, config)]
    assert cost.generated_tokens.total == sum(expected)
    assert cost.generated_tokens.mean == pytest.approx(np.mean(expected))
    assert cost.output_tokens_per_s > 0
    assert cost.to_dict()["latency"]["samples"] == 5


# --------------------------------------------------------------------------- slot metrics

# Ten answers, each with the counts it scores (true positives, false positives, negatives).
GOLD = [
    {"people": "2", "time": "7pm"},  # A: both right, case and spaces forgiven: 2, 0, 0
    {"people": "4", "date": "next friday", "first_name": "Ann"},  # B: first_name missed: 2, 0, 1
    {"time": "8pm"},  # C: wrong time (fp + fn), extra last_name (fp): 0, 2, 1
    {},  # D: {} == {}: exact
    {"people": "3"},  # E: invalid JSON: 0, 0, 1
    {},  # F: invalid JSON for an empty frame: 0, 0, 0 but not exact
    {"people": "5"},  # G: a number (fp + fn) and an unknown slot (fp): 0, 2, 1
    {},  # H: an invented date: 0, 1, 0
    {},  # I: JSON but not an object: 0, 0, 0, not exact
    {"people": "2"},  # J: right, then repeated with another value (fp): 1, 1, 0
]
ANSWERS = [
    '{"people": "2", "time": " 7PM "}',
    '{"people": "4", "date": "Next  Friday"}',
    '{"time": "9pm", "last_name": "Lee"}',
    " {} ",
    '{"people": "3"',
    "none",
    '{"people": 5, "table": "window"}',
    '{"date": "today"}',
    "[]",
    '{"people": "2", "people": "3"}',
]
COUNTS = [(2, 0, 0), (2, 0, 1), (0, 2, 1), (0, 0, 0), (0, 0, 1)]
COUNTS += [(0, 0, 0), (0, 2, 1), (0, 1, 0), (0, 0, 0), (1, 1, 0)]


def test_values_are_compared_without_case_and_extra_whitespace() -> None:
    assert normalise_value("  Next \t Friday\n") == "next friday"
    assert normalise_value("7 PM") != normalise_value("7pm")


def test_answers_are_parsed_as_strict_json() -> None:
    assert parse_answer(' {"a": "1"} ').members == (("a", "1"),)
    assert parse_answer('{"a": "1", "a": 2}').members == (("a", "1"), ("a", 2))
    for text in ['```json\n{"a": "1"}\n```', '{"a": "1"} ok', '{"a": NaN}', "{'a': '1'}", ""]:
        assert not parse_answer(text).json_valid, text
    assert not parse_answer('"text"').is_object and parse_answer('"text"').json_valid


def test_each_answer_scores_its_pairs() -> None:
    scores = [score_answer(text, gold) for text, gold in zip(ANSWERS, GOLD, strict=True)]
    counts = [
        (s.counts.true_positives, s.counts.false_positives, s.counts.false_negatives)
        for s in scores
    ]
    assert counts == COUNTS
    assert [s.exact for s in scores] == [i in (0, 3) for i in range(10)]
    assert [s.json_valid for s in scores] == [i not in (4, 5) for i in range(10)]
    assert [s.schema_valid for s in scores] == [i in (0, 1, 2, 3, 7) for i in range(10)]
    assert scores[2].per_slot == {"time": SlotCounts(0, 1, 1), "last_name": SlotCounts(0, 1, 0)}


def test_slot_metrics_by_hand() -> None:
    metrics = slot_metrics(ANSWERS, GOLD)
    # TP = 2 + 2 + 1 = 5; FP = 2 + 2 + 1 + 1 = 6; FN = 1 + 1 + 1 + 1 = 4 (9 gold pairs).
    assert metrics.micro == SlotCounts(5, 6, 4)
    assert metrics.micro.precision == pytest.approx(5 / 11)
    assert metrics.micro.recall == pytest.approx(5 / 9)
    assert metrics.f1 == pytest.approx(10 / 20)  # 2 TP / (2 TP + FP + FN)
    assert metrics.exact_match == pytest.approx(2 / 10)  # A and D
    assert metrics.json_valid_rate == pytest.approx(8 / 10)  # all but E and F
    assert metrics.schema_valid_rate == pytest.approx(5 / 10)  # A, B, C, D, H
    assert (metrics.unknown_slots, metrics.non_string_values, metrics.repeated_slots) == (1, 1, 1)
    # people: A, B, J right; G's number and J's repeat wrong; E and G missed.
    assert metrics.per_slot["people"] == SlotCounts(3, 2, 2)
    assert metrics.per_slot["time"] == SlotCounts(1, 1, 1)  # A right; C wrong and missed
    assert metrics.per_slot["date"] == SlotCounts(1, 1, 0)  # B right; H invented
    assert metrics.per_slot["first_name"] == SlotCounts(0, 0, 1)
    assert metrics.per_slot["last_name"] == SlotCounts(0, 1, 0)
    assert metrics.per_slot["date"].f1 == pytest.approx(2 / 3)
    assert metrics.per_slot["first_name"].precision == 0.0  # nothing predicted: 0, not NaN
    summary = metrics.to_dict()
    assert summary["slot_f1"] == pytest.approx(0.5)
    assert summary["per_slot"]["people"]["support"] == 5
    np.testing.assert_array_equal(metrics.counts_per_example(), np.array(COUNTS))
    np.testing.assert_array_equal(metrics.exact_per_example(), [1, 0, 0, 1] + [0] * 6)


def test_empty_frames_are_exact_only_when_answered_with_an_empty_object() -> None:
    metrics = slot_metrics(["{}", "{}", "", '{"date": "today"}'], [{}, {"people": "2"}, {}, {}])
    np.testing.assert_array_equal(metrics.exact_per_example(), [1, 0, 0, 0])
    assert metrics.micro == SlotCounts(0, 1, 1)
    assert metrics.f1 == 0.0


def test_gold_frames_are_checked() -> None:
    with pytest.raises(ValueError, match="gold\\[1\\] names slot 'table'"):
        slot_metrics(["{}", "{}"], [{}, {"table": "window"}])
    with pytest.raises(ValueError, match="must pair up"):
        slot_metrics(["{}"], [{}, {}])
    assert slot_metrics(['{"table": "x"}'], [{"table": "x"}], slots=["table"]).f1 == 1.0


def test_paired_bootstrap_of_slot_differences() -> None:
    a = slot_metrics(ANSWERS, GOLD)
    perfect = [json.dumps(frame) for frame in GOLD]
    b = slot_metrics(perfect, GOLD)
    assert b.f1 == 1.0 and b.exact_match == 1.0
    differences = paired_slot_differences(a, b, names=("a", "gold"), resamples=200)
    assert differences["slot_f1"].difference == pytest.approx(0.5 - 1.0)
    assert differences["exact_match"].difference == pytest.approx(0.2 - 1.0)
    assert differences["json_valid_rate"].difference == pytest.approx(0.8 - 1.0)
    assert differences["slot_f1"].high < 0 and differences["slot_f1"].significant()

    # Each resample pools the drawn examples' counts: the same draws by hand give the same CI.
    counts_a, counts_b = a.counts_per_example(), b.counts_per_example()
    by_hand = []
    for rows in resampled_indices(len(GOLD), 200, seed=0):
        for row in rows:
            by_hand.append(
                SlotCounts(*counts_a[row].sum(axis=0)).f1
                - SlotCounts(*counts_b[row].sum(axis=0)).f1
            )
    low, high = np.quantile(by_hand, [0.025, 0.975])
    assert (differences["slot_f1"].low, differences["slot_f1"].high) == pytest.approx((low, high))
    same = paired_bootstrap_micro_f1(counts_a, counts_a, resamples=200)
    assert (same.difference, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"expected \(n, 3\)"):
        paired_bootstrap_micro_f1(counts_a[:, :2], counts_b[:, :2])


# --------------------------------------------------------------------------- the real model


@pytest.mark.integration
def test_real_smollm2_answers_restaurant_requests_batched_as_singly() -> None:
    from adaptlab.data.convert import DEFAULT_SLOT_SYSTEM_PROMPT
    from adaptlab.models.bundled import BUNDLED, SMOLLM2, package_dir

    if package_dir(BUNDLED[SMOLLM2].package) is None:
        pytest.skip(f"{SMOLLM2} is not installed: {BUNDLED[SMOLLM2].install}")
    lm = CausalLM.load(SMOLLM2)
    utterances = ["A table for 4 at 7pm please", "Hi, it's John Smith, booking for tomorrow", "hi"]
    conversations = [
        [{"role": "system", "content": DEFAULT_SLOT_SYSTEM_PROMPT}, {"role": "user", "content": u}]
        for u in utterances
    ]
    batched = generate_chat(lm, conversations, DecodingConfig(max_new_tokens=32, batch_size=3))
    singly = generate_chat(lm, conversations, DecodingConfig(max_new_tokens=32, batch_size=1))
    assert token_ids(batched) == token_ids(singly)
    assert stop_token_ids(lm)[0] == lm.tokenizer.convert_tokens_to_ids("<|im_end|>")
    gold = [{"people": "4", "time": "7pm"}, {"first_name": "John", "last_name": "Smith"}, {}]
    metrics = slot_metrics([g.text for g in batched], gold)
    assert 0.0 <= metrics.json_valid_rate <= 1.0 and metrics.n == 3
