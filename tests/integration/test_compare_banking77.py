"""Acceptance: `adaptlab compare` on a small banking77 slice with the real bundled models runs
every classification strategy through to a leaderboard (the full-data numbers are benchmarks)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from tests.integration.conftest import require_shared
from typer.testing import CliRunner

from adaptlab.cli import app

BANKING77 = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "banking77"

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _shared_data() -> None:
    require_shared(BANKING77 / "train.csv")


CLASSES = 12
PER_CLASS = 24


def write_slice(path: Path) -> Path:
    """The first CLASSES intents, PER_CLASS examples each (read from ../shared, never copied)."""
    with (BANKING77 / "train.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    labels = sorted({r["category"] for r in rows})[:CLASSES]
    taken: dict[str, int] = {}
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "category"])
        for row in rows:
            if row["category"] in labels and taken.get(row["category"], 0) < PER_CLASS:
                taken[row["category"]] = taken.get(row["category"], 0) + 1
                writer.writerow([row["text"], row["category"]])
    return path


def test_compare_on_a_banking77_slice(tmp_path: Path) -> None:
    config = tmp_path / "slice.yaml"
    config.write_text(
        f"""
name: slice
output_dir: {tmp_path / "runs"}
data:
  train: {write_slice(tmp_path / "slice.csv")}
  val_set_size: 0.25
train:
  num_epochs: 1
compare:
  # Latency is not what this test is about: batch 1 only (a 32-text batch through SmolLM2
  # costs seconds a call), in two rounds.
  latency_budget_s: 0.5
  latency_batch_sizes: [1]
  latency_rounds: 2
  bootstrap_resamples: 500
strategies:
  setfit: {{shots: 4}}
  llm_prompt: {{eval_limit: 12}}
"""
    )
    result = CliRunner().invoke(app, ["compare", str(config)])
    assert result.exit_code == 0, result.output
    comparison = json.loads((tmp_path / "runs" / "slice" / "comparison.json").read_text())
    assert comparison["failures"] == {}
    rows = {r["strategy"]: r for r in comparison["rows"]}
    from adaptlab.strategies.base import strategies_for

    assert set(rows) == set(strategies_for("classification"))
    assert {"zero_shot", "llm_prompt", "frozen", "full", "distill"} <= set(rows)
    chance = 1 / CLASSES
    assert rows["frozen"]["accuracy"] > 3 * chance
    assert rows["llm_prompt"]["sampled"] and rows["llm_prompt"]["n"] == 12
    assert "Leaderboard" in result.output
