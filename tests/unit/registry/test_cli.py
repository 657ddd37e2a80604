"""The registry's commands end to end through the CLI: promote, list, show (with lineage),
alias, rollback and verify, with their exit codes and messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.unit.registry.conftest import flip_byte
from typer.testing import CliRunner

from adaptlab.cli import app
from adaptlab.registry import ENVIRONMENT, Registry

runner = CliRunner()
APPROVAL = ["--approver", "ana@bank", "--reason", "best on the locked eval set"]


def invoke(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def test_round_trip(run_dir: Path, experiment: Path, tmp_path: Path) -> None:
    where = ["--registry", str(tmp_path / "registry")]
    out = invoke(
        "promote", str(run_dir), "--name", "intent", "--alias", "champion", *APPROVAL, *where
    )
    assert "Registered intent:1 from run full (full): 5 files" in out
    assert "alias: intent@champion none -> 1 (by ana@bank" in out
    invoke("promote", str(experiment / "runs" / "knn"), "--name", "intent", *APPROVAL, *where)
    out = invoke("registry", "alias", "intent@champion", "2", *APPROVAL, *where)
    assert "alias: intent@champion 1 -> 2" in out
    out = invoke("registry", "list", *where)
    assert "intent" in out and "@champion -> 2" in out
    out = invoke(
        "registry",
        "rollback",
        "intent@champion",
        "--approver",
        "bo",
        "--reason",
        "regressed",
        *where,
    )
    assert "rollback: intent@champion 2 -> 1 (by bo: regressed)" in out
    out = invoke("registry", "show", "intent@champion", *where)
    assert "intent:1: run full (full)" in out and "aliases: @champion" in out
    assert "predictions.safetensors" in out
    for kind in ("promote", "alias", "rollback"):
        assert kind in out
    out = invoke("registry", "show", "intent:2", "--lineage", *where)
    lineage = json.loads(out[out.index("{") :])
    assert lineage["run"]["name"] == "knn" and lineage["comparison"]["rank"] > 1
    assert "Verified 10 files of 2 versions" in invoke("registry", "verify", *where)


def test_verify_fails_naming_a_flipped_byte(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENVIRONMENT, str(tmp_path / "registry"))  # no --registry: the variable
    invoke("promote", str(run_dir), "--name", "intent", *APPROVAL)
    stored = next(f for f in Registry(tmp_path / "registry").version("intent").files)
    flip_byte(Registry(tmp_path / "registry").store.path_of(stored.sha256))
    out = invoke("registry", "verify", code=1)
    assert f"intent:1 file {stored.path}: its stored bytes" in " ".join(out.split())
    assert "1 of 5 files of 1 version " in " ".join(out.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["registry", "show", "../etc"], "model name '../etc' refused"),
        (["registry", "show", "[bold]x"], "model name '[bold]x' refused"),
        (["registry", "show", "intent:0"], "is not a number from 1"),
        (["registry", "show", "other"], "no model named 'other'"),
        (["registry", "alias", "intent", "1", *APPROVAL], "give NAME@ALIAS"),
        (["registry", "rollback", "intent@champion", *APPROVAL], "intent@champion: no such alias"),
        (["promote", "missing", "--name", "intent", *APPROVAL], "no manifest.json"),
    ],
)
def test_errors_are_messages_with_exit_code_2(
    run_dir: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    where = ["--registry", str(tmp_path / "registry")]
    invoke("promote", str(run_dir), "--name", "intent", *APPROVAL, *where)
    out = invoke(*args, *where, code=2)
    assert message in " ".join(out.split())
    assert "Traceback" not in out


def test_reading_a_registry_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    out = invoke("registry", "list", "--registry", str(tmp_path / "none"), code=2)
    assert "no registry here yet" in " ".join(out.split())
    assert not (tmp_path / "none").exists()


def test_promote_requires_an_approver_and_a_reason(run_dir: Path, tmp_path: Path) -> None:
    where = ["--registry", str(tmp_path / "registry")]
    out = invoke("promote", str(run_dir), "--name", "intent", "--reason", "x", *where, code=2)
    assert "--approver" in out
    assert not (tmp_path / "registry").exists()
