"""The run folder's one reader: typed records, the schema version, run and strategy names kept
apart, and errors that name the file and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adaptlab.profile import DataNeed, StrategyProfile
from adaptlab.runs import (
    SCHEMA_VERSION,
    RunError,
    RunFolder,
    base_manifest,
    read_manifest,
    read_run,
)

PROFILE = StrategyProfile(role="tuned", method="adapter", data_need=DataNeed(10, 2, "why"))


EVAL = {
    "run": "lora_r8",
    "strategy": "lora",
    "task": "classification",
    "n": 2,
    "eval_size": 2,
    "sampled": False,
    "metrics": {"accuracy": 0.5, "macro_f1": 0.4},
    "accuracy_ci": [0.0, 1.0],
    "latency": {"batch_1": {"p50_ms": 3.0}},
    "reliability": [],
}
COST = {"fit_wall_s": 1.5, "total_params": 100, "trainable_params": 10, "index_vectors": 7}


def write_run(folder: Path, evaluation: Any = None, cost: Any = None, **manifest: Any) -> Path:
    run = RunFolder(folder)
    run.reset()
    run.write_text("config.yaml", "run: lora_r8\nstrategy: lora\n")
    run.write_json("eval.json", EVAL if evaluation is None else evaluation)
    run.write_json("cost.json", COST if cost is None else cost)
    run.write_predictions(np.eye(2), np.array([0, 1]), np.array([0, 1]))
    values = base_manifest("lora_r8", "lora", PROFILE, "t" * 64, "e" * 64, "m", "f", "", 42, False)
    run.write_json("manifest.json", {**values, **manifest})
    return folder


def test_a_renamed_run_keeps_its_name_and_its_strategy_apart(tmp_path: Path) -> None:
    record = read_run(write_run(tmp_path / "lora_r8"))
    assert (record.name, record.strategy) == ("lora_r8", "lora")
    assert record.manifest.schema_version == SCHEMA_VERSION
    assert record.profile == PROFILE
    assert record.indices.tolist() == [0, 1]
    assert record.config_yaml.startswith("run: lora_r8")


def test_eval_and_cost_are_typed_records(tmp_path: Path) -> None:
    record = read_run(write_run(tmp_path / "lora_r8"))
    evaluation, cost = record.eval, record.cost
    assert (evaluation.task, evaluation.n, evaluation.sampled) == ("classification", 2, False)
    assert (evaluation.score, evaluation.interval) == (0.5, (0.0, 1.0))
    assert evaluation.latency["batch_1"]["p50_ms"] == 3.0
    assert (cost.fit_wall_s, cost.total_params, cost.trainable_params) == (1.5, 100, 10)
    assert cost.peak_rss_bytes is None  # not measured: None, never 0
    assert cost.raw["index_vectors"] == 7  # a strategy's own facts stay readable


@pytest.mark.parametrize(
    ("file", "changes", "message"),
    [
        ("eval.json", {"metrics": {"macro_f1": 0.4}}, "field 'metrics.accuracy' is missing"),
        ("eval.json", {"n": "2"}, "field 'n' should be an integer, found '2'"),
        ("eval.json", {"accuracy_ci": [0.1]}, "field 'accuracy_ci' should be \\[low, high\\]"),
        ("eval.json", {"task": "poetry"}, "field 'task' = 'poetry'"),
        ("eval.json", {"metrics": None}, "field 'metrics' should be an object, found missing"),
        ("cost.json", {"fit_wall_s": "slow"}, "field 'fit_wall_s' should be a number"),
        ("cost.json", {"total_params": 1.5}, "field 'total_params' should be an integer"),
    ],
)
def test_a_bad_eval_or_cost_names_the_file_and_field(
    tmp_path: Path, file: str, changes: dict[str, Any], message: str
) -> None:
    evaluation = {**EVAL, **changes} if file == "eval.json" else None
    cost = {**COST, **changes} if file == "cost.json" else None
    folder = write_run(tmp_path / "lora_r8", evaluation, cost)
    with pytest.raises(RunError, match=message) as caught:
        read_run(folder)
    assert str(folder / file) in str(caught.value)


def test_the_writer_refuses_what_the_reader_could_not_read(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "lora_r8")
    folder.reset()
    with pytest.raises(RunError, match="metrics.accuracy"):
        folder.write_eval({**EVAL, "metrics": {}})
    with pytest.raises(RunError, match="schema_version"):
        folder.write_manifest({"schema_version": "new"})
    assert list(folder.path.iterdir()) == []  # nothing half-written, no manifest


def test_a_folder_from_a_newer_adaptlab_is_refused_by_name(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "lora_r8", schema_version=SCHEMA_VERSION + 1)
    with pytest.raises(RunError, match=r"manifest.json: written with run-folder schema_version 2"):
        read_manifest(folder)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"schema_version": "1"}, "schema_version = '1' is not a version number"),
        ({"eval_sha256": None}, "field 'eval_sha256' is missing"),
        ({"profile": {"role": "wizard", "method": "full"}}, "field 'profile': role 'wizard'"),
        ({"profile": {"method": "full"}}, "field 'profile': no role"),
        ({"run": None}, "fields 'run' \\(string\\) and 'profile' \\(object\\) are required"),
    ],
)
def test_a_bad_manifest_names_the_file_and_field(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    folder = write_run(tmp_path / "lora_r8", **changes)
    with pytest.raises(RunError, match=message) as caught:
        read_run(folder)
    assert str(folder / "manifest.json") in str(caught.value)


def test_a_folder_from_before_the_schema_version_reads_with_its_profile_unknown(
    tmp_path: Path,
) -> None:
    folder = write_run(tmp_path / "knn")
    manifest = json.loads((folder / "manifest.json").read_text())
    for key in ("schema_version", "run", "profile"):
        del manifest[key]
    manifest["strategy"] = "knn"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    record = read_run(folder)
    assert (record.manifest.schema_version, record.name, record.strategy) == (0, "knn", "knn")
    assert record.profile is None


def test_corrupt_predictions_are_a_run_error_not_a_crash(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "lora_r8")
    (folder / "predictions.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(RunError, match="unreadable predictions"):
        read_run(folder)
    assert read_run(folder, predictions=False).name == "lora_r8"  # read on use only


def test_a_profile_round_trips_and_refuses_unknown_values() -> None:
    assert StrategyProfile.from_dict(PROFILE.to_dict()) == PROFILE
    with pytest.raises(ValueError, match="method 'magic'"):
        StrategyProfile(role="tuned", method="magic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tasks"):
        StrategyProfile(role="tuned", method="full", tasks=("poetry",))  # type: ignore[arg-type]


GENERATION = {"index": 3, "text": '{"time": "7pm"}', "finished": True, "prompt_tokens": 40}


def test_generations_are_typed_rows_and_a_bad_line_is_named(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "sft_lora")
    run = RunFolder(folder)
    run.write_generations([{**GENERATION, "generated_tokens": 6}])
    [row] = read_run(folder).generations
    assert (row.index, row.text, row.finished, row.generated_tokens) == (
        3,
        '{"time": "7pm"}',
        True,
        6,
    )

    with pytest.raises(RunError, match="generated_tokens' should be an integer, found missing"):
        run.write_generations([{**GENERATION, "generated_tokens": 6}, GENERATION])
    (folder / "generations.jsonl").write_text(
        json.dumps({**GENERATION, "generated_tokens": 6}) + "\n{"
    )
    with pytest.raises(RunError, match=r"generations.jsonl:2: not JSON"):
        _ = read_run(folder).generations


def test_a_classifier_run_has_no_generations(tmp_path: Path) -> None:
    assert read_run(write_run(tmp_path / "lora_r8")).generations == ()
