"""Malformed lines mixed with good ones (issue 13 acceptance): every bad line is reported with
its class and line, and every good record is kept and prepared byte-for-byte."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from adaptlab.config import DataConfig, ModelConfig
from adaptlab.data.formats import load
from adaptlab.data.pipeline import check_data, prepare_data

from .malformed import SEQUENCE_LEN, Generated, generate


class _WordCounter:
    """One token per word: the test is about reading, not tokenization."""

    chat_template = None

    def __call__(self, texts: list[str], add_special_tokens: bool = True) -> dict[str, Any]:
        return {"input_ids": [text.split() for text in texts]}


def _check_and_prepare(generated: Generated, out: Path) -> None:
    config = DataConfig(train=str(generated.path), val_set_size=0.2, seed=1)
    result = check_data(config, ModelConfig(sequence_len=SEQUENCE_LEN), tokenizer=_WordCounter())
    loaded = result.train.loaded

    reported = {(i.line, i.error) for i in loaded.issues}
    expected = generated.expected_issues()
    assert reported - expected == set(), "reported, but not planted"
    assert expected - reported == set(), "planted, but not reported"
    assert len(loaded.issues) == len(reported)  # no line reported twice

    kept = {r.line: r.data for r in loaded.records}
    assert kept == {p.line: p.record for p in generated.kept()}
    assert len(result.train.keep) == len(kept)  # nothing dropped as a duplicate or PII-changed

    prepared = prepare_data(result, config, out)
    written = prepared.train_path.read_bytes().splitlines()
    written += prepared.eval_path.read_bytes().splitlines()
    planted = [json.dumps(p.record, ensure_ascii=False).encode() for p in generated.kept()]
    assert Counter(written) == Counter(planted)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_sample_of_malformed_lines(tmp_path: Path, suffix: str, seed: int) -> None:
    generated = generate(tmp_path / f"mixed{suffix}", good=100, bad=100, seed=seed, long=1)
    _check_and_prepare(generated, tmp_path / "out")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_thousand_malformed_lines_among_a_thousand_good(tmp_path: Path, suffix: str) -> None:
    generated = generate(tmp_path / f"mixed{suffix}", good=1000, bad=1000, seed=13)
    good = [p for p in generated.planted if p.kind in ("good", "too_long")]
    assert len(good) == 1000 and len(generated.planted) - len(good) == 1000
    _check_and_prepare(generated, tmp_path / "out")


def test_the_generator_plants_every_class(tmp_path: Path) -> None:
    jsonl = generate(tmp_path / "m.jsonl", good=1000, bad=1000, seed=13)
    table = generate(tmp_path / "m.csv", good=1000, bad=1000, seed=13)
    assert {p.kind for p in jsonl.planted} == {
        "good",
        "too_long",
        "bom",
        "invalid_json",
        "wrong_type",
        "missing_field",
        "missing_label",
        "empty_text",
        "non_utf8",
        "duplicate_key",
    }
    assert {p.kind for p in table.planted} == {
        "good",
        "too_long",
        "wrong_field_count",
        "unterminated_quote",
        "empty_text",
        "missing_label",
        "non_utf8",
    }


# --------------------------------------------------------------------------- loader fixes


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_a_quote_never_closed_mid_file_does_not_swallow_the_lines_up_to_the_next_quote(
    tmp_path: Path,
) -> None:
    # csv reads the open quote on to the next '"' (line 5 here) as one field; before, lines
    # 3-5 came back as one wrong_field_count on line 3 and lines 4 and 5 were lost
    path = write(
        tmp_path / "d.csv",
        [b"text,label", b"first,a", b'"never closed,b', b"plain,c", b'"with, comma",d', b"last,e"],
    )
    data = load(path)
    assert [(i.line, i.error) for i in data.issues] == [(3, "unterminated_quote")]
    assert [(r.line, r.data["text"]) for r in data.records] == [
        (2, "first"),
        (4, "plain"),
        (5, "with, comma"),
        (6, "last"),
    ]


def test_a_quote_never_closed_in_the_label_and_on_the_last_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "d.csv",
        [b"text,label", b'one,"a', b'"two\nlines",b', b'three "x,c', b'"open at the end,d'],
    )
    data = load(path)
    assert [(i.line, i.error) for i in data.issues] == [
        (2, "unterminated_quote"),
        (6, "unterminated_quote"),
    ]
    assert [r.data["text"] for r in data.records] == ["two\nlines", 'three "x']


def test_a_key_given_twice_is_reported_not_silently_resolved(tmp_path: Path) -> None:
    path = write(
        tmp_path / "d.jsonl",
        [
            b'{"text": "first", "label": "a", "text": "second"}',
            b'{"text": "ok", "label": "a", "meta": {"k": 1, "k": 2}}',
            b'{"text": "fine", "label": "a"}',
        ],
    )
    data = load(path)
    assert [(i.line, i.error, i.field) for i in data.issues] == [
        (1, "duplicate_key", "text"),
        (2, "duplicate_key", "k"),
    ]
    assert [r.line for r in data.records] == [3]
    array = tmp_path / "a.json"
    array.write_text('[\n{"text": "x", "label": "a", "label": "b"},\n{"text": "y", "label": "a"}]')
    data = load(array)
    assert [(i.line, i.error) for i in data.issues] == [(2, "duplicate_key")]
    assert [r.line for r in data.records] == [3]


def test_a_byte_order_mark_mid_file_is_a_warning_and_the_record_is_kept(tmp_path: Path) -> None:
    path = write(
        tmp_path / "d.jsonl",
        [b'{"text": "a", "label": "x"}', b'\xef\xbb\xbf{"text": "b", "label": "y"}'],
    )
    data = load(path)
    assert [(i.line, i.error, i.severity) for i in data.issues] == [(2, "bom", "warning")]
    assert "were files joined?" in data.issues[0].message
    assert [r.data["text"] for r in data.records] == ["a", "b"]


def test_json_messages_read_cleanly(tmp_path: Path) -> None:
    path = write(
        tmp_path / "d.jsonl", [b'{"text": "a\x01b", "label": "x"}', b'{"text": "c", "label": "x"}']
    )
    (issue,) = load(path).issues
    assert issue.message == "Invalid control character at column 12"
