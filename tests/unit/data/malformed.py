"""A seeded generator of classification files (CSV or JSONL) with malformed lines mixed in.

Every planted line knows what the loader must say about it: a good line is kept, a bad line is
reported on its first line with exactly one error class, and a *warning* line (a byte-order
mark before a good record, a good record longer than the model's context) is both reported and
kept. No planted line may be reported under two classes; where one defect could be read as two
(a raw NUL inside a JSON string is a JSON syntax error, not a class of its own), the class here
is the one the loader is meant to give, and the comment at the maker says why.

Good records pass the pipeline unchanged, so ``prepare`` must write each of them byte-for-byte
(its ``text`` and ``label`` exactly as planted): they hold no PII (words only, no digit run of
more than three digits, no ``@``), are NFC, and their texts are unique even after
:func:`adaptlab.data.dedup.normalize` and far from each other (random words from a large
vocabulary plus a unique serial word), so neither deduplication nor the split's contamination
check drops one. They do exercise what a reader gets wrong: commas, double quotes, tabs, line
breaks inside a CSV field, leading and trailing spaces, accents, CJK, emoji, zero-width spaces
inside a text, a NUL character (data in CSV; ``\\u0000`` in JSON), integer labels (JSONL) and
lines of 200,000 characters (over the 128 KiB field limit the csv module has by default).
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LABELS = ("billing", "cards", "delivery", "refunds", "technical")
INT_LABELS = (1, 2, 3)
LONG_CHARS = 200_000
BOM = b"\xef\xbb\xbf"
SEQUENCE_LEN = 64  # words per good record stay below this; only the long ones pass it

_SYLLABLES = ("ka", "lo", "mi", "ne", "su", "ta", "ri", "vo", "pe", "du", "ga", "zo", "fi", "be")
_FLAVOURS = (
    "",
    ", with a comma",
    ' and "quotes" inside',
    " café naïve façade",
    " 日本語のテキスト",
    " emoji 🙂 here",
    " zero\u200bwidth inside",
    "\ttab inside",
    "  ",  # trailing spaces
)


@dataclass(frozen=True)
class Planted:
    """One planted record: where it starts, what it is, and what the loader must say."""

    line: int
    kind: str  # "good", a warning class kept with its record, or the bad line's class
    errors: frozenset[str]  # issue classes expected on ``line`` (empty for a good line)
    record: dict[str, Any] | None  # what must be kept exactly (None: the line is left out)


@dataclass
class Generated:
    path: Path
    planted: list[Planted] = field(default_factory=list)

    def expected_issues(self) -> set[tuple[int, str]]:
        return {(p.line, error) for p in self.planted for error in p.errors}

    def kept(self) -> list[Planted]:
        return [p for p in self.planted if p.record is not None]

    def bad(self) -> list[Planted]:
        return [p for p in self.planted if p.record is None]


class _Texts:
    """Unique, PII-free, NFC texts."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.words = sorted(
            {"".join(rng.choices(_SYLLABLES, k=rng.randint(2, 4))) for _ in range(3000)}
        )
        self.serial = 0

    def text(self) -> str:
        self.serial += 1
        words = self.rng.choices(self.words, k=self.rng.randint(5, 12))
        flavour = self.rng.choice(_FLAVOURS)
        lead = "  " if self.rng.random() < 0.05 else ""
        return f"{lead}{' '.join(words)} serial{_serial_word(self.serial)}{flavour}"

    def long(self) -> str:
        # A sentence of random CJK ideographs (U+4E00-U+9FFF, all NFC-stable) of its own,
        # repeated: two long texts from one shared vocabulary would share nearly all their
        # character 5-grams and be dropped as near-duplicates of each other, and a text of
        # 200,000 distinct 5-grams costs deduplication seconds.
        self.serial += 1
        sentence = " ".join(
            "".join(chr(self.rng.randint(0x4E00, 0x9FFF)) for _ in range(5)) for _ in range(40)
        )
        text = f"long serial{_serial_word(self.serial)}"
        while len(text) < LONG_CHARS:
            text += " " + sentence
        return text


def _serial_word(n: int) -> str:
    # letters, not digits: digit runs are what the PII scrubber looks at
    word = ""
    while True:
        n, digit = divmod(n, 26)
        word = chr(ord("a") + digit) + word
        if n == 0:
            return word


Maker = Callable[[random.Random, _Texts], tuple[bytes, str, dict[str, Any] | None]]


# --------------------------------------------------------------------------- JSONL


def _dumps(row: Any) -> bytes:
    return json.dumps(row, ensure_ascii=False).encode()


def _good_row(rng: random.Random, texts: _Texts) -> dict[str, Any]:
    label: str | int = rng.choice(LABELS) if rng.random() < 0.9 else rng.choice(INT_LABELS)
    return {"text": texts.text(), "label": label}


def _jsonl_good(rng: random.Random, texts: _Texts) -> tuple[bytes, str, dict[str, Any] | None]:
    row = _good_row(rng, texts)
    pick = rng.random()
    if pick < 0.03:
        row["text"] += " nul\x00inside"  # escaped as \u0000 by json: a valid string
    elif pick < 0.06:
        row["text"] += "\nsecond line"
    elif pick < 0.08:
        row["source"] = {"channel": "web", "tags": ["a", "b"]}  # extra keys are kept too
    return _dumps(row), "good", row


def _jsonl_bom(rng: random.Random, texts: _Texts) -> tuple[bytes, str, dict[str, Any] | None]:
    row = _good_row(rng, texts)
    return BOM + _dumps(row), "bom", row  # a warning: the record after the mark is kept


def _jsonl_long(rng: random.Random, texts: _Texts) -> tuple[bytes, str, dict[str, Any] | None]:
    row = {"text": texts.long(), "label": rng.choice(LABELS)}
    return _dumps(row), "too_long", row  # a warning from the token count: kept, not cut


def _bad(raw: bytes, error: str) -> tuple[bytes, str, dict[str, Any] | None]:
    return raw, error, None


def _truncated(rng: random.Random, texts: _Texts) -> tuple[bytes, str, dict[str, Any] | None]:
    # cut between characters: a cut inside a multi-byte character would also be invalid UTF-8
    # (non_utf8, which the loader checks first)
    text = json.dumps(_good_row(rng, texts), ensure_ascii=False)
    return _bad(text[: rng.randint(1, len(text) - 1)].rstrip(" ").encode(), "invalid_json")


def _trailing(rng: random.Random, texts: _Texts) -> tuple[bytes, str, dict[str, Any] | None]:
    tail = rng.choice([b" garbage", b"}", b",{}", b" []", b"x"])
    return _bad(_dumps(_good_row(rng, texts)) + tail, "invalid_json")


def _not_object(rng: random.Random, texts: _Texts) -> tuple[bytes, str, dict[str, Any] | None]:
    value = rng.choice([[texts.text(), "cards"], 42, 3.5, texts.text(), True, None, []])
    return _bad(_dumps(value), "wrong_type")


def _missing(rng: random.Random, texts: _Texts) -> tuple[bytes, str, dict[str, Any] | None]:
    row = _good_row(rng, texts)
    del row[rng.choice(["text", "label"])]
    return _bad(_dumps(row), "missing_field")


_WRONG_TEXT = (7, 1.5, ["a", "list"], None, {"an": "object"}, True)
_WRONG_LABEL = (1.5, ["cards"], {"label": "cards"}, True, False)


def _wrong_text(rng: random.Random, texts: _Texts) -> tuple[bytes, str, dict[str, Any] | None]:
    row = _good_row(rng, texts)
    row["text"] = rng.choice(_WRONG_TEXT)  # null too: a text must be a string
    return _bad(_dumps(row), "wrong_type")


def _wrong_label(rng: random.Random, texts: _Texts) -> tuple[bytes, str, dict[str, Any] | None]:
    row = _good_row(rng, texts)
    row["label"] = rng.choice(_WRONG_LABEL)  # an integer label is valid (HF ClassLabel ids)
    return _bad(_dumps(row), "wrong_type")


def _null_label(rng: random.Random, texts: _Texts) -> tuple[bytes, str, dict[str, Any] | None]:
    row = _good_row(rng, texts)
    row["label"] = rng.choice([None, "", "   ", "\u200b"])  # a null label is a missing one
    return _bad(_dumps(row), "missing_label")


_BLANK = ("", "   ", "\u200b\u200b", "\t\n", "\u200b \ufeff")


def _empty_text(rng: random.Random, texts: _Texts) -> tuple[bytes, str, dict[str, Any] | None]:
    row = _good_row(rng, texts)
    row["text"] = rng.choice(_BLANK)
    return _bad(_dumps(row), "empty_text")


_BAD_UTF8 = (b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\x80")


def _not_utf8(rng: random.Random, texts: _Texts) -> tuple[bytes, str, dict[str, Any] | None]:
    row = _good_row(rng, texts)
    row["text"] = "BADBYTE " + row["text"]
    raw = _dumps(row).replace(b"BADBYTE", rng.choice(_BAD_UTF8))
    return _bad(raw, "non_utf8")


def _surrogate(rng: random.Random, texts: _Texts) -> tuple[bytes, str, dict[str, Any] | None]:
    row = _good_row(rng, texts)
    row["text"] = "HALF " + row["text"]
    return _bad(_dumps(row).replace(b"HALF", b"\\ud800"), "non_utf8")


def _nul(rng: random.Random, texts: _Texts) -> tuple[bytes, str, dict[str, Any] | None]:
    # A raw NUL byte: JSON allows no raw control character, so this is a JSON syntax error
    # (invalid_json), where the escaped \u0000 of _jsonl_good is a valid string.
    row = _good_row(rng, texts)
    row["text"] += " NULBYTE"
    raw = _dumps(row)
    if rng.random() < 0.3:
        return _bad(raw.replace(b'"label"', b'\x00"label"'), "invalid_json")
    return _bad(raw.replace(b"NULBYTE", b"\x00"), "invalid_json")


def _duplicate_key(rng: random.Random, texts: _Texts) -> tuple[bytes, str, dict[str, Any] | None]:
    key = rng.choice(["text", "label"])
    row = _good_row(rng, texts)
    again = json.dumps(key) + ": " + json.dumps(texts.text() if key == "text" else "cards")
    return _bad(_dumps(row)[:-1] + b", " + again.encode() + b"}", "duplicate_key")


def _too_deep(rng: random.Random, texts: _Texts) -> tuple[bytes, str, dict[str, Any] | None]:
    depth = 100_000
    return _bad(b'{"text": ' + b"[" * depth + b"]" * depth + b', "label": "x"}', "invalid_json")


JSONL_BAD: tuple[tuple[Maker, int], ...] = (  # (maker, weight)
    (_truncated, 10),
    (_trailing, 8),
    (_not_object, 8),
    (_missing, 8),
    (_wrong_text, 8),
    (_wrong_label, 8),
    (_null_label, 6),
    (_empty_text, 8),
    (_not_utf8, 8),
    (_surrogate, 4),
    (_nul, 6),
    (_duplicate_key, 6),
    (_jsonl_bom, 4),
    (_too_deep, 1),
)


# --------------------------------------------------------------------------- CSV


def _csv_line(fields: list[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(fields)
    return buffer.getvalue().removesuffix("\n").encode()


def _csv_good(rng: random.Random, texts: _Texts) -> tuple[bytes, str, dict[str, Any] | None]:
    text, label = texts.text(), rng.choice(LABELS)
    pick = rng.random()
    if pick < 0.03:
        text += " nul\x00inside"  # the csv module reads NUL as data: a valid character
    elif pick < 0.08:
        text += "\nsecond line, of a quoted field"
    elif pick < 0.10:
        text += "\r\nwindows line break"
    row = {"text": text, "label": label}
    return _csv_line([text, label]), "good", row


def _csv_long(rng: random.Random, texts: _Texts) -> tuple[bytes, str, dict[str, Any] | None]:
    row = {"text": texts.long(), "label": rng.choice(LABELS)}
    return _csv_line([row["text"], row["label"]]), "too_long", row


def _field_count(rng: random.Random, texts: _Texts) -> tuple[bytes, str, dict[str, Any] | None]:
    text = texts.text()
    fields = rng.choice([[text], [text, "cards", "extra"], [text, "cards", "", ""]])
    return _bad(_csv_line(fields), "wrong_field_count")


def _open_quote(rng: random.Random, texts: _Texts) -> tuple[bytes, str, dict[str, Any] | None]:
    text = texts.text().replace('"', "'")
    raw = rng.choice([f'"{text},cards', f'{text.replace(",", ";")},"cards'])
    return _bad(raw.encode(), "unterminated_quote")


def _csv_empty_text(rng: random.Random, texts: _Texts) -> tuple[bytes, str, dict[str, Any] | None]:
    return _bad(_csv_line([rng.choice(_BLANK), rng.choice(LABELS)]), "empty_text")


def _csv_blank_label(rng: random.Random, texts: _Texts) -> tuple[bytes, str, dict[str, Any] | None]:
    return _bad(_csv_line([texts.text(), rng.choice(["", " ", "\u200b"])]), "missing_label")


def _csv_not_utf8(rng: random.Random, texts: _Texts) -> tuple[bytes, str, dict[str, Any] | None]:
    # inside the text (not before a quote that opens it: that would be a stray quote and a
    # wrong field count), or at the end of the label
    byte = rng.choice(_BAD_UTF8)
    if rng.random() < 0.7:
        raw = _csv_line(["BADBYTE " + texts.text(), rng.choice(LABELS)])
        return _bad(raw.replace(b"BADBYTE", byte), "non_utf8")
    return _bad(_csv_line([texts.text(), rng.choice(LABELS)]) + byte, "non_utf8")


CSV_BAD: tuple[tuple[Maker, int], ...] = (
    (_field_count, 10),
    (_open_quote, 8),
    (_csv_empty_text, 6),
    (_csv_blank_label, 6),
    (_csv_not_utf8, 6),
)


# --------------------------------------------------------------------------- files


def generate(path: Path, good: int, bad: int, seed: int = 0, long: int = 2) -> Generated:
    """``good`` good records (``long`` of them 200,000 characters) and ``bad`` malformed or
    warning lines, shuffled (seeded), written to ``path`` (``.csv`` or ``.jsonl``)."""
    rng = random.Random(seed)
    texts = _Texts(rng)
    is_csv = path.suffix == ".csv"
    makers, weights = zip(*(CSV_BAD if is_csv else JSONL_BAD), strict=True)
    good_maker = _csv_good if is_csv else _jsonl_good
    long_maker = _csv_long if is_csv else _jsonl_long
    plan: list[Maker] = [good_maker] * (good - long) + [long_maker] * long
    plan += rng.choices(makers, weights=weights, k=bad)
    rng.shuffle(plan)
    generated = Generated(path)
    chunks: list[bytes] = [b"text,label"] if is_csv else []
    line = len(chunks) + 1
    for maker in plan:
        raw, kind, record = maker(rng, texts)
        errors = frozenset() if kind == "good" else frozenset({kind})
        generated.planted.append(Planted(line, kind, errors, record))
        chunks.append(raw)
        line += raw.count(b"\n") + raw.count(b"\r") - raw.count(b"\r\n") + 1
    path.write_bytes(b"\n".join(chunks) + b"\n")
    return generated
