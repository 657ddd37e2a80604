"""Document collections (adaptlab.data.documents): reading, bad input one case at a time,
PII, duplicates, chunking invariants, the collection hash and the report."""

from __future__ import annotations

import io
import json
import re
import shutil
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptlab.data.documents import (
    ChunkSettings,
    Document,
    DocumentCollection,
    NoDocumentsError,
    chunk_collection,
    chunk_document,
    collection_report,
    collection_sha256,
    html_text,
    read_documents,
    sentence_spans,
)
from adaptlab.data.issues import DataError


class WhitespaceTokenizer:
    """A stand-in with the Hugging Face ``__call__`` interface: one token per run of
    non-whitespace, with its character offsets."""

    name_or_path = "whitespace"

    def __call__(
        self,
        text: str,
        add_special_tokens: bool = True,
        return_offsets_mapping: bool = False,
        verbose: bool = True,
    ) -> dict[str, Any]:
        spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
        return {"input_ids": list(range(len(spans))), "offset_mapping": spans}


TOKENIZER = WhitespaceTokenizer()


def pdf_bytes(text: str, user_password: str | None = None) -> bytes:
    """A one-page PDF showing ``text`` in Helvetica, encrypted (RC4, no extra dependency)
    when ``user_password`` is given."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    page = writer.add_blank_page(300, 300)
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    fonts = DictionaryObject({NameObject("/F1"): writer._add_object(font)})
    page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): fonts})
    content = DecodedStreamObject()
    content.set_data(f"BT /F1 12 Tf 20 150 Td ({text}) Tj ET".encode("latin-1"))
    page[NameObject("/Contents")] = writer._add_object(content)
    if user_password is not None:
        writer.encrypt(user_password=user_password, owner_password="owner", algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def write_folder(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = "Leave is granted for twenty days a year. Requests go to the team lead."


# --- reading: folders and files -------------------------------------------------------------


def test_folder_reads_every_kind_with_ids_relative_to_the_folder(tmp_path: Path) -> None:
    folder = write_folder(
        tmp_path / "docs",
        {
            "a.txt": "Plain text document. Two sentences.",
            "notes/b.md": "# Heading\n\nMarkdown *kept* as written.",
            "c.html": "<html><head><title>The  Title</title><style>p{}</style></head>"
            "<body><script>var x = 1;</script><p>First &amp; only.</p><p>Second.</p></body>",
            "d.pdf": pdf_bytes("Text inside a PDF file."),
        },
    )
    collection = read_documents(folder)
    by_id = {d.id: d for d in collection.documents}
    assert sorted(by_id) == ["a.txt", "c.html", "d.pdf", "notes/b.md"]
    assert by_id["notes/b.md"].text == "# Heading\n\nMarkdown *kept* as written."
    assert by_id["c.html"].text == "First & only.\n\nSecond."
    assert by_id["c.html"].title == "The Title"
    assert by_id["d.pdf"].text == "Text inside a PDF file."
    assert by_id["a.txt"].path == str(folder / "a.txt") and by_id["a.txt"].line is None
    assert collection.read == 4 and not collection.issues


def test_a_single_document_file_is_a_collection_of_one(tmp_path: Path) -> None:
    path = tmp_path / "policy.txt"
    path.write_text(GOOD)
    collection = read_documents(path)
    assert [d.id for d in collection.documents] == ["policy.txt"]


def test_html_text_drops_scripts_and_styles_and_breaks_blocks() -> None:
    text, title = html_text(
        "<div>One<br>two</div><noscript>no</noscript><ul><li>a</li><li>b &lt; c</li></ul>"
        "<template>t</template><style>x</style>tail"
    )
    assert text == "One\ntwo\n\na\n\nb < c\n\ntail"
    assert title is None


def test_hidden_files_are_not_read_but_counted(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, {"a.txt": GOOD, ".DS_Store": b"\x00\x01", ".git/HEAD": "x"})
    collection = read_documents(folder)
    assert [d.id for d in collection.documents] == ["a.txt"]
    assert collection.hidden == 2 and not collection.issues


def test_a_pdf_encrypted_without_a_user_password_is_read(tmp_path: Path) -> None:
    # permissions-only encryption: anyone may open it, so its text is usable
    folder = write_folder(tmp_path, {"open.pdf": pdf_bytes("Readable words.", user_password="")})
    assert read_documents(folder).documents[0].text == "Readable words."


# --- bad input, one case at a time -----------------------------------------------------------


def only_issue(collection: DocumentCollection) -> Any:
    assert len(collection.issues) == 1, collection.issues
    return collection.issues[0]


def test_encrypted_pdf_is_named_skipped_and_counted(tmp_path: Path) -> None:
    folder = write_folder(
        tmp_path, {"ok.txt": GOOD, "locked.pdf": pdf_bytes("Secret.", user_password="pw")}
    )
    collection = read_documents(folder)
    issue = only_issue(collection)
    assert (issue.path, issue.line, issue.error) == (str(folder / "locked.pdf"), 0, "encrypted_pdf")
    assert "password" in issue.message
    assert [d.id for d in collection.documents] == ["ok.txt"]
    assert collection.skipped() == {"encrypted_pdf": 1}


def test_corrupt_pdf_is_named_skipped_and_counted(tmp_path: Path) -> None:
    folder = write_folder(
        tmp_path, {"ok.txt": GOOD, "broken.pdf": b"%PDF-1.4\nthis is not a pdf body"}
    )
    collection = read_documents(folder)
    issue = only_issue(collection)
    assert (issue.path, issue.error) == (str(folder / "broken.pdf"), "unreadable_pdf")
    assert collection.skipped() == {"unreadable_pdf": 1}


def test_truncated_pdf_is_skipped_or_read_never_lost(tmp_path: Path) -> None:
    whole = pdf_bytes("Cut short.")
    folder = write_folder(tmp_path, {"ok.txt": GOOD, "cut.pdf": whole[: len(whole) // 3]})
    collection = read_documents(folder)
    # pypdf may recover a damaged file; whichever way, the file is accounted for
    assert collection.read == len(collection.documents) + sum(collection.skipped().values())
    assert collection.read == 2


def test_non_utf8_text_file_is_named_with_its_line(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, {"ok.txt": GOOD, "latin1.txt": b"fine line\ncaf\xe9 au lait\n"})
    issue = only_issue(read_documents(folder))
    assert (issue.path, issue.line, issue.error) == (str(folder / "latin1.txt"), 2, "non_utf8")
    assert "0xe9 at column 4" in issue.message


def test_utf8_byte_order_mark_is_not_part_of_the_text(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, {"bom.txt": b"\xef\xbb\xbfHello there."})
    assert read_documents(folder).documents[0].text == "Hello there."


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.md", ""),
        ("blank.md", "  \n\t\u200b\n"),
        ("script_only.html", "<script>alert(1)</script><style>a{}</style>"),
        ("blank.pdf", pdf_bytes("")),
    ],
)
def test_empty_document_is_named_skipped_and_counted(
    tmp_path: Path, name: str, content: str | bytes
) -> None:
    folder = write_folder(tmp_path, {"ok.txt": GOOD, name: content})
    collection = read_documents(folder)
    issue = only_issue(collection)
    assert (issue.path, issue.error) == (str(folder / name), "empty_document")
    assert collection.skipped() == {"empty_document": 1}


def test_unsupported_file_type_in_a_folder_is_named_and_counted(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, {"ok.txt": GOOD, "sheet.docx": b"PK\x03\x04"})
    issue = only_issue(read_documents(folder))
    assert (issue.path, issue.error) == (str(folder / "sheet.docx"), "unsupported_type")


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoDocumentsError, match="holds no document"):
        read_documents(tmp_path / "empty")


def test_folder_with_no_readable_file_is_refused_with_every_reason(tmp_path: Path) -> None:
    folder = write_folder(
        tmp_path,
        {"a.md": "", "b.pdf": b"garbage", "c.txt": b"\xff\xfe", "d.csv": "x,y"},
    )
    with pytest.raises(NoDocumentsError) as raised:
        read_documents(folder)
    message = str(raised.value)
    assert "4 read, all skipped" in message
    for reason in ("empty_document", "unreadable_pdf", "non_utf8", "unsupported_type"):
        assert f"1 {reason}" in message
    assert {i.path for i in raised.value.issues} == {
        str(folder / n) for n in ["a.md", "b.pdf", "c.txt", "d.csv"]
    }


def test_missing_path_and_unsupported_collection_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_documents(tmp_path / "nope")
    (tmp_path / "table.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported collection '.csv'"):
        read_documents(tmp_path / "table.csv")


def test_jsonl_bad_lines_are_each_named_by_line_and_counted(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "docs.jsonl",
        [
            json.dumps({"id": "d1", "text": GOOD, "title": "Leave"}),  # 1: kept
            json.dumps({"id": "d2"}),  # 2: no text
            json.dumps({"id": "d3", "text": 42}),  # 3: text not a string
            json.dumps({"id": 4, "text": "Numeric id."}),  # 4: id not a string
            json.dumps({"id": "d1", "text": "Same id again."}),  # 5: duplicate id
            "{not json",  # 6
            json.dumps({"id": "d7", "text": " \n"}),  # 7: empty text
            json.dumps({"id": "d8", "text": "Fine.", "title": ["x"]}),  # 8: title not a string
            json.dumps({"text": "No id."}),  # 9: no id
            "",  # blank lines are not records
            json.dumps({"id": "d11", "text": "Also kept.", "article": "extra keys are ignored"}),
        ],
    )
    collection = read_documents(path)
    found = [(i.line, i.error, i.field) for i in collection.issues]
    assert found == [
        (2, "missing_field", "text"),
        (3, "wrong_type", "text"),
        (4, "wrong_type", "id"),
        (5, "duplicate_id", "id"),
        (6, "invalid_json", None),
        (7, "empty_document", "text"),
        (8, "wrong_type", "title"),
        (9, "missing_field", "id"),
    ]
    assert all(i.path == str(path) for i in collection.issues)
    assert "line 1" in collection.issues[3].message
    assert [(d.id, d.line, d.title) for d in collection.documents] == [
        ("d1", 1, "Leave"),
        ("d11", 11, None),
    ]
    assert collection.read == 10
    assert collection.read == len(collection.documents) + sum(collection.skipped().values())


def test_jsonl_without_one_usable_line_is_refused(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", [json.dumps({"id": "a"}), json.dumps({"x": 1})])
    with pytest.raises(NoDocumentsError, match="2 read, all skipped"):
        read_documents(path)


# --- PII and duplicates ----------------------------------------------------------------------


def test_pii_is_scrubbed_from_text_and_title_and_counted(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "docs.jsonl",
        [
            json.dumps(
                {"id": "p", "text": "Write to anna@example.com today.", "title": "bob@example.org"}
            )
        ],
    )
    collection = read_documents(path)
    assert collection.documents[0].text == "Write to <EMAIL> today."
    assert collection.documents[0].title == "<EMAIL>"
    assert collection.pii == {"EMAIL": 2}
    kept = read_documents(path, scrub_pii=False)
    assert kept.documents[0].text == "Write to anna@example.com today."
    assert kept.pii == {"EMAIL": 2} and not kept.pii_scrubbed


def test_duplicates_are_reported_by_id_and_kept(tmp_path: Path) -> None:
    long_text = " ".join(f"Sentence number {i} of the travel policy." for i in range(30))
    folder = write_folder(
        tmp_path,
        {
            "a.txt": long_text,
            "b.txt": long_text.upper(),  # the same after normalisation
            "c.txt": long_text.replace("number 7 ", "number seven "),  # nearly the same
            "d.txt": GOOD,
        },
    )
    collection = read_documents(folder)
    assert len(collection.documents) == 4
    report = collection_report(collection)["duplicates"]
    assert (report["exact_groups"], report["near_groups"], report["action"]) == (1, 1, "reported")
    assert report["groups"][0] == {
        "kind": "exact",
        "keep": "a.txt",
        "duplicates": ["b.txt"],
        "similarity": 1.0,
    }
    assert (report["groups"][1]["keep"], report["groups"][1]["duplicates"]) == ("a.txt", ["c.txt"])


# --- chunking --------------------------------------------------------------------------------


def document(text: str, doc_id: str = "doc") -> Document:
    return Document(doc_id, text, "docs/doc.txt")


def test_sentence_spans_split_after_end_marks_and_at_paragraphs() -> None:
    text = 'One. Two?! "Three." (Four.) Broken\nline\n\nFive 3.5 six… seven'
    assert [text[s:e] for s, e in sentence_spans(text)] == [
        "One.",
        "Two?!",
        '"Three."',
        "(Four.)",
        "Broken\nline",  # a single line break is not an end
        "Five 3.5 six…",
        "seven",
    ]


def test_chunks_pack_whole_sentences_and_carry_an_overlap() -> None:
    # sentences of 3, 3, 3 and 2 tokens; room for 7 tokens, overlap up to 3
    text = "a b c. d e f. g h i. j k."
    chunks = chunk_document(document(text), TOKENIZER, ChunkSettings(7, 3))
    assert [c.text for c in chunks] == ["a b c. d e f.", "d e f. g h i.", "g h i. j k."]
    assert [c.id for c in chunks] == ["doc#0", "doc#1", "doc#2"]
    assert [(c.start, c.end, c.tokens) for c in chunks] == [(0, 13, 6), (7, 20, 6), (14, 25, 5)]
    assert all(c.document_id == "doc" and c.source == "docs/doc.txt" for c in chunks)


def test_an_over_long_sentence_is_cut_by_tokens_with_overlap() -> None:
    text = "Short one. " + " ".join(f"w{i}" for i in range(10)) + ". End."
    chunks = chunk_document(document(text), TOKENIZER, ChunkSettings(4, 1))
    assert [c.text for c in chunks] == [
        "Short one.",
        "w0 w1 w2 w3",
        "w3 w4 w5 w6",
        "w6 w7 w8 w9.",
        "End.",
    ]


def test_chunk_source_names_the_jsonl_line() -> None:
    chunk = chunk_document(Document("d", "Hi.", "c.jsonl", 7), TOKENIZER, ChunkSettings(5, 0))[0]
    assert chunk.source == "c.jsonl:7"


def test_a_tokenizer_without_offsets_is_refused_by_name() -> None:
    class Slow:
        name_or_path = "slow-tokenizer"

        def __call__(self, text: str, **options: Any) -> dict[str, Any]:
            raise NotImplementedError("return_offset_mapping is not available")

    with pytest.raises(ValueError, match="'slow-tokenizer' gives no character offsets"):
        chunk_document(document("Hi."), Slow(), ChunkSettings(5, 0))


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (5, 5), (5, -1)])
def test_chunk_settings_refuse_impossible_values(size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="chunk_tokens|overlap_tokens"):
        ChunkSettings(size, overlap)


WORD = st.text(alphabet="abcdé0123-'", min_size=1, max_size=8)
END = st.sampled_from(["", ".", "!", "?", "…", '."', ".)", "?!"])
GAP = st.sampled_from([" ", "  ", "\n", "\n\n", " \n \n ", "\t"])
SENTENCE = st.builds(
    lambda words, end: " ".join(words) + end, st.lists(WORD, min_size=1, max_size=25), END
)
STRUCTURED = st.builds(
    lambda parts, gaps: "".join(p + g for p, g in zip(parts, gaps * len(parts), strict=False)),
    st.lists(SENTENCE, min_size=1, max_size=30),
    st.lists(GAP, min_size=1, max_size=5),
)
NOISE = st.text(alphabet=" \n\t.!?ab\u00a0\u2028\"')", min_size=1, max_size=200)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.one_of(STRUCTURED, NOISE).filter(lambda t: t.strip()),
    size=st.integers(1, 40),
    overlap_share=st.floats(0, 0.99),
)
def test_chunking_invariants(text: str, size: int, overlap_share: float) -> None:
    config = ChunkSettings(size, int(size * overlap_share))
    chunks = chunk_document(document(text), TOKENIZER, config)
    assert chunks
    for n, chunk in enumerate(chunks):
        assert chunk.id == f"doc#{n}"
        assert text[chunk.start : chunk.end] == chunk.text == chunk.text.strip()
        assert chunk.tokens == len(chunk.text.split()) <= config.chunk_tokens
    for before, after in pairwise(chunks):
        assert before.start < after.start and before.end < after.end  # always moving on
        shared = text[after.start : before.end] if after.start < before.end else ""
        assert len(shared.split()) <= config.overlap_tokens
    covered = set()
    for chunk in chunks:
        covered.update(range(chunk.start, chunk.end))
    assert all(i in covered for i, char in enumerate(text) if not char.isspace())
    assert chunk_document(document(text), TOKENIZER, config) == chunks  # stable


def test_chunking_with_the_bundled_minilm_tokenizer() -> None:
    from adaptlab.models.bundled import MINILM, load_tokenizer

    tokenizer = load_tokenizer(MINILM)
    text = (
        "Retrieval-augmented generation answers from documents. "
        + "It retrieves passages, then writes an answer. " * 20
        + "Überlänge without an end mark: "
        + "word " * 60
    )
    config = ChunkSettings(24, 8)
    chunks = chunk_document(document(text), tokenizer, config)
    assert len(chunks) > 3
    for chunk in chunks:
        assert text[chunk.start : chunk.end] == chunk.text
        assert chunk.tokens <= config.chunk_tokens
        # a chunk re-tokenized on its own has no more tokens than were counted for it
        assert len(tokenizer(chunk.text, add_special_tokens=False)["input_ids"]) <= chunk.tokens


# --- hash and report -------------------------------------------------------------------------


def test_collection_hash_follows_content_ids_and_settings_not_location(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "v1", {"a.txt": GOOD, "b.md": "Other text here."})
    config = ChunkSettings(50, 10)

    def digest(path: Path, chunking: ChunkSettings = config, tokenizer: str = "t") -> str:
        return collection_sha256(read_documents(path), chunking, tokenizer)

    base = digest(folder)
    assert digest(folder) == base
    moved = shutil.copytree(folder, tmp_path / "elsewhere" / "v1")
    assert digest(moved) == base  # where the folder lives is not content
    (moved / "b.md").write_text("Other text here!")
    assert digest(moved) != base  # one document changed
    (moved / "b.md").write_text("Other text here.")
    assert digest(moved) == base
    (moved / "b.md").rename(moved / "renamed.md")
    assert digest(moved) != base  # ids are file names: a rename is a change
    assert digest(folder, ChunkSettings(50, 11)) != base
    assert digest(folder, tokenizer="other") != base


def test_report_counts_and_chunk_stats(tmp_path: Path) -> None:
    folder = write_folder(
        tmp_path,
        {"a.txt": "one two three. four five.", "b.txt": "six.", "c.md": "", "d.pdf": b"junk"},
    )
    collection = read_documents(folder)
    config = ChunkSettings(3, 1)
    chunks = chunk_collection(collection, TOKENIZER, config)
    report = collection_report(collection, chunks, config)
    json.dumps(report)  # JSON-ready
    assert report["documents"] == {
        "read": 4,
        "kept": 2,
        "skipped": {"empty_document": 1, "unreadable_pdf": 1},
        "hidden_not_read": 0,
    }
    assert report["issues"]["total"] == 2
    assert {i["error"] for i in report["issues"]["items"]} == {"empty_document", "unreadable_pdf"}
    assert [c.id for c in chunks] == ["a.txt#0", "a.txt#1", "b.txt#0"]
    assert report["chunks"] == {
        "count": 3,
        "chunk_tokens": 3,
        "overlap_tokens": 1,
        "tokens": {"total": 6, "p50": 2.0, "p95": 2.9, "max": 3},
    }
    assert report["pii"] == {"scrubbed": True, "counts": {}}


# --------------------------------------------------------------------------- prepared collection


def test_a_prepared_collection_round_trips_through_the_data_folder(tmp_path: Path) -> None:
    from adaptlab.data.documents import prepare_collection, read_collection, write_collection

    source = write_folder(tmp_path / "docs", {"a.md": GOOD, "b.txt": "Short. Text here."})
    settings = ChunkSettings(8, 2)
    prepared = prepare_collection(source, settings, tokenizer=TOKENIZER, tokenizer_name="ws")
    write_collection(tmp_path / "data", prepared)

    again = read_collection(tmp_path / "data", expected_sha256=prepared.sha256)

    assert again == prepared
    assert prepared.lock_entry()["chunks"] == len(prepared.chunks) > 2
    with pytest.raises(DataError, match=r"documents\.json: collection sha256 .* differs"):
        read_collection(tmp_path / "data", expected_sha256="0" * 64)
    facts = tmp_path / "data" / "documents.json"
    written = json.loads(facts.read_text(encoding="utf-8"))
    without_tokenizer = {k: v for k, v in written.items() if k != "tokenizer"}
    for broken in ({**written, "chunk_tokens": "200"}, without_tokenizer, []):
        facts.write_text(json.dumps(broken), encoding="utf-8")
        with pytest.raises(DataError, match=r"documents\.json: (field '\w+' is missing|expected)"):
            read_collection(tmp_path / "data")


def test_the_source_hash_changes_with_any_byte_or_name_and_nothing_else(tmp_path: Path) -> None:
    from adaptlab.data.documents import source_sha256

    source = write_folder(tmp_path / "docs", {"a.md": GOOD, "sub/b.txt": "B."})
    first = source_sha256(source)
    assert source_sha256(shutil.copytree(source, tmp_path / "elsewhere")) == first
    (source / "sub" / "b.txt").write_text("B!", encoding="utf-8")
    assert source_sha256(source) != first
    (source / "sub" / "b.txt").write_text("B.", encoding="utf-8")
    (source / "sub" / "b.txt").rename(source / "sub" / "c.txt")
    assert source_sha256(source) != first


def test_data_check_reports_documents_and_names_each_skipped_file(tmp_path: Path) -> None:
    from adaptlab.config import DataConfig, ModelConfig
    from adaptlab.data.pipeline import check_data
    from adaptlab.data.report import to_markdown

    source = write_folder(
        tmp_path / "docs", {"good.md": GOOD, "empty.txt": "  \n", "latin.txt": b"caf\xe9"}
    )
    train = tmp_path / "train.jsonl"
    chat = {"messages": [{"role": "user", "content": "q?"}, {"role": "assistant", "content": "a"}]}
    train.write_text("\n".join(json.dumps(chat) for _ in range(3)) + "\n", encoding="utf-8")
    data = DataConfig(train=str(train), documents=str(source), dedup=False)

    result = check_data(data, ModelConfig())

    documents = result.report["documents"]
    assert documents["documents"]["kept"] == 1 and documents["documents"]["read"] == 3
    assert sum(documents["documents"]["skipped"].values()) == 2
    markdown = to_markdown(result.report)
    assert "## Documents" in markdown
    assert "empty.txt" in markdown and "latin.txt" in markdown
    assert result.collection is not None and result.collection.chunks
