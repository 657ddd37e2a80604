"""Convert the development sets (banking77, restaurant8k, e2e_nlg, covidqa) into the JSONL
formats adaptlab reads.

Every converter reads the whole source, validates every record, and only then writes the output
through :func:`adaptlab.paths.atomic_write`: a bad record raises :class:`DataError` naming the
file, the record and the field, and leaves nothing new at ``out``.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from adaptlab.data.formats import is_blank, json_type, quoted_names
from adaptlab.data.issues import DataError, DataIssue
from adaptlab.paths import atomic_write

BANKING77_COLUMNS = ("text", "category")

# The five restaurant8k slots, in the order the assistant turn lists them; any other slot name
# follows alphabetically so the target string is deterministic.
SLOT_ORDER = ("people", "date", "time", "first_name", "last_name")

DEFAULT_SLOT_SYSTEM_PROMPT = (
    "Extract the restaurant-booking details from the user's message. "
    "Slots: people, date, time, first_name, last_name. "
    "Answer with a JSON object only, mapping each slot that is mentioned to its exact text "
    "in the message; answer {} if none is mentioned."
)

_JSON_WS = re.compile(r"[ \t\n\r]*")


@dataclass(frozen=True)
class ConversionSummary:
    """What one conversion read and wrote.

    ``label_counts`` is filled for classification sets (records per label); ``slot_counts``,
    ``no_slots`` and ``repeated_slots`` for slot-filling sets. ``repeated_slots`` counts the
    labels dropped because their slot already had a value in the same record (the first span
    is kept).
    """

    source: Path
    output: Path
    records: int
    label_counts: Mapping[str, int] = field(default_factory=dict)
    slot_counts: Mapping[str, int] = field(default_factory=dict)
    no_slots: int = 0
    repeated_slots: int = 0

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready view (paths as strings) for reports and logs."""
        return {
            "source": str(self.source),
            "output": str(self.output),
            "records": self.records,
            "label_counts": dict(self.label_counts),
            "slot_counts": dict(self.slot_counts),
            "no_slots": self.no_slots,
            "repeated_slots": self.repeated_slots,
        }


def _error(path: Path, line: int, error: str, message: str, field: str | None = None) -> DataError:
    return DataError(
        str(DataIssue(path=str(path), line=line, error=error, message=message, field=field))
    )


def _read_text(path: Path) -> str:
    """Read ``path`` as UTF-8 without newline translation, so texts stay byte-for-byte exact."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        # utf-8-sig drops a leading byte-order mark, which would otherwise corrupt the first
        # CSV column name or make the JSON parser fail.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise _error(path, line, "not_utf8", f"byte {exc.start} is not valid UTF-8") from exc


def _write_jsonl(out: Path, records: Iterable[object]) -> None:
    with atomic_write(out) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


# --- banking77 -------------------------------------------------------------------------------


def _banking77_rows(src: Path) -> Iterator[tuple[int, str, str]]:
    """Yield (start line, text, category) for every CSV record, validating the structure."""
    reader = csv.DictReader(io.StringIO(_read_text(src), newline=""))
    columns = list(reader.fieldnames or [])
    missing = [name for name in BANKING77_COLUMNS if name not in columns]
    if missing:
        found = quoted_names(columns)  # a headerless file shows a record here: scrubbed
        raise _error(
            src, 1, "missing_column", f"needs columns {missing}; found {found}", field=missing[0]
        )
    last_line = reader.line_num
    for row in reader:
        # A quoted text can span lines: the record starts on the line after the previous one.
        start, last_line = last_line + 1, reader.line_num
        if None in row:
            raise _error(src, start, "extra_field", "row has more fields than the header")
        for name in BANKING77_COLUMNS:
            if row[name] is None:
                raise _error(src, start, "missing_field", "row has too few fields", field=name)
        yield start, row["text"], row["category"]


def convert_banking77(src: Path, out: Path) -> ConversionSummary:
    """Convert a banking77 CSV (``text,category``) into JSONL ``{"text", "label"}`` lines.

    Text and label are copied exactly (no stripping); quoted multi-line texts keep their
    newlines. Raises :class:`DataError` for a missing column or a malformed row.
    """
    records = [{"text": text, "label": label} for _, text, label in _banking77_rows(src)]
    _write_jsonl(out, records)
    counts = Counter(record["label"] for record in records)
    return ConversionSummary(
        source=src, output=out, records=len(records), label_counts=dict(sorted(counts.items()))
    )


# --- restaurant8k ----------------------------------------------------------------------------


def _skip_ws(text: str, pos: int) -> int:
    match = _JSON_WS.match(text, pos)
    return match.end() if match else pos


def _iter_json_array(path: Path, text: str) -> Iterator[tuple[int, int, Any]]:
    """Yield (index, start line, item) for each element of a top-level JSON array.

    Decoding element by element (instead of ``json.loads`` on the whole file) costs nothing
    extra and gives the line where each record starts, so errors can point at it.
    """
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if not text.startswith("[", pos):
        raise _error(path, 1, "not_json_array", "expected a JSON array of records")
    pos, index, line, counted = _skip_ws(text, pos + 1), 0, 1, 0
    empty = text.startswith("]", pos)
    while not empty:
        line, counted = line + text.count("\n", counted, pos), pos
        try:
            item, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise _error(path, exc.lineno, "invalid_json", f"record {index}: {exc.msg}") from exc
        yield index, line, item
        index, pos = index + 1, _skip_ws(text, pos)
        if text.startswith(",", pos):
            pos = _skip_ws(text, pos + 1)
        elif text.startswith("]", pos):
            break
        else:
            where = text.count("\n", 0, pos) + 1
            raise _error(
                path, where, "invalid_json", f"expected ',' or ']' after record {index - 1}"
            )
    if _skip_ws(text, pos + 1) != len(text):
        raise _error(path, text.count("\n", 0, pos) + 1, "invalid_json", "data after the array")


@dataclass(frozen=True)
class _Where:
    """Where a restaurant8k record sits, to build errors that name it."""

    path: Path
    index: int
    line: int

    def error(self, field: str, message: str, error: str = "invalid_record") -> DataError:
        return _error(self.path, self.line, error, f"record {self.index}: {message}", field)


def _is_int(value: object) -> TypeGuard[int]:
    # bool is an int subclass, but `true` is not an index.
    return isinstance(value, int) and not isinstance(value, bool)


def _span_value(text: str, span: object, where: _Where, field: str) -> str:
    """The exact substring a ``valueSpan`` points at; an absent ``startIndex`` means 0."""
    if not isinstance(span, dict):
        raise where.error(field, "valueSpan must be an object")
    start, end = span.get("startIndex", 0), span.get("endIndex")
    if not _is_int(start) or not _is_int(end):
        raise where.error(field, "startIndex/endIndex must be integers")
    # Empty spans are rejected too: a slot whose value is "" carries no information and would
    # teach the model to emit empty values.
    if not 0 <= start < end <= len(text):
        raise where.error(
            field, f"span [{start}, {end}) is outside the {len(text)}-character text", "bad_span"
        )
    return text[start:end]


def _record_slots(text: str, labels: object, where: _Where) -> tuple[dict[str, str], int]:
    """Slot -> value for one record, and how many repeated labels were dropped.

    A slot labelled twice keeps its first span (the real data has none; the rule is here so a
    future file cannot silently overwrite one value with another).
    """
    if labels is None:
        return {}, 0
    if not isinstance(labels, list):
        raise where.error("labels", "labels must be a list")
    slots: dict[str, str] = {}
    repeated = 0
    for number, label in enumerate(labels):
        slot = label.get("slot") if isinstance(label, dict) else None
        if not isinstance(slot, str) or not slot:
            raise where.error(f"labels[{number}].slot", "slot must be a non-empty string")
        value = _span_value(text, label.get("valueSpan"), where, f"labels[{number}].valueSpan")
        if slot in slots:
            repeated += 1
        else:
            slots[slot] = value
    return slots, repeated


def _requested_slots(item: dict[str, Any], where: _Where) -> list[str]:
    context = item.get("context")
    if context is None:
        return []
    requested = context.get("requestedSlots", []) if isinstance(context, dict) else None
    if not isinstance(requested, list) or not all(isinstance(s, str) for s in requested):
        raise where.error("context.requestedSlots", "requestedSlots must be a list of strings")
    return requested


def _slot_sort_key(slot: str) -> tuple[int, str]:
    return (SLOT_ORDER.index(slot) if slot in SLOT_ORDER else len(SLOT_ORDER), slot)


def _chat_record(
    item: object, where: _Where, system_prompt: str | None
) -> tuple[dict[str, Any], dict[str, str], int]:
    """One source item as a chat record, plus its slots and repeated-label count."""
    if not isinstance(item, dict):
        raise where.error("record", "record must be an object")
    user = item.get("userInput")
    text = user.get("text") if isinstance(user, dict) else None
    if not isinstance(text, str):
        raise where.error("userInput.text", "userInput.text must be a string")
    slots, repeated = _record_slots(text, item.get("labels"), where)
    ordered = {slot: slots[slot] for slot in sorted(slots, key=_slot_sort_key)}
    messages = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    messages += [
        {"role": "user", "content": text},
        {"role": "assistant", "content": json.dumps(ordered, ensure_ascii=False)},
    ]
    metadata = {"source_index": where.index, "requested_slots": _requested_slots(item, where)}
    return {"messages": messages, "metadata": metadata}, ordered, repeated


def convert_restaurant8k(
    src: Path, out: Path, *, system_prompt: str | None = DEFAULT_SLOT_SYSTEM_PROMPT
) -> ConversionSummary:
    """Convert a restaurant8k JSON array into OpenAI chat JSONL for slot extraction.

    Each line holds an optional system turn, the utterance exactly as the user turn, and the
    assistant turn ``json.dumps({slot: value})`` with slots in :data:`SLOT_ORDER` (then any
    other alphabetically); ``"{}"`` when the item has no labels. ``metadata`` keeps the source
    index and the requested slots. A span out of range, inverted or empty raises
    :class:`DataError` naming the file, the record index (and its line) and the field; a slot
    labelled twice keeps its first span and is counted in ``repeated_slots``.
    """
    text = _read_text(src)
    records: list[dict[str, Any]] = []
    slot_counts: Counter[str] = Counter()
    no_slots = repeated = 0
    for index, line, item in _iter_json_array(src, text):
        record, slots, dropped = _chat_record(item, _Where(src, index, line), system_prompt)
        records.append(record)
        slot_counts.update(slots.keys())
        no_slots += not slots
        repeated += dropped
    _write_jsonl(out, records)
    return ConversionSummary(
        source=src,
        output=out,
        records=len(records),
        slot_counts={slot: slot_counts[slot] for slot in sorted(slot_counts, key=_slot_sort_key)},
        no_slots=no_slots,
        repeated_slots=repeated,
    )


def restaurant8k_slots(messages_record: Mapping[str, Any]) -> dict[str, str]:
    """Parse the assistant turn of a chat record back into ``{slot: value}``.

    Uses the last assistant message. Raises :class:`DataError` when there is none or its
    content is not a JSON object of strings.
    """
    messages = messages_record.get("messages")
    if not isinstance(messages, list):
        raise DataError("chat record has no 'messages' list")
    answers = [m for m in messages if isinstance(m, dict) and m.get("role") == "assistant"]
    if not answers:
        raise DataError("chat record has no assistant message")
    content = answers[-1].get("content")
    try:
        slots = json.loads(content) if isinstance(content, str) else None
    except json.JSONDecodeError as exc:
        raise DataError(f"assistant content is not JSON: {exc.msg}") from exc
    if not isinstance(slots, dict) or not all(isinstance(v, str) for v in slots.values()):
        raise DataError("assistant content must be a JSON object of slot -> string value")
    return slots


# --- JSONL sources (e2e_nlg, covidqa) ---------------------------------------------------------


def _json_objects(src: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line, object) for every non-blank line of a JSONL file."""
    for number, line in enumerate(_read_text(src).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _error(src, number, "invalid_json", exc.msg) from None
        if not isinstance(item, dict):
            raise _error(src, number, "wrong_type", "a record must be a JSON object")
        yield number, item


# --- e2e_nlg ---------------------------------------------------------------------------------


def convert_e2e_nlg(src: Path, out: Path) -> ConversionSummary:
    """Convert E2E NLG's multi-reference test file (``test_multiref.jsonl``: one
    ``{"id", "mr", "prompt", "references"}`` line per meaning representation) into chat
    records a free-text task is scored on: the prompt as the user turn, the first reference
    as the answer, and every reference in ``references`` (the challenge scored against all).

    The chat files beside it (``train.jsonl``, ``valid.jsonl``) are read as they are. Raises
    :class:`DataError` naming the line and field of a record without a prompt or references.
    """
    records = []
    for number, item in _json_objects(src):
        prompt, references = item.get("prompt"), item.get("references")
        if not isinstance(prompt, str) or not prompt.strip():
            raise _error(src, number, "missing_field", "no prompt text", field="prompt")
        if (
            not isinstance(references, list)
            or not references
            or not all(isinstance(r, str) and r.strip() for r in references)
        ):
            message = "references must be a non-empty list of non-empty strings"
            raise _error(src, number, "wrong_type", message, field="references")
        messages = [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": references[0]},
        ]
        records.append({"messages": messages, "references": references})
    if not records:
        raise _error(src, 1, "empty_file", "no records")
    _write_jsonl(out, records)
    return ConversionSummary(source=src, output=out, records=len(records))


# --- covidqa ---------------------------------------------------------------------------------


def _required_text(src: Path, line: int, item: dict[str, Any], name: str) -> str:
    """``item[name]`` as it is, or the error naming the line and field when it is absent, not a
    string or blank."""
    if name not in item:
        raise _error(src, line, "missing_field", "field is absent", field=name)
    value = item[name]
    if not isinstance(value, str):
        message = f"a string is expected, found {json_type(value)}"
        raise _error(src, line, "wrong_type", message, field=name)
    if is_blank(value):
        raise _error(src, line, "empty_text", "the text is empty", field=name)
    return value


def _covidqa_record(src: Path, line: int, item: dict[str, Any]) -> dict[str, Any]:
    question, answer, doc_id = (
        _required_text(src, line, item, name) for name in ("question", "answer", "doc_id")
    )
    record: dict[str, Any] = {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ],
        "documents": [doc_id],
    }
    if isinstance(item.get("id"), str) and not is_blank(item["id"]):
        record["id"] = item["id"]
    return record


def convert_covidqa(src: Path, out: Path) -> ConversionSummary:
    """Convert a COVID-QA question file (``questions_train.jsonl``/``questions_test.jsonl``:
    ``{"id", "question", "answer", "doc_id", "article_id", "split"}`` lines) into chat records
    for retrieval-augmented generation.

    COVID-QA: Möller et al., "COVID-QA: A Question Answering Dataset for COVID-19", NLP-COVID
    workshop at ACL 2020 (deepset); the annotations are Apache-2.0, the passages they point at
    (``passages.jsonl``, the collection) come from CORD-19 articles under CC BY.

    The question becomes the user turn and the answer (a span of its passage) the assistant
    turn, both exactly as written; ``doc_id``, the gold passage, becomes ``documents:
    [doc_id]``, and ``id`` is kept when it is a non-empty string. ``article_id`` and ``split``
    are dropped: the passage id names the article, the file names the split. Raises
    :class:`DataError` naming the file, line and field of a record whose ``question``,
    ``answer`` or ``doc_id`` is absent, not a string or blank.
    """
    records = [_covidqa_record(src, line, item) for line, item in _json_objects(src)]
    if not records:
        raise _error(src, 1, "empty_file", "no records")
    _write_jsonl(out, records)
    return ConversionSummary(source=src, output=out, records=len(records))
