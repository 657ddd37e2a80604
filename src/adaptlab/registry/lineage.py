"""A version's lineage: what the promoted run was made from and how it fared.

Read once, at promotion, from the run (through :func:`adaptlab.runs.read_run`: its manifest and
``config.yaml``) and from the experiment folder it sits in (``<experiment>/runs/<run>``): the
eval lock (``data/eval.lock``), the data report (``data/data_report.json``: PII and duplicate
counts), the prepared training file (``data/train.jsonl``, for its size) and the comparison
(``comparison.json``: the run's rank, score and interval, and the file's sha256, which pins
the comparison the approval relied on). Stored as JSON beside the version, so it still says
what the model came from after the experiment folder is gone.

A run outside an experiment folder has no eval lock, data report or comparison: those fields
are ``None`` and ``notes`` says why; so does a file that is missing, unreadable, or
disagrees with the manifest (another eval set, another config).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from adaptlab.data.lock import LOCK_NAME, TRAIN_NAME, sha256_file
from adaptlab.paths import read_json_object
from adaptlab.runs import CONFIG, RunRecord

COMPARISON = "comparison.json"
DATA_REPORT = "data_report.json"
RUNS = "runs"
LINEAGE_VERSION = 1
_MANIFEST_FACTS = (
    "seed",
    "code_version",
    "libraries",
    "device",
    "allow_contaminated",
    "created_at",
)


def experiment_folder(run_folder: Path) -> Path | None:
    """The experiment folder holding ``run_folder`` (``<experiment>/runs/<run>``), or ``None``
    when it is not in one."""
    folder = run_folder.resolve()
    experiment = folder.parent.parent
    if folder.parent.name != RUNS or not (experiment / "data").is_dir():
        return None
    return experiment


def run_lineage(record: RunRecord) -> dict[str, Any]:
    """The lineage of the run ``record`` (JSON-ready)."""
    manifest = record.manifest.raw
    experiment = experiment_folder(record.folder)
    notes: list[str] = []
    if experiment is None:
        notes.append(
            f"{record.folder} is not inside an experiment folder (<experiment>/runs/<run>): "
            "the eval lock, data report and comparison are unknown"
        )
    data = None if experiment is None else experiment / "data"
    lock = _read(data / LOCK_NAME, notes) if data is not None else None
    return {
        "lineage_version": LINEAGE_VERSION,
        "run": {
            "name": record.name,
            "strategy": record.strategy,
            "task": record.kind,
            "folder": str(record.folder.resolve()),
        },
        "experiment": None if experiment is None else str(experiment),
        "training_data": _training_data(record, data),
        "eval": _eval(record, lock, notes),
        "documents": _documents(manifest, lock),
        "data_report": _data_report(data, notes),
        "base_model": {
            "name": manifest.get("base_model"),
            "fingerprint": manifest.get("base_model_fingerprint"),
        },
        "other_models": manifest.get("other_models"),
        "teachers": manifest.get("dependencies"),
        "config": _config(record, notes),
        **{key: manifest.get(key) for key in _MANIFEST_FACTS},
        "comparison": _comparison(record, experiment, notes),
        "notes": notes,
    }


def _read(path: Path, notes: list[str]) -> dict[str, Any] | None:
    value = read_json_object(path)
    if value is None:
        notes.append(f"{path}: missing or not a JSON object; its facts are unknown")
    return value


def _training_data(record: RunRecord, data: Path | None) -> dict[str, Any]:
    """The training file's sha256 (from the manifest); its size when the prepared file in
    the experiment is the one the run trained on."""
    sha256 = record.manifest.train_sha256
    path = None if data is None else data / TRAIN_NAME
    same = path is not None and path.is_file() and sha256_file(path) == sha256
    return {
        "sha256": sha256,
        "bytes": path.stat().st_size if same and path is not None else None,
        "file": str(path) if same else None,
    }


def _eval(record: RunRecord, lock: dict[str, Any] | None, notes: list[str]) -> dict[str, Any]:
    sha256 = record.manifest.eval_sha256
    facts: dict[str, Any] = {"sha256": sha256, "size": None, "lock": None}
    if lock is None:
        return facts
    keep = ("eval_sha256", "size", "source", "format", "contamination", "version")
    facts["lock"] = {key: lock.get(key) for key in keep}
    facts["size"] = lock.get("size")
    if lock.get("eval_sha256") != sha256:
        notes.append(
            f"eval.lock names eval set {str(lock.get('eval_sha256'))[:12]}..., the run was "
            f"scored on {sha256[:12]}...: the experiment's data changed after the run"
        )
    return facts


def _documents(manifest: dict[str, Any], lock: dict[str, Any] | None) -> dict[str, Any] | None:
    """A retrieval run's document collection: its hash (manifest) and the lock's entry."""
    sha256 = manifest.get("documents_sha256")
    entry = None if lock is None else lock.get("documents")
    if sha256 is None and entry is None:
        return None
    return {"sha256": sha256, "lock": entry}


def _data_report(data: Path | None, notes: list[str]) -> dict[str, Any] | None:
    report = None if data is None else _read(data / DATA_REPORT, notes)
    if report is None:
        return None
    pii: dict[str, Any] = report["pii"] if isinstance(report.get("pii"), dict) else {}
    return {
        "pii": pii.get("counts"),
        "pii_total": _total(pii.get("counts")),
        "pii_scrubbed": pii.get("scrubbed"),
        "duplicates": report.get("duplicates"),
        "contamination": report.get("contamination"),
        "sources": report.get("sources"),
    }


def _total(counts: Any) -> int | None:
    """The sum of the numbers in ``counts`` (per role, per PII type)."""
    if isinstance(counts, dict):
        parts = [_total(value) for value in counts.values()]
        return sum(part for part in parts if part is not None)
    return counts if isinstance(counts, int) and not isinstance(counts, bool) else None


def _config(record: RunRecord, notes: list[str]) -> dict[str, Any]:
    path = record.folder / CONFIG
    recorded = record.manifest.raw.get("config_sha256")
    sha256 = sha256_file(path) if path.is_file() else None
    if sha256 is None:
        notes.append(f"{path}: missing; the run's settings are known only by their hash")
    elif recorded is not None and sha256 != recorded:
        notes.append(f"{path}: changed since the run (its sha256 is not the manifest's)")
    return {"sha256": sha256, "manifest_sha256": recorded}


def _comparison(
    record: RunRecord, experiment: Path | None, notes: list[str]
) -> dict[str, Any] | None:
    if experiment is None:
        return None
    path = experiment / COMPARISON
    try:
        raw = path.read_bytes()
        comparison = json.loads(raw)
    except (OSError, ValueError):
        notes.append(f"{path}: missing or unreadable; the run's rank is unknown")
        return None
    rows = comparison.get("rows") if isinstance(comparison, dict) else None
    if not isinstance(rows, list):
        notes.append(f"{path}: no 'rows'; the run's rank is unknown")
        return None
    facts = {
        "file": str(path),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "metric": comparison.get("metric"),
        "best": comparison.get("best"),
        "won": comparison.get("best") == record.name,
        "runs": len(rows),
        "eval_sha256": comparison.get("eval_sha256"),
        **_standing(rows, record.name, str(comparison.get("metric"))),
    }
    if facts["rank"] is None:
        notes.append(f"{path}: run '{record.name}' is not among its rows")
    if facts["eval_sha256"] != record.manifest.eval_sha256:
        notes.append(f"{path}: compares runs on another eval set than this run's")
    return facts


def _standing(rows: list[Any], run: str, metric: str) -> dict[str, Any]:
    """The run's rank by score (1 = best; ties share a rank), its score and interval."""
    scores = [row.get("score") for row in rows if isinstance(row, dict)]
    mine = next((r for r in rows if isinstance(r, dict) and r.get("strategy") == run), None)
    score = None if mine is None else mine.get("score")
    if not isinstance(score, int | float):
        return {"rank": None, "score": None, "interval": None}
    better = sum(1 for other in scores if isinstance(other, int | float) and other > score)
    interval = mine.get(f"{metric}_ci") if mine is not None else None
    if interval is None and mine is not None:
        interval = mine.get("accuracy_ci")
    return {"rank": better + 1, "score": score, "interval": interval}
