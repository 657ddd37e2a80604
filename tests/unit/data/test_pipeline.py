"""check → prepare: PII never leaks, duplicates are dropped from train only, contamination is
refused unless overridden (and the override is recorded), and the eval set is locked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adaptlab.config import DataConfig, ModelConfig
from adaptlab.data.contamination import ContaminationError
from adaptlab.data.formats import Layout
from adaptlab.data.issues import DataError
from adaptlab.data.lock import EvalLockError, read_lock, verify_lock
from adaptlab.data.pii import PII_TYPES
from adaptlab.data.pipeline import (
    check_data,
    open_prepared,
    prepare_data,
    scrub_record,
    write_report,
)
from adaptlab.models.bundled import load_tokenizer

INTENTS = {
    "card_lost": ["I lost my card {n} days ago", "my card went missing on day {n}"],
    "top_up": ["top up of {n} pounds failed", "why did my {n} pound top-up fail"],
    "refund": ["I want refund number {n} back", "where is my refund for order {n}"],
}


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_tokenizer("sentence-transformers/all-MiniLM-L6-v2")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def dataset(count: int = 20) -> list[dict[str, Any]]:
    # Distinct words per item keep near-duplicate detection out of the way of the split.
    words = [
        "alpha",
        "bravo",
        "charlie",
        "delta",
        "echo",
        "foxtrot",
        "golf",
        "hotel",
        "india",
        "juliet",
        "kilo",
        "lima",
        "mike",
        "november",
        "oscar",
        "papa",
        "quebec",
        "romeo",
        "sierra",
        "tango",
        "uniform",
        "victor",
        "whiskey",
        "xray",
        "yankee",
        "zulu",
    ]
    rows = []
    for label, templates in INTENTS.items():
        for n in range(count):
            text = templates[n % 2].format(n=n * 37) + f" {words[n % 26]} {words[(n * 7) % 26]}"
            rows.append({"text": text, "label": label})
    return rows


def check(
    tmp_path: Path,
    train: list[dict[str, Any]],
    tokenizer: Any,
    eval_rows: list[dict[str, Any]] | None = None,
    **data: Any,
) -> Any:
    train_path = write_jsonl(tmp_path / "train.jsonl", train)
    eval_path = write_jsonl(tmp_path / "eval.jsonl", eval_rows) if eval_rows is not None else None
    config = DataConfig(train=str(train_path), eval=str(eval_path) if eval_path else None, **data)
    return check_data(config, ModelConfig(sequence_len=16), tokenizer=tokenizer), config


def test_pii_is_scrubbed_and_never_reported(tmp_path: Path, tokenizer: Any) -> None:
    rows = dataset()
    rows[0] = {
        "text": "mail me at jane.doe@example.com or call +44 20 7946 0958",
        "label": "refund",
    }
    result, config = check(tmp_path, rows, tokenizer)
    assert result.report["pii"]["counts"]["train"]["EMAIL"] == 1
    assert result.report["pii"]["counts"]["train"]["PHONE"] == 1
    prepared = prepare_data(result, config, tmp_path / "out")
    written = prepared.train_path.read_text() + prepared.eval_path.read_text()
    write_report(result.report, tmp_path / "out")
    reports = (tmp_path / "out" / "data_report.json").read_text()
    reports += (tmp_path / "out" / "data_report.md").read_text()
    for secret in ("jane.doe@example.com", "7946 0958"):
        assert secret not in written and secret not in reports
    assert "<EMAIL>" in written and "<PHONE>" in written


def test_duplicates_are_dropped_from_train_and_reported(tmp_path: Path, tokenizer: Any) -> None:
    rows = dataset()
    rows += [dict(rows[3]), {"text": rows[5]["text"].upper() + "!", "label": "top_up"}]
    result, _ = check(tmp_path, rows, tokenizer)
    dup = result.report["duplicates"]["train"]
    assert dup["exact_groups"] == 2 and dup["dropped"] == 2
    assert dup["conflicting_label_groups"] == 1  # rows[5] is card_lost, its copy says top_up
    assert {g["keep_line"] for g in dup["groups"]} == {4, 6}
    assert len(result.train.keep) == len(rows) - 2


def test_given_eval_duplicates_are_reported_not_dropped(tmp_path: Path, tokenizer: Any) -> None:
    rows = dataset()
    eval_rows = [{"text": "brand new question about cards", "label": "card_lost"}] * 2
    result, _ = check(tmp_path, rows, tokenizer, eval_rows)
    assert result.report["duplicates"]["eval"]["exact_groups"] == 1
    assert len(result.eval.keep) == 2


def test_contaminated_eval_is_refused_then_overridden_and_recorded(
    tmp_path: Path, tokenizer: Any
) -> None:
    rows = dataset()
    eval_rows = [dict(rows[0]), {"text": "something nobody asked before", "label": "refund"}]
    result, config = check(tmp_path, rows, tokenizer, eval_rows)
    assert result.report["contamination"]["eval_items"] == 1
    with pytest.raises(ContaminationError, match="1 eval items also appear") as caught:
        prepare_data(result, config, tmp_path / "refused")
    assert "eval lines: 1" in str(caught.value)
    assert not (tmp_path / "refused" / "eval.lock").exists()

    allowed = DataConfig(**{**config.model_dump(), "allow_contaminated": True})
    lock = prepare_data(result, allowed, tmp_path / "allowed").lock
    assert lock.contamination.override == "allow_contaminated"
    assert lock.contamination.overlaps == 1

    cleaned = DataConfig(**{**config.model_dump(), "decontaminate": True})
    prepared = prepare_data(result, cleaned, tmp_path / "clean")
    assert prepared.lock.contamination.override == "decontaminate"
    assert prepared.lock.contamination.dropped_train == 1
    assert rows[0]["text"] not in prepared.train_path.read_text()


def test_training_entry_point_refuses_contamination_added_after_prepare(
    tmp_path: Path, tokenizer: Any
) -> None:
    result, config = check(tmp_path, dataset(), tokenizer)
    prepared = prepare_data(result, config, tmp_path / "out")
    opened = open_prepared(prepared.folder)
    assert len(opened.eval.records) == prepared.lock.size and not opened.overlaps
    smuggled = prepared.eval_path.read_text().splitlines()[0]
    with prepared.train_path.open("a") as handle:
        handle.write(smuggled + "\n")
    with pytest.raises(ContaminationError):
        open_prepared(prepared.folder)
    assert open_prepared(prepared.folder, allow_contaminated=True).allow_contaminated


def test_prepare_splits_stratified_and_locks(tmp_path: Path, tokenizer: Any) -> None:
    result, config = check(tmp_path, dataset(), tokenizer, val_set_size=0.25, seed=3)
    prepared = prepare_data(result, config, tmp_path / "out")
    eval_rows = [json.loads(x) for x in prepared.eval_path.read_text().splitlines()]
    assert len(eval_rows) == 15 and prepared.lock.size == 15
    assert sorted({r["label"] for r in eval_rows}) == sorted(INTENTS)
    lock = read_lock(prepared.folder)
    assert lock.split["seed"] == 3 and lock.split["val_set_size"] == 0.25
    assert lock == verify_lock(prepared.folder)
    again = prepare_data(result, config, tmp_path / "again")
    assert again.lock.eval_sha256 == lock.eval_sha256
    prepared.eval_path.write_text(prepared.eval_path.read_text().replace("refund", "refunds", 1))
    with pytest.raises(EvalLockError):
        verify_lock(prepared.folder)


def test_long_records_are_reported_not_truncated(tmp_path: Path, tokenizer: Any) -> None:
    rows = dataset()
    long_text = "please help me " * 20
    rows[2] = {"text": long_text, "label": "card_lost"}
    result, config = check(tmp_path, rows, tokenizer)
    assert result.report["tokens"]["train"]["over_limit"] == 1
    too_long = [i for i in result.train.loaded.issues if i.error == "too_long"]
    assert [(i.line, i.severity) for i in too_long] == [(3, "warning")]
    prepared = prepare_data(result, config, tmp_path / "out")
    assert long_text in prepared.train_path.read_text() + prepared.eval_path.read_text()
    with pytest.raises(DataError, match="--strict"):
        prepare_data(result, config, tmp_path / "strict", strict=True)


def test_size_guidance_flags_thin_classes(tmp_path: Path, tokenizer: Any) -> None:
    rows = [
        *dataset(),
        {"text": "a rare intent example one", "label": "rare"},
        {"text": "another rare intent sample two", "label": "rare"},
    ]
    result, _ = check(tmp_path, rows, tokenizer)
    messages = " ".join(n["message"] for n in result.report["guidance"])
    assert "fewer than 10 training examples: rare" in messages
    assert "fewer than 2 eval examples" in messages
    assert "task-specific classification usually needs 1,000–10,000" in messages
    assert result.report["labels"]["train_counts"]["rare"] == 2


def test_chat_data_counts_tokens_with_the_chat_template(tmp_path: Path) -> None:
    from adaptlab.models.bundled import SMOLLM2, load_tokenizer

    smol = load_tokenizer(SMOLLM2)
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"table for {n} at {n}pm"},
                {"role": "assistant", "content": json.dumps({"people": str(n)})},
            ]
        }
        for n in range(2, 12)
    ]
    train_path = write_jsonl(tmp_path / "chat.jsonl", rows)
    config = DataConfig(train=str(train_path), val_set_size=2)
    result = check_data(config, ModelConfig(base_model=SMOLLM2, sequence_len=64), tokenizer=smol)
    stats = result.report["tokens"]["train"]
    templated = len(smol.apply_chat_template(rows[0]["messages"], tokenize=True, return_dict=False))
    assert stats["count"] == 10 and stats["max"] >= templated > 10
    assert result.report["labels"] is None


def test_shared_system_prompt_does_not_make_chat_records_duplicates(tmp_path: Path) -> None:
    system = {"role": "system", "content": "Extract the booking slots as JSON. " * 8}
    rows = [
        {
            "messages": [
                system,
                {"role": "user", "content": utterance},
                {"role": "assistant", "content": answer},
            ]
        }
        for utterance, answer in [
            ("4", '{"people": "4"}'),
            ("7pm", '{"time": "7pm"}'),
            ("tomorrow", '{"date": "tomorrow"}'),
            ("4", '{"people": "4"}'),
        ]
    ]
    config = DataConfig(train=str(write_jsonl(tmp_path / "c.jsonl", rows)), val_set_size=1)
    result = check_data(config, ModelConfig(), tokenizer=_WordCounter())
    duplicates = result.report["duplicates"]["train"]
    assert (duplicates["exact_groups"], duplicates["near_groups"], duplicates["dropped"]) == (
        1,
        0,
        1,
    )


class _WordCounter:
    """A stand-in tokenizer (one token per word) where the test is not about tokenization."""

    chat_template = None

    def __call__(self, texts: list[str], add_special_tokens: bool = True) -> dict[str, Any]:
        return {"input_ids": [text.split() for text in texts]}


def test_pii_in_any_kept_field_is_scrubbed(tmp_path: Path, tokenizer: Any) -> None:
    rows = dataset()
    rows[0] = {
        "text": "where is my refund",
        "label": "refund",
        "customer": "jane.doe@example.com",
        "notes": {"callback": ["+44 20 7946 0958"]},
    }
    result, config = check(tmp_path, rows, tokenizer)
    assert result.report["pii"]["counts"]["train"]["EMAIL"] == 1
    assert result.report["pii"]["counts"]["train"]["PHONE"] == 1
    prepared = prepare_data(result, config, tmp_path / "out")
    written = prepared.train_path.read_text() + prepared.eval_path.read_text()
    for secret in ("jane.doe@example.com", "7946 0958"):
        assert secret not in written
    assert '"label": "refund"' in written  # the label is vocabulary, left as it is


def test_pii_in_a_chat_message_name_is_scrubbed(tmp_path: Path, tokenizer: Any) -> None:
    chats = [
        {
            "messages": [
                {"role": "user", "name": "jane.doe@example.com", "content": f"book table {n}"},
                {"role": "assistant", "content": f"booked {n} for you, call +44 20 7946 0958"},
            ]
        }
        for n in range(12)
    ]
    path = write_jsonl(tmp_path / "chat.jsonl", chats)
    config = DataConfig(train=str(path))
    result = check_data(config, ModelConfig(sequence_len=64), tokenizer=tokenizer)
    assert result.report["pii"]["counts"]["train"]["EMAIL"] == 12
    prepared = prepare_data(result, config, tmp_path / "out")
    written = prepared.train_path.read_text() + prepared.eval_path.read_text()
    assert "jane.doe@example.com" not in written and "7946 0958" not in written
    assert '"role": "user"' in written


def test_pii_scrubbing_leaves_record_and_document_ids_as_they_are(
    tmp_path: Path, tokenizer: Any
) -> None:
    # Ids are references: a scrubbed gold id would no longer match the collection's (whose ids
    # are not scrubbed either), turning a correct retrieval into a miss.
    documents = ["inbox/jane.doe@example.com.txt", "ticket-4111111111111111"]
    chats = [
        {
            "messages": [
                {"role": "user", "content": row["text"]},  # distinct, so no record is a duplicate
                {"role": "assistant", "content": f"ask jane.doe@example.com about {row['label']}"},
            ],
            "documents": documents,
            "id": f"jane.doe@example.com-{n}",
        }
        for n, row in enumerate(dataset(4))
    ]
    config = DataConfig(train=str(write_jsonl(tmp_path / "chat.jsonl", chats)))
    result = check_data(config, ModelConfig(sequence_len=64), tokenizer=tokenizer)
    counts = result.report["pii"]["counts"]["train"]
    assert {kind: n for kind, n in counts.items() if n} == {"EMAIL": 12}  # the answers only
    prepared = prepare_data(result, config, tmp_path / "out")
    written = [
        json.loads(line)
        for path in (prepared.train_path, prepared.eval_path)
        for line in path.read_text().splitlines()
    ]
    assert len(written) == 12
    for row in written:
        assert row["documents"] == documents and row["id"].startswith("jane.doe@example.com-")
        assert row["messages"][1]["content"].startswith("ask <EMAIL> about ")


def test_an_id_column_used_as_the_text_is_scrubbed() -> None:
    layout = Layout("classification", text_field="id", label_field="label")
    row, counts = scrub_record(layout, {"id": "mail jane.doe@example.com", "label": "x"}, PII_TYPES)
    assert row == {"id": "mail <EMAIL>", "label": "x"} and counts == {"EMAIL": 1}


@pytest.mark.parametrize("format", ["chat", "completion", "alpaca"])
def test_a_training_answer_longer_than_sequence_len_is_an_error_on_its_line(
    tmp_path: Path, format: str
) -> None:
    answers = ["short answer", "a much longer answer " * 10, "another short one"]

    def record(answer: str) -> dict[str, Any]:
        if format == "chat":
            return {
                "messages": [
                    {"role": "user", "content": "describe it"},
                    {"role": "assistant", "content": answer},
                ]
            }
        if format == "completion":
            return {"prompt": "describe it", "completion": answer}
        return {"instruction": "describe it", "output": answer}

    path = write_jsonl(tmp_path / "train.jsonl", [record(a) for a in answers])
    config = DataConfig(train=str(path), val_set_size=1, dedup=False)
    result = check_data(config, ModelConfig(sequence_len=20), tokenizer=_WordCounter())
    (issue,) = [i for i in result.train.loaded.issues if i.error == "answer_too_long"]
    field = {"chat": "messages[1].content", "completion": "completion", "alpaca": "output"}
    assert (issue.line, issue.field, issue.severity) == (2, field[format], "error")
    assert "40 tokens, longer than sequence_len 20" in issue.message
    kept = [row for row in result.train.kept_rows()]
    assert len(kept) == 2 and record(answers[1]) not in kept
