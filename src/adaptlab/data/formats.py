"""Read training data in the formats practitioners use, and validate every record.

Formats: ``classification`` (``text,label`` CSV/TSV/JSONL, with common column aliases; a
label may also be a list of labels, multi-label intent data where ``[]`` means no intent),
``chat`` (OpenAI chat JSONL: ``{"messages": [{"role", "content", "weight"?}]}``),
``completion`` (``prompt``/``completion``) and ``alpaca`` (``instruction``/``input``/``output``).
Files: ``.csv``, ``.tsv``, ``.jsonl``, ``.json`` (an array), ``.parquet``/``.arrow`` and folders
saved by HF ``datasets`` (read through ``datasets``), and hub dataset names for online users.

The reader never crashes on bad bytes and never changes a valid record: every record is either
kept exactly as read, or reported as a :class:`DataIssue` with its ``file:line``, an error
class and a one-line reason. For files read through ``datasets`` the "line" is the row number.

Messages never echo a record's content raw: they name the file, line and field and say what
kind of value was found ("a number", "3 fields"); where a value from the input helps (a column
name, an unknown label) it is quoted through :func:`quoted`, PII-scrubbed and cut short.
"""

from __future__ import annotations

import csv
import json
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from adaptlab.data.issues import DataError, DataIssue
from adaptlab.data.pii import scrub

FORMATS = ("classification", "chat", "completion", "alpaca")
TEXT_FIELDS = ("text", "sentence", "utterance", "query", "input_text", "content")
LABEL_FIELDS = ("label", "category", "intent", "class", "labels", "target")
CHAT_ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = ("role", "content", "weight", "name")
BOM = b"\xef\xbb\xbf"
QUOTE_LIMIT = 40  # characters of an input value a message may quote (after PII scrubbing)
MAX_QUOTED = 8  # column names or keys a message lists before "and N more"

# A 10 MB field must be readable: the csv module's default limit is 128 KiB per field.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True)
class Record:
    """One record exactly as read, with the 1-based line where it starts."""

    line: int
    data: dict[str, Any]


@dataclass
class LoadedData:
    """The valid records of one source, the issues of the others, and how it was read."""

    path: str
    format: str
    records: list[Record]
    issues: list[DataIssue] = field(default_factory=list)
    text_field: str | None = None
    label_field: str | None = None
    raw_count: int = 0
    multi_label: bool = False
    """Each record's label is a list of labels (multi-label data; ``[]``: no intent)."""

    def texts(self) -> list[str]:
        """The text of each record used for duplicates, PII and length statistics."""
        return [record_text(self, r.data) for r in self.records]

    def inputs(self) -> list[str]:
        """The input side of each record (what a model sees), used for contamination."""
        return [record_input(self, r.data) for r in self.records]

    def labels(self) -> list[str] | None:
        """Each record's label, for single-label classification data; None otherwise (a
        record of multi-label data has no one label: see :meth:`label_sets`)."""
        if self.format != "classification" or self.label_field is None or self.multi_label:
            return None
        return [label_key(r.data[self.label_field]) for r in self.records]

    def label_sets(self) -> list[tuple[str, ...]] | None:
        """Each record's labels, sorted and without repeats: its list in multi-label data
        (``()``: no intent), a one-label tuple in single-label data; None for other formats."""
        if self.format != "classification" or self.label_field is None:
            return None
        return [label_set(r.data[self.label_field]) for r in self.records]


def label_key(value: Any) -> str:
    """Labels may be strings or integers (HF ClassLabel ids); compare them as strings."""
    return value if isinstance(value, str) else str(value)


def label_set(value: Any) -> tuple[str, ...]:
    """A label field's value as sorted, distinct label keys: a list's elements, or one label."""
    values = value if isinstance(value, list) else [value]
    return tuple(sorted({label_key(item) for item in values}))


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """An input value as a message may show it: PII replaced by its type ("<EMAIL>"), control
    characters escaped, on one line and at most ``limit`` characters. Messages end up in
    terminals, logs and ``data_report.*``; a raw value must never reach them."""
    text = scrub(str(value))[0]
    text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in " ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quoted_names(names: Iterable[object]) -> str:
    """Up to ``MAX_QUOTED`` names, each :func:`quoted`: ``'a', 'b' and 3 more`` (no brackets:
    the command line prints messages through rich, which reads ``[word]`` as markup)."""
    listed = list(names)
    shown = ", ".join(f"'{quoted(name)}'" for name in listed[:MAX_QUOTED])
    more = len(listed) - MAX_QUOTED
    return (shown or "none") + (f" and {more} more" if more > 0 else "")


# --------------------------------------------------------------------------- reading raw rows


def read_rows(
    source: str | Path, hub_split: str = "train"
) -> Iterator[tuple[int, dict[str, Any] | DataIssue]]:
    """Yield ``(line, row)`` for every record of ``source``; bad rows come as a DataIssue.

    ``source`` that is not a path on disk but looks like ``owner/name`` is read from the hub
    (split ``hub_split``) for users who are online.
    """
    path = Path(source)
    if not path.exists():
        if _looks_like_hub_name(str(source)):
            yield from _read_with_datasets(str(source), split=hub_split)
            return
        raise DataError(f"{source}: no such file or folder")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix in (".parquet", ".arrow"):
        yield from _read_with_datasets(str(path))
    elif suffix in (".csv", ".tsv"):
        yield from _read_csv(path, delimiter="\t" if suffix == ".tsv" else ",")
    elif suffix == ".json" and _starts_with_array(path):
        yield from _read_json_array(path)
    elif suffix in (".jsonl", ".json", ".ndjson"):
        yield from _read_jsonl(path)
    else:
        raise DataError(
            f"{path}: unsupported file type '{suffix}'; use .csv, .tsv, .jsonl, .json, .parquet, "
            ".arrow or a folder saved by HF datasets"
        )


_FILE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".parquet", ".arrow")


def _looks_like_hub_name(name: str) -> bool:
    """``owner/name`` or ``name``; a missing ``data/x.jsonl`` is a missing file, not a hub id."""
    parts = name.split("/")
    return (
        len(parts) in (1, 2)
        and all(p and not p.startswith(".") for p in parts)
        and not name.lower().endswith(_FILE_SUFFIXES)
    )


def _issue(path: Path | str, line: int, error: str, message: str, **kw: Any) -> DataIssue:
    return DataIssue(str(path), line, error, message, **kw)


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | DataIssue]]:
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            raw = raw.rstrip(b"\r\n")
            if raw.startswith(BOM):
                # past line 1 a mark means files were joined (cat a.jsonl b.jsonl): the record
                # after it is fine, so it is kept, like the first line's
                yield line_no, _bom_issue(path, line_no)
                raw = raw[len(BOM) :]
            if not raw.strip():
                continue  # blank lines (a trailing newline, spacing) are not records
            yield line_no, _parse_json_line(path, line_no, raw)


def _bom_issue(path: Path, line: int = 1) -> DataIssue:
    where = "file starts" if line == 1 else "line starts (were files joined?)"
    return _issue(
        path,
        line,
        "bom",
        f"{where} with a UTF-8 byte-order mark; it was ignored",
        severity="warning",
    )


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` that refuses a key given twice: ``json`` would silently keep the
    last value and drop the other, and which one the writer meant is unknowable."""
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return value


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


def _duplicate_key_issue(path: Path, line: int, key: str) -> DataIssue:
    return _issue(
        path,
        line,
        "duplicate_key",
        f"key '{quoted(key)}' appears twice in one object; only one value could be kept",
        field=quoted(key),
    )


def _json_error(exc: json.JSONDecodeError) -> str:
    # json's messages name the problem, never the content ("Expecting value"); some end in
    # " at" because json itself appends the position
    return f"{exc.msg.removesuffix(' at')} at column {exc.colno}"


def _parse_json_line(path: Path, line_no: int, raw: bytes) -> dict[str, Any] | DataIssue:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _issue(
            path,
            line_no,
            "non_utf8",
            f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1} "
            "is not valid UTF-8 (re-save the file as UTF-8)",
        )
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        return _issue(path, line_no, "invalid_json", _json_error(exc))
    except _DuplicateKey as exc:
        return _duplicate_key_issue(path, line_no, exc.key)
    except RecursionError:
        return _issue(path, line_no, "invalid_json", "nesting too deep to parse")
    if not isinstance(value, dict):
        return _issue(
            path, line_no, "wrong_type", f"a JSON object is expected, found {json_type(value)}"
        )
    if b"\\ud" in raw.lower() and not _encodable(value):
        # JSON may escape half of a surrogate pair ("\\ud800"); such text cannot be written
        # back as UTF-8, so it is as broken as a bad byte.
        return _issue(path, line_no, "non_utf8", "contains an unpaired surrogate escape (\\ud8xx)")
    return value


def _encodable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_type(value: Any) -> str:
    """How a message names a JSON value's type ("an object", "a number", "null"...)."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _read_csv(path: Path, delimiter: str) -> Iterator[tuple[int, dict[str, Any] | DataIssue]]:
    # surrogateescape keeps undecodable bytes as lone surrogates, so one bad byte costs one
    # record (reported) instead of the whole file.
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as handle:
        lines = handle.readlines()  # split where csv splits (newline="": only CR, LF, CRLF)
    reader = csv.reader(lines, delimiter=delimiter, strict=False)
    header, bom = _read_header(path, reader)
    if bom:
        yield 1, _bom_issue(path)
    offset, consumed = 0, reader.line_num  # lines before the reader's; lines it has read
    while True:
        rest = lines[offset:]
        for line, item in _csv_rows(path, header, rest, reader, offset, consumed, delimiter):
            if isinstance(item, _Unterminated):
                yield line, _unterminated_issue(path, line, item.end)
                # Read on from the next line, so the lines the open quote swallowed are read
                # as what they are.
                offset, consumed = line, 0
                reader = csv.reader(lines[offset:], delimiter=delimiter, strict=False)
                break
            yield line, item
        else:
            return


@dataclass(frozen=True)
class _Unterminated:
    """A record whose first line opens a quote that is never closed where it should be: csv
    read on to line ``end`` (maybe the end of the file) as one field."""

    end: int


def _unterminated_issue(path: Path, line: int, end: int) -> DataIssue:
    span = f"lines {line}-{end} would be one malformed record" if end > line else "last line"
    return _issue(
        path,
        line,
        "unterminated_quote",
        f'a " opened here is never closed ({span}); the line is left out and the lines after '
        "it are read",
    )


def _csv_rows(
    path: Path,
    header: list[str],
    lines: list[str],
    reader: Any,
    offset: int,
    consumed: int,
    delimiter: str,
) -> Iterator[tuple[int, dict[str, Any] | DataIssue | _Unterminated]]:
    """The records of ``reader`` (which reads ``lines``, the file's lines after line
    ``offset``, and has read ``consumed`` of them) by their first line; an
    :class:`_Unterminated` for one whose opening quote swallowed the lines after it."""
    last_line = consumed
    while True:
        start = offset + last_line + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield start, _issue(path, start, "invalid_csv", quoted(exc, 200))
            last_line = reader.line_num
            continue
        first, last_line = start - offset - 1, reader.line_num  # the record's lines, 0-based
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        spans, at_end = last_line - first > 1, last_line >= len(lines)
        if (spans or at_end) and _swallowed(lines[first:last_line], header, row, delimiter):
            yield start, _Unterminated(offset + last_line)
            return
        yield start, _csv_record(path, start, header, row)


def _swallowed(record_lines: list[str], header: list[str], row: list[str], delimiter: str) -> bool:
    """Whether a record read over several lines (or the last line) is a quote that was never
    closed rather than a quoted field that holds line breaks.

    A real multi-line field closes its quote right before a delimiter or the end of a line and
    leaves the header's number of fields. An unclosed quote runs to some later quote, after
    which the line rarely parses under ``strict`` (or the count is off), or to the end of the
    file, which ``strict`` refuses too. A real multi-line record with a wrong field count is
    reported this way as well, and its lines are then read (and reported) one by one. One line
    at the end of the file with an even number of quotes closed them all.
    """
    if len(record_lines) > 1 and len(row) != len(header):
        return True
    if len(record_lines) == 1 and not sum(x.count('"') for x in record_lines) % 2:
        return False
    try:
        return list(csv.reader(record_lines, delimiter=delimiter, strict=True)) != [row]
    except csv.Error:
        return True


def _read_header(path: Path, reader: Any) -> tuple[list[str], bool]:
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}:1: the file is empty; a header row is expected") from None
    except csv.Error as exc:
        raise DataError(f"{path}:1: cannot read the header row: {quoted(exc, 200)}") from None
    bom = bool(header) and header[0].startswith("\ufeff")
    if bom:
        header[0] = header[0][1:]
    header = [name.strip() for name in header]
    if any(_has_surrogates(name) for name in header):
        raise DataError(f"{path}:1: the header row is not valid UTF-8")
    unnamed = [str(n) for n, name in enumerate(header, start=1) if not name]
    if unnamed:
        raise DataError(
            f"{path}:1: every header column needs a name; column {', '.join(unnamed[:8])} of "
            f"{len(header)} has none (is line 1 a header row?)"
        )
    duplicated = [name for name, n in Counter(header).items() if n > 1]
    if duplicated:
        raise DataError(
            f"{path}:1: header columns must be unique; {quoted_names(duplicated)} "
            f"appear more than once (is line 1 a header row?)"
        )
    return header, bom


def _csv_record(
    path: Path, line: int, header: list[str], row: list[str]
) -> dict[str, Any] | DataIssue:
    if len(row) != len(header):
        return _issue(
            path,
            line,
            "wrong_field_count",
            f"{len(row)} fields, but the header has {len(header)} ({quoted_names(header)})",
        )
    for name, value in zip(header, row, strict=True):
        if _has_surrogates(value):
            return _issue(
                path,
                line,
                "non_utf8",
                "contains bytes that are not valid UTF-8 (re-save the file as UTF-8)",
                field=quoted(name),
            )
    return dict(zip(header, row, strict=True))


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _starts_with_array(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip(BOM).lstrip()
    return head.startswith(b"[")


def _read_json_array(path: Path) -> Iterator[tuple[int, dict[str, Any] | DataIssue]]:
    """Parse a JSON array element by element so each record knows the line it starts on."""
    raw = path.read_bytes()
    if raw.startswith(BOM):
        yield 1, _bom_issue(path)
        raw = raw[len(BOM) :]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        yield (
            line,
            _issue(
                path,
                line,
                "non_utf8",
                "the file is not valid UTF-8 here; a JSON array cannot be read past this point",
            ),
        )
        return
    yield from _array_elements(path, text)


def _array_elements(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any] | DataIssue]]:
    index = text.index("[") + 1
    line = text.count("\n", 0, index) + 1
    while True:
        index, line = _skip_separators(text, index, line)
        if index >= len(text) or text[index] == "]":
            return
        try:
            value, end = _DECODER.raw_decode(text, index)
        except json.JSONDecodeError as exc:
            yield (
                line,
                _issue(
                    path,
                    exc.lineno,
                    "invalid_json",
                    f"{_json_error(exc)}; the rest of the array is unread",
                ),
            )
            return
        except _DuplicateKey as exc:
            value, end = json.JSONDecoder().raw_decode(text, index)  # only to find its end
            value = _duplicate_key_issue(path, line, exc.key)
        if isinstance(value, DataIssue | dict):
            yield line, value
        else:
            yield (
                line,
                _issue(
                    path,
                    line,
                    "wrong_type",
                    f"a JSON object is expected, found {json_type(value)}",
                ),
            )
        line += text.count("\n", index, end)
        index = end


def _skip_separators(text: str, index: int, line: int) -> tuple[int, int]:
    while index < len(text) and text[index] in " \t\r\n,":
        line += text[index] == "\n"
        index += 1
    return index, line


def _read_with_datasets(
    source: str, split: str | None = None
) -> Iterator[tuple[int, dict[str, Any] | DataIssue]]:
    """Parquet/Arrow files, saved folders and (with ``split``) hub names, via HF ``datasets``."""
    import datasets

    try:
        if split is not None:
            dataset: Any = datasets.load_dataset(source, split=split)
        elif Path(source).is_dir():
            dataset = datasets.load_from_disk(source)
        else:
            kind = "parquet" if source.endswith(".parquet") else "arrow"
            dataset = datasets.load_dataset(kind, data_files=source, split="train")
    except Exception as exc:  # datasets raises many types; all mean "cannot read this"
        # the library's message may quote the data it choked on
        raise DataError(f"{source}: cannot read with HF datasets: {quoted(exc, 200)}") from exc
    if isinstance(dataset, datasets.DatasetDict):
        raise DataError(f"{source}: holds several splits {list(dataset)}; point at one of them")
    for row_no, row in enumerate(dataset, start=1):
        yield row_no, dict(row)


# --------------------------------------------------------------------------- format detection


@dataclass(frozen=True)
class Layout:
    """A detected (or given) format and, for classification, its two columns and whether
    labels are lists (``None``: decided by what most records of the file hold)."""

    format: str
    text_field: str | None = None
    label_field: str | None = None
    multi_label: bool | None = None


def detect_layout(
    rows: Sequence[dict[str, Any]],
    path: str,
    format: str = "auto",
    text_field: str | None = None,
    label_field: str | None = None,
    first_line: int = 1,
) -> Layout:
    """Decide the format from the keys most records carry (or check the one given).

    ``first_line`` is the line of ``rows[0]``, for the message when no format fits."""
    if _is_table(path):
        first_line = 1  # what is wrong is the header row
    if format == "auto":
        votes = Counter(_vote(row) for row in rows[:500])
        votes.pop(None, None)
        if not votes:
            raise DataError(
                f"{path}:{first_line}: cannot detect the format: {_keys_seen(path, rows)}; "
                "expected messages | prompt+completion | instruction+output | text+label "
                "columns, or pass --format"
            )
        format = str(votes.most_common(1)[0][0])
    if format not in FORMATS:
        raise DataError(f"{path}: unknown format '{format}'; allowed: {', '.join(FORMATS)}")
    if format != "classification":
        return Layout(format)
    keys: set[str] = set().union(*(row.keys() for row in rows[:500])) if rows else set()
    text = text_field or _first_present(TEXT_FIELDS, keys)
    label = label_field or _first_present(LABEL_FIELDS, keys)
    if text is None or label is None:
        raise DataError(
            f"{path}:{first_line}: classification data needs a text and a label column; found "
            f"{quoted_names(sorted(keys))}. Name them with text_field / label_field"
        )
    return Layout(format, text, label)


def _keys_seen(path: str, rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return "no valid record was read"
    if _is_table(path):
        # a file without a header row shows its first record here, so its values are quoted
        # like any other input (PII scrubbed)
        return (
            f"the header row has columns {quoted_names(rows[0])} (if line 1 is data, add a "
            "header row such as text,label)"
        )
    return f"the first record has keys {quoted_names(sorted(rows[0]))}"


def _is_table(path: str) -> bool:
    return Path(path).suffix.lower() in (".csv", ".tsv")


def _vote(row: dict[str, Any]) -> str | None:
    keys = row.keys()
    if "messages" in keys:
        return "chat"
    if {"prompt", "completion"} <= keys:
        return "completion"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    if _first_present(TEXT_FIELDS, keys) and _first_present(LABEL_FIELDS, keys):
        return "classification"
    return None


def _first_present(candidates: Iterable[str], keys: Iterable[str]) -> str | None:
    present = set(keys)
    return next((name for name in candidates if name in present), None)


# --------------------------------------------------------------------------- validation


def validate(
    path: str,
    line: int,
    row: dict[str, Any],
    layout: Layout,
    labels: frozenset[str] | None,
    out_of_scope_label: str | None = None,
) -> list[DataIssue]:
    """All problems of one record (empty list: the record is valid)."""
    if layout.format == "classification":
        return _check_classification(path, line, row, layout, labels, out_of_scope_label)
    if layout.format == "chat":
        issues = _check_chat(path, line, row)
    else:
        required = (
            ("prompt", "completion") if layout.format == "completion" else ("instruction", "output")
        )
        optional = () if layout.format == "completion" else ("input",)
        # An empty prompt is legitimate (unconditional text); an empty answer never is.
        issues = _check_text_fields(path, line, row, required, optional, may_be_empty=("prompt",))
    return [*issues, *_check_references(path, line, row), *_check_documents(path, line, row)]


def _check_references(path: str, line: int, row: dict[str, Any]) -> list[DataIssue]:
    """A generative record's optional ``references``: the answers a free-text answer is
    scored against (E2E has several per input), a non-empty list of non-empty strings."""
    return _check_string_list(path, line, row, "references", "reference")


def _check_documents(path: str, line: int, row: dict[str, Any]) -> list[DataIssue]:
    """A generative record's optional ``documents``: the ids of its gold documents in the
    retrieval collection (COVID-QA names one passage), a non-empty list of non-empty strings."""
    return _check_string_list(path, line, row, "documents", "document id")


def _check_string_list(
    path: str, line: int, row: dict[str, Any], key: str, item: str
) -> list[DataIssue]:
    """Optional ``row[key]``: a non-empty list of non-empty strings, each an ``item``."""
    if key not in row:
        return []
    values = row[key]
    if not isinstance(values, list) or not values:
        found = "an empty list" if values == [] else json_type(values)
        return [
            _issue(
                path,
                line,
                "wrong_type",
                f"{key} must be a non-empty list of strings, found {found}",
                field=key,
            )
        ]
    issues = []
    for index, value in enumerate(values):
        where = f"{key}[{index}]"
        if not isinstance(value, str):
            message = f"a {item} must be a string, found {json_type(value)}"
            issues.append(_issue(path, line, "wrong_type", message, field=where))
        elif is_blank(value):
            issues.append(_issue(path, line, "empty_text", f"the {item} is empty", field=where))
    return issues


def _check_classification(
    path: str,
    line: int,
    row: dict[str, Any],
    layout: Layout,
    labels: frozenset[str] | None,
    out_of_scope_label: str | None,
) -> list[DataIssue]:
    assert layout.text_field and layout.label_field
    issues = _check_text_fields(path, line, row, (layout.text_field,), ())
    name = layout.label_field
    if name not in row:
        return [*issues, _issue(path, line, "missing_field", "no label", field=name)]
    value = row[name]
    if isinstance(value, list):
        issues += _check_label_list(path, line, name, value, labels, out_of_scope_label)
    else:
        problem = _label_value_issue(path, line, name, value)
        if problem is None and labels is not None and label_key(value) not in labels:
            problem = _unknown_label_issue(path, line, name, label_key(value), labels)
        issues += [problem] if problem else []
    return issues


def _check_label_list(
    path: str,
    line: int,
    name: str,
    values: list[Any],
    labels: frozenset[str] | None,
    out_of_scope_label: str | None,
) -> list[DataIssue]:
    """A multi-label record's labels: each one as a single label would be, none twice, and
    never the out-of-scope label (an out-of-scope query has no intent: the empty list)."""
    issues = []
    first: dict[str, str] = {}  # label -> the field where it first appears
    for index, value in enumerate(values):
        where = f"{name}[{index}]"
        problem = _label_value_issue(path, line, where, value)
        if problem is None:
            key = label_key(value)
            problem = _listed_label_issue(
                path, line, where, key, first.get(key), labels, out_of_scope_label
            )
            first.setdefault(key, where)
        issues += [problem] if problem else []
    return issues


def _listed_label_issue(
    path: str,
    line: int,
    where: str,
    key: str,
    earlier: str | None,
    labels: frozenset[str] | None,
    out_of_scope_label: str | None,
) -> DataIssue | None:
    """What is wrong with one well-formed label of a list (``earlier``: where the list already
    holds it)."""
    if key == out_of_scope_label:
        return _issue(
            path,
            line,
            "out_of_scope_in_list",
            f"'{quoted(key)}' is the out-of-scope label; in multi-label data an out-of-scope "
            "query has no intent: write the empty list",
            field=where,
        )
    if earlier is not None:
        return _issue(
            path,
            line,
            "duplicate_label",
            f"label '{quoted(key)}' is already {earlier}; list each label once",
            field=where,
        )
    if labels is not None and key not in labels:
        return _unknown_label_issue(path, line, where, key, labels)
    return None


def _label_value_issue(path: str, line: int, where: str, value: Any) -> DataIssue | None:
    """One label (a record's, or one element of its list) is a non-empty string or an integer."""
    if value is None or (isinstance(value, str) and is_blank(value)):
        return _issue(path, line, "missing_label", "the label is empty", field=where)
    if isinstance(value, bool) or not isinstance(value, str | int):
        return _issue(
            path,
            line,
            "wrong_type",
            f"a label must be a string or an integer, found {json_type(value)}",
            field=where,
        )
    return None


def _unknown_label_issue(
    path: str, line: int, where: str, key: str, labels: frozenset[str]
) -> DataIssue:
    return _issue(
        path,
        line,
        "unknown_label",
        f"label '{quoted(key)}' is not one of the {len(labels)} known labels",
        field=where,
    )


def _label_kind(value: Any) -> bool | None:
    """True for a list of labels, False for one label, None for neither (empty, wrong type:
    those records are reported as such, not as the other kind)."""
    if isinstance(value, list):
        return True
    if isinstance(value, str | int) and not isinstance(value, bool):
        return None if isinstance(value, str) and is_blank(value) else False
    return None


def _decide_label_kind(
    path: str, rows: Sequence[tuple[int, dict[str, Any]]], layout: Layout
) -> tuple[Layout, list[DataIssue]]:
    """Whether the file's labels are lists, and an error on each record of the other kind
    (``mixed_label_kinds``; a list in single-label data: ``wrong_type``). A given layout's
    kind (the training file's) is the eval file's; else most records decide (a tie: the first
    record's kind), so every odd record is named."""
    if layout.format != "classification" or layout.label_field is None:
        return layout, []
    kinds = [(line, _label_kind(row.get(layout.label_field))) for line, row in rows]
    labelled = [(line, kind) for line, kind in kinds if kind is not None]
    lists = sum(1 for _, kind in labelled if kind)
    if layout.multi_label is None:
        singles = len(labelled) - lists
        first = bool(labelled) and bool(labelled[0][1])
        layout = replace(layout, multi_label=lists > singles or (lists == singles and first))
        others = lists if layout.multi_label else singles
        rest = f"the rest of this file ({others:,} records)"
    else:
        rest = "the training data"
    odd = [line for line, kind in labelled if kind != layout.multi_label]
    if layout.multi_label:
        found, expected = "a single label", "uses lists of labels (multi-label data)"
    else:
        found, expected = "a list of labels", "has one label per record (single-label data)"
    message = f"{found}, but {rest} {expected}"
    # A list in single-label data keeps the class it has always had (wrong_type); a single
    # label in multi-label data is the new case.
    error = "mixed_label_kinds" if layout.multi_label else "wrong_type"
    return layout, [_issue(path, line, error, message, field=layout.label_field) for line in odd]


def _check_text_fields(
    path: str,
    line: int,
    row: dict[str, Any],
    required: Sequence[str],
    optional: Sequence[str],
    may_be_empty: Sequence[str] = (),
) -> list[DataIssue]:
    issues = []
    for name in (*required, *optional):
        if name not in row:
            if name in required:
                issues.append(_issue(path, line, "missing_field", "field is absent", field=name))
            continue
        value = row[name]
        if not isinstance(value, str):
            if name in optional and value is None:
                continue
            issues.append(
                _issue(
                    path,
                    line,
                    "wrong_type",
                    f"a string is expected, found {json_type(value)}",
                    field=name,
                )
            )
        elif name in required and name not in may_be_empty and is_blank(value):
            issues.append(_issue(path, line, "empty_text", "the text is empty", field=name))
    return issues


def is_blank(text: str) -> bool:
    """Nothing a reader (or a model) sees: only whitespace and invisible format characters
    (zero-width space and joiners, byte-order marks, bidi marks: Unicode category Cf)."""
    return all(c.isspace() or unicodedata.category(c) == "Cf" for c in text)


def _check_chat(path: str, line: int, row: dict[str, Any]) -> list[DataIssue]:
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        return [
            _issue(
                path,
                line,
                "missing_messages_list",
                "a non-empty 'messages' list is expected",
                field="messages",
            )
        ]
    issues: list[DataIssue] = []
    for index, message in enumerate(messages):
        issues.extend(_check_message(path, line, index, message))
    roles = [m.get("role") for m in messages if isinstance(m, dict)]
    if "assistant" not in roles:
        issues.append(
            _issue(
                path,
                line,
                "example_missing_assistant_message",
                "no assistant message to learn from",
                field="messages",
            )
        )
    elif not issues and all(
        m.get("weight", 1) == 0 for m in messages if m.get("role") == "assistant"
    ):
        issues.append(
            _issue(
                path,
                line,
                "no_trainable_tokens",
                "every assistant message has weight 0",
                field="messages",
            )
        )
    return issues


def _check_message(path: str, line: int, index: int, message: Any) -> list[DataIssue]:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        return [
            _issue(
                path,
                line,
                "wrong_type",
                f"a message must be an object, found {json_type(message)}",
                field=where,
            )
        ]
    issues = []
    for key in message:
        if key not in MESSAGE_KEYS:
            issues.append(
                _issue(
                    path,
                    line,
                    "message_unrecognized_key",
                    f"unknown key '{quoted(key)}'; allowed: {', '.join(MESSAGE_KEYS)}",
                    field=where,
                )
            )
    for key in ("role", "content"):
        if key not in message:
            issues.append(_issue(path, line, "message_missing_key", f"no '{key}'", field=where))
    role = message.get("role")
    if "role" in message and role not in CHAT_ROLES:
        issues.append(
            _issue(
                path,
                line,
                "unrecognized_role",
                f"role '{quoted(role)}' is not one of {', '.join(CHAT_ROLES)}",
                field=f"{where}.role",
            )
        )
    issues.extend(_check_content(path, line, where, message))
    return issues


def _check_content(path: str, line: int, where: str, message: dict[str, Any]) -> list[DataIssue]:
    issues = []
    content = message.get("content")
    if "content" in message and (
        content is None or (isinstance(content, str) and is_blank(content))
    ):
        issues.append(
            _issue(path, line, "missing_content", "the content is empty", field=f"{where}.content")
        )
    elif content is not None and not isinstance(content, str):
        issues.append(
            _issue(
                path,
                line,
                "wrong_type",
                f"content must be a string, found {json_type(content)}",
                field=f"{where}.content",
            )
        )
    if "weight" in message and (
        isinstance(message["weight"], bool) or message["weight"] not in (0, 1)
    ):
        issues.append(
            _issue(path, line, "invalid_weight", "weight must be 0 or 1", field=f"{where}.weight")
        )
    elif "weight" in message and message.get("role") != "assistant":
        issues.append(
            _issue(
                path,
                line,
                "invalid_weight",
                "weight is only allowed on assistant messages",
                field=f"{where}.weight",
            )
        )
    return issues


# --------------------------------------------------------------------------- loading


def load(
    source: str | Path,
    format: str = "auto",
    text_field: str | None = None,
    label_field: str | None = None,
    labels: Iterable[str] | None = None,
    layout: Layout | None = None,
    hub_split: str = "train",
    out_of_scope_label: str | None = None,
) -> LoadedData:
    """Read and validate ``source``; valid records kept exactly, the rest reported.

    ``out_of_scope_label`` (``data.out_of_scope_label``) may not appear inside a label list."""
    path = str(source)
    parsed: list[tuple[int, dict[str, Any]]] = []
    issues: list[DataIssue] = []
    raw_count = 0
    for line, row in read_rows(source, hub_split):
        if isinstance(row, DataIssue):
            issues.append(row)
            raw_count += row.severity == "error"
        else:
            parsed.append((line, row))
            raw_count += 1
    if layout is None:
        first_line = parsed[0][0] if parsed else 1
        layout = detect_layout(
            [row for _, row in parsed], path, format, text_field, label_field, first_line
        )
    layout, mixed = _decide_label_kind(path, parsed, layout)
    odd = {issue.line for issue in mixed}
    issues.extend(mixed)
    allowed = frozenset(labels) if labels is not None else None
    records = []
    for line, row in parsed:
        problems = validate(path, line, row, layout, allowed, out_of_scope_label)
        issues.extend(problems)
        if line not in odd and not any(p.severity == "error" for p in problems):
            records.append(Record(line, row))
    issues.sort(key=lambda issue: issue.line)
    return LoadedData(
        path,
        layout.format,
        records,
        issues,
        layout.text_field,
        layout.label_field,
        raw_count,
        multi_label=bool(layout.multi_label),
    )


# --------------------------------------------------------------------------- record views


# Which parts of a record are its input (what a model is given) and which its answer. System
# prompts are neither: usually one shared instruction, left in they would make every pair of
# short examples look alike.
_INPUT_ROLES, _ANSWER_ROLES = ("user",), ("assistant",)
_INPUT_KEYS = {"completion": ("prompt",), "alpaca": ("instruction", "input")}
_ANSWER_KEYS = {"completion": ("completion",), "alpaca": ("output",)}


def record_text(data: LoadedData | Layout, row: dict[str, Any]) -> str:
    """Input and answer of a record, in reading order (for duplicates and samples)."""
    return _join(data, row, answer=True)


def record_input(data: LoadedData | Layout, row: dict[str, Any]) -> str:
    """What the model is given (no answer): an eval input seen in training is contamination."""
    return _join(data, row, answer=False)


def _join(data: LoadedData | Layout, row: dict[str, Any], answer: bool) -> str:
    if data.format == "classification":
        assert data.text_field
        return str(row[data.text_field])
    if data.format == "chat":
        roles = _INPUT_ROLES + (_ANSWER_ROLES if answer else ())
        return "\n".join(
            str(m.get("content") or "") for m in row["messages"] if m.get("role") in roles
        )
    keys = _INPUT_KEYS[data.format] + (_ANSWER_KEYS[data.format] if answer else ())
    return "\n".join(str(row.get(key) or "") for key in keys)
