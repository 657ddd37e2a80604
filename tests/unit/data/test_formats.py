"""Every error class is reported with its file:line, and valid records are kept exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptlab.data.formats import Layout, is_blank, load, read_rows
from adaptlab.data.issues import DataError, DataIssue


def write_lines(path: Path, lines: list[str | bytes], newline: bytes = b"\n") -> Path:
    raw = newline.join(x if isinstance(x, bytes) else x.encode() for x in lines) + newline
    path.write_bytes(raw)
    return path


def issues_by_line(data_issues: list[DataIssue]) -> dict[int, str]:
    return {issue.line: issue.error for issue in data_issues}


def test_classification_error_classes_carry_line_numbers(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "train.jsonl",
        [
            json.dumps({"text": "top up failed", "label": "top_up"}),  # 1 ok
            "{not json",  # 2
            b'{"text": "caf\xe9", "label": "x"}',  # 3 latin-1 byte
            json.dumps({"label": "top_up"}),  # 4 missing text
            json.dumps({"text": 5, "label": "top_up"}),  # 5 wrong type
            json.dumps({"text": "   ", "label": "top_up"}),  # 6 empty text
            json.dumps({"text": "hello", "label": ""}),  # 7 missing label
            json.dumps({"text": "hello", "label": "no_such_intent"}),  # 8 unknown label
            json.dumps(["a", "list"]),  # 9 not an object
            json.dumps({"text": "card lost", "label": "lost_card"}),  # 10 ok
        ],
    )
    data = load(path, labels=["top_up", "lost_card", "x"])
    assert issues_by_line(data.issues) == {
        2: "invalid_json",
        3: "non_utf8",
        4: "missing_field",
        5: "wrong_type",
        6: "empty_text",
        7: "missing_label",
        8: "unknown_label",
        9: "wrong_type",
    }
    assert [r.line for r in data.records] == [1, 10]
    assert all(str(i).startswith(f"{path}:{i.line}: {i.error}") for i in data.issues)
    assert data.raw_count == 10


def test_valid_records_are_kept_exactly(tmp_path: Path) -> None:
    rows = [
        {"text": "  leading and trailing  ", "label": "a", "extra": {"k": [1, 2]}},
        {"text": "ünïcödé ✓ — \u200b", "label": 3},
        {"text": "line\nbreak", "label": "b"},
    ]
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(r, ensure_ascii=False) for r in rows])
    data = load(path)
    assert [r.data for r in data.records] == rows
    assert data.issues == []


def test_chat_error_classes(tmp_path: Path) -> None:
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "{}"}]}
    lines = [
        good,  # 1
        {"conversation": []},  # 2 missing_messages_list
        {"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]},  # 3 missing key
        {"messages": [{"role": "user", "content": "a", "mood": "x"}, good["messages"][1]]},  # 4
        {"messages": [{"role": "robot", "content": "a"}, good["messages"][1]]},  # 5
        {"messages": [{"role": "user", "content": ""}, good["messages"][1]]},  # 6
        {"messages": [{"role": "user", "content": "only a question"}]},  # 7
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b", "weight": 2},
            ]
        },  # 8
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b", "weight": 0},
            ]
        },  # 9
    ]
    path = write_lines(tmp_path / "chat.jsonl", [json.dumps(x) for x in lines])
    data = load(path)
    assert data.format == "chat"
    assert issues_by_line(data.issues) == {
        2: "missing_messages_list",
        3: "message_missing_key",
        4: "message_unrecognized_key",
        5: "unrecognized_role",
        6: "missing_content",
        7: "example_missing_assistant_message",
        8: "invalid_weight",
        9: "no_trainable_tokens",
    }
    assert [r.line for r in data.records] == [1]


def test_references_must_be_a_non_empty_list_of_text(tmp_path: Path) -> None:
    turns = [{"role": "user", "content": "describe it"}, {"role": "assistant", "content": "ok"}]
    lines = [
        {"messages": turns, "references": ["ok", "fine"]},  # 1
        {"messages": turns, "references": "ok"},  # 2 a string, not a list
        {"messages": turns, "references": []},  # 3
        {"messages": turns, "references": ["ok", 7]},  # 4
        {"messages": turns, "references": ["ok", " \u200b "]},  # 5 blank
        {"prompt": "describe it", "completion": "ok", "references": [None]},  # 6 (another file)
    ]
    path = write_lines(tmp_path / "chat.jsonl", [json.dumps(x) for x in lines[:5]])
    data = load(path)
    found = {issue.line: (issue.error, issue.field) for issue in data.issues}
    assert found == {
        2: ("wrong_type", "references"),
        3: ("wrong_type", "references"),
        4: ("wrong_type", "references[1]"),
        5: ("empty_text", "references[1]"),
    }
    assert [r.line for r in data.records] == [1]
    completion = load(write_lines(tmp_path / "c.jsonl", [json.dumps(lines[5])]))
    assert [(i.error, i.field) for i in completion.issues] == [("wrong_type", "references[0]")]


def test_documents_must_be_a_non_empty_list_of_ids(tmp_path: Path) -> None:
    turns = [{"role": "user", "content": "what is it?"}, {"role": "assistant", "content": "ok"}]
    lines = [
        # 1: the converted COVID-QA shape; id and documents are not chat keys, still chat
        {"messages": turns, "documents": ["covid-630-p000"], "id": "covidqa-1"},
        {"messages": turns, "documents": ["covid-630-p000", "covid-630-p001"]},  # 2
        {"messages": turns, "documents": "covid-630-p000"},  # 3 a string, not a list
        {"messages": turns, "documents": []},  # 4
        {"messages": turns, "documents": None},  # 5
        {"messages": turns, "documents": ["covid-630-p000", 7]},  # 6
        {"messages": turns, "documents": ["", " \u200b "]},  # 7 both blank
    ]
    path = write_lines(tmp_path / "chat.jsonl", [json.dumps(x) for x in lines])
    data = load(path)
    assert data.format == "chat"
    found = [(issue.line, issue.error, issue.field) for issue in data.issues]
    assert found == [
        (3, "wrong_type", "documents"),
        (4, "wrong_type", "documents"),
        (5, "wrong_type", "documents"),
        (6, "wrong_type", "documents[1]"),
        (7, "empty_text", "documents[0]"),
        (7, "empty_text", "documents[1]"),
    ]
    messages = {issue.line: issue.message for issue in data.issues}
    assert "found a string" in messages[3] and "found an empty list" in messages[4]
    assert "found null" in messages[5] and "found a number" in messages[6]
    assert [r.line for r in data.records] == [1, 2]
    assert data.records[0].data == lines[0]  # kept exactly


@pytest.mark.parametrize(
    ("record", "format", "field"),
    [
        (
            {"prompt": "q", "completion": "a", "documents": [{"id": "x"}]},
            "completion",
            "documents[0]",
        ),
        ({"instruction": "q", "output": "a", "documents": {"id": "x"}}, "alpaca", "documents"),
    ],
)
def test_documents_are_checked_in_every_generative_format(
    tmp_path: Path, record: dict[str, object], format: str, field: str
) -> None:
    data = load(write_lines(tmp_path / "d.jsonl", [json.dumps(record)]))
    assert data.format == format and not data.records
    assert [(i.error, i.field) for i in data.issues] == [("wrong_type", field)]
    assert "found an object" in data.issues[0].message


def test_completion_and_alpaca_detection_and_checks(tmp_path: Path) -> None:
    completion = write_lines(
        tmp_path / "c.jsonl",
        [
            json.dumps({"prompt": "", "completion": "text"}),
            json.dumps({"prompt": "q", "completion": ""}),
        ],
    )
    data = load(completion)
    assert data.format == "completion"
    assert issues_by_line(data.issues) == {2: "empty_text"}
    alpaca = write_lines(
        tmp_path / "a.jsonl",
        [
            json.dumps({"instruction": "Sum", "input": "1 2", "output": "3"}),
            json.dumps({"instruction": "Sum", "output": ["3"]}),
        ],
    )
    data = load(alpaca)
    assert data.format == "alpaca"
    assert issues_by_line(data.issues) == {2: "wrong_type"}


def test_csv_multiline_crlf_bom_and_bad_rows(tmp_path: Path) -> None:
    raw = (
        b"\xef\xbb\xbftext,category\r\n"
        b'"first, with comma",a\r\n'
        b'"spans\nlines",b\r\n'
        b"only_one_field\r\n"
        b"bad \xff byte,a\r\n"
        b"last,b\r\n"
    )
    path = tmp_path / "d.csv"
    path.write_bytes(raw)
    data = load(path)
    assert data.format == "classification" and data.label_field == "category"
    assert [(r.line, r.data["text"]) for r in data.records] == [
        (2, "first, with comma"),
        (3, "spans\nlines"),
        (7, "last"),
    ]
    assert issues_by_line(data.issues) == {1: "bom", 5: "wrong_field_count", 6: "non_utf8"}
    assert next(i for i in data.issues if i.error == "bom").severity == "warning"


def test_json_array_records_know_their_line(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(
        '[\n  {"text": "a", "label": "x"},\n  {"text": "b",\n   "label": "y"},\n  7\n]\n'
    )
    data = load(path)
    assert [r.line for r in data.records] == [2, 3]
    assert issues_by_line(data.issues) == {5: "wrong_type"}


def test_parquet_through_hf_datasets(tmp_path: Path) -> None:
    import datasets

    path = tmp_path / "d.parquet"
    datasets.Dataset.from_list(
        [{"text": "a", "label": "x"}, {"text": "", "label": "y"}]
    ).to_parquet(str(path))
    data = load(path)
    assert [r.data for r in data.records] == [{"text": "a", "label": "x"}]
    assert issues_by_line(data.issues) == {2: "empty_text"}


def test_explicit_format_and_fields_override_detection(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", [json.dumps({"body": "hello", "tag": "greet"})])
    with pytest.raises(DataError, match="cannot detect the format"):
        load(path)
    data = load(path, format="classification", text_field="body", label_field="tag")
    assert data.labels() == ["greet"]
    data = load(path, layout=Layout("classification", "body", "tag"), labels=["other"])
    assert issues_by_line(data.issues) == {1: "unknown_label"}


def test_missing_file_and_unknown_suffix_are_clear(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load(tmp_path / "absent.jsonl")
    with pytest.raises(DataError, match="no such file"):
        load("data/absent.csv")
    (tmp_path / "x.xlsx").write_bytes(b"PK")
    with pytest.raises(DataError, match="unsupported file type '.xlsx'"):
        load(tmp_path / "x.xlsx")


def test_ten_megabyte_line_is_read(tmp_path: Path) -> None:
    big = "word " * 2_000_000
    path = write_lines(tmp_path / "big.jsonl", [json.dumps({"text": big, "label": "a"})])
    assert load(path).records[0].data["text"] == big
    csv_path = tmp_path / "big.csv"
    csv_path.write_text(f'text,label\n"{big}",a\n')
    assert load(csv_path).records[0].data["text"] == big


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(blob=st.binary(max_size=2000), suffix=st.sampled_from([".jsonl", ".csv", ".tsv", ".json"]))
def test_random_bytes_never_crash_the_reader(tmp_path: Path, blob: bytes, suffix: str) -> None:
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(blob)
    try:
        rows = list(read_rows(path))
    except DataError:
        return  # a clear refusal (empty file, unreadable header) is an allowed outcome
    for line, row in rows:
        assert line >= 1
        assert isinstance(row, dict | DataIssue)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    texts=st.lists(
        # not is_blank: a text of only format characters (a soft hyphen) is empty, not valid
        st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=1).filter(
            lambda text: not is_blank(text)
        ),
        min_size=1,
        max_size=10,
    )
)
def test_any_valid_text_round_trips_through_jsonl_and_csv(tmp_path: Path, texts: list[str]) -> None:
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "label": "a"}) + "\r\n" for t in texts))
    assert [r.data["text"] for r in load(jsonl).records] == texts
    import csv

    csv_path = tmp_path / "p.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows([t, "a"] for t in texts)
    assert [r.data["text"] for r in load(csv_path).records] == texts


def test_unpaired_surrogate_escape_is_reported(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "s.jsonl",
        [
            '{"text": "bad \\ud800 half", "label": "a"}',
            '{"text": "ok \\ud83d\\ude00", "label": "a"}',
        ],
    )
    data = load(path)
    assert issues_by_line(data.issues) == {1: "non_utf8"}
    assert data.records[0].data["text"] == "ok 😀"


def test_hub_names_go_to_hf_datasets_with_the_split(monkeypatch: pytest.MonkeyPatch) -> None:
    # No network here: stand in for the hub download and check what adaptlab asks it for.
    import datasets

    calls: list[tuple[str, str]] = []

    def fake_load_dataset(name: str, split: str) -> datasets.Dataset:
        calls.append((name, split))
        return datasets.Dataset.from_list([{"text": "hello", "label": 0}, {"text": "", "label": 1}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = load("PolyAI/banking77", hub_split="test")
    assert calls == [("PolyAI/banking77", "test")]
    assert [r.data for r in data.records] == [{"text": "hello", "label": 0}]
    assert issues_by_line(data.issues) == {2: "empty_text"}


@pytest.mark.parametrize("invisible", ["\u200b\u200b", "\u200d \ufeff", "\u2060\u200e\t"])
def test_text_of_only_invisible_characters_is_empty(tmp_path: Path, invisible: str) -> None:
    path = write_lines(
        tmp_path / "d.jsonl",
        [
            json.dumps({"text": "a real question", "label": "x"}),
            json.dumps({"text": invisible, "label": "y"}),
            json.dumps({"text": f"zero{invisible}width inside is kept", "label": "y"}),
        ],
    )
    data = load(path)
    assert issues_by_line(data.issues) == {2: "empty_text"}
    assert [r.line for r in data.records] == [1, 3]


def test_an_unterminated_quote_is_reported_and_the_rest_of_the_file_is_kept(
    tmp_path: Path,
) -> None:
    good = [f"question {n},label{n % 3}" for n in range(1, 61)]
    lines = ["text,label", *good[:10], '"a quote never closed,label1', *good[10:]]
    data = load(write_lines(tmp_path / "d.csv", lines))
    assert issues_by_line(data.issues) == {12: "unterminated_quote"}
    assert [f"{r.data['text']},{r.data['label']}" for r in data.records] == good  # all 60 kept
    assert "never closed" in data.issues[0].message


def test_a_closed_multi_line_field_at_the_end_is_not_a_broken_quote(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.csv", ["text,label", "plain,a", '"two', 'lines",b'])
    data = load(path)
    assert data.issues == []
    assert [r.data["text"] for r in data.records] == ["plain", "two\nlines"]
