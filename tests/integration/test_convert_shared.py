"""Convert the real development sets from ../shared/data (read in place, never copied)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from tests.integration.conftest import require_shared

from adaptlab.data.convert import (
    SLOT_ORDER,
    convert_banking77,
    convert_restaurant8k,
    restaurant8k_slots,
)
from adaptlab.data.formats import load

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _shared_data() -> None:
    require_shared(SHARED)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_banking77_train(tmp_path: Path) -> None:
    src = SHARED / "banking77" / "train.csv"
    out = tmp_path / "banking77_train.jsonl"

    summary = convert_banking77(src, out)

    with src.open(newline="", encoding="utf-8") as handle:
        source = [{"text": r["text"], "label": r["category"]} for r in csv.DictReader(handle)]
    assert summary.records == len(source) == 10_003
    assert _jsonl(out) == source
    assert len(summary.label_counts) == 77
    assert any("\n" in row["text"] for row in source)  # the multi-line texts are exercised


@pytest.mark.parametrize(("name", "count"), [("train_0.json", 8198), ("test.json", 3731)])
def test_restaurant8k(tmp_path: Path, name: str, count: int) -> None:
    src = SHARED / "restaurant8k" / name
    out = tmp_path / name.replace(".json", ".jsonl")

    summary = convert_restaurant8k(src, out)

    items = json.loads(src.read_text(encoding="utf-8"))
    records = _jsonl(out)
    assert summary.records == len(records) == len(items) == count
    for index, (record, item) in enumerate(zip(records, items, strict=True)):
        assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant"]
        text = item["userInput"]["text"]
        assert record["messages"][1]["content"] == text
        spans = {
            label["slot"]: text[
                label["valueSpan"].get("startIndex", 0) : label["valueSpan"]["endIndex"]
            ]
            for label in item.get("labels", [])
        }
        assert restaurant8k_slots(record) == spans
        assert record["metadata"] == {
            "source_index": index,
            "requested_slots": item.get("context", {}).get("requestedSlots", []),
        }
    assert summary.no_slots == sum(1 for item in items if not item.get("labels"))
    assert set(summary.slot_counts) == set(SLOT_ORDER)
    assert summary.repeated_slots == 0  # checked on the real data: no slot is labelled twice
    # Every converted line passes adaptlab's own chat validation, unchanged.
    loaded = load(out)
    assert loaded.format == "chat" and loaded.issues == []
    assert [r.data for r in loaded.records] == records
