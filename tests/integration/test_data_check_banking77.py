"""Acceptance: `adaptlab data check` on banking77 reports duplicates, contamination, the 77
labels with per-class counts, and token statistics (the timing lives in bench/)."""

from __future__ import annotations

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
    require_shared(BANKING77 / "train.csv", BANKING77 / "test.csv")


def test_banking77_data_check(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "data",
            "check",
            str(BANKING77 / "train.csv"),
            "--eval",
            str(BANKING77 / "test.csv"),
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "data_report.json").read_text())
    assert report["sources"]["train"]["valid"] == 10_003
    assert report["sources"]["eval"]["valid"] == 3_080
    assert report["duplicates"]["train"]["exact_groups"] >= 1
    assert report["contamination"]["exact"] >= 1
    labels = report["labels"]
    assert (
        labels["classes"] == 77
        and sum(labels["train_counts"].values())
        == 10_003 - report["duplicates"]["train"]["dropped"]
    )
    categories = json.loads((BANKING77 / "categories.json").read_text())
    assert sorted(labels["train_counts"]) == sorted(categories)
    tokens = report["tokens"]["train"]
    assert tokens["count"] > 9_900 and 5 < tokens["p50"] < tokens["p95"] < tokens["max"]
    assert "Contamination:" in result.output and "Labels: 77 classes" in result.output
