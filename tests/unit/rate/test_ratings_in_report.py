"""Ratings made after ``compare`` reach ``comparison.json`` and the report when the report is
rebuilt (``adaptlab report``); an unreadable ratings database is a notice, never a failed
report."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from adaptlab.config import CompareConfig
from adaptlab.ratings import DATABASE, RatingStore, assignments, human_ratings_summary, read_pair
from adaptlab.report.build import build_report


def rate(experiment: Path, rater: str, choices: list[str]) -> None:
    answers = read_pair(experiment, ("few_shot", "prompt"))
    store = RatingStore.open(experiment)
    for assignment, choice in zip(assignments(rater, answers), choices, strict=False):
        store.record(assignment, assignment.run_choice(choice))


def test_ratings_go_into_comparison_json_and_the_report(experiment: Path) -> None:
    rate(experiment, "ann", ["A", "A", "B", "tie", "both_bad", "A"])
    rate(experiment, "bob", ["A", "B", "B", "tie"])
    build_report([experiment])

    saved = yaml.safe_load((experiment / "experiment.yaml").read_text())
    settings = CompareConfig.model_validate(saved["compare"])  # the experiment's, as the report
    expected = human_ratings_summary(
        experiment, resamples=settings.bootstrap_resamples, confidence=settings.confidence
    )
    written = json.loads((experiment / "comparison.json").read_text())
    assert written["human_ratings"] == expected
    (pair,) = expected["pairs"]
    assert pair["count"] == 10 and pair["raters"] == ["ann", "bob"]
    report = (experiment / "report.md").read_text()
    section = report[report.index("## Human preference") :]
    first, second = pair["runs"]
    low, high = pair["win_rate_ci"][first]
    assert f"{pair['win_rate'][first] * 100:.1f}% [{low * 100:.1f}, {high * 100:.1f}]" in section
    assert f"{first} vs {second}" in section and "ann/bob" in section


def test_an_unreadable_ratings_database_is_a_notice(experiment: Path) -> None:
    (experiment / DATABASE).write_bytes(b"this is not an SQLite database" * 100)
    build_report([experiment])
    report = (experiment / "report.md").read_text()
    assert "Ratings not read:" in report and DATABASE in report
