"""Converters on tiny synthetic files (the real sets are CC-BY and never copied into the repo)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from adaptlab.data.convert import (
    DEFAULT_SLOT_SYSTEM_PROMPT,
    convert_banking77,
    convert_covidqa,
    convert_restaurant8k,
    restaurant8k_slots,
)
from adaptlab.data.formats import load
from adaptlab.data.issues import DataError

COVIDQA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "covidqa"


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


# --- banking77 -------------------------------------------------------------------------------

BANKING_CSV = (
    "text,category\r\n"
    "Where is my card?,card_arrival\r\n"
    '"\nMy card,\nit is blocked\n\n",card_blocked\r\n'
    "  spaced text  ,card_arrival\r\n"
    "Café payment £3?,card_payment\r\n"
)


def test_banking77_keeps_text_and_label_exactly(tmp_path: Path) -> None:
    src, out = tmp_path / "train.csv", tmp_path / "out" / "train.jsonl"
    src.write_bytes(BANKING_CSV.encode("utf-8"))

    summary = convert_banking77(src, out)

    assert _jsonl(out) == [
        {"text": "Where is my card?", "label": "card_arrival"},
        {"text": "\nMy card,\nit is blocked\n\n", "label": "card_blocked"},
        {"text": "  spaced text  ", "label": "card_arrival"},
        {"text": "Café payment £3?", "label": "card_payment"},
    ]
    assert summary.records == 4
    assert summary.label_counts == {"card_arrival": 2, "card_blocked": 1, "card_payment": 1}
    assert (summary.source, summary.output) == (src, out)


def test_banking77_missing_column_names_file_and_columns(tmp_path: Path) -> None:
    src, out = tmp_path / "train.csv", tmp_path / "train.jsonl"
    src.write_text("utterance,category\nhello,greeting\n", encoding="utf-8")

    with pytest.raises(DataError) as caught:
        convert_banking77(src, out)

    message = str(caught.value)
    assert str(src) in message
    assert "'utterance'" in message and "'category'" in message
    assert "text" in message
    assert not out.exists()


def test_banking77_bad_row_names_its_start_line_after_a_multiline_record(tmp_path: Path) -> None:
    src, out = tmp_path / "train.csv", tmp_path / "train.jsonl"
    # Lines: 1 header, 2-4 one quoted record, 5 a row with an unquoted comma.
    src.write_text('text,category\n"a\nb\nc",x\nhi, there,y\n', encoding="utf-8")

    with pytest.raises(DataError, match=rf"{re.escape(str(src))}:5: extra_field"):
        convert_banking77(src, out)
    assert list(tmp_path.iterdir()) == [src]


def test_banking77_short_row_names_the_missing_field(tmp_path: Path) -> None:
    src = tmp_path / "train.csv"
    src.write_text("text,category\nhello,greeting\nno label here\n", encoding="utf-8")

    with pytest.raises(DataError, match=r":3: missing_field \[category\]"):
        convert_banking77(src, tmp_path / "train.jsonl")


def test_banking77_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    src = tmp_path / "train.csv"
    src.write_bytes(b"text,category\nok,a\ncaf\xe9,b\n")

    with pytest.raises(DataError, match=rf"{re.escape(str(src))}:3: not_utf8"):
        convert_banking77(src, tmp_path / "train.jsonl")


# --- restaurant8k ----------------------------------------------------------------------------


def _label(slot: str, end: int, start: int | None = None) -> dict[str, Any]:
    span = {"endIndex": end} if start is None else {"startIndex": start, "endIndex": end}
    return {"slot": slot, "valueSpan": span}


RESTAURANT_ITEMS: list[dict[str, Any]] = [
    {
        # startIndex absent means 0; labels listed out of the canonical order.
        "userInput": {"text": "7 pm for 4 people, name Zoë Brontë"},
        "context": {"requestedSlots": ["time"]},
        "labels": [
            _label("last_name", 34, 28),
            _label("time", 4),
            _label("people", 17, 9),
            _label("first_name", 27, 24),
        ],
    },
    {"userInput": {"text": "Hello there"}},
    {"userInput": {"text": "Tomorrow, no wait, Friday"}, "context": {}, "labels": []},
    {
        # Repeated slot: the first span wins and the extra one is counted.
        "userInput": {"text": "Friday or Saturday"},
        "labels": [_label("date", 6, 0), _label("date", 18, 10)],
    },
    {"userInput": {"text": "table by the window"}, "labels": [_label("seating", 19, 9)]},
]


def _write_items(path: Path, items: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(items, indent=4, ensure_ascii=False), encoding="utf-8")
    return path


def test_restaurant8k_writes_chat_records(tmp_path: Path) -> None:
    src = _write_items(tmp_path / "train_0.json", RESTAURANT_ITEMS)
    out = tmp_path / "train.jsonl"

    summary = convert_restaurant8k(src, out)

    records = _jsonl(out)
    assert len(records) == summary.records == 5
    for index, (record, item) in enumerate(zip(records, RESTAURANT_ITEMS, strict=True)):
        roles = [m["role"] for m in record["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert record["messages"][0]["content"] == DEFAULT_SLOT_SYSTEM_PROMPT
        assert record["messages"][1]["content"] == item["userInput"]["text"]
        assert record["metadata"]["source_index"] == index
    first = records[0]["messages"][2]["content"]
    assert (
        first
        == '{"people": "4 people", "time": "7 pm", "first_name": "Zoë", "last_name": "Brontë"}'
    )
    assert records[0]["metadata"]["requested_slots"] == ["time"]
    assert [r["messages"][2]["content"] for r in records[1:3]] == ["{}", "{}"]
    assert records[1]["metadata"]["requested_slots"] == []
    assert records[3]["messages"][2]["content"] == '{"date": "Friday"}'
    assert records[4]["messages"][2]["content"] == '{"seating": "the window"}'
    assert summary.no_slots == 2
    assert summary.repeated_slots == 1
    assert summary.slot_counts == {
        "people": 1, "date": 1, "time": 1, "first_name": 1, "last_name": 1, "seating": 1,
    }  # fmt: skip


def test_restaurant8k_round_trips_every_span(tmp_path: Path) -> None:
    src = _write_items(tmp_path / "test.json", RESTAURANT_ITEMS)
    out = tmp_path / "test.jsonl"

    convert_restaurant8k(src, out)

    for record, item in zip(_jsonl(out), RESTAURANT_ITEMS, strict=True):
        text = item["userInput"]["text"]
        expected: dict[str, str] = {}
        for label in item.get("labels", []):
            span = label["valueSpan"]
            expected.setdefault(label["slot"], text[span.get("startIndex", 0) : span["endIndex"]])
        assert restaurant8k_slots(record) == expected


def test_restaurant8k_without_system_prompt(tmp_path: Path) -> None:
    src = _write_items(tmp_path / "test.json", RESTAURANT_ITEMS[:1])
    out = tmp_path / "test.jsonl"

    convert_restaurant8k(src, out, system_prompt=None)

    assert [m["role"] for m in _jsonl(out)[0]["messages"]] == ["user", "assistant"]


@pytest.mark.parametrize(
    ("span", "field"),
    [
        ({"startIndex": 3, "endIndex": 99}, "labels[1].valueSpan"),
        ({"startIndex": 5, "endIndex": 2}, "labels[1].valueSpan"),
        ({"startIndex": 2, "endIndex": 2}, "labels[1].valueSpan"),
        ({"startIndex": -1, "endIndex": 2}, "labels[1].valueSpan"),
        ({"startIndex": 0}, "labels[1].valueSpan"),
    ],
)
def test_restaurant8k_bad_span_names_file_record_and_field(
    tmp_path: Path, span: dict[str, int], field: str
) -> None:
    bad: dict[str, Any] = {"userInput": {"text": "for 2 at 8"}, "labels": [_label("people", 5, 4)]}
    bad["labels"].append({"slot": "time", "valueSpan": span})
    src = _write_items(tmp_path / "train_0.json", [RESTAURANT_ITEMS[1], RESTAURANT_ITEMS[1], bad])
    out = tmp_path / "train.jsonl"

    with pytest.raises(DataError) as caught:
        convert_restaurant8k(src, out)

    message = str(caught.value)
    # indent=4: "[" on line 1, each of the first two items takes 5 lines, so record 2 starts on 12.
    assert message.startswith(f"{src}:12: ")
    assert "record 2" in message
    assert f"[{field}]" in message


def test_restaurant8k_failure_leaves_nothing_at_out(tmp_path: Path) -> None:
    bad = {"userInput": {"text": "hi"}, "labels": [_label("people", 50)]}
    src = _write_items(tmp_path / "train_0.json", [*RESTAURANT_ITEMS, bad])
    out = tmp_path / "out" / "train.jsonl"

    with pytest.raises(DataError, match="record 5"):
        convert_restaurant8k(src, out)

    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_restaurant8k_failure_keeps_a_previous_output(tmp_path: Path) -> None:
    src = _write_items(tmp_path / "train_0.json", [{"userInput": {"text": 3}}])
    out = tmp_path / "train.jsonl"
    out.write_text("previous\n", encoding="utf-8")

    with pytest.raises(DataError, match=r"\[userInput.text\]: record 0:"):
        convert_restaurant8k(src, out)

    assert out.read_text(encoding="utf-8") == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl", "train_0.json"]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('[\n  {"userInput": {"text": "a"}},\n  {"userInput": \n', 4),
        ('[\n  {"userInput": {"text": "a"}}\n  {"userInput": {"text": "b"}}\n]', 3),
        ('{"userInput": {"text": "a"}}', 1),
        ('[{"userInput": {"text": "a"}}] []', 1),
    ],
)
def test_restaurant8k_broken_json_names_the_line(tmp_path: Path, text: str, line: int) -> None:
    src = tmp_path / "test.json"
    src.write_text(text, encoding="utf-8")

    with pytest.raises(
        DataError, match=rf"{re.escape(str(src))}:{line}: (invalid_json|not_json_array)"
    ):
        convert_restaurant8k(src, tmp_path / "test.jsonl")


def test_restaurant8k_empty_array(tmp_path: Path) -> None:
    src = tmp_path / "test.json"
    src.write_text(" [ ] \n", encoding="utf-8")
    out = tmp_path / "test.jsonl"

    assert convert_restaurant8k(src, out).records == 0
    assert out.read_text(encoding="utf-8") == ""


def test_restaurant8k_bad_requested_slots(tmp_path: Path) -> None:
    src = _write_items(tmp_path / "test.json", [{"userInput": {"text": "a"}, "context": []}])

    with pytest.raises(DataError, match=r"\[context.requestedSlots\]: record 0:"):
        convert_restaurant8k(src, tmp_path / "test.jsonl")


@pytest.mark.parametrize(
    "record",
    [
        {},
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "assistant", "content": "not json"}]},
        {"messages": [{"role": "assistant", "content": '["a"]'}]},
        {"messages": [{"role": "assistant", "content": '{"people": 4}'}]},
    ],
)
def test_restaurant8k_slots_rejects_malformed_records(record: dict[str, Any]) -> None:
    with pytest.raises(DataError):
        restaurant8k_slots(record)


# --- covidqa ---------------------------------------------------------------------------------


_ABSENT = object()  # a field _question leaves out


def _question(**fields: Any) -> dict[str, Any]:
    item = {
        "id": "covidqa-1",
        "question": "What does ACE2 bind?",
        "answer": "the spike protein",
        "doc_id": "covid-7-p003",
        "article_id": "covid-7",
        "split": "test",
    }
    item.update(fields)
    return {key: value for key, value in item.items() if value is not _ABSENT}


def test_covidqa_writes_chat_records_naming_the_gold_passage(tmp_path: Path) -> None:
    src, out = tmp_path / "questions_test.jsonl", tmp_path / "out" / "test.jsonl"
    items = [
        _question(),
        _question(id=_ABSENT, question="  Wie? \n", answer="Café  "),  # kept exactly, no id
        _question(id="", doc_id="covid-9-p000"),  # a blank id is dropped
        _question(id=17),  # so is one that is not a string
    ]
    src.write_text(
        json.dumps(items[0]) + "\n\n" + "\n".join(json.dumps(i) for i in items[1:]) + "\n",
        encoding="utf-8",
    )

    summary = convert_covidqa(src, out)

    def chat(question: str, answer: str, doc_id: str) -> dict[str, Any]:
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        return {"messages": messages, "documents": [doc_id]}

    assert _jsonl(out) == [
        {**chat("What does ACE2 bind?", "the spike protein", "covid-7-p003"), "id": "covidqa-1"},
        chat("  Wie? \n", "Café  ", "covid-7-p003"),
        chat("What does ACE2 bind?", "the spike protein", "covid-9-p000"),
        chat("What does ACE2 bind?", "the spike protein", "covid-7-p003"),
    ]
    assert (summary.source, summary.output, summary.records) == (src, out, 4)
    loaded = load(out)  # what the converter writes is valid chat data with its documents
    assert loaded.format == "chat" and not loaded.issues and len(loaded.records) == 4


@pytest.mark.parametrize(
    ("line", "error", "field"),
    [
        ("{not json", "invalid_json", None),
        ('["a list"]', "wrong_type", None),
        (json.dumps(_question(question=_ABSENT)), "missing_field", "question"),
        (json.dumps(_question(question=" \u200b ")), "empty_text", "question"),
        (json.dumps(_question(answer=None)), "wrong_type", "answer"),
        (json.dumps(_question(answer="")), "empty_text", "answer"),
        (json.dumps(_question(doc_id=_ABSENT)), "missing_field", "doc_id"),
        (json.dumps(_question(doc_id=["covid-7-p003"])), "wrong_type", "doc_id"),
        (json.dumps(_question(doc_id="\t")), "empty_text", "doc_id"),
    ],
)
def test_covidqa_bad_record_names_file_line_and_field(
    tmp_path: Path, line: str, error: str, field: str | None
) -> None:
    src, out = tmp_path / "questions.jsonl", tmp_path / "out.jsonl"
    src.write_text(json.dumps(_question()) + "\n" + line + "\n", encoding="utf-8")

    where = rf"{re.escape(str(src))}:2: {error}" + (rf" \[{field}\]" if field else ":")
    with pytest.raises(DataError, match=where):
        convert_covidqa(src, out)
    assert not out.exists()


def test_covidqa_empty_file(tmp_path: Path) -> None:
    src = tmp_path / "questions.jsonl"
    src.write_text("\n \n", encoding="utf-8")

    with pytest.raises(DataError, match=rf"{re.escape(str(src))}:1: empty_file"):
        convert_covidqa(src, tmp_path / "out.jsonl")


def test_covidqa_shared_test_questions(tmp_path: Path) -> None:
    src = COVIDQA / "questions_test.jsonl"
    if not src.is_file():
        pytest.skip(f"{src.resolve()} is absent")
    out = tmp_path / "test.jsonl"

    summary = convert_covidqa(src, out)

    source = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines()]
    records = _jsonl(out)
    assert summary.records == len(records) == len(source) == 264
    for record, item in zip(records, source, strict=True):
        assert record["documents"] == [item["doc_id"]] and record["id"] == item["id"]
        assert [m["content"] for m in record["messages"]] == [item["question"], item["answer"]]
