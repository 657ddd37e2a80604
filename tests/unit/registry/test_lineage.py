"""Lineage: what a version records of its run's data, eval lock, config, model, code and the
comparison it ranked in; a run outside an experiment folder is registered with those unknown."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from tests.unit.registry.conftest import promote
from tests.unit.report.conftest import EVAL_SHA, TRAIN_SHA, N

from adaptlab.registry import Registry


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_winner_s_lineage(registry: Registry, run_dir: Path, experiment: Path) -> None:
    lineage = promote(registry, run_dir).version.lineage
    manifest = json.loads((run_dir / "manifest.json").read_text())
    comparison = json.loads((experiment / "comparison.json").read_text())
    row = next(r for r in comparison["rows"] if r["strategy"] == "full")
    assert lineage["run"] == {
        "name": "full",
        "strategy": "full",
        "task": "classification",
        "folder": str(run_dir.resolve()),
    }
    assert lineage["experiment"] == str(experiment.resolve())
    assert lineage["training_data"]["sha256"] == TRAIN_SHA
    assert lineage["eval"]["sha256"] == EVAL_SHA and lineage["eval"]["size"] == N
    assert lineage["eval"]["lock"]["eval_sha256"] == EVAL_SHA
    assert lineage["base_model"] == {"name": "tiny-base", "fingerprint": "f" * 64}
    assert lineage["config"] == {
        "sha256": sha256(run_dir / "config.yaml"),
        "manifest_sha256": manifest["config_sha256"],
    }
    for key in ("seed", "code_version", "libraries", "created_at"):
        assert lineage[key] == manifest[key]
    assert lineage["data_report"]["pii"] == {"train": {"EMAIL": 2}}
    assert lineage["data_report"]["pii_total"] == 2
    assert lineage["data_report"]["duplicates"]["train"]["dropped"] == 10
    assert lineage["documents"] is None and lineage["teachers"] is None
    assert lineage["comparison"] == {
        "file": str((experiment / "comparison.json").resolve()),
        "sha256": sha256(experiment / "comparison.json"),
        "metric": "accuracy",
        "best": "full",
        "won": True,
        "runs": 5,
        "eval_sha256": EVAL_SHA,
        "rank": 1,
        "score": row["score"],
        "interval": row["accuracy_ci"],
    }
    assert lineage["notes"] == []
    json.dumps(lineage, allow_nan=False)  # stored as JSON


def test_a_run_that_did_not_win_has_its_rank(registry: Registry, experiment: Path) -> None:
    comparison = json.loads((experiment / "comparison.json").read_text())
    ranked = [row["strategy"] for row in comparison["rows"]]  # sorted by score
    lineage = promote(registry, experiment / "runs" / ranked[2]).version.lineage
    assert lineage["comparison"]["rank"] == 3 and lineage["comparison"]["won"] is False


def test_a_retrieval_run_s_documents_and_the_training_file_s_size(
    registry: Registry, run_dir: Path, experiment: Path
) -> None:
    train = experiment / "data" / "train.jsonl"
    train.write_text('{"text": "a", "label": "cards"}\n')
    documents = {"sha256": "d" * 64, "files_sha256": "r" * 64, "chunks": 40}
    lock_path = experiment / "data" / "eval.lock"
    lock = {**json.loads(lock_path.read_text()), "documents": documents}
    lock_path.write_text(json.dumps(lock))
    manifest_path = run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    teacher = {"full": "2026-01-01T00:00:00+00:00"}
    manifest |= {"train_sha256": sha256(train), "documents_sha256": "d" * 64}
    manifest |= {"dependencies": teacher}
    manifest_path.write_text(json.dumps(manifest))
    lineage = promote(registry, run_dir).version.lineage
    assert lineage["training_data"] == {
        "sha256": sha256(train),
        "bytes": train.stat().st_size,
        "file": str(train),
    }
    assert lineage["documents"] == {"sha256": "d" * 64, "lock": documents}
    assert lineage["teachers"] == teacher


def test_disagreements_with_the_manifest_are_noted(
    registry: Registry, run_dir: Path, experiment: Path
) -> None:
    (run_dir / "config.yaml").write_text("strategy: edited\n")
    lock_path = experiment / "data" / "eval.lock"
    lock_path.write_text(json.dumps({**json.loads(lock_path.read_text()), "eval_sha256": "0" * 64}))
    notes = promote(registry, run_dir).version.lineage["notes"]
    assert any("config.yaml: changed since the run" in note for note in notes)
    assert any("the experiment's data changed after the run" in note for note in notes)


@pytest.mark.parametrize("missing", ["comparison.json", "data/data_report.json"])
def test_a_missing_experiment_file_is_noted_not_fatal(
    registry: Registry, run_dir: Path, experiment: Path, missing: str
) -> None:
    (experiment / missing).unlink()
    lineage: dict[str, Any] = promote(registry, run_dir).version.lineage
    key = "comparison" if missing == "comparison.json" else "data_report"
    assert lineage[key] is None
    assert any(missing.split("/")[-1] in note for note in lineage["notes"])


def test_a_run_outside_an_experiment_folder(
    registry: Registry, run_dir: Path, tmp_path: Path
) -> None:
    loose = Path(shutil.copytree(run_dir, tmp_path / "loose" / "full"))
    lineage = promote(registry, loose).version.lineage
    assert lineage["experiment"] is None
    assert lineage["comparison"] is None and lineage["data_report"] is None
    assert lineage["eval"] == {"sha256": EVAL_SHA, "size": None, "lock": None}
    assert lineage["training_data"]["sha256"] == TRAIN_SHA
    assert lineage["config"]["sha256"] == sha256(loose / "config.yaml")
    [note] = lineage["notes"]
    assert "is not inside an experiment folder" in note
