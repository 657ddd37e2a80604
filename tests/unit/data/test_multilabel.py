"""Multi-label intent data (NLU++: ``{"text", "labels": [...]}``, ``[]`` = no intent) through
check → prepare: each malformed list is an error on its file, line and field; counts are per
label; the split and the lock know the data is multi-label; single-label data is unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adaptlab.config import DataConfig, ModelConfig
from adaptlab.data.formats import load
from adaptlab.data.issues import DataError, DataIssue
from adaptlab.data.lock import EvalLockError, read_lock, split_indices
from adaptlab.data.pipeline import CheckResult, check_data, open_prepared, prepare_data
from adaptlab.data.report import to_markdown

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]


class WordCounter:
    """A stand-in tokenizer (one token per word): these tests are not about tokenization."""

    chat_template = None

    def __call__(self, texts: list[str], add_special_tokens: bool = True) -> dict[str, Any]:
        return {"input_ids": [text.split() for text in texts]}


def text(n: int) -> str:
    # distinct words per record keep near-duplicate detection out of the way
    return f"question {n * 37} about {WORDS[n % 9]} and {WORDS[(n * 5 + 3) % 9]} {n}"


def hotel_rows(count: int = 12, start: int = 0) -> list[dict[str, Any]]:
    """NLU++-like rows: one, two or no intents, each label on several records."""
    sets = [["spa"], ["why", "spa"], [], ["booking", "restaurant"], ["booking"], []]
    return [{"text": text(start + n), "labels": sets[n % len(sets)]} for n in range(count)]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def check(
    tmp_path: Path,
    train: list[dict[str, Any]],
    eval_rows: list[dict[str, Any]] | None = None,
    **data: Any,
) -> tuple[CheckResult, DataConfig]:
    train_path = write_jsonl(tmp_path / "train.jsonl", train)
    eval_path = write_jsonl(tmp_path / "eval.jsonl", eval_rows) if eval_rows is not None else None
    config = DataConfig(train=str(train_path), eval=str(eval_path) if eval_path else None, **data)
    return check_data(config, ModelConfig(sequence_len=64), tokenizer=WordCounter()), config


def issues(result: CheckResult) -> list[tuple[str, int, str, str | None]]:
    """(file name, line, error, field) of every issue of both sides."""
    parts = [result.train] if result.eval is None else [result.train, result.eval]
    return [
        (Path(i.path).name, i.line, i.error, i.field) for part in parts for i in part.loaded.issues
    ]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_nlupp_like_rows_pass_check_and_prepare(tmp_path: Path) -> None:
    train = hotel_rows(12)
    eval_rows = [
        {"text": "is the spa open late tonight", "labels": ["spa"]},
        {"text": "see you at seven", "labels": []},
        {"text": "why was my table booking dropped", "labels": ["why", "booking", "restaurant"]},
    ]
    result, config = check(tmp_path, train, eval_rows)
    assert issues(result) == []
    loaded = result.train.loaded
    assert loaded.multi_label and result.eval is not None and result.eval.loaded.multi_label
    assert loaded.labels() is None  # no one label per record
    assert loaded.label_sets() is not None and loaded.label_sets()[:3] == [
        ("spa",),
        ("spa", "why"),
        (),
    ]

    prepared = prepare_data(result, config, tmp_path / "out")
    assert prepared.lock.multi_label and read_lock(prepared.folder).multi_label
    assert prepared.lock.labels == ["booking", "restaurant", "spa", "why"]
    assert read_jsonl(prepared.train_path) == train  # lists as they were, [] included
    assert read_jsonl(prepared.eval_path) == eval_rows
    opened = open_prepared(prepared.folder)
    assert opened.train.multi_label and opened.eval.label_sets() == [
        ("spa",),
        (),
        ("booking", "restaurant", "why"),
    ]


def test_integer_labels_in_lists_are_compared_as_strings(tmp_path: Path) -> None:
    rows = [{"text": text(n), "labels": [n % 3, "x"] if n % 2 else [n % 3]} for n in range(8)]
    result, _ = check(tmp_path, rows, [{"text": "something else", "labels": ["1", 2]}])
    assert issues(result) == []
    assert result.train.loaded.label_sets()[1] == ("1", "x")  # type: ignore[index]


def test_split_without_eval_is_plain_seeded_and_says_so(tmp_path: Path) -> None:
    result, config = check(tmp_path, hotel_rows(20), val_set_size=0.25, seed=3)
    prepared = prepare_data(result, config, tmp_path / "out")
    assert prepared.lock.size == 5 and prepared.lock.split["stratify"] is False
    assert any("not stratified" in note for note in prepared.notes)
    again = prepare_data(result, config, tmp_path / "again")
    assert again.lock.eval_sha256 == prepared.lock.eval_sha256
    rows = read_jsonl(prepared.train_path) + read_jsonl(prepared.eval_path)
    assert sorted(map(json.dumps, rows)) == sorted(map(json.dumps, hotel_rows(20)))


def test_split_indices_does_not_stratify_multi_label_data() -> None:
    train, held, notes = split_indices(None, 10, 0.3, seed=0, stratify=True, multi_label=True)
    assert len(held) == 3 and sorted(train + held) == list(range(10))
    assert notes == [
        "multi-label data: the split is not stratified (a plain seeded split), so label "
        "proportions may differ between train and eval"
    ]
    assert split_indices(None, 10, 0.3, seed=0, stratify=True)[:2] == (train, held)


def test_a_single_label_among_lists_is_named_on_each_line(tmp_path: Path) -> None:
    rows = hotel_rows(8)
    rows[2] = {"text": text(40), "labels": "spa"}
    rows[5] = {"text": text(41), "labels": 7}
    result, config = check(tmp_path, rows)
    mixed = [i for i in result.train.loaded.issues if i.error == "mixed_label_kinds"]
    assert [(i.line, i.field, i.severity) for i in mixed] == [
        (3, "labels", "error"),
        (6, "labels", "error"),
    ]
    assert mixed[0].message == (
        "a single label, but the rest of this file (6 records) uses lists of labels "
        "(multi-label data)"
    )
    assert str(mixed[0]).startswith(f"{tmp_path / 'train.jsonl'}:3: mixed_label_kinds [labels]")
    prepared = prepare_data(result, config, tmp_path / "out")
    written = prepared.train_path.read_text() + prepared.eval_path.read_text()
    assert text(40) not in written and text(41) not in written


def test_a_list_among_single_labels_is_named(tmp_path: Path) -> None:
    rows = [{"text": text(n), "label": ["a", "b"][n % 2]} for n in range(6)]
    rows[4] = {"text": text(9), "label": ["a"]}
    result, _ = check(tmp_path, rows)
    assert not result.train.loaded.multi_label
    (issue,) = result.train.loaded.issues
    assert (issue.line, issue.error, issue.field) == (5, "wrong_type", "label")  # as before
    assert issue.message == (
        "a list of labels, but the rest of this file (5 records) has one label per record "
        "(single-label data)"
    )


def test_eval_labels_must_be_the_kind_the_training_data_uses(tmp_path: Path) -> None:
    eval_rows = [{"text": "is the spa open", "labels": ["spa"]}, {"text": "hi", "labels": "spa"}]
    result, _ = check(tmp_path, hotel_rows(12), eval_rows)
    assert issues(result) == [("eval.jsonl", 2, "mixed_label_kinds", "labels")]
    assert result.eval is not None
    assert "but the training data uses lists of labels" in result.eval.loaded.issues[0].message
    single = [{"text": text(n), "label": ["a", "b"][n % 2]} for n in range(6)]
    result, _ = check(tmp_path, single, [{"text": "hello there", "label": ["a"]}])
    assert issues(result) == [("eval.jsonl", 1, "wrong_type", "label")]
    assert result.eval is not None and result.eval.loaded.issues[0].message == (
        "a list of labels, but the training data has one label per record (single-label data)"
    )


@pytest.mark.parametrize(
    ("labels", "error", "field"),
    [
        (["spa", 2.5], "wrong_type", "labels[1]"),
        (["spa", True], "wrong_type", "labels[1]"),
        ([["spa"]], "wrong_type", "labels[0]"),
        (["spa", "why", ""], "missing_label", "labels[2]"),
        ([None], "missing_label", "labels[0]"),
        (["spa", "why", "spa"], "duplicate_label", "labels[2]"),
        ([3, "3"], "duplicate_label", "labels[1]"),
    ],
)
def test_a_bad_list_element_is_an_error_naming_its_position(
    tmp_path: Path, labels: list[Any], error: str, field: str
) -> None:
    rows = hotel_rows(8)
    rows[3] = {"text": "the record with the bad list", "labels": labels}
    result, config = check(tmp_path, rows)
    assert issues(result) == [("train.jsonl", 4, error, field)]
    assert result.train.loaded.issues[0].severity == "error"
    assert 4 not in [r.line for r in result.train.loaded.records]
    prepared = prepare_data(result, config, tmp_path / "out")
    written = prepared.train_path.read_text() + prepared.eval_path.read_text()
    assert "the record with the bad list" not in written
    with pytest.raises(DataError, match="--strict"):
        prepare_data(result, config, tmp_path / "strict", strict=True)
    assert not (tmp_path / "strict" / "eval.lock").exists()


def test_duplicate_label_message_names_the_first_place(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "a", "labels": ["spa", "why", "spa"]}])
    (issue,) = load(path).issues
    assert issue.message == "label 'spa' is already labels[0]; list each label once"


def test_the_out_of_scope_label_inside_a_list_is_an_error(tmp_path: Path) -> None:
    rows = hotel_rows(8)
    rows[1] = {"text": "what is the meaning of life", "labels": ["oos"]}
    eval_rows = [
        {"text": "tell me a joke", "labels": []},
        {"text": "sing me a song please", "labels": ["spa", "oos"]},
    ]
    result, _ = check(tmp_path, rows, eval_rows, out_of_scope_label="oos")
    assert issues(result) == [
        ("train.jsonl", 2, "out_of_scope_in_list", "labels[0]"),
        ("eval.jsonl", 2, "out_of_scope_in_list", "labels[1]"),  # not also unknown_label
    ]
    assert "an out-of-scope query has no intent: write the empty list" in str(
        result.train.loaded.issues[0]
    )


def test_single_label_data_may_still_use_the_out_of_scope_label(tmp_path: Path) -> None:
    rows = [{"text": text(n), "label": ["a", "b"][n % 2]} for n in range(6)]
    result, _ = check(tmp_path, rows, [{"text": "what is life", "label": "oos"}])
    assert issues(result) == [("eval.jsonl", 1, "unknown_label", "label")]  # as before
    result, _ = check(
        tmp_path, rows, [{"text": "what is life", "label": "oos"}], out_of_scope_label="oos"
    )
    assert issues(result) == []


def test_eval_labels_not_in_training_are_unknown(tmp_path: Path) -> None:
    eval_rows = [{"text": "can i bring my dog", "labels": ["spa", "pets"]}]
    result, _ = check(tmp_path, hotel_rows(12), eval_rows)
    assert issues(result) == [("eval.jsonl", 1, "unknown_label", "labels[1]")]
    assert result.eval is not None
    assert "label 'pets' is not one of the 4 known labels" in result.eval.loaded.issues[0].message


def test_labels_too_rare_to_split_are_a_warning_naming_label_file_and_line(
    tmp_path: Path,
) -> None:
    rows = hotel_rows(12)
    rows[4] = {"text": "is there a gym on site", "labels": ["gym", "booking"]}
    result, config = check(tmp_path, rows)
    assert issues(result) == []  # a warning in the report, not an error on the record
    path = str(tmp_path / "train.jsonl")
    labels = result.report["labels"]
    assert labels["too_rare_to_split"] == [{"label": "gym", "path": path, "lines": [5]}]
    (note,) = [n for n in result.report["guidance"] if "per-label threshold" in n["message"]]
    assert note["level"] == "warn"
    assert note["message"].startswith("1 labels have fewer than 2 training records")
    assert note["message"].endswith(f": 'gym' ({path}:5)")
    assert f"- gym: `{path}:5`" in to_markdown(result.report)
    assert prepare_data(result, config, tmp_path / "out").lock.size > 0


def test_label_counts_are_per_label_with_no_intent_apart(tmp_path: Path) -> None:
    eval_rows = [
        {"text": "is the spa open late tonight", "labels": ["spa"]},
        {"text": "see you at seven", "labels": []},
    ]
    result, _ = check(tmp_path, hotel_rows(12), eval_rows)
    labels = result.report["labels"]
    # 12 rows cycle through [spa], [why, spa], [], [booking, restaurant], [booking], []
    assert labels["train_counts"] == {"booking": 4, "restaurant": 2, "spa": 4, "why": 2}
    assert labels["eval_counts"] == {"spa": 1}
    assert labels["no_intent"] == {"train": 4, "eval": 1}
    assert labels["records"] == {"train": 12, "eval": 2}
    assert (labels["classes"], labels["min_per_class"], labels["max_per_class"]) == (4, 2, 4)
    messages = [n["message"] for n in result.report["guidance"]]
    assert (
        "multi-label data: 4 of 12 training records have no label (no intent), 1 of 2 eval "
        "records; a record with several labels counts once for each."
    ) in messages
    assert "4 classes have fewer than 10 training examples" in " ".join(messages)
    markdown = to_markdown(result.report)
    assert "| booking | 4 | 0 |" in markdown and "| (no intent) | 4 | 1 |" in markdown


def test_copies_with_different_label_sets_conflict(tmp_path: Path) -> None:
    rows = hotel_rows(12)
    rows.append({"text": rows[0]["text"], "labels": ["spa", "why"]})  # rows[0] says [spa]
    rows.append({"text": rows[2]["text"], "labels": []})  # the same, no intent both times
    result, _ = check(tmp_path, rows)
    duplicates = result.report["duplicates"]["train"]
    assert (duplicates["exact_groups"], duplicates["conflicting_label_groups"]) == (2, 1)


def test_single_label_data_is_unchanged(tmp_path: Path) -> None:
    rows = [{"text": text(n), "label": ["card", "refund", 3][n % 3]} for n in range(30)]
    result, config = check(tmp_path, rows)
    loaded = result.train.loaded
    assert not loaded.multi_label and issues(result) == []
    assert loaded.labels() == ["card", "refund", "3"] * 10
    assert loaded.label_sets() == [("card",), ("refund",), ("3",)] * 10
    assert not {"multi_label", "no_intent"} & set(result.report["labels"])
    prepared = prepare_data(result, config, tmp_path / "out")
    assert not prepared.lock.multi_label and prepared.lock.labels == ["3", "card", "refund"]
    assert prepared.lock.split["stratify"] is True
    assert not any("multi-label" in note for note in prepared.notes)


def test_a_lock_without_multi_label_reads_as_single_label(tmp_path: Path) -> None:
    rows = [{"text": text(n), "labels": [["a"], ["b"]][n % 2]} for n in range(10)]
    result, config = check(tmp_path, rows)
    folder = prepare_data(result, config, tmp_path / "out").folder
    raw = json.loads((folder / "eval.lock").read_text())
    assert raw["multi_label"] is True
    (folder / "eval.lock").write_text(json.dumps({**raw, "multi_label": "yes"}))
    with pytest.raises(EvalLockError, match="field 'multi_label' must be true or false"):
        read_lock(folder)
    del raw["multi_label"]
    (folder / "eval.lock").write_text(json.dumps(raw))
    assert read_lock(folder).multi_label is False


def test_issue_messages_never_echo_a_raw_label(tmp_path: Path) -> None:
    rows = hotel_rows(6)
    rows[0] = {"text": "x y z", "labels": ["jane.doe@example.com", "jane.doe@example.com"]}
    result, _ = check(tmp_path, rows)
    (issue,) = result.train.loaded.issues
    assert isinstance(issue, DataIssue) and issue.error == "duplicate_label"
    assert "jane.doe@example.com" not in str(issue) and "<EMAIL>" in issue.message
