"""Document collections for retrieval: read, check, scrub, find duplicates, chunk, hash, report.

A collection is a folder of ``.txt``, ``.md``, ``.html``/``.htm`` and ``.pdf`` files (searched
recursively; names starting with "." — ``.git``, ``.DS_Store`` — are not documents and are only
counted), a single such file, or a JSONL (``.jsonl``/``.ndjson``/``.json``) of
``{"id", "text", "title"?}`` objects; other keys are ignored.

- **Ids.** A file's id is its path relative to the folder, with "/" separators and its suffix
  (``policies/leave.md``); a JSONL record's is its ``id``. Renaming or moving a file therefore
  changes its id — which gold references in eval records name — and so the collection hash:
  a rename is a change.
- **Text.** Files are read as UTF-8 (a leading byte-order mark is dropped). Markdown is kept as
  written. HTML is reduced to its text with the standard library's parser: ``script``,
  ``style``, ``noscript`` and ``template`` contents dropped, block elements (``p``, ``li``,
  ``h1``...) ending a line, entities decoded; the ``<title>`` becomes the document's title.
  PDFs are read page by page with ``pypdf``; an encrypted PDF is opened only when it has an
  empty user password (permissions-only encryption is common and readable).
- **Bad input** never stops the read and is never dropped silently: each unusable document is
  one :class:`DataIssue` (``error``) naming its file — and line, for JSONL — and counted by
  reason in the report. A line of 0 means the file as a whole; for a PDF page, the page number.
  Nothing readable at all is refused with :class:`NoDocumentsError`.
- **PII** is scrubbed from texts and titles (not ids: they are references, like labels) before
  anything else sees them, so chunk offsets point into the scrubbed text; counts per type.
- **Duplicates** (exact and near, :func:`adaptlab.data.dedup.find_duplicates`) are reported,
  not dropped: an eval record's gold id may name either copy, and dropping it would turn a
  correct retrieval into a miss.

Chunking (:func:`chunk_collection`) packs whole sentences into chunks of at most
``chunk_tokens`` tokens and starts each chunk with the previous one's last sentences, up to
``overlap_tokens`` of them; see :func:`chunk_document`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from adaptlab.data.dedup import DEFAULT_NEAR_THRESHOLD, DuplicateGroup, find_duplicates
from adaptlab.data.formats import is_blank, json_type, quoted, read_rows
from adaptlab.data.issues import DataError, DataIssue
from adaptlab.data.pii import PII_TYPES, scrub
from adaptlab.data.report import length_stats, safe_sample
from adaptlab.paths import write_text_atomic

TEXT_SUFFIXES = (".txt", ".md")
HTML_SUFFIXES = (".html", ".htm")
PDF_SUFFIXES = (".pdf",)
DOCUMENT_SUFFIXES = TEXT_SUFFIXES + HTML_SUFFIXES + PDF_SUFFIXES
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
MAX_LISTED = 1_000  # issues and duplicate groups listed in the report; counts are always exact
DEFAULT_CHUNK_TOKENS = 200
DEFAULT_OVERLAP_TOKENS = 40


class NoDocumentsError(DataError):
    """A collection with no usable document; ``issues`` says what was wrong with each file."""

    def __init__(self, message: str, issues: Sequence[DataIssue]) -> None:
        super().__init__(message)
        self.issues = list(issues)


@dataclass(frozen=True)
class Document:
    """One document as retrieval sees it: text PII-scrubbed, and where it came from
    (``line`` is the JSONL line, None for a file)."""

    id: str
    text: str
    path: str
    line: int | None = None
    title: str | None = None


@dataclass
class DocumentCollection:
    """The documents read from ``path``, and everything that was wrong or noteworthy."""

    path: str
    documents: list[Document]
    issues: list[DataIssue] = field(default_factory=list)
    read: int = 0  # candidate documents: files found, or JSONL records
    hidden: int = 0  # names starting with "." that were not read
    pii: Counter[str] = field(default_factory=Counter)
    pii_scrubbed: bool = True
    duplicates: list[DuplicateGroup] = field(default_factory=list)

    def skipped(self) -> Counter[str]:
        """Documents left out, by reason (each one is exactly one ``error`` issue)."""
        return Counter(issue.error for issue in self.issues if issue.severity == "error")


# --------------------------------------------------------------------------- reading


def read_documents(
    path: str | Path,
    *,
    scrub_pii: bool = True,
    pii_types: Sequence[str] = PII_TYPES,
    near_threshold: float = DEFAULT_NEAR_THRESHOLD,
) -> DocumentCollection:
    """Read the collection at ``path`` (folder, document file or JSONL), scrub PII unless
    ``scrub_pii`` is off (it is counted either way) and find duplicate documents."""
    source = Path(path)
    if not source.exists():
        raise DataError(f"{source}: no such file or folder")
    if source.is_file() and source.suffix.lower() in JSONL_SUFFIXES:
        collection = _read_jsonl(source)
    elif source.is_dir() or source.suffix.lower() in DOCUMENT_SUFFIXES:
        collection = _read_files(source)
    else:
        raise DataError(
            f"{source}: unsupported collection '{source.suffix}'; give a folder, a "
            f"{'/'.join(DOCUMENT_SUFFIXES)} file or a JSONL of {{id, text, title?}}"
        )
    if not collection.documents:
        raise _nothing_readable(source, collection)
    collection.pii_scrubbed = scrub_pii
    # counted either way; with scrubbing off every type is counted, as data check does
    types = pii_types if scrub_pii else PII_TYPES
    collection.documents = [
        _scrubbed(d, collection.pii, types, scrub_pii) for d in collection.documents
    ]
    collection.duplicates = find_duplicates(
        [d.text for d in collection.documents], near_threshold=near_threshold
    )
    return collection


def _nothing_readable(source: Path, collection: DocumentCollection) -> NoDocumentsError:
    what = "folder" if source.is_dir() else "file"
    if collection.read == 0:
        return NoDocumentsError(
            f"{source}: the {what} holds no document ({'/'.join(DOCUMENT_SUFFIXES)} files, "
            "or JSONL records)",
            collection.issues,
        )
    reasons = ", ".join(f"{n} {reason}" for reason, n in collection.skipped().most_common())
    first = next(i for i in collection.issues if i.severity == "error")
    return NoDocumentsError(
        f"{source}: no readable document in this {what} ({collection.read} read, all skipped: "
        f"{reasons}); first: {first}",
        collection.issues,
    )


def _scrubbed(
    document: Document, counts: Counter[str], types: Sequence[str], apply: bool
) -> Document:
    text, found = scrub(document.text, types)
    counts.update(found)
    title = document.title
    if title is not None:
        title, found_in_title = scrub(title, types)
        counts.update(found_in_title)
    if not apply:
        return document
    return Document(document.id, text, document.path, document.line, title)


def _read_files(source: Path) -> DocumentCollection:
    collection = DocumentCollection(str(source), [])
    root = source if source.is_dir() else source.parent
    for file in _document_files(source, collection):
        collection.read += 1
        document_id = file.relative_to(root).as_posix()
        result = _read_file(file, document_id, collection.issues)
        if result is not None:
            collection.documents.append(result)
    return collection


def _document_files(source: Path, collection: DocumentCollection) -> Iterator[Path]:
    if source.is_file():
        yield source
        return
    for file in sorted(source.rglob("*")):
        relative = file.relative_to(source).parts
        if any(part.startswith(".") for part in relative):
            collection.hidden += 1 if file.is_file() else 0
        elif file.is_file():
            yield file


def _read_file(file: Path, document_id: str, issues: list[DataIssue]) -> Document | None:
    suffix = file.suffix.lower()
    if suffix not in DOCUMENT_SUFFIXES:
        issues.append(
            DataIssue(
                str(file),
                0,
                "unsupported_type",
                f"'{quoted(suffix or file.name)}' is not a document type read here "
                f"({'/'.join(DOCUMENT_SUFFIXES)}); skipped",
            )
        )
        return None
    if suffix in PDF_SUFFIXES:
        extracted = _pdf_text(file, issues)
        title = None
    else:
        decoded = _utf8_text(file, issues)
        if decoded is None:
            return None
        extracted, title = html_text(decoded) if suffix in HTML_SUFFIXES else (decoded, None)
    if extracted is None:
        return None
    if is_blank(extracted):
        why = "no text in it" + (" (a scanned PDF needs OCR first)" if suffix == ".pdf" else "")
        issues.append(DataIssue(str(file), 0, "empty_document", f"{why}; skipped"))
        return None
    return Document(document_id, extracted, str(file), None, title)


def _utf8_text(file: Path, issues: list[DataIssue]) -> str | None:
    try:
        raw = file.read_bytes()
    except OSError as exc:
        issues.append(DataIssue(str(file), 0, "unreadable", f"{exc.strerror or exc}; skipped"))
        return None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        start = exc.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)
        line = raw[:start].count(b"\n") + 1
        column = start - (raw.rfind(b"\n", 0, start) + 1) + 1
        issues.append(
            DataIssue(
                str(file),
                line,
                "non_utf8",
                f"byte 0x{raw[start]:02x} at column {column} is not valid UTF-8 "
                "(re-save the file as UTF-8); skipped",
            )
        )
        return None


def _pdf_text(file: Path, issues: list[DataIssue]) -> str | None:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError

    try:
        reader = PdfReader(file)
        if reader.is_encrypted and not reader.decrypt(""):
            issues.append(_encrypted(file, "it needs a password"))
            return None
        pages = list(reader.pages)
    except (DependencyError, FileNotDecryptedError) as exc:
        issues.append(_encrypted(file, f"it cannot be decrypted here ({exc})"))
        return None
    except Exception as exc:  # pypdf raises a dozen exception types on a damaged file
        reason = f"{type(exc).__name__}: {exc}"
        issues.append(
            DataIssue(
                str(file),
                0,
                "unreadable_pdf",
                f"not a readable PDF ({quoted(reason, 120)}); skipped",
            )
        )
        return None
    texts = []
    for number, page in enumerate(pages, start=1):
        try:
            texts.append(page.extract_text())
        except Exception as exc:  # as above; one bad page loses only itself
            issues.append(
                DataIssue(
                    str(file),
                    number,
                    "unreadable_page",
                    f"page {number} could not be read ({type(exc).__name__}); left out",
                    severity="warning",
                )
            )
    return "\n\n".join(texts)


def _encrypted(file: Path, why: str) -> DataIssue:
    return DataIssue(str(file), 0, "encrypted_pdf", f"the PDF is encrypted and {why}; skipped")


class _HtmlText(HTMLParser):
    """Text of an HTML page: what a browser shows, one line per block element."""

    SKIPPED = frozenset({"script", "style", "noscript", "template"})
    # fmt: off
    BLOCKS = frozenset({
        "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption",
        "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main",
        "nav", "ol", "p", "pre", "section", "table", "td", "th", "tr", "ul",
    })
    # fmt: on

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIPPED or tag == "title":
            self.open.append(tag)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.open:
            del self.open[len(self.open) - 1 - self.open[::-1].index(tag) :]
        elif tag in self.BLOCKS and tag not in ("br", "hr"):  # void: <br> ends one line
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.open:
            self.parts.append(data)
        elif self.open[-1] == "title":
            self.title.append(data)


def html_text(html: str) -> tuple[str, str | None]:
    """The visible text of ``html`` (lines trimmed, runs of blank lines collapsed to one
    paragraph break) and its ``<title>``, if any."""
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    title = " ".join("".join(parser.title).split())
    return text, title or None


def _read_jsonl(source: Path) -> DocumentCollection:
    collection = DocumentCollection(str(source), [])
    seen: dict[str, int] = {}
    for line, row in read_rows(source):
        if isinstance(row, DataIssue):  # a line that is not a JSON object, or a warning
            collection.issues.append(row)
            if row.severity == "error":
                collection.read += 1
            continue
        collection.read += 1
        document = _jsonl_document(source, line, row, seen, collection.issues)
        if document is not None:
            seen[document.id] = line
            collection.documents.append(document)
    return collection


def _jsonl_document(
    source: Path, line: int, row: dict[str, Any], seen: dict[str, int], issues: list[DataIssue]
) -> Document | None:
    for name in ("id", "text", "title"):
        problem = _field_problem(row, name)
        if problem is not None:
            error, message = problem
            issues.append(DataIssue(str(source), line, error, f"{message}; skipped", field=name))
            return None
    document_id = row["id"]
    if document_id in seen:
        issues.append(
            DataIssue(
                str(source),
                line,
                "duplicate_id",
                f"id '{quoted(document_id)}' was already used on line {seen[document_id]}; "
                "skipped (ids must name one document)",
                field="id",
            )
        )
        return None
    return Document(document_id, row["text"], str(source), line, row.get("title") or None)


def _field_problem(row: dict[str, Any], name: str) -> tuple[str, str] | None:
    """``(error class, message)`` when field ``name`` of a JSONL record cannot be used; the
    title is optional (absent or null), id and text are required, non-blank strings."""
    value = row.get(name)
    if name == "title" and value is None:
        return None
    if name not in row:
        return "missing_field", f"no '{name}': every record needs one"
    if not isinstance(value, str):
        return "wrong_type", f"a string is expected, found {json_type(value)}"
    if name != "title" and is_blank(value):
        return (
            ("empty_document", "the text is empty")
            if name == "text"
            else ("empty_id", "the id is empty")
        )
    return None


# --------------------------------------------------------------------------- chunking


@dataclass(frozen=True)
class ChunkSettings:
    """How documents are cut: ``chunk_tokens`` per chunk at most, and up to
    ``overlap_tokens`` of the previous chunk's last sentences repeated at its start."""

    chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS

    def __post_init__(self) -> None:
        if self.chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be >= 1, got {self.chunk_tokens}")
        if not 0 <= self.overlap_tokens < self.chunk_tokens:
            raise ValueError(
                f"overlap_tokens must be in [0, chunk_tokens={self.chunk_tokens}), "
                f"got {self.overlap_tokens}"
            )


@dataclass(frozen=True)
class Chunk:
    """A passage of one document: ``text == document.text[start:end]``; ``id`` is
    ``"<document id>#<n>"`` with ``n`` counting the document's chunks from 0."""

    id: str
    document_id: str
    text: str
    start: int
    end: int
    tokens: int
    path: str
    line: int | None = None

    @property
    def source(self) -> str:
        """``path`` or ``path:line``: where a person finds the passage."""
        return self.path if self.line is None else f"{self.path}:{self.line}"


# A sentence ends after ".", "!", "?" or "…" (with any closing quotes or brackets) followed by
# whitespace, and at a paragraph break (a blank line). Abbreviations ("e.g. this", "Fig. 2")
# split too early; that only moves a chunk boundary, which costs little in retrieval, while a
# trained splitter would be a dependency of its own. Single line breaks do not end a sentence:
# PDF text breaks lines mid-sentence.
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*(?=\s)|\n[^\S\n]*\n")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``[start, end)`` of each sentence of ``text``, whitespace trimmed, in order; the text
    between them is whitespace."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        end = match.start() if match.group().startswith("\n") else match.end()
        spans.append(_trimmed(text, start, end))
        start = match.end()
    spans.append(_trimmed(text, start, len(text)))
    return [(s, e) for s, e in spans if s < e]


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def token_offsets(tokenizer: Any, text: str) -> list[tuple[int, int]]:
    """``[start, end)`` of each token of ``text`` (no special tokens), from a tokenizer with the
    Hugging Face ``__call__(..., return_offsets_mapping=True)`` interface (fast tokenizers).

    ``verbose=False``: a whole document is longer than the model's context by design (it is
    counted here, never fed to the model), which Hugging Face would warn about."""
    try:
        encoded = tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        offsets = encoded["offset_mapping"]
    except (NotImplementedError, KeyError):  # a "slow" (pure Python) HF tokenizer
        name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
        raise ValueError(
            f"tokenizer {name!r} gives no character offsets; chunking needs a fast tokenizer"
        ) from None
    return [(int(s), int(e)) for s, e in offsets]


def chunk_document(document: Document, tokenizer: Any, settings: ChunkSettings) -> list[Chunk]:
    """Whole sentences packed into chunks of at most ``settings.chunk_tokens`` tokens.

    A chunk that is full starts the next one with its last sentences, as many as fit in
    ``overlap_tokens`` (and leave room for the sentence that did not fit). A sentence longer
    than ``chunk_tokens`` on its own is cut into windows of ``chunk_tokens`` tokens, each
    overlapping the one before by ``overlap_tokens``. The document is tokenized once; a token
    counts for the sentence holding its last character (a token of whitespace between two
    sentences counts for the next one), so chunk sizes are the document's tokens, never fewer.
    """
    spans = sentence_spans(document.text)
    offsets = token_offsets(tokenizer, document.text)
    per_sentence = _tokens_per_sentence(spans, offsets)
    pieces: list[tuple[int, int, int]] = []  # (start, end, tokens), in order
    current: list[int] = []  # sentence indices of the chunk being filled
    for index, tokens in enumerate(per_sentence):
        if tokens > settings.chunk_tokens:
            _emit(pieces, spans, per_sentence, current)
            current = []
            pieces.extend(_windows(document.text, spans[index], offsets, settings))
            continue
        if current and sum(per_sentence[i] for i in current) + tokens > settings.chunk_tokens:
            _emit(pieces, spans, per_sentence, current)
            current = _carried(current, per_sentence, settings, tokens)
        current.append(index)
    _emit(pieces, spans, per_sentence, current)
    return [
        Chunk(
            f"{document.id}#{n}",
            document.id,
            document.text[start:end],
            start,
            end,
            tokens,
            document.path,
            document.line,
        )
        for n, (start, end, tokens) in enumerate(pieces)
    ]


def _tokens_per_sentence(spans: list[tuple[int, int]], offsets: list[tuple[int, int]]) -> list[int]:
    ends = [end for _, end in spans]
    counts = [0] * len(spans)
    for start, end in offsets:
        index = bisect_right(ends, max(start, end - 1))
        if index < len(spans):
            counts[index] += 1
    return counts


def _emit(
    pieces: list[tuple[int, int, int]],
    spans: list[tuple[int, int]],
    per_sentence: list[int],
    sentences: list[int],
) -> None:
    if sentences:
        tokens = sum(per_sentence[i] for i in sentences)
        pieces.append((spans[sentences[0]][0], spans[sentences[-1]][1], tokens))


def _carried(
    sentences: list[int], per_sentence: list[int], settings: ChunkSettings, incoming: int
) -> list[int]:
    """The last sentences of a full chunk that open the next: at most ``overlap_tokens`` of
    them, and never so many that the incoming sentence would not fit beside them."""
    budget = min(settings.overlap_tokens, settings.chunk_tokens - incoming)
    carried: list[int] = []
    for index in reversed(sentences[1:]):  # never the whole chunk: that would repeat it
        if sum(per_sentence[i] for i in carried) + per_sentence[index] > budget:
            break
        carried.insert(0, index)
    return carried


def _windows(
    text: str, span: tuple[int, int], offsets: list[tuple[int, int]], settings: ChunkSettings
) -> list[tuple[int, int, int]]:
    """An over-long sentence cut by tokens: windows of ``chunk_tokens``, stride
    ``chunk_tokens - overlap_tokens``, edges trimmed of whitespace."""
    start, end = span
    inside = [(s, e) for s, e in offsets if start <= max(s, e - 1) < end]
    size, stride = settings.chunk_tokens, settings.chunk_tokens - settings.overlap_tokens
    windows = []
    for first in range(0, len(inside), stride):
        tokens = inside[first : first + size]
        last = first + size >= len(inside)
        # the first and last windows reach the sentence's edges, so characters a tokenizer
        # drops (control characters) are still inside a chunk
        left = start if first == 0 else max(start, tokens[0][0])
        left, right = _trimmed(text, left, end if last else min(end, tokens[-1][1]))
        if left < right:
            windows.append((left, right, len(tokens)))
        if last:
            break
    return windows


def chunk_collection(
    collection: DocumentCollection | Sequence[Document], tokenizer: Any, settings: ChunkSettings
) -> list[Chunk]:
    """Every document's chunks, documents in collection order."""
    documents = collection.documents if isinstance(collection, DocumentCollection) else collection
    return [
        chunk for document in documents for chunk in chunk_document(document, tokenizer, settings)
    ]


# --------------------------------------------------------------------------- hash and report


def collection_sha256(
    collection: DocumentCollection | Sequence[Document],
    settings: ChunkSettings,
    tokenizer_name: str,
) -> str:
    """What a retrieval run depends on: each document's id, title and (scrubbed) text in
    collection order, the chunk settings and the name of the tokenizer that counted the tokens.
    Where the files live does not count; their names do (they are the ids)."""
    documents = collection.documents if isinstance(collection, DocumentCollection) else collection
    digest = hashlib.sha256()
    header = {"chunk_tokens": settings.chunk_tokens, "overlap_tokens": settings.overlap_tokens}
    digest.update(json.dumps({**header, "tokenizer": tokenizer_name}, sort_keys=True).encode())
    for document in documents:
        record = [document.id, document.title, document.text]
        digest.update(
            b"\n" + json.dumps(record, ensure_ascii=False).encode("utf-8", "surrogatepass")
        )
    return digest.hexdigest()


def collection_report(
    collection: DocumentCollection,
    chunks: Sequence[Chunk] | None = None,
    settings: ChunkSettings | None = None,
) -> dict[str, Any]:
    """A JSON-ready account of the collection: counts, what was skipped and why, PII, duplicate
    groups and (given ``chunks``) chunk lengths in tokens."""
    documents = collection.documents
    return {
        "path": collection.path,
        "documents": {
            "read": collection.read,
            "kept": len(documents),
            "skipped": dict(collection.skipped().most_common()),
            "hidden_not_read": collection.hidden,
        },
        "issues": _issue_section(collection.issues),
        "pii": {"scrubbed": collection.pii_scrubbed, "counts": dict(collection.pii.most_common())},
        "duplicates": _duplicate_section(collection.duplicates, documents),
        "chunks": None if chunks is None else _chunk_section(chunks, settings),
    }


def _issue_section(issues: list[DataIssue]) -> dict[str, Any]:
    items = [
        {**issue.to_dict(), "message": safe_sample(issue.message, limit=200)}
        for issue in issues[:MAX_LISTED]
    ]
    return {
        "counts": dict(Counter(i.error for i in issues).most_common()),
        "items": items,
        "total": len(issues),
    }


def _duplicate_section(groups: list[DuplicateGroup], documents: list[Document]) -> dict[str, Any]:
    return {
        "exact_groups": sum(1 for g in groups if g.kind == "exact"),
        "near_groups": sum(1 for g in groups if g.kind == "near"),
        "action": "reported",
        "groups": [
            {
                "kind": g.kind,
                "keep": documents[g.keep].id,
                "duplicates": [documents[i].id for i in g.drop],
                "similarity": round(g.similarity, 3),
            }
            for g in groups[:MAX_LISTED]
        ],
    }


def _chunk_section(chunks: Sequence[Chunk], settings: ChunkSettings | None) -> dict[str, Any]:
    stats = length_stats([c.tokens for c in chunks], settings.chunk_tokens if settings else None)
    return {
        "count": len(chunks),
        "chunk_tokens": settings.chunk_tokens if settings else None,
        "overlap_tokens": settings.overlap_tokens if settings else None,
        "tokens": {key: stats[key] for key in ("total", "p50", "p95", "max")},
    }


# --------------------------------------------------------------------------- prepared collection

CHUNKS_NAME = "documents.jsonl"
"""The prepared data folder's chunks, one JSON object per chunk, in collection order."""
COLLECTION_NAME = "documents.json"
"""The prepared data folder's account of the collection: hashes, settings, report."""
CHUNK_TOKENIZER = "sentence-transformers/all-MiniLM-L6-v2"
"""Chunk lengths are counted in the bundled retrieval encoder's word pieces: a chunk must fit
what the dense retriever reads (256)."""


@dataclass(frozen=True)
class PreparedCollection:
    """A collection read, scrubbed and chunked for retrieval strategies.

    ``sha256`` (:func:`collection_sha256`) is what runs depend on: it goes into the eval lock
    and into every retrieval run's manifest. ``source_sha256`` hashes the raw files, so that a
    later ``compare`` can tell cheaply whether the collection on disk still is the one
    prepared."""

    path: str
    sha256: str
    source_sha256: str
    tokenizer: str
    settings: ChunkSettings
    chunks: list[Chunk]
    report: dict[str, Any]

    @property
    def document_ids(self) -> set[str]:
        return {chunk.document_id for chunk in self.chunks}

    def lock_entry(self) -> dict[str, Any]:
        """What the eval lock records about the collection."""
        return {
            "path": self.path,
            "sha256": self.sha256,
            "source_sha256": self.source_sha256,
            "tokenizer": self.tokenizer,
            "chunk_tokens": self.settings.chunk_tokens,
            "overlap_tokens": self.settings.overlap_tokens,
            "chunks": len(self.chunks),
        }


def source_sha256(path: str | Path) -> str:
    """sha256 over the raw bytes of a collection: the file, or every file below the folder
    (names included, hidden ones too, in sorted order). Cheap: nothing is parsed."""
    source = Path(path)
    digest = hashlib.sha256()
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for file in files:
        name = file.name if source.is_file() else file.relative_to(source).as_posix()
        digest.update(b"\0" + name.encode("utf-8", "surrogateescape") + b"\0")
        with file.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def prepare_collection(
    path: str | Path,
    settings: ChunkSettings,
    *,
    scrub_pii: bool = True,
    pii_types: Sequence[str] = PII_TYPES,
    near_threshold: float = DEFAULT_NEAR_THRESHOLD,
    tokenizer: Any = None,
    tokenizer_name: str = CHUNK_TOKENIZER,
) -> PreparedCollection:
    """Read, scrub, check and chunk the collection at ``path``."""
    if tokenizer is None:
        from adaptlab.models.bundled import load_tokenizer

        tokenizer = load_tokenizer(tokenizer_name)
    raw = source_sha256(path)
    collection = read_documents(
        path, scrub_pii=scrub_pii, pii_types=pii_types, near_threshold=near_threshold
    )
    chunks = chunk_collection(collection, tokenizer, settings)
    return PreparedCollection(
        str(path),
        collection_sha256(collection, settings, tokenizer_name),
        raw,
        tokenizer_name,
        settings,
        chunks,
        collection_report(collection, chunks, settings),
    )


def write_collection(folder: Path, prepared: PreparedCollection) -> None:
    """``documents.jsonl`` (the chunks) and ``documents.json`` (hashes, settings, report) in
    the prepared data folder, each written whole or not at all."""
    lines = [json.dumps(asdict(chunk), ensure_ascii=False) for chunk in prepared.chunks]
    write_text_atomic(folder / CHUNKS_NAME, "\n".join(lines) + "\n")
    facts = {**prepared.lock_entry(), "report": prepared.report}
    write_text_atomic(folder / COLLECTION_NAME, json.dumps(facts, indent=2) + "\n")


def read_collection(folder: Path, expected_sha256: str | None = None) -> PreparedCollection:
    """The collection a prepared folder holds; ``expected_sha256`` (the eval lock's) must match
    what ``documents.json`` says. Errors name the file and line."""
    facts_path, chunks_path = folder / COLLECTION_NAME, folder / CHUNKS_NAME
    try:
        facts = json.loads(facts_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(
            f"{facts_path}: no prepared document collection; run `adaptlab data prepare` "
            "with data.documents set"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{facts_path}: unreadable: {exc}") from None
    _require_facts(facts, facts_path)
    if expected_sha256 is not None and facts.get("sha256") != expected_sha256:
        raise DataError(
            f"{facts_path}: collection sha256 {str(facts.get('sha256'))[:12]}… differs from the "
            f"eval lock's {expected_sha256[:12]}…; re-run `adaptlab data prepare`"
        )
    fields = {f.name for f in dataclasses.fields(Chunk)}
    chunks = []
    for line, row in read_rows(chunks_path):
        if isinstance(row, DataIssue) or set(row) != fields:
            raise DataError(f"{chunks_path}:{line}: not a chunk record; re-run data prepare")
        chunks.append(Chunk(**row))
    settings = ChunkSettings(int(facts["chunk_tokens"]), int(facts["overlap_tokens"]))
    return PreparedCollection(
        str(facts["path"]),
        str(facts["sha256"]),
        str(facts["source_sha256"]),
        str(facts["tokenizer"]),
        settings,
        chunks,
        dict(facts.get("report") or {}),
    )


_FACTS = {
    "path": str,
    "sha256": str,
    "source_sha256": str,
    "tokenizer": str,
    "chunk_tokens": int,
    "overlap_tokens": int,
}


def _require_facts(facts: object, path: Path) -> None:
    """``documents.json`` as :func:`write_collection` writes it, or :class:`DataError` naming
    the first field that is missing or of another type."""
    if not isinstance(facts, dict):
        raise DataError(f"{path}: expected a JSON object; re-run `adaptlab data prepare`")
    for name, kind in _FACTS.items():
        value = facts.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise DataError(
                f"{path}: field '{name}' is missing or not a {kind.__name__}; re-run "
                "`adaptlab data prepare`"
            )


def unknown_gold_ids(
    records: Sequence[tuple[str, int, Sequence[str]]], known: set[str]
) -> list[DataIssue]:
    """Records ``(path, line, gold ids)`` that name a document the collection lacks: one
    issue each, naming the first unknown id (a gold id that can never be retrieved would count
    every retriever wrong)."""
    issues = []
    for path, line, ids in records:
        missing = [i for i in ids if i not in known]
        if missing:
            issues.append(
                DataIssue(
                    path,
                    line,
                    "unknown_document",
                    f"document '{quoted(missing[0])}' is not in the collection"
                    + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                    field="documents",
                )
            )
    return issues
