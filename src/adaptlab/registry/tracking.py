"""MLflow, optional (``pip install 'adaptlab[mlflow]'``): a comparison's runs as MLflow runs,
and a promoted version in MLflow's Model Registry (``--mlflow URI`` on ``compare`` and
``promote``).

Each finished run of an experiment folder becomes one MLflow run in the MLflow experiment
named after that folder. It carries params (strategy, run, base model, seed and the resolved
config flattened to ``config.<key>``), metrics (every number of ``eval.json``, the primary
metric's interval as ``<metric>_ci_low`` and ``<metric>_ci_high``, latency as ``latency.*``
and ``cost.json`` as ``cost.*``), tags (``adaptlab.*``) and the run's small files (manifest,
eval, cost, config) as artifacts, never its weights. The tag :data:`IDENTITY` (the manifest's
sha256) names the adaptlab run, so logging it again finds the MLflow run made before.

A promoted version goes further: every file the registry stored, weights included, each
checked against its sha256 as it leaves the store, is uploaded under ``registry/<name>/<n>``
of its run's MLflow run, and registered as a version of the registered model of the same
name, tagged with the adaptlab version and its lineage; the alias, if given, points there.

Runs are read through :func:`adaptlab.runs.read_run`, as every later stage reads them.
``mlflow`` is imported inside functions only, so adaptlab works without it.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from adaptlab.paths import read_json_object
from adaptlab.registry.catalog import Registry, Version
from adaptlab.registry.names import Reference
from adaptlab.report.build import ReportConfig, report_data
from adaptlab.report.inputs import inputs_for_comparison
from adaptlab.runs import CONFIG, COST, EVAL, MANIFEST, RunError, RunRecord, read_run, sha256_text

if TYPE_CHECKING:
    from mlflow import MlflowClient

INSTALL = "pip install 'adaptlab[mlflow]'"
IDENTITY = "adaptlab.manifest_sha256"
"""The run tag that names the adaptlab run an MLflow run was logged from."""
SMALL_FILES = (MANIFEST, EVAL, COST, CONFIG)
RUNS = "runs"
COMPARISON = "comparison.json"
LOOSE_RUNS = "adaptlab"
"""The MLflow experiment of a promoted run that sat in no experiment folder."""
# MLflow's limits (mlflow.utils.validation): the server refuses longer keys and values.
KEY_MAX = 250
PARAM_MAX = 6000
TAG_MAX = 8000
MODEL_TAG_MAX = 100_000
DESCRIPTION_MAX = 5000
CONNECT_TIMEOUT_S = 5.0
_BAD_KEY = re.compile(r"[^\w.\- ]")
_MLFLOW_ALIAS = re.compile(r"[\w-]+")
_RESERVED_ALIAS = re.compile(r"latest|v\d+", re.IGNORECASE)


class TrackingError(RuntimeError):
    """MLflow is missing, unreachable or refused a request; the message says which and what
    to do."""


@dataclass(frozen=True)
class LoggedRun:
    run: str
    """The adaptlab run's name."""
    run_id: str
    """Its MLflow run."""
    new: bool
    """Logged now (``False``: logged before; only its ``adaptlab.best`` and
    ``adaptlab.recommended`` tags are set anew)."""


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    """MLflow's version number: its own count, not necessarily adaptlab's."""
    run_id: str
    source: str
    alias: str | None


# -- before any work --------------------------------------------------------------------------


def check_tracking(tracking_uri: str, alias: str | None = None) -> None:
    """Refuse at once, before a compare or promotion has done anything, what would fail after
    it: MLflow not installed, an alias MLflow does not accept, or no server at an http(s) URI
    (MLflow's own client retries a refused connection for about four minutes)."""
    _mlflow()
    if alias is not None:
        _check_alias(alias)
    parts = urllib.parse.urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https"):
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise TrackingError(
            f"no MLflow server answers at {tracking_uri} ({exc}); start one (mlflow server) "
            "or correct --mlflow"
        ) from None


def _check_alias(alias: str) -> None:
    if not _MLFLOW_ALIAS.fullmatch(alias) or _RESERVED_ALIAS.fullmatch(alias):
        raise TrackingError(
            f"alias {alias!r}: MLflow accepts letters, digits, '_' and '-' only, and reserves "
            "'latest' and 'v<number>'; choose another alias for an MLflow registration"
        )


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise TrackingError(f"--mlflow needs MLflow, which is not installed: {INSTALL}") from None
    return mlflow


def _client(tracking_uri: str) -> MlflowClient:
    client: MlflowClient = _mlflow().MlflowClient(
        tracking_uri=tracking_uri, registry_uri=tracking_uri
    )
    return client


@contextlib.contextmanager
def _refusals(tracking_uri: str) -> Iterator[None]:
    """MLflow's refusals (and a connection lost midway) as :class:`TrackingError`."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, OSError) as exc:
        raise TrackingError(f"MLflow at {tracking_uri}: {exc}") from exc


# -- a comparison -----------------------------------------------------------------------------


def log_comparison(experiment_folder: Path, tracking_uri: str) -> list[LoggedRun]:
    """Log each finished run under ``experiment_folder/runs/`` as one MLflow run of the MLflow
    experiment named after the folder; a run logged before is found, not logged twice. Folders
    of unfinished or failed runs are passed over."""
    check_tracking(tracking_uri)
    records = _finished_runs(experiment_folder / RUNS)
    standing = _standing(experiment_folder, records)
    client = _client(tracking_uri)
    logged = []
    with _refusals(tracking_uri):
        experiment = _experiment_id(client, experiment_name(experiment_folder))
        for record in records:
            tags = standing.get(record.name, {})
            run = _log_run(client, experiment, record, tags)
            if not run.new:  # the comparison may have changed since: its tags are set anew
                _set_tags(client, run.run_id, tags)
            logged.append(run)
    return logged


def experiment_name(experiment_folder: Path) -> str:
    """The MLflow experiment of ``experiment_folder``'s runs: the folder's name."""
    return experiment_folder.resolve().name


def _finished_runs(runs: Path) -> list[RunRecord]:
    records = []
    for folder in sorted(runs.iterdir()) if runs.is_dir() else []:
        try:
            records.append(read_run(folder, predictions=False))
        except RunError:
            continue  # unfinished or failed: compare has said so already
    return records


def _standing(experiment_folder: Path, records: list[RunRecord]) -> dict[str, dict[str, str]]:
    """Per run, what the comparison says of it: ``adaptlab.best`` (top score in
    ``comparison.json``) and ``adaptlab.recommended`` (the report's decision)."""
    comparison = read_json_object(experiment_folder / COMPARISON)
    if comparison is None or not isinstance(comparison.get("rows"), list):
        return {}
    recommended = _recommended(experiment_folder, comparison)
    standing = {}
    for record in records:
        tags = {"adaptlab.best": _flag(comparison.get("best") == record.name)}
        if recommended is not None:
            tags["adaptlab.recommended"] = _flag(record.name == recommended)
        standing[record.name] = tags
    return standing


def _recommended(experiment_folder: Path, comparison: dict[str, Any]) -> str | None:
    """The run the report recommends: the decision ``compare``'s own report takes, with the
    same default settings. ``None`` when it cannot be taken; the logging must not fail for it,
    as ``compare`` does not fail for a report."""
    try:
        data = report_data(inputs_for_comparison(experiment_folder, comparison), ReportConfig())
    except Exception:  # a report that cannot be built: no recommendation to tag
        return None
    return data.decision.recommended


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _experiment_id(client: MlflowClient, name: str) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException:  # created meanwhile by another process
        again = client.get_experiment_by_name(name)
        if again is None:
            raise
        return str(again.experiment_id)


def _log_run(
    client: MlflowClient, experiment: str, record: RunRecord, tags: dict[str, str]
) -> LoggedRun:
    """The MLflow run of ``record``: found by :data:`IDENTITY`, else made, filled and closed;
    one that fails halfway is closed ``FAILED`` and is not found next time."""
    identity = _identity(record)
    found = client.search_runs(
        [experiment],
        filter_string=f"tags.`{IDENTITY}` = '{identity}' and attributes.status = 'FINISHED'",
        max_results=1,
    )
    if found:
        return LoggedRun(record.name, str(found[0].info.run_id), new=False)
    every_tag = {**_run_tags(record), **tags, IDENTITY: identity}
    run_id = str(client.create_run(experiment, run_name=record.name).info.run_id)
    try:
        _fill(client, run_id, record, every_tag)
    except BaseException:
        _close(client, run_id, "FAILED")
        raise
    _close(client, run_id, "FINISHED")
    return LoggedRun(record.name, run_id, new=True)


def _identity(record: RunRecord) -> str:
    return sha256_text(json.dumps(record.manifest.raw, sort_keys=True))


def _fill(client: MlflowClient, run_id: str, record: RunRecord, tags: dict[str, str]) -> None:
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(key, value, now, 0) for key, value in _metrics(record).items()],
        params=[Param(key, value) for key, value in _params(record).items()],
        tags=_run_tag_entities(tags),
    )
    for name in SMALL_FILES:
        if (record.folder / name).is_file():
            client.log_artifact(run_id, str(record.folder / name))


def _set_tags(client: MlflowClient, run_id: str, tags: dict[str, str]) -> None:
    client.log_batch(run_id, tags=_run_tag_entities(tags))


def _run_tag_entities(tags: dict[str, str]) -> list[Any]:
    from mlflow.entities import RunTag

    return [RunTag(_key(key), _cut(value, TAG_MAX)) for key, value in tags.items()]


def _close(client: MlflowClient, run_id: str, status: str) -> None:
    # set_terminated prints two "View run" links per run on stdout; the command prints its own.
    with contextlib.redirect_stdout(io.StringIO()):
        client.set_terminated(run_id, status)


def _run_tags(record: RunRecord) -> dict[str, str]:
    return {
        "adaptlab.run": record.name,
        "adaptlab.strategy": record.strategy,
        "adaptlab.task": record.kind,
        "adaptlab.train_sha256": record.manifest.train_sha256,
        "adaptlab.eval_sha256": record.manifest.eval_sha256,
        "adaptlab.base_model": record.manifest.base_model,
        "adaptlab.folder": str(record.folder.resolve()),
    }


def _params(record: RunRecord) -> dict[str, str]:
    """The run's identity and its resolved config (``config.<key>``), as MLflow takes them:
    strings, cut at its length limit (``config.yaml`` itself is an artifact)."""
    manifest = record.manifest
    facts = {
        "strategy": manifest.strategy,
        "run": manifest.run,
        "base_model": manifest.base_model,
        "seed": manifest.raw.get("seed"),
    }
    try:
        config = yaml.safe_load(record.config_yaml) if record.config_yaml else None
    except yaml.YAMLError:
        config = record.config_yaml  # unreadable as YAML: its text, as one param
    if config is not None:
        facts.update(_flat(config, "config"))
    return {_key(key): _cut(_text(value), PARAM_MAX) for key, value in facts.items()}


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    """Nested mappings as ``prefix.key.key`` -> leaf (lists are leaves)."""
    if not isinstance(value, dict):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, inner in value.items():
        flat.update(_flat(inner, f"{prefix}.{key}"))
    return flat


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _metrics(record: RunRecord) -> dict[str, float]:
    """Every number the run measured: the primary metric and its interval first, then
    ``eval.json``'s metrics, grounding and retrieval, latency, and ``cost.json``."""
    evaluation, primary = record.eval, record.eval.primary_metric
    low, high = evaluation.interval
    metrics = {primary: evaluation.score, f"{primary}_ci_low": low, f"{primary}_ci_high": high}
    sources = {
        "": evaluation.metrics,
        "grounding": evaluation.grounding,
        "retrieval": evaluation.retrieval,
        "latency": evaluation.latency,
        "serving": evaluation.raw.get("cost"),  # a generator's latency and tokens
        "cost": record.cost.raw,
    }
    for prefix, source in sources.items():
        for key, number in _numbers(source, prefix).items():
            metrics.setdefault(_key(key), number)
    return metrics


def _numbers(value: Any, key: str) -> dict[str, float]:
    """The numbers in ``value`` by dotted key; an interval ``[low, high]`` as ``key_low`` and
    ``key_high`` (so ``accuracy_ci`` gives ``accuracy_ci_low``)."""
    if isinstance(value, bool) or value is None:
        return {}
    if isinstance(value, int | float):
        return {key: float(value)} if key else {}
    if isinstance(value, list) and len(value) == 2 and not any(map(_not_number, value)):
        return {f"{key}_low": float(value[0]), f"{key}_high": float(value[1])}
    if isinstance(value, dict):
        found: dict[str, float] = {}
        for name, inner in value.items():
            found.update(_numbers(inner, f"{key}.{name}" if key else str(name)))
        return found
    return {}


def _not_number(value: Any) -> bool:
    return isinstance(value, bool) or not isinstance(value, int | float)


def _key(key: str) -> str:
    """``key`` as MLflow accepts a param, metric or tag name: other characters (a label's ``&``,
    a path's ``/``) become ``_``, and it is cut at MLflow's limit."""
    return _BAD_KEY.sub("_", key)[:KEY_MAX]


def _cut(value: str, limit: int) -> str:
    marker = "...[cut]"
    return value if len(value) <= limit else value[: limit - len(marker)] + marker


# -- a promoted version -------------------------------------------------------------------------


def register_version(
    registry: Registry, version: Version, tracking_uri: str, *, alias: str | None = None
) -> RegisteredVersion:
    """Register adaptlab's ``version`` in MLflow's Model Registry under its name, with its
    files uploaded as artifacts of its run's MLflow run (logged now if it was not), and point
    ``alias`` there."""
    check_tracking(tracking_uri, alias)
    client = _client(tracking_uri)
    experiment_name = _experiment_name(version)
    with tempfile.TemporaryDirectory(prefix="adaptlab-mlflow-") as temporary:
        reference = Reference(version.name, version=version.version)
        files = registry.open_version(reference, Path(temporary) / "files")
        record = read_run(files, predictions=False)
        with _refusals(tracking_uri):
            experiment = _experiment_id(client, experiment_name)
            logged = _log_run(client, experiment, record, _lineage_tags(version))
            path = f"registry/{version.name}/{version.version}"
            client.log_artifacts(logged.run_id, str(files), path)
    with _refusals(tracking_uri):
        return _register(client, registry, version, logged.run_id, path, alias)


def _experiment_name(version: Version) -> str:
    """Its run's experiment folder's name, as :func:`log_comparison` names it."""
    folder = version.lineage.get("experiment")
    return experiment_name(Path(folder)) if isinstance(folder, str) and folder else LOOSE_RUNS


def _lineage_tags(version: Version) -> dict[str, str]:
    """Tags of a run first logged at its promotion: read from its lineage, since the files
    are a temporary copy out of the store."""
    tags = {}
    run = version.lineage.get("run")
    if isinstance(run, dict) and isinstance(run.get("folder"), str):
        tags["adaptlab.folder"] = run["folder"]
    comparison = version.lineage.get("comparison")
    if isinstance(comparison, dict):
        tags["adaptlab.best"] = _flag(bool(comparison.get("won")))
    return tags


def _register(
    client: MlflowClient,
    registry: Registry,
    version: Version,
    run_id: str,
    path: str,
    alias: str | None,
) -> RegisteredVersion:
    # The files are no MLflow "Model" (no MLmodel file, no flavor): mlflow.register_model
    # refuses a runs:/ URI without one, and there is no LoggedModel to name with models:/.
    # create_model_version takes any artifact location; with runs:/<run_id>/<path> and the same
    # run_id, the server's source check accepts it (mlflow.server.handlers._validate_source_run,
    # read in 3.17.2), and models:/NAME@ALIAS downloads resolve to those files (tested).
    _ensure_model(client, version.name)
    source = f"runs:/{run_id}/{path}"
    created = client.create_model_version(
        version.name,
        source,
        run_id=run_id,
        tags=_version_tags(registry, version),
        description=_description(registry, version),
    )
    number = str(created.version)
    if alias is not None:
        client.set_registered_model_alias(version.name, alias, number)
    return RegisteredVersion(version.name, number, run_id, source, alias)


def _ensure_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="Registered from adaptlab's registry.")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def _version_tags(registry: Registry, version: Version) -> dict[str, str]:
    lineage = json.dumps(version.lineage, sort_keys=True, default=str)
    return {
        "adaptlab.version": str(version),
        "adaptlab.version_number": str(version.version),
        "adaptlab.run": version.run,
        "adaptlab.strategy": version.strategy,
        "adaptlab.approver": version.who,
        "adaptlab.promoted_at": version.created_at,
        "adaptlab.registry": str(registry.root.resolve()),
        "adaptlab.files": str(len(version.files)),
        "adaptlab.lineage": _cut(lineage, MODEL_TAG_MAX),
    }


def _description(registry: Registry, version: Version) -> str:
    """Who promoted it and why (the promotion's event), and how it ranked."""
    reason = next(
        (
            event.why
            for event in registry.history(version.name)
            if event.kind == "promote" and event.to_version == version.version
        ),
        "",
    )
    comparison = version.lineage.get("comparison") or {}
    standing = ""
    if isinstance(comparison, dict) and comparison.get("rank") is not None:
        standing = (
            f" Rank {comparison['rank']} of {comparison.get('runs')} on "
            f"{comparison.get('metric')}: {comparison.get('score')} "
            f"(interval {comparison.get('interval')})."
        )
    text = (
        f"adaptlab {version}: run {version.run} (strategy {version.strategy}), promoted by "
        f"{version.who}: {reason.rstrip('.')}.{standing}"
    )
    return _cut(text, DESCRIPTION_MAX)
