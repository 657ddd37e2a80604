"""``compare --repeat 2`` (issue 19): the runs that train are redone with seed 7 in
``repeats/seed_7/``, the runs that train nothing are copied as they are, ``stability.json``
says whether the recommendation held and how each run moved, and the report shows it (or a
tie it names); a later compare that redoes a run makes the record stale."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.unit.strategies.test_compare import TOPICS
from tests.unit.strategies.test_generative import write_jsonl

from adaptlab.compare import compare
from adaptlab.config import ExperimentConfig
from adaptlab.report.build import build_report
from adaptlab.runs import read_manifest
from adaptlab.stability import REPEATS, read_stability, repeat_seeds

NAMES = ["zero_shot", "frozen", "partial", "full"]


def _rows(numbers: range) -> list[dict[str, str]]:
    rows = []
    for topic, words in TOPICS.items():
        for n in numbers:
            a, b = words[n % 6], words[(n * 5 + 1) % 6]
            rows.append({"text": f"a question {n} on my {a} and {b}", "label": topic})
    return rows


def _experiment(root: Path, tiny_encoder: Path) -> ExperimentConfig:
    raw: dict[str, Any] = {
        "name": "seeds",
        "output_dir": str(root / "runs"),
        "data": {
            "train": write_jsonl(root / "train.jsonl", _rows(range(16))),
            "eval": write_jsonl(root / "eval.jsonl", _rows(range(1000, 1012))),
        },
        "model": {"base_model": str(tiny_encoder), "sequence_len": 32},
        "train": {"max_steps": 3},
        "compare": {
            "strategies": NAMES,
            "latency_budget_s": 0.05,
            "latency_rounds": 2,
            "bootstrap_resamples": 200,
        },
    }
    return ExperimentConfig.model_validate(raw)


@pytest.fixture(scope="module")
def repeated(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> Path:
    root = tmp_path_factory.mktemp("repeat")
    result = compare(_experiment(root, tiny_encoder), log=lambda _: None, repeat=2)
    return result.folder


def test_the_runs_that_train_are_redone_with_the_other_seed(repeated: Path) -> None:
    assert repeat_seeds(42, 2) == [42, 7] and repeat_seeds(7, 2) == [7, 42]
    other = repeated / REPEATS / "seed_7"
    for name in NAMES:
        own, again = read_manifest(repeated / "runs" / name), read_manifest(other / "runs" / name)
        if name == "zero_shot":  # trains nothing: the very same run, copied
            assert again.raw == own.raw
        else:
            assert (own.raw["seed"], again.raw["seed"]) == (42, 7)
    assert (other / "comparison.json").is_file() and (other / "report.md").is_file()


def test_stability_records_the_picks_and_each_runs_change(repeated: Path) -> None:
    stability = read_stability(repeated)
    assert stability is not None and stability.seeds == [42, 7]
    comparison = json.loads((repeated / "comparison.json").read_text())
    again = json.loads((repeated / REPEATS / "seed_7" / "comparison.json").read_text())
    scores = {row["strategy"]: row["accuracy"] for row in comparison["rows"]}
    other_scores = {row["strategy"]: row["accuracy"] for row in again["rows"]}
    changes = {change.run: change for change in stability.changes}
    assert set(changes) == set(NAMES)
    for name, change in changes.items():
        assert change.seed == 7
        assert (change.score, change.other_score) == (scores[name], other_scores[name])
        assert change.difference is not None
        assert change.difference.difference == pytest.approx(change.other_score - change.score)
    untouched = changes["zero_shot"].difference
    assert untouched is not None and (untouched.low, untouched.high) == (0.0, 0.0)
    assert stability.held == (stability.picks[42] == stability.picks[7])
    if stability.held:
        assert stability.gaps == []
    else:  # the two picks compared under each seed
        assert [(g.seed, g.first, g.second) for g in stability.gaps] == [
            (42, stability.picks[42], stability.picks[7]),
            (7, stability.picks[42], stability.picks[7]),
        ]


def test_the_report_shows_stability_or_names_the_change(repeated: Path) -> None:
    stability = read_stability(repeated)
    assert stability is not None
    report = (repeated / "report.md").read_text()
    assert "Stability across training seeds" in report
    assert "Decided on the runs of seeds 42 and 7 together" in report
    if stability.held:
        assert "The recommendation held under every seed tried" in report
    else:
        assert "The recommendation changed with the training seed" in report
        assert "[seed_stability]" in report
    for seed, tied in stability.tied.items():
        if tied and seed == 42:
            assert f"tied with {' and '.join(tied)}" in report


def test_a_report_with_other_settings_restates_each_seeds_pick(
    repeated: Path, tmp_path: Path
) -> None:
    """compare --repeat records each seed's pick under the default report settings; decided
    again under those settings they are the same, and a report with other settings cites the
    picks it would make itself, not the recorded ones."""
    from adaptlab.report.build import ReportConfig, report_data, restated_stability
    from adaptlab.report.inputs import read_inputs

    inputs = read_inputs([repeated])
    recorded = inputs.stability
    assert recorded is not None
    again = restated_stability(inputs, ReportConfig())
    assert (again.picks, again.tied) == (recorded.picks, recorded.tied)
    assert [g.to_dict() for g in again.gaps] == [g.to_dict() for g in recorded.gaps]

    wide = ReportConfig.model_validate({"decision": {"quality_margin": 0.9}})
    expected = {
        seed: report_data(read_inputs([repeated / folder]), wide).decision.recommended
        for seed, folder in recorded.folders.items()
    }
    restated = restated_stability(inputs, wide)
    assert {s: p for s, p in restated.picks.items() if s != 42} == expected
    built = build_report([repeated], wide, out=tmp_path)
    text = built.markdown.read_text()
    said = "; ".join(f"seed {seed}: {name}" for seed, name in restated.picks.items())
    assert said in text or (restated.held and "held under every seed" in text)


def test_a_redone_run_makes_the_stability_record_stale(
    repeated: Path, tmp_path: Path, tiny_encoder: Path
) -> None:
    experiment = ExperimentConfig.model_validate(
        json.loads(json.dumps(_experiment(repeated.parent.parent, tiny_encoder).model_dump()))
    )
    compare(experiment, ["frozen"], log=lambda _: None, force=True)
    built = build_report([repeated], out=tmp_path)
    text = built.markdown.read_text()
    assert "Stability across training seeds" not in text
    assert read_stability(repeated) is not None  # kept on disk, just not shown
    # decided on seed 42 alone now, and said so: of the pick and its runner-up (two of
    # zero_shot and three runs that train), at least one trains
    assert "Decided on one training seed (seed 42): the intervals cover the eval items" in text
    assert "Decided on the runs of seeds" not in text


def test_repeat_counts_out_of_range_are_refused(tmp_path: Path, tiny_encoder: Path) -> None:
    with pytest.raises(ValueError, match="repeat = 0"):
        compare(_experiment(tmp_path, tiny_encoder), log=lambda _: None, repeat=0)


def test_the_cli_repeats_and_prints_each_runs_change(tmp_path: Path, tiny_encoder: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from adaptlab.cli import app

    path = tmp_path / "experiment.yaml"
    config = _experiment(tmp_path, tiny_encoder).model_dump(mode="json", exclude_defaults=True)
    config["compare"]["repeat"] = 2  # the experiment's own setting, as the demo's
    path.write_text(yaml.safe_dump(config))
    runner = CliRunner()
    refused = runner.invoke(app, ["compare", str(path), "--repeat", "0"])
    assert refused.exit_code == 2 and "--repeat" in refused.output
    once = runner.invoke(app, ["compare", str(path), "-s", "zero_shot", "--repeat", "1"])
    assert once.exit_code == 0, once.output  # the option overrides the experiment
    assert not (tmp_path / "runs" / "seeds" / REPEATS).exists()
    done = runner.invoke(app, ["compare", str(path), "-s", "zero_shot", "-s", "frozen"])
    assert done.exit_code == 0, done.output
    assert "Repeating the runs that train with seed 7" in done.output
    assert "frozen: " in done.output and "(seed 7; Δ" in done.output
    assert "stability.json" in done.output


def test_pooled_evidence_is_the_same_whichever_seed_the_experiment_started_from(
    repeated: Path,
) -> None:
    from adaptlab.config import CompareConfig
    from adaptlab.runs import read_run
    from adaptlab.stability import seed_pooled

    folders = {42: repeated, 7: repeated / REPEATS / "seed_7"}
    runs = {s: {n: read_run(f / "runs" / n) for n in NAMES} for s, f in folders.items()}
    settings = CompareConfig(bootstrap_resamples=200)
    first = seed_pooled(runs, "accuracy", settings)
    second = seed_pooled(dict(reversed(list(runs.items()))), "accuracy", settings)
    assert first is not None and first == second
    for name in NAMES:  # the mean over the seeds, inside its interval
        scores = [runs[s][name].eval.score for s in (42, 7)]
        assert first.quality[name] == pytest.approx(sum(scores) / 2)
        assert first.intervals[name][0] <= first.quality[name] <= first.intervals[name][1]
    assert seed_pooled({42: runs[42]}, "accuracy", settings) is None  # one seed: nothing pooled
    assert seed_pooled(runs, "micro_f1", settings) is None  # counts do not pool as means
