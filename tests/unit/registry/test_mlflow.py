"""MLflow, optional: a comparison's runs logged as MLflow runs (once), a promoted version
registered in MLflow's Model Registry with its alias, through the library and the CLI, against a
real local MLflow server (SQLite backend, artifacts served by it) started once per session.
Without MLflow installed these tests skip, except under CI (``.ci/run`` installs the extra);
what ``--mlflow`` says without MLflow is tested either way."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.unit.optional import free_port, require_extra
from tests.unit.registry.conftest import WINNER, promote
from tests.unit.strategies.test_compare import experiment as tiny_experiment
from typer.testing import CliRunner

from adaptlab.cli import app
from adaptlab.registry import Registry
from adaptlab.registry.tracking import (
    INSTALL,
    TrackingError,
    check_tracking,
    log_comparison,
    register_version,
)
from adaptlab.runs import read_run

runner = CliRunner()
APPROVAL = ["--approver", "ana@bank", "--reason", "best on the locked eval set"]
SMALL_FILES = {"config.yaml", "cost.json", "eval.json", "manifest.json"}
START_DEADLINE_S = 90.0


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local MLflow server: SQLite backend, artifacts proxied into a temporary folder; its
    whole process group is ended at teardown."""
    require_extra("mlflow", INSTALL)
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    command = [
        *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)),
        *("--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}"),
        *("--artifacts-destination", str(folder / "artifacts"), "--workers", "1"),
    ]
    # No job runner (seven huey processes the tests do not use) and no telemetry.
    quiet = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    log = (folder / "server.log").open("wb")
    server = subprocess.Popen(
        command,
        cwd=folder,
        env={**os.environ, **quiet},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(uri, server, folder / "server.log")
        yield uri
    finally:
        stop(server)
        log.close()


def wait_until_healthy(uri: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited with {server.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    pytest.fail(
        f"mlflow server not healthy after {START_DEADLINE_S:.0f} s: {log.read_text()[-2000:]}"
    )


def stop(server: subprocess.Popen[bytes]) -> None:
    """End the server's process group: the server and its uvicorn worker, asked first, then
    killed with whatever of the group is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=10)


@pytest.fixture
def client(mlflow_server: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)


@pytest.fixture
def own_experiment(experiment: Path) -> Path:
    """The experiment under a name of its own: the server, so its MLflow experiments and
    registered models, is shared by the whole session."""
    return experiment.rename(experiment.with_name(f"tiny-{uuid.uuid4().hex[:8]}"))


def model_name() -> str:
    return f"intent-{uuid.uuid4().hex[:8]}"


def digests(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in folder.rglob("*")
        if path.is_file()
    }


def test_each_run_is_logged_once_with_its_interval(
    own_experiment: Path, mlflow_server: str, client: Any
) -> None:
    folders = sorted(p for p in (own_experiment / "runs").iterdir() if p.is_dir())
    logged = log_comparison(own_experiment, mlflow_server)
    assert [run.run for run in logged] == [f.name for f in folders]
    assert all(run.new for run in logged)
    recommended = []
    for run, folder in zip(logged, folders, strict=True):
        record = read_run(folder, predictions=False)
        found = client.get_run(run.run_id)
        metrics, tags = found.data.metrics, found.data.tags
        assert metrics["accuracy"] == record.eval.score
        assert (metrics["accuracy_ci_low"], metrics["accuracy_ci_high"]) == record.eval.interval
        assert metrics["cost.fit_wall_s"] == record.cost.fit_wall_s
        assert metrics["latency.batch_1.p50_ms"] == record.eval.latency["batch_1"]["p50_ms"]
        assert found.data.params["strategy"] == record.strategy
        assert found.data.params["seed"] == str(record.manifest.raw["seed"])
        assert "config.strategy" in found.data.params
        assert tags["adaptlab.run"] == record.name and found.info.status == "FINISHED"
        assert tags["adaptlab.eval_sha256"] == record.manifest.eval_sha256
        assert tags["adaptlab.best"] == ("true" if record.name == WINNER else "false")
        recommended += [record.name] if tags["adaptlab.recommended"] == "true" else []
        assert {a.path for a in client.list_artifacts(run.run_id)} == SMALL_FILES
    assert len(recommended) == 1
    comparison = json.loads((own_experiment / "comparison.json").read_text())
    comparison["best"] = "knn"  # as if compared again: the standing tags follow
    (own_experiment / "comparison.json").write_text(json.dumps(comparison))
    again = log_comparison(own_experiment, mlflow_server)
    assert [(run.run_id, run.new) for run in again] == [(run.run_id, False) for run in logged]
    knn = next(run.run_id for run in again if run.run == "knn")
    assert client.get_run(knn).data.tags["adaptlab.best"] == "true"
    mlflow_experiment = client.get_experiment_by_name(own_experiment.name)
    assert len(client.search_runs([mlflow_experiment.experiment_id])) == len(folders)


def test_a_promoted_version_is_registered_and_its_alias_moves(
    own_experiment: Path,
    registry: Registry,
    mlflow_server: str,
    client: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow

    name = model_name()
    runs = {run.run: run.run_id for run in log_comparison(own_experiment, mlflow_server)}
    first = promote(registry, own_experiment / "runs" / WINNER, name, alias="champion").version
    registered = register_version(registry, first, mlflow_server, alias="champion")
    assert registered.run_id == runs[WINNER]  # the comparison's MLflow run, not a second one
    version = client.get_model_version_by_alias(name, "champion")
    assert version.version == registered.version
    assert version.tags["adaptlab.version"] == f"{name}:1"
    assert version.tags["adaptlab.approver"] == "ana@bank"
    assert json.loads(version.tags["adaptlab.lineage"])["run"]["name"] == WINNER
    assert "best on the locked eval set" in version.description
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    downloaded = mlflow.artifacts.download_artifacts(
        f"models:/{name}@champion", dst_path=str(tmp_path / "downloaded")
    )
    assert digests(Path(downloaded)) == {f.path: f.sha256 for f in first.files}

    second = promote(registry, own_experiment / "runs" / "knn", name, alias="champion").version
    moved = register_version(registry, second, mlflow_server, alias="champion")
    assert moved.version != registered.version and moved.run_id == runs["knn"]
    version = client.get_model_version_by_alias(name, "champion")
    assert version.version == moved.version and version.tags["adaptlab.version"] == f"{name}:2"


def test_promote_with_mlflow_from_the_command_line(
    run_dir: Path, tmp_path: Path, mlflow_server: str, client: Any
) -> None:
    name = model_name()
    where = ["--registry", str(tmp_path / "registry"), "--mlflow", mlflow_server]
    result = runner.invoke(
        app, ["promote", str(run_dir), "--name", name, "--alias", "champion", *APPROVAL, *where]
    )
    assert result.exit_code == 0, result.output
    version = client.get_model_version_by_alias(name, "champion")
    assert f"registered model '{name}' version {version.version}, @champion" in result.output
    assert version.tags["adaptlab.version"] == f"{name}:1"
    run = client.get_run(version.run_id)  # logged at the promotion: from the store's copy
    assert run.data.tags["adaptlab.folder"] == str(run_dir.resolve())
    assert run.data.metrics["accuracy"] == read_run(run_dir).eval.score


def test_compare_with_mlflow_logs_its_runs(
    tmp_path: Path, tiny_encoder: Path, mlflow_server: str, client: Any
) -> None:
    import yaml

    name = f"tiny-{uuid.uuid4().hex[:8]}"
    config = tiny_experiment(tmp_path, tiny_encoder, name=name)
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_defaults=True)))
    arguments = ["compare", str(path), "-s", "knn", "--mlflow", mlflow_server]
    first, again = runner.invoke(app, arguments), runner.invoke(app, arguments)
    assert first.exit_code == again.exit_code == 0, again.output
    assert f"experiment '{name}': 1 runs logged now, 0 logged before: knn=" in first.output
    assert "0 runs logged now, 1 logged before" in again.output
    (logged,) = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert logged.data.tags["adaptlab.run"] == "knn" and "accuracy_ci_low" in logged.data.metrics


def test_an_alias_mlflow_refuses_stops_the_promotion_first(run_dir: Path, tmp_path: Path) -> None:
    require_extra("mlflow", INSTALL)
    where = ["--registry", str(tmp_path / "registry"), "--mlflow", "http://127.0.0.1:9"]
    result = runner.invoke(
        app, ["promote", str(run_dir), "--name", "intent", "--alias", "v2", *APPROVAL, *where]
    )
    assert result.exit_code == 2 and "alias 'v2': MLflow accepts" in result.output
    assert not (tmp_path / "registry").exists()


def test_no_server_is_said_at_once() -> None:
    require_extra("mlflow", INSTALL)
    started = time.monotonic()
    with pytest.raises(TrackingError, match="no MLflow server answers at http://127.0.0.1:"):
        check_tracking(f"http://127.0.0.1:{free_port()}")
    assert time.monotonic() - started < 10  # not MLflow's four minutes of retries


@pytest.mark.parametrize("command", ["promote", "compare"])
def test_without_mlflow_the_option_says_how_to_install_it(
    command: str, run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    where = ["--mlflow", "http://127.0.0.1:5000"]
    if command == "promote":
        arguments = ["promote", str(run_dir), "--name", "intent", *APPROVAL, *where]
        arguments += ["--registry", str(tmp_path / "registry")]
    else:
        arguments = ["compare", str(tmp_path / "missing.yaml"), *where]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2, result.output
    assert "pip install 'adaptlab[mlflow]'" in result.output
    assert not (tmp_path / "registry").exists()  # refused before anything was done
    with pytest.raises(TrackingError, match=r"pip install 'adaptlab\[mlflow\]'"):
        log_comparison(run_dir.parent.parent, "http://127.0.0.1:5000")
