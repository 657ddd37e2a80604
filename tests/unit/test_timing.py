"""Serving latency timed together (issue 19): ``latency.json``'s reader and writer, the
comparison's rows priced on interleaved (and, for one inference graph, pooled) rounds, and
``compare`` timing its classification runs once and again only when a run changed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.unit.report.conftest import classification_folder, generative_folder
from tests.unit.strategies.test_compare import tiny_runs_config

import adaptlab.timing
from adaptlab.compare import compare
from adaptlab.comparison import build_comparison
from adaptlab.config import CompareConfig, ExperimentConfig
from adaptlab.evaluate.latency import summarise_rounds
from adaptlab.report.inputs import read_inputs
from adaptlab.runs import (
    TIMING,
    RunError,
    RunTiming,
    Timing,
    read_manifest,
    read_run,
    read_timing,
    write_timing,
)

SETTINGS = CompareConfig(bootstrap_resamples=200)

# run -> (graph, per-round ms at batch 1); batch 32 takes 8 times as long per call
ROUNDS: dict[str, tuple[str | None, list[list[float]]]] = {
    "frozen": ("aaaa", [[3.0, 3.2, 3.1], [3.4, 3.3, 3.2], [3.0, 3.1, 3.0]]),
    "full": ("aaaa", [[2.6, 2.8, 2.7], [3.6, 3.5, 3.4], [2.9, 2.8, 2.9]]),
    "knn": ("bbbb", [[6.0, 6.2, 6.1], [6.4, 6.3, 6.2], [6.0, 6.1, 6.0]]),
    "zero_shot": (None, [[4.0, 4.1, 4.2], [4.1, 4.0, 4.3], [4.2, 4.2, 4.1]]),
}


def timing_of(folder: Path, runs: dict[str, tuple[str | None, list[list[float]]]]) -> Timing:
    """A ``latency.json`` for ``runs`` of the experiment ``folder``, stamped as they are now."""
    timed = {
        name: RunTiming(
            read_manifest(folder / "runs" / name).created_at,
            graph,
            {1: _tuples(rounds), 32: _tuples([[ms * 8 for ms in calls] for calls in rounds])},
        )
        for name, (graph, rounds) in runs.items()
    }
    return Timing("2025-01-01T00:00:00+00:00", 3, (1, 32), 5.0, timed)


def _tuples(rounds: list[list[float]]) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(calls) for calls in rounds)


def rows_by_name(folder: Path, timing: Timing | None) -> dict[str, dict[str, Any]]:
    folders = sorted(p for p in (folder / "runs").iterdir() if p.is_dir())
    comparison, _ = build_comparison(folders, SETTINGS, timing)
    return {row["strategy"]: row for row in comparison["rows"]}


def test_runs_of_one_graph_are_priced_on_their_pooled_rounds(tmp_path: Path) -> None:
    folder = classification_folder(tmp_path)
    rows = rows_by_name(folder, timing_of(folder, ROUNDS))

    frozen, full = rows["frozen"], rows["full"]
    assert frozen["latency_pooled_with"] == full["latency_pooled_with"] == ["frozen", "full"]
    assert frozen["serving_graph"] == full["serving_graph"] == "aaaa"
    fields = (
        "latency_batch1_p50_ms",
        "latency_batch1_p95_ms",
        "latency_batch1_p50_ci",
        "latency_batch32_per_example_ms",
        "latency_batch32_per_example_ci",
    )
    assert {key: frozen[key] for key in fields} == {key: full[key] for key in fields}
    # round r of both runs is one cluster: they were timed in the same minutes
    clusters = [
        [ms / 1000 for ms in a + b]
        for a, b in zip(ROUNDS["frozen"][1], ROUNDS["full"][1], strict=True)
    ]
    pooled = summarise_rounds(clusters, 1, resamples=200)
    assert frozen["latency_batch1_p50_ms"] == pytest.approx(pooled.p50_ms)
    assert frozen["latency_batch1_p50_ci"] == pytest.approx(list(pooled.p50_ci))
    assert frozen["latency_batch32_per_example_ms"] == pytest.approx(pooled.p50_ms * 8 / 32)
    for name in ("frozen", "full", "knn", "zero_shot"):
        row = rows[name]
        assert row["latency_measured"] == "interleaved"
        low, high = row["latency_batch1_p50_ci"]
        assert low <= row["latency_batch1_p50_ms"] <= high
        low, high = row["latency_batch32_per_example_ci"]
        assert low <= row["latency_batch32_per_example_ms"] <= high
    own = summarise_rounds([[ms / 1000 for ms in calls] for calls in ROUNDS["knn"][1]], 1)
    assert rows["knn"]["latency_batch1_p50_ms"] == pytest.approx(own.p50_ms)
    assert rows["knn"]["latency_pooled_with"] is None  # alone with its graph
    assert rows["zero_shot"]["serving_graph"] is None  # no description: pooled with none
    assert rows["zero_shot"]["latency_pooled_with"] is None


def test_a_run_the_timing_lacks_or_timed_before_it_was_redone_keeps_its_own_latency(
    tmp_path: Path,
) -> None:
    folder = classification_folder(tmp_path)
    evaluation = json.loads((folder / "runs" / "setfit_k8" / "eval.json").read_text())
    evaluation["latency"]["batch_1"]["p50_ci"] = [4.5, 5.5]
    (folder / "runs" / "setfit_k8" / "eval.json").write_text(json.dumps(evaluation))
    timing = timing_of(folder, ROUNDS)
    stale = RunTiming("2020-01-01T00:00:00+00:00", "aaaa", timing.runs["full"].rounds_ms)
    timing = Timing(timing.created_at, 3, (1, 32), 5.0, {**timing.runs, "full": stale})

    rows = rows_by_name(folder, timing)

    setfit = rows["setfit_k8"]  # not in latency.json: as measured alone at evaluation
    assert setfit["latency_measured"] == "alone"
    assert setfit["latency_batch1_p50_ms"] == 5.0 and setfit["latency_batch1_p50_ci"] == [4.5, 5.5]
    assert setfit["latency_batch32_per_example_ci"] is None  # not recorded in this eval.json
    assert setfit["serving_graph"] is None and setfit["latency_pooled_with"] is None
    full = rows["full"]  # redone since it was timed: the timing is not of this run
    assert full["latency_measured"] == "alone" and full["latency_batch1_p50_ms"] == 9.0
    assert rows["frozen"]["latency_pooled_with"] is None  # nobody left to pool with
    assert rows_by_name(folder, None)["frozen"]["latency_measured"] == "alone"


def test_generators_keep_their_eval_time_latency_and_its_interval(tmp_path: Path) -> None:
    folder = generative_folder(tmp_path)
    path = folder / "runs" / "few_shot" / "eval.json"
    evaluation = json.loads(path.read_text())
    evaluation["cost"]["latency"]["p50_ci"] = [310.0, 330.0]
    path.write_text(json.dumps(evaluation))

    rows = rows_by_name(folder, None)

    assert rows["few_shot"]["latency_measured"] == "alone"
    assert rows["few_shot"]["latency_batch1_p50_ci"] == [310.0, 330.0]
    assert rows["prompt"]["latency_batch1_p50_ci"] is None
    assert rows["prompt"]["latency_batch1_p50_ms"] == 300.0


def test_latency_json_round_trips_and_a_damaged_one_is_named(tmp_path: Path) -> None:
    folder = classification_folder(tmp_path)
    timing = timing_of(folder, ROUNDS)
    assert read_timing(folder) is None
    write_timing(folder, timing)
    assert read_timing(folder) == timing
    payload = json.loads((folder / TIMING).read_text())
    assert payload["schema_version"] == 1
    assert payload["runs"]["knn"]["batches"]["batch_1"]["rounds_ms"][0] == [6.0, 6.2, 6.1]

    def damaged(change: Callable[[dict[str, Any]], None], message: str) -> None:
        broken = json.loads(json.dumps(payload))
        change(broken)
        (folder / TIMING).write_text(json.dumps(broken))
        with pytest.raises(RunError, match=message):
            read_timing(folder)

    batches = "runs.knn.batches"
    damaged(
        lambda p: p["runs"]["knn"]["batches"]["batch_1"]["rounds_ms"][1].__setitem__(0, "x"),
        rf"latency.json: field '{batches}.batch_1.rounds_ms\[1\]\[0\]' should be a time in ms",
    )
    damaged(
        lambda p: p["runs"]["knn"]["batches"].__setitem__("batch_one", {}),
        rf"field '{batches}.batch_one': expected batch_<size>",
    )
    damaged(lambda p: p.__setitem__("schema_version", 2), "schema_version = 2")
    damaged(lambda p: p.pop("rounds"), "field 'rounds' should be an integer, found missing")
    (folder / TIMING).write_text("{ not json")
    with pytest.raises(RunError, match="latency.json: not JSON"):
        read_timing(folder)


# --------------------------------------------------------------------------- compare


@pytest.fixture
def timed_calls(monkeypatch: pytest.MonkeyPatch) -> list[set[str]]:
    """The runs of every interleaved timing ``compare`` does."""
    calls: list[set[str]] = []
    real = adaptlab.timing.measure_interleaved

    def spy(predictors: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(set(predictors))
        return real(predictors, *args, **kwargs)

    monkeypatch.setattr(adaptlab.timing, "measure_interleaved", spy)
    return calls


def test_compare_times_its_runs_together_once_and_again_when_one_changes(
    tmp_path: Path, tiny_encoder: Path, timed_calls: list[set[str]]
) -> None:
    # zero_shot and frozen on torch run the same encoder under a linear head: one graph.
    raw = tiny_runs_config(
        tmp_path, tiny_encoder, ["zero_shot", "frozen", "knn"], {"frozen": {"runtime": "torch"}}
    )
    raw["compare"].update(latency_rounds=2)
    config = ExperimentConfig.model_validate(raw)
    logs: list[str] = []
    result = compare(config, log=logs.append)

    assert timed_calls == [{"zero_shot", "frozen", "knn"}]
    timing = read_timing(result.folder)
    assert timing is not None and timing.rounds == 2 and timing.batch_sizes == (1, 32)
    for name, run in timing.runs.items():
        assert run.manifest_created_at == read_manifest(result.folder / "runs" / name).created_at
        assert [len(rounds) for rounds in run.rounds_ms.values()] == [2, 2]
    graphs = {name: run.graph for name, run in timing.runs.items()}
    assert graphs["zero_shot"] == graphs["frozen"] != graphs["knn"]
    rows = {row["strategy"]: row for row in result.comparison["rows"]}
    assert rows["frozen"]["latency_pooled_with"] == ["frozen", "zero_shot"]
    assert rows["frozen"]["latency_batch1_p50_ms"] == rows["zero_shot"]["latency_batch1_p50_ms"]
    assert all(row["latency_measured"] == "interleaved" for row in rows.values())
    assert "pooled (frozen, zero_shot)" in (result.folder / "leaderboard.md").read_text()
    evaluation = read_run(result.folder / "runs" / "knn").eval  # eval-time figures, alone
    assert len(evaluation.latency["batch_1"]["p50_ci"]) == 2

    logs.clear()
    again = compare(config, log=logs.append)  # nothing changed: nothing is timed
    assert len(timed_calls) == 1
    assert any("Reusing the latency of 3 runs" in line for line in logs)
    assert read_timing(again.folder) == timing
    assert again.comparison["rows"] == result.comparison["rows"]

    changed = config.model_copy(update={"strategies": {**config.strategies, "knn": {"k": 3}}})
    compare(changed, log=logs.append)  # knn redone: every run is timed again, together
    assert timed_calls[1:] == [{"zero_shot", "frozen", "knn"}]
    retimed = read_timing(result.folder)
    assert retimed is not None and retimed.runs["knn"].manifest_created_at != (
        timing.runs["knn"].manifest_created_at
    )

    (result.folder / "comparison.json").unlink()  # the report rebuilds it, with the timing
    inputs = read_inputs([result.folder])
    rebuilt = {row["strategy"]: row for row in inputs.comparison["rows"]}
    assert rebuilt["knn"]["latency_measured"] == "interleaved"


def test_a_failed_timing_leaves_the_eval_time_latency(
    tmp_path: Path, tiny_encoder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the machine went away")

    monkeypatch.setattr(adaptlab.timing, "measure_interleaved", broken)
    config = ExperimentConfig.model_validate(tiny_runs_config(tmp_path, tiny_encoder, ["knn"]))
    logs: list[str] = []
    result = compare(config, log=logs.append)

    assert any("FAILED (RuntimeError: the machine went away)" in line for line in logs)
    (row,) = result.comparison["rows"]
    assert row["latency_measured"] == "alone" and row["latency_batch1_p50_ci"] is not None
    assert not (result.folder / TIMING).exists()
