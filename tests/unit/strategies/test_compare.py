"""`compare` end to end on the tiny encoder: run directories, skipping, the leaderboard, and
refusing to mix eval sets or to let one broken run sink the comparison."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from adaptlab.compare import compare
from adaptlab.comparison import build_comparison, leaderboard_markdown
from adaptlab.config import CompareConfig, ExperimentConfig
from adaptlab.data.lock import EvalLockError
from adaptlab.runs import RunError

CHEAP = ["zero_shot", "knn", "frozen"]
TOPICS = {
    "cards": ["card", "pin", "atm", "contactless", "chip", "debit"],
    "transfers": ["transfer", "iban", "wire", "payee", "sepa", "beneficiary"],
    "refunds": ["refund", "return", "merchant", "dispute", "chargeback", "receipt"],
}


def write_dataset(path: Path) -> Path:
    rows = []
    for topic, words in TOPICS.items():
        for n in range(20):
            a, b = words[n % 6], words[(n * 5 + 1) % 6]
            rows.append(
                {"text": f"question {n} about my {a} and {b} number {n * 7919}", "label": topic}
            )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_runs_config(
    root: Path,
    tiny_encoder: Path,
    strategies: list[str],
    settings: dict[str, Any] | None = None,
    name: str = "tiny",
) -> dict[str, Any]:
    """The raw config of a quick compare of ``strategies`` on :func:`write_dataset` and the tiny
    encoder (two training steps), for tests that need finished runs to load, serve or export."""
    return {
        "name": name,
        "output_dir": str(root / "runs"),
        "data": {"train": str(write_dataset(root / "train.jsonl")), "val_set_size": 0.25},
        "model": {"base_model": str(tiny_encoder), "sequence_len": 32},
        "train": {"max_steps": 2},
        "strategies": settings or {},
        "compare": {"strategies": strategies, "latency_budget_s": 0.05, "bootstrap_resamples": 100},
    }


def experiment(tmp_path: Path, tiny_encoder: Path, **changes: Any) -> ExperimentConfig:
    raw: dict[str, Any] = {
        "name": "tiny",
        "output_dir": str(tmp_path / "runs"),
        "data": {"train": str(write_dataset(tmp_path / "train.jsonl")), "val_set_size": 0.25},
        "model": {"base_model": str(tiny_encoder), "sequence_len": 32},
        "compare": {"latency_budget_s": 0.2, "bootstrap_resamples": 200},
    }
    raw.update(changes)
    return ExperimentConfig.model_validate(raw)


def test_compare_writes_run_directories_and_leaderboard(tmp_path: Path, tiny_encoder: Path) -> None:
    result = compare(experiment(tmp_path, tiny_encoder), CHEAP, log=lambda _: None)
    runs = result.folder / "runs"
    for name in CHEAP:
        files = {p.name for p in (runs / name).iterdir()}
        assert {
            "config.yaml",
            "eval.json",
            "cost.json",
            "manifest.json",
            "predictions.safetensors",
        } <= files
        manifest = json.loads((runs / name / "manifest.json").read_text())
        assert manifest["strategy"] == name and manifest["eval_sha256"]
        assert {"torch", "transformers", "python"} <= set(manifest["libraries"])
        evaluation = json.loads((runs / name / "eval.json").read_text())
        assert evaluation["n"] == 15 and set(evaluation["latency"]) == {"batch_1", "batch_32"}
        assert 0 <= evaluation["metrics"]["ece"] <= 1
    comparison = json.loads((result.folder / "comparison.json").read_text())
    assert comparison["failures"] == {}
    assert {r["strategy"] for r in comparison["rows"]} == set(CHEAP)
    best = next(r for r in comparison["rows"] if r["strategy"] == comparison["best"])
    assert best["vs_best"] is None
    assert all(r["vs_best"] is not None for r in comparison["rows"] if r is not best)
    assert "| strategy | accuracy |" in (result.folder / "leaderboard.md").read_text()


def test_finished_runs_are_skipped_and_changed_configs_rerun(
    tmp_path: Path, tiny_encoder: Path
) -> None:
    logs: list[str] = []
    config = experiment(tmp_path, tiny_encoder)
    compare(config, ["knn"], log=logs.append)
    logs.clear()
    compare(config, ["knn"], log=logs.append)
    assert any("up to date" in line for line in logs)
    logs.clear()
    changed = config.model_copy(update={"strategies": {"knn": {"k": 3}}})
    compare(changed, ["knn"], log=logs.append)
    assert not any("up to date" in line for line in logs)
    assert "k: 3" in (tmp_path / "runs" / "tiny" / "runs" / "knn" / "config.yaml").read_text()


def test_a_broken_run_is_named_and_the_rest_still_compare(
    tmp_path: Path, tiny_encoder: Path
) -> None:
    result = compare(experiment(tmp_path, tiny_encoder), CHEAP, log=lambda _: None)
    runs = result.folder / "runs"
    (runs / "knn" / "eval.json").write_text("{ not json")
    comparison, problems = build_comparison([runs / n for n in CHEAP], CompareConfig())
    assert len(problems) == 1 and "knn" in problems[0] and "eval.json" in problems[0]
    assert {r["strategy"] for r in comparison["rows"]} == {"zero_shot", "frozen"}
    with pytest.raises(RunError, match="no finished runs"):
        build_comparison([runs / "missing"], CompareConfig())


def test_runs_on_different_eval_sets_refuse_to_compare(tmp_path: Path, tiny_encoder: Path) -> None:
    result = compare(experiment(tmp_path, tiny_encoder), ["knn", "frozen"], log=lambda _: None)
    runs = result.folder / "runs"
    manifest = json.loads((runs / "knn" / "manifest.json").read_text())
    manifest["eval_sha256"] = "0" * 64
    (runs / "knn" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EvalLockError, match="different eval sets"):
        build_comparison([runs / "knn", runs / "frozen"], CompareConfig())


def test_a_failing_strategy_does_not_sink_the_comparison(
    tmp_path: Path, tiny_encoder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adaptlab.strategies import knn

    def broken_fit(self: object, run: object) -> None:
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(knn.KnnStrategy, "fit", broken_fit)
    result = compare(experiment(tmp_path, tiny_encoder), ["knn", "frozen"], log=lambda _: None)
    assert "simulated failure" in result.failures["knn"]
    assert (result.folder / "runs" / "knn" / "error.txt").exists()
    assert [r["strategy"] for r in result.comparison["rows"]] == ["frozen"]
    assert "frozen" in leaderboard_markdown(result.comparison)


def test_eval_set_is_locked_once_and_reused(tmp_path: Path, tiny_encoder: Path) -> None:
    config = experiment(tmp_path, tiny_encoder)
    compare(config, ["zero_shot"], log=lambda _: None)
    lock = (tmp_path / "runs" / "tiny" / "data" / "eval.lock").read_text()
    logs: list[str] = []
    compare(config, ["zero_shot"], log=logs.append)
    assert any("Using prepared data" in line for line in logs)
    assert (tmp_path / "runs" / "tiny" / "data" / "eval.lock").read_text() == lock


def test_redoing_the_teacher_makes_the_student_stale(tmp_path: Path, tiny_encoder: Path) -> None:
    config = experiment(tmp_path, tiny_encoder, train={"max_steps": 2})
    compare(config, ["full", "distill"], log=lambda _: None)
    logs: list[str] = []
    compare(config, ["full", "distill"], log=logs.append)
    assert sum("up to date" in line for line in logs) == 2
    from adaptlab.compare import classification_task, prepare_experiment_data, run_strategy

    prepared = prepare_experiment_data(config, lambda items, *_: items, lambda _: None)
    run_strategy(
        "full",
        config,
        prepared,
        classification_task(prepared),
        lambda items, *_: items,
        lambda _: None,
        force=True,
    )
    logs.clear()
    compare(config, ["distill"], log=logs.append)
    assert not any("up to date" in line for line in logs)


def test_a_prompted_llm_is_part_of_the_runs_identity_and_size(
    tmp_path: Path, tiny_encoder: Path
) -> None:
    from tests.unit.models.test_causal_lm import build_tiny_llm

    from adaptlab.models.encoder import weights_bytes

    llm = build_tiny_llm(tmp_path / "llm")
    settings = {"model": str(llm), "eval_limit": 6}
    config = experiment(tmp_path, tiny_encoder, strategies={"llm_prompt": settings})
    result = compare(config, ["llm_prompt"], log=lambda _: None)
    run = result.folder / "runs" / "llm_prompt"
    manifest = json.loads((run / "manifest.json").read_text())
    cost = json.loads((run / "cost.json").read_text())
    assert list(manifest["other_models"]) == [str(llm)]
    assert cost["size_on_disk_bytes"] == cost["artefact_bytes"] + weights_bytes(str(llm))

    # Same name, new weights: the run is stale.
    weights = next(llm.glob("*.safetensors"))
    os.utime(weights, ns=(0, weights.stat().st_mtime_ns + 10**9))
    logs: list[str] = []
    compare(config, ["llm_prompt"], log=logs.append)
    assert not any("up to date" in line for line in logs)


def test_cli_compare_skips_finished_runs_unless_forced(tmp_path: Path, tiny_encoder: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from adaptlab.cli import app

    config = experiment(tmp_path, tiny_encoder)
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_defaults=True)))
    runner = CliRunner()
    first = runner.invoke(app, ["compare", str(path), "-s", "knn"])
    again = runner.invoke(app, ["compare", str(path), "-s", "knn"])
    forced = runner.invoke(app, ["compare", str(path), "-s", "knn", "--force"])

    assert first.exit_code == again.exit_code == forced.exit_code == 0, forced.output
    assert "up to date" not in first.output and "up to date" in again.output
    assert "up to date" not in forced.output and "knn" in forced.output


def test_a_run_name_that_is_a_path_is_refused_before_anything_is_deleted(
    tmp_path: Path, tiny_encoder: Path
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    # model_copy skips validation, as a config built in code might: compare still refuses
    config = experiment(tmp_path, tiny_encoder).model_copy(
        update={"strategies": {"../../victim": {"strategy": "frozen"}}}
    )
    with pytest.raises(ValueError, match="'../../victim' is not a name"):
        compare(config, ["../../victim"], log=lambda _: None)
    assert (victim / "keep.txt").read_text() == "precious"
