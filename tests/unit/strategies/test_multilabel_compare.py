"""Multi-label intents through ``compare``, ``predict`` and the report, for every
classification strategy that handles label sets (each with its matrix row's settings): records
name 0, 1 or 2 of three topics, as NLU++ does. Each run's per-label thresholds come from the
validation split of train, and every figure in ``eval.json`` is recomputed here from
``predictions.safetensors`` with scikit-learn."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import f1_score
from tests.unit.strategies.test_compare import TOPICS
from tests.unit.strategies.test_generative import write_jsonl
from tests.unit.strategies.test_predict import _runnable, _settings

from adaptlab import predict
from adaptlab.compare import compare
from adaptlab.config import ExperimentConfig
from adaptlab.runs import read_run
from adaptlab.strategies.base import StrategyUnavailableError, get_strategy


def _multi_label() -> list[str]:
    return [s for s in _runnable("classification") if get_strategy(s).profile.multi_label]


NEUTRAL = ["weather", "garden", "music", "coffee", "tennis", "holiday"]
"""Words of records with no label."""


def _rows(numbers: range) -> list[dict[str, Any]]:
    """Records about 0, 1 or 2 of the topics; the labels are the topics named."""
    names = list(TOPICS)
    rows = []
    for n in numbers:
        chosen = [names[(n + k) % 3] for k in range(n % 3)]
        words = [TOPICS[topic][(n * 7 + k) % 6] for k, topic in enumerate(chosen)]
        words = words or [NEUTRAL[n % 6], NEUTRAL[(n * 5 + 1) % 6]]
        text = f"question {n} about my {' and '.join(words)} number {n * 7919}"
        rows.append({"text": text, "labels": chosen})
    return rows


def _raw(
    root: Path, tiny_encoder: Path, names: list[str], settings: dict[str, Any]
) -> dict[str, Any]:
    return {
        "name": "multi",
        "output_dir": str(root / "runs"),
        "data": {
            "train": write_jsonl(root / "train.jsonl", _rows(range(60))),
            "eval": write_jsonl(root / "eval.jsonl", _rows(range(1000, 1024))),
        },
        "model": {"base_model": str(tiny_encoder), "sequence_len": 32},
        "train": {"max_steps": 2},
        "strategies": settings,
        "compare": {
            "strategies": names,
            "latency_budget_s": 0.05,
            "bootstrap_resamples": 100,
            "validation_share": 0.2,
        },
    }


@pytest.fixture(scope="module")
def multi_runs(
    tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path, request: pytest.FixtureRequest
) -> Path:
    root = tmp_path_factory.mktemp("multi-label")
    names = _multi_label()
    settings = {name: _settings(name, request) for name in names}
    result = compare(
        ExperimentConfig.model_validate(_raw(root, tiny_encoder, names, settings)),
        log=lambda _: None,
    )
    assert result.comparison["failures"] == {}
    return result.folder


@pytest.mark.parametrize("strategy", _multi_label())
def test_every_multi_label_classifier_is_scored_with_thresholds_tuned_on_validation(
    multi_runs: Path, strategy: str
) -> None:
    record = read_run(multi_runs / "runs" / strategy)
    section = record.eval.multi_label
    assert section is not None and section["tuned_on"] == "validation"
    assert section["validation_n"] == 12  # 20% of 60
    names = record.manifest.raw["label_names"]
    assert names == sorted(TOPICS) and set(section["thresholds"]) == set(names)
    arrays = record.predictions
    probabilities, gold = arrays["probabilities"].astype(np.float64), arrays["gold"]
    assert gold.shape == (24, 3) and (gold.sum(axis=1) == 0).sum() == 8
    thresholds = np.array([section["thresholds"][name] for name in names])
    predicted = (probabilities >= thresholds).astype(int)
    metrics = record.eval.metrics
    assert metrics["micro_f1"] == pytest.approx(f1_score(gold, predicted, average="micro"))
    present = (gold.sum(axis=0) + predicted.sum(axis=0)) > 0
    macro = f1_score(gold[:, present], predicted[:, present], average="macro", zero_division=0)
    assert metrics["macro_f1"] == pytest.approx(macro)
    assert metrics["subset_accuracy"] == pytest.approx((predicted == gold).all(axis=1).mean())
    assert record.eval.primary_metric == "micro_f1"
    low, high = record.eval.interval
    assert low <= record.eval.score <= high
    macro_low, macro_high = section["macro_f1_ci"]
    assert macro_low <= metrics["macro_f1"] <= macro_high


def test_the_comparison_ranks_on_micro_f1_and_the_report_says_so(multi_runs: Path) -> None:
    comparison = json.loads((multi_runs / "comparison.json").read_text(encoding="utf-8"))
    assert comparison["metric"] == "micro_f1"
    scores = [row["score"] for row in comparison["rows"]]
    assert scores == sorted(scores, reverse=True)
    for row in comparison["rows"]:
        assert row["score"] == row["micro_f1"]
        if row["strategy"] != comparison["best"]:
            assert row["vs_best"] is not None and row["vs_best"]["n"] == 24
    assert "macro-F1" in (multi_runs / "leaderboard.md").read_text(encoding="utf-8")
    assert "ranked on micro-F1" in (multi_runs / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("strategy", _multi_label()[:2])
def test_predict_answers_the_label_sets_the_run_was_scored_on(
    multi_runs: Path, strategy: str
) -> None:
    record = read_run(multi_runs / "runs" / strategy)
    rows = [
        json.loads(line) for line in (multi_runs / "data" / "eval.jsonl").read_text().splitlines()
    ]
    thresholds = record.eval.multi_label["thresholds"]
    probabilities = record.predictions["probabilities"]
    names = record.manifest.raw["label_names"]
    with predict.open_model(multi_runs / "runs" / strategy) as loaded:
        answers = predict.classify(loaded, [rows[i]["text"] for i in record.indices])
    for answer, scored in zip(answers, probabilities, strict=True):
        wanted = {
            name for name, p in zip(names, scored, strict=True) if p >= thresholds[name] - 1e-6
        }
        assert answer.labels is not None and set(answer.labels) == wanted


def test_a_strategy_without_label_sets_is_refused_by_name(
    tmp_path: Path, tiny_encoder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A strategy whose profile does not say ``multi_label`` (a third party's, say) is refused
    when named on label-set data (and left out of the default list)."""
    knn = type(get_strategy("knn"))
    monkeypatch.setattr(knn, "profile", dataclasses.replace(knn.profile, multi_label=False))
    raw = _raw(tmp_path, tiny_encoder, ["knn"], {})
    with pytest.raises(StrategyUnavailableError, match="several .multi-label. per record"):
        compare(ExperimentConfig.model_validate(raw), log=lambda _: None)


def test_every_classification_strategy_handles_label_sets() -> None:
    """Issue 18's bar: no classification strategy is left out of multi-label data."""
    assert _multi_label() == _runnable("classification")


def test_the_report_shows_per_label_f1_and_calibration(multi_runs: Path) -> None:
    from adaptlab.report.build import build_report

    build_report([multi_runs])
    html = (multi_runs / "report.html").read_text(encoding="utf-8")
    assert 'id="per-class"' in html and "ECE (mean per label)" in html


def test_label_set_metrics_are_paired_against_the_best_run(multi_runs: Path) -> None:
    """Micro-F1, example F1 and subset accuracy of each run minus the best, on the same
    records: the observed differences equal the two runs' eval.json values."""
    from adaptlab.comparison import build_comparison
    from adaptlab.config import CompareConfig

    folders = sorted((multi_runs / "runs").iterdir())
    comparison, _ = build_comparison(folders, CompareConfig(bootstrap_resamples=100))
    best = read_run(multi_runs / "runs" / comparison["best"]).eval.metrics
    for row in comparison["rows"]:
        if row["strategy"] == comparison["best"]:
            continue
        ours = read_run(multi_runs / "runs" / row["strategy"]).eval.metrics
        paired = row["label_sets_vs_best"]
        assert set(paired) == {"micro_f1", "example_f1", "subset_accuracy"}
        for metric, difference in paired.items():
            assert difference["difference"] == pytest.approx(ours[metric] - best[metric])
            assert difference["n"] == 24


def test_estimate_prices_every_strategy_on_label_sets(tmp_path: Path, tiny_encoder: Path) -> None:
    """``adaptlab estimate`` prices every strategy on label-set data as on single labels."""
    from adaptlab.estimate import estimate_experiment

    names = _multi_label()
    config = ExperimentConfig.model_validate(_raw(tmp_path, tiny_encoder, names, {}))
    estimate = estimate_experiment(config, names)
    assert estimate.problems == {}
    assert sorted(row.name for row in estimate.estimates) == sorted(names)
    for row in estimate.estimates:
        if row.workload.method != "none":
            assert row.seconds is not None and row.seconds >= 0
