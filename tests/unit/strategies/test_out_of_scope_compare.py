"""Out-of-scope rejection through ``compare`` for every classification strategy (each with its
matrix row's settings): two topics are known in train, a third appears only in the eval set,
labelled ``oos``. Each run's threshold comes from the validation split of train, and every
figure in ``eval.json`` is recomputed here from ``predictions.safetensors`` and the threshold.
One topic's examples are also put into train as ``oos`` in a second experiment: the
strategies then learn it as a class of their own, and its column rejects too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.unit.strategies.test_compare import TOPICS
from tests.unit.strategies.test_generative import write_jsonl
from tests.unit.strategies.test_predict import _runnable, _settings

from adaptlab import predict
from adaptlab.compare import compare
from adaptlab.config import ExperimentConfig
from adaptlab.export import export
from adaptlab.runs import read_run

OOS = "oos"
KNOWN = ("cards", "transfers")
UNKNOWN = "refunds"


def _rows(topics: dict[str, str], numbers: range) -> list[dict[str, str]]:
    """Rows of each topic in ``topics`` (topic -> label written) for the given numbers."""
    rows = []
    for topic, label in topics.items():
        words = TOPICS[topic]
        for n in numbers:
            a, b = words[n % 6], words[(n * 5 + 1) % 6]
            rows.append(
                {"text": f"question {n} about my {a} and {b} number {n * 7919}", "label": label}
            )
    return rows


def _experiment(root: Path, tiny_encoder: Path, names: list[str], settings: dict[str, Any],
                train_oos: bool) -> ExperimentConfig:  # fmt: skip
    known = {topic: topic for topic in KNOWN}
    train = _rows({**known, **({UNKNOWN: OOS} if train_oos else {})}, range(20))
    evaluation = _rows({**known, UNKNOWN: OOS}, range(1000, 1010))
    raw = {
        "name": "open" + ("-trained" if train_oos else ""),
        "output_dir": str(root / "runs"),
        "data": {
            "train": write_jsonl(root / "train.jsonl", train),
            "eval": write_jsonl(root / "eval.jsonl", evaluation),
            "out_of_scope_label": OOS,
        },
        "model": {"base_model": None, "sequence_len": 32},
        "train": {"max_steps": 2},
        "strategies": settings,
        "compare": {
            "strategies": names,
            "latency_budget_s": 0.05,
            "bootstrap_resamples": 100,
            "validation_share": 0.2,
        },
    }
    raw["model"]["base_model"] = str(tiny_encoder)
    return ExperimentConfig.model_validate(raw)


@pytest.fixture(scope="module", params=[False, True], ids=["eval-only", "trained"])
def open_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path
) -> tuple[Path, bool]:
    train_oos = bool(request.param)
    root = tmp_path_factory.mktemp("open-set")
    names = _runnable("classification")
    settings = {name: _settings(name, request) for name in names}
    result = compare(
        _experiment(root, tiny_encoder, names, settings, train_oos), log=lambda _: None
    )
    assert result.comparison["failures"] == {}
    return result.folder, train_oos


@pytest.mark.parametrize("strategy", _runnable("classification"))
def test_every_classifier_rejects_by_a_threshold_chosen_on_validation(
    open_runs: tuple[Path, bool], strategy: str
) -> None:
    folder, train_oos = open_runs
    record = read_run(folder / "runs" / strategy)
    section = record.eval.out_of_scope
    assert section is not None and section["label"] == OOS and section["score"] == "max_probability"
    assert section["rule"] == "in_scope_rejection" and section["target"] == 0.05
    # 20 per trained label, 20% held out: 4 per label; out-of-scope ones labelled -1 there.
    labels_trained = len(KNOWN) + train_oos
    assert section["validation_n"] == 4 * labels_trained
    assert section["validation_out_of_scope"] == (4 if train_oos else 0)
    names = record.manifest.raw["label_names"]
    assert (OOS in names) == train_oos
    assert section["out_of_scope_column"] == (names.index(OOS) if train_oos else None)
    arrays = record.predictions
    probabilities, gold = arrays["probabilities"].astype(np.float64), arrays["gold"]
    assert (gold == -1).sum() == 10 and len(gold) == 30
    # Recomputed here: the score, the rejection, every metric in eval.json.
    columns = [i for i, name in enumerate(names) if name != OOS]
    score = probabilities[:, columns].max(axis=1)
    rejected = score < section["threshold"]
    if train_oos:
        rejected |= probabilities.argmax(axis=1) == names.index(OOS)
    predicted = np.where(rejected, -1, probabilities.argmax(axis=1))
    inside = gold != -1
    metrics = record.eval.metrics
    assert metrics["in_scope_accuracy"] == pytest.approx((predicted == gold)[inside].mean())
    assert metrics["out_of_scope_recall"] == pytest.approx(rejected[~inside].mean())
    assert metrics["overall_accuracy"] == pytest.approx((predicted == gold).mean())
    assert metrics["accuracy"] == pytest.approx(
        (probabilities.argmax(axis=1) == gold)[inside].mean()
    )
    assert np.allclose(arrays["score"], score, atol=1e-6)
    assert record.eval.primary_metric == "overall_accuracy"
    low, high = record.eval.interval
    assert low <= record.eval.score <= high


def test_the_comparison_ranks_on_accuracy_over_all_queries(open_runs: tuple[Path, bool]) -> None:
    folder, _ = open_runs
    comparison = json.loads((folder / "comparison.json").read_text(encoding="utf-8"))
    assert comparison["metric"] == "overall_accuracy"
    scores = [row["score"] for row in comparison["rows"]]
    assert scores == sorted(scores, reverse=True)
    for row in comparison["rows"]:
        assert row["score"] == row["overall_accuracy"]
        assert row["out_of_scope"]["threshold"] is not None
        if row["strategy"] != comparison["best"]:
            assert row["vs_best"] is not None and row["vs_best"]["n"] == 30
    leaderboard = (folder / "leaderboard.md").read_text(encoding="utf-8")
    assert "out-of-scope recall" in leaderboard and "AUROC" in leaderboard


@pytest.mark.parametrize("strategy", ["frozen", "knn"])
def test_predict_rejects_as_the_run_was_scored(open_runs: tuple[Path, bool], strategy: str) -> None:
    """``adaptlab predict`` (and the server) answer the out-of-scope label for the queries the
    run rejected on the eval set, with the score that fell under the threshold."""
    folder, _ = open_runs
    record = read_run(folder / "runs" / strategy)
    rows = [json.loads(line) for line in (folder / "data" / "eval.jsonl").read_text().splitlines()]
    texts = [rows[i]["text"] for i in record.indices]
    scored = record.predictions["overall_accuracy"]
    with predict.open_model(folder / "runs" / strategy) as loaded:
        answers = predict.classify(loaded, texts)
    for answer, row_index, right in zip(answers, record.indices, scored, strict=True):
        gold = rows[row_index]["label"]
        assert (answer.label == gold) == bool(right), (answer, gold)
        assert answer.rejected == (answer.label == OOS)
        if answer.rejected:
            assert answer.probability < record.eval.out_of_scope["threshold"] or (
                OOS in loaded.label_names
            )


def test_the_report_shows_the_tradeoff_and_decides_on_the_ranked_metric(
    open_runs: tuple[Path, bool],
) -> None:
    folder, _ = open_runs
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert 'id="out-of-scope"' in html and 'id="plot-rejection"' in html
    assert "ranked on accuracy over all queries" in html
    for strategy in _runnable("classification"):
        threshold = read_run(folder / "runs" / strategy).eval.out_of_scope["threshold"]
        assert f"{threshold:.3f}" in html


def test_an_export_carries_the_rejection_rule(open_runs: tuple[Path, bool], tmp_path: Path) -> None:
    folder, train_oos = open_runs
    record = read_run(folder / "runs" / "frozen")
    export(folder / "runs" / "frozen", "hf", tmp_path / "hf")
    spec = json.loads((tmp_path / "hf" / "classifier.json").read_text(encoding="utf-8"))
    section = record.eval.out_of_scope
    assert spec["out_of_scope"] == {
        "label": OOS,
        "score": "max_probability",
        "threshold": section["threshold"],
        "column": section["out_of_scope_column"],
        "rule": "in_scope_rejection",
    }
    assert (spec["out_of_scope"]["column"] is not None) == train_oos


def test_every_open_set_metric_is_paired_against_the_best_run(
    open_runs: tuple[Path, bool],
) -> None:
    """Each run minus the best in every open-set metric, on the same queries: the observed
    differences equal the two runs' eval.json values, and the report shows the table."""
    folder, _ = open_runs
    comparison = json.loads((folder / "comparison.json").read_text(encoding="utf-8"))
    best = read_run(folder / "runs" / comparison["best"]).eval.metrics
    for row in comparison["rows"]:
        if row["strategy"] == comparison["best"]:
            assert "open_set_vs_best" not in row
            continue
        ours = read_run(folder / "runs" / row["strategy"]).eval.metrics
        paired = row["open_set_vs_best"]
        assert set(paired) == {
            "overall_accuracy", "in_scope_accuracy", "out_of_scope_recall",
            "out_of_scope_precision", "auroc",
        }  # fmt: skip
        for metric, difference in paired.items():
            wanted = (ours[metric] or 0.0) - (best[metric] or 0.0)
            assert difference["difference"] == pytest.approx(wanted, abs=1e-9), metric
            assert difference["low"] <= difference["high"]
            # the queries each metric is about: 20 in scope, 10 out of scope, 30 in all
            assert difference["n"] == {"in_scope_accuracy": 20, "out_of_scope_recall": 10}.get(
                metric, 30
            )
    assert "AUROC (× 100)" in (folder / "report.html").read_text(encoding="utf-8")
