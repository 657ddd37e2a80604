"""No raw record value reaches an error, a printed line or a data report (issue 13.4): every
message names file, line and field, and quotes input only PII-scrubbed and cut short."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from adaptlab.cli import app
from adaptlab.config import DataConfig, ModelConfig
from adaptlab.data.formats import load, quoted, quoted_names
from adaptlab.data.issues import DataError
from adaptlab.data.pipeline import check_data, write_report

EMAIL = "anna.schmidt@example.org"
PHONE = "+1 415 555 2671"
CARD = "4111 1111 1111 1111"
SECRETS = (EMAIL, PHONE, CARD)
PII_LINE = f"{EMAIL} {PHONE} {CARD}"

runner = CliRunner()


def leaked(text: str) -> list[str]:
    """The planted values found in ``text``, also when a line break or spacing split them."""
    spaced = " ".join(text.split())
    packed = re.sub(r"\s", "", text)
    return [s for s in SECRETS if s in spaced or re.sub(r"\s", "", s) in packed]


def good_rows(count: int = 12) -> list[dict[str, Any]]:
    words = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
    return [
        {"text": f"question {words[n % 8]} {words[(n * 3) % 8]} {n}", "label": f"l{n % 2}"}
        for n in range(count)
    ]


def write(path: Path, lines: list[str | bytes]) -> Path:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


def jsonl(rows: list[Any]) -> list[str | bytes]:
    return [json.dumps(r) for r in rows]


class _WordCounter:
    chat_template = None

    def __call__(self, texts: list[str], add_special_tokens: bool = True) -> dict[str, Any]:
        return {"input_ids": [text.split() for text in texts]}


def files_under(folder: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- fatal errors

HEADERLESS_CSV = [f"{EMAIL},{PHONE},{CARD}", f"{EMAIL},x,y"]


@pytest.mark.parametrize(
    ("name", "lines", "expected"),
    [
        ("headerless.csv", HEADERLESS_CSV, ":1: cannot detect the format"),
        ("dup_header.csv", [f"{EMAIL},{EMAIL},{PHONE}", "a,b,c"], ":1: header columns must"),
        ("empty_header.csv", [f"{EMAIL},,{CARD}", "a,b,c"], ":1: every header column needs"),
        ("keys.jsonl", jsonl([{EMAIL: PHONE, CARD: 1, PHONE: EMAIL}] * 3), ":1: cannot detect"),
        (
            "blank_then_keys.jsonl",
            ["", "{broken", *jsonl([{EMAIL: 1, PHONE: 2}])],
            ":3: cannot detect the format",
        ),
    ],
)
def test_a_failed_detection_names_the_file_and_line_but_no_value(
    tmp_path: Path, name: str, lines: list[str | bytes], expected: str
) -> None:
    path = write(tmp_path / name, lines)
    with pytest.raises(DataError) as caught:
        load(path)
    message = str(caught.value)
    assert f"{path}{expected}" in message
    assert leaked(message) == []


def test_the_headerless_csv_message_says_what_it_saw(tmp_path: Path) -> None:
    path = write(tmp_path / "h.csv", HEADERLESS_CSV)
    with pytest.raises(DataError) as caught:
        load(path)
    assert "'<EMAIL>', '<PHONE>', '<CREDIT_CARD>'" in str(caught.value)
    assert "add a header row" in str(caught.value)


def test_a_missing_label_column_names_the_columns_scrubbed(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", jsonl([{"text": "hello", EMAIL: PHONE}] * 2))
    with pytest.raises(DataError, match="needs a text and a label column") as caught:
        load(path, format="classification")
    assert f"{path}:1:" in str(caught.value) and leaked(str(caught.value)) == []


@pytest.mark.parametrize("name", ["headerless.csv", "keys.jsonl"])
def test_cli_check_on_undetectable_data_prints_and_writes_no_value(
    tmp_path: Path, name: str
) -> None:
    lines = HEADERLESS_CSV if name.endswith(".csv") else jsonl([{EMAIL: PHONE, CARD: 1}] * 3)
    path = write(tmp_path / name, lines)
    out = tmp_path / "report"
    result = runner.invoke(app, ["data", "check", str(path), "--out", str(out)])
    assert result.exit_code == 2
    assert "cannot detect the format" in result.output
    assert leaked(result.output) == [] and leaked(files_under(out)) == []


# --------------------------------------------------------------------------- record issues

BAD_RECORDS: list[tuple[str | bytes, str, str | None]] = [
    # (line, error class, field)
    (json.dumps({"text": [EMAIL, PHONE], "label": "l0"}), "wrong_type", "text"),
    (json.dumps({"text": {EMAIL: CARD}, "label": "l0"}), "wrong_type", "text"),
    (json.dumps({"text": "fine words", "label": {PHONE: EMAIL}}), "wrong_type", "label"),
    (json.dumps({"text": "fine words", "label": [CARD]}), "wrong_type", "label"),
    (json.dumps({"text": "more words", EMAIL: 1, "label": "l1", PHONE: CARD}), "", None),
    (f'{{"text": "{PII_LINE}", "label": ', "invalid_json", None),
    (f'{{"text": "{PII_LINE}", "label": "l0"}} {EMAIL}', "invalid_json", None),
    (f'"{PII_LINE}"', "wrong_type", None),
    (f"[{json.dumps(PII_LINE)}]", "wrong_type", None),
    (f'{{"text": "{PII_LINE}", "label": "l0", "text": "{EMAIL}"}}', "duplicate_key", "text"),
    (f'{{"text": "ok", "label": "l0", "{EMAIL}": 1, "{EMAIL}": 2}}', "duplicate_key", "<EMAIL>"),
    (f'{{"text": "{EMAIL} \xff {PHONE}", "label": "l0"}}'.encode("latin-1"), "non_utf8", None),
    (f'{{"text": "{EMAIL} \\ud800 {CARD}", "label": "l0"}}', "non_utf8", None),
    (f'{{"text": "{EMAIL}\x00{PHONE}", "label": "l0"}}', "invalid_json", None),
]


def test_record_issues_name_file_line_and_field_but_no_value(tmp_path: Path) -> None:
    good = jsonl(good_rows())
    lines: list[str | bytes] = [*good[:6], *(line for line, _, _ in BAD_RECORDS), *good[6:]]
    path = write(tmp_path / "d.jsonl", lines)
    data = load(path)
    expected = {(7 + n, error, field) for n, (_, error, field) in enumerate(BAD_RECORDS) if error}
    assert {(i.line, i.error, i.field) for i in data.issues} == expected
    for issue in data.issues:
        assert str(issue).startswith(f"{path}:{issue.line}: {issue.error}")
        assert leaked(str(issue)) == [], str(issue)


def test_chat_keys_roles_and_unknown_labels_are_quoted_scrubbed(tmp_path: Path) -> None:
    chat = write(
        tmp_path / "c.jsonl",
        jsonl(
            [
                {
                    "messages": [
                        {"role": PHONE, "content": "hi", EMAIL: CARD},
                        {"role": "assistant", "content": "hello"},
                    ]
                }
            ]
        ),
    )
    issues = load(chat).issues
    assert {(i.error, i.field) for i in issues} == {
        ("message_unrecognized_key", "messages[0]"),
        ("unrecognized_role", "messages[0].role"),
    }
    assert all(leaked(str(i)) == [] for i in issues)
    assert "unknown key '<EMAIL>'" in " ".join(str(i) for i in issues)

    labelled = write(tmp_path / "e.jsonl", jsonl([{"text": "a question", "label": EMAIL}]))
    (issue,) = load(labelled, labels=["l0"]).issues
    assert (issue.line, issue.error, issue.field) == (1, "unknown_label", "label")
    assert "label '<EMAIL>'" in issue.message and leaked(str(issue)) == []


def test_csv_issues_quote_header_names_scrubbed(tmp_path: Path) -> None:
    path = write(
        tmp_path / "d.csv",
        [f"text,label,{EMAIL}", "fine,l0,x", "too,few", b"bad \xff,l1,y", "ok,l1,z"],
    )
    data = load(path)
    assert [(i.line, i.error) for i in data.issues] == [(3, "wrong_field_count"), (4, "non_utf8")]
    assert "'text', 'label', '<EMAIL>'" in data.issues[0].message
    path.write_bytes(f"text,label,{EMAIL}\nfine,l0,x\nok,l1,\xff\n".encode("latin-1"))
    (issue,) = load(path).issues
    assert (issue.line, issue.error, issue.field) == (3, "non_utf8", "<EMAIL>")


def test_check_and_report_hold_no_value_from_bad_records(tmp_path: Path) -> None:
    rows = good_rows()
    rows[3] = {"text": f"call me on {PHONE}", "label": EMAIL}  # a label column with PII in it
    good = jsonl(rows)
    lines = [*good[:6], *(line for line, _, _ in BAD_RECORDS), *good[6:]]
    path = write(tmp_path / "d.jsonl", lines)
    config = DataConfig(train=str(path))
    result = check_data(config, ModelConfig(sequence_len=8), tokenizer=_WordCounter())
    write_report(result.report, tmp_path / "out")
    written = files_under(tmp_path / "out")
    assert leaked(written) == []
    assert f"{path}:7" in written and "wrong_type" in written
    assert (
        "<EMAIL>"
        in json.loads((tmp_path / "out" / "data_report.json").read_text())["labels"]["train_counts"]
    )


def test_cli_check_prints_and_writes_no_value_from_bad_records(tmp_path: Path) -> None:
    good = jsonl(good_rows())
    path = write(tmp_path / "d.jsonl", [*good[:6], *(x for x, _, _ in BAD_RECORDS), *good[6:]])
    out = tmp_path / "report"
    result = runner.invoke(app, ["data", "check", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"{path}:7: wrong_type [text]" in result.output
    assert leaked(result.output) == [] and leaked(files_under(out)) == []


# --------------------------------------------------------------------------- the quoting


@pytest.mark.parametrize(
    ("value", "check"),
    [
        (EMAIL, lambda q: q == "<EMAIL>"),
        (f"call {PHONE} or pay with {CARD}", lambda q: "<PHONE>" in q and "<CREDIT_CARD>" in q),
        ("a\x00b\u200bc\nd", lambda q: q == "a\\x00b\\u200bc d"),
        ("x" * 100, lambda q: len(q) == 40 and q.endswith("…")),
        (12, lambda q: q == "12"),
    ],
)
def test_quoted_scrubs_escapes_and_cuts(value: object, check: Callable[[str], bool]) -> None:
    assert check(quoted(value)), quoted(value)


def test_quoted_names_lists_a_few() -> None:
    assert quoted_names([]) == "none"
    assert quoted_names([f"c{n}" for n in range(10)]).endswith("'c7' and 2 more")


def test_labels_that_scrub_alike_stay_separate_classes_in_the_report() -> None:
    from adaptlab.data.report import label_stats

    other = "bob.jones@example.org"
    stats = label_stats([EMAIL, EMAIL, other, "cards"], [other])
    assert stats["train_counts"] == {"<EMAIL>": 2, "<EMAIL> #2": 1, "cards": 1}
    assert stats["eval_counts"] == {"<EMAIL> #2": 1} and stats["classes"] == 3
