"""The locked eval set: split once before any training, hashed, and verified by every stage.

``eval.lock`` (JSON) records the eval file's sha256, its size, how it was made (split
parameters or the given file) and what was done about contamination. A later stage calls
:func:`verify_lock` before it trusts ``eval.jsonl``, and :func:`require_same_eval` before it
puts two results side by side: numbers measured on different eval sets are not comparable.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from adaptlab import __version__
from adaptlab.data.issues import DataError
from adaptlab.paths import write_text_atomic

LOCK_NAME = "eval.lock"
EVAL_NAME = "eval.jsonl"
TRAIN_NAME = "train.jsonl"
LOCK_VERSION = 1


class EvalLockError(DataError):
    """The eval set is missing, changed since it was locked, or differs between runs."""


@dataclass(frozen=True)
class Contamination:
    """What ``data prepare`` found and did about eval items that also occur in train."""

    overlaps: int = 0
    exact: int = 0
    near: int = 0
    override: Literal["none", "allow_contaminated", "decontaminate"] = "none"
    dropped_train: int = 0


@dataclass(frozen=True)
class EvalLock:
    eval_sha256: str
    size: int
    format: str
    source: Literal["split", "given"]
    split: dict[str, Any]
    labels: list[str] | None = None
    """Every training label, sorted (multi-label data: the union of the records' lists)."""
    text_field: str | None = None
    label_field: str | None = None
    multi_label: bool = False
    """Each record's label is a list of labels (``[]``: no intent); False in older locks."""
    contamination: Contamination = field(default_factory=Contamination)
    documents: dict[str, Any] | None = None
    """The document collection retrieval strategies read (``data.documents``): its sha256,
    the raw files' sha256, chunk settings and count; None without one."""
    version: int = LOCK_VERSION
    adaptlab_version: str = __version__

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_lock(folder: Path, lock: EvalLock) -> Path:
    path = folder / LOCK_NAME
    write_text_atomic(path, lock.to_json())
    return path


def read_lock(folder: Path) -> EvalLock:
    """Parse ``folder/eval.lock``; a missing or malformed lock names the file and the field."""
    path = folder / LOCK_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvalLockError(
            f"{path}: no eval lock; run `adaptlab data prepare` first so the eval set is "
            "fixed before any training"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvalLockError(f"{path}: unreadable eval lock: {exc}") from None
    return _lock_from_dict(raw, path)


_REQUIRED = {"eval_sha256": str, "size": int, "format": str, "source": str, "split": dict}


def _lock_from_dict(raw: Any, path: Path) -> EvalLock:
    if not isinstance(raw, dict):
        raise EvalLockError(f"{path}: an eval lock is a JSON object")
    for name, kind in _REQUIRED.items():
        if not isinstance(raw.get(name), kind):
            raise EvalLockError(f"{path}: field '{name}' is missing or not a {kind.__name__}")
    if raw.get("version") != LOCK_VERSION:
        raise EvalLockError(f"{path}: lock version {raw.get('version')!r}; expected {LOCK_VERSION}")
    contamination = raw.get("contamination") or {}
    try:
        return EvalLock(
            eval_sha256=raw["eval_sha256"],
            size=raw["size"],
            format=raw["format"],
            source=raw["source"],
            split=raw["split"],
            labels=raw.get("labels"),
            text_field=raw.get("text_field"),
            label_field=raw.get("label_field"),
            multi_label=_flag(raw, "multi_label", path),
            contamination=Contamination(**contamination),
            documents=_documents_entry(raw.get("documents"), path),
            adaptlab_version=str(raw.get("adaptlab_version", "")),
        )
    except TypeError as exc:
        raise EvalLockError(f"{path}: field 'contamination' is malformed: {exc}") from None


def _flag(raw: dict[str, Any], name: str, path: Path) -> bool:
    """An optional true/false field; absent (a lock written before it existed) is false."""
    value = raw.get(name, False)
    if not isinstance(value, bool):
        raise EvalLockError(f"{path}: field '{name}' must be true or false")
    return value


def _documents_entry(raw: Any, path: Path) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("sha256"), str):
        raise EvalLockError(f"{path}: field 'documents' must be an object with a 'sha256'")
    return dict(raw)


def verify_lock(folder: Path) -> EvalLock:
    """The lock of a prepared data folder, after checking ``eval.jsonl`` still matches it."""
    lock = read_lock(folder)
    eval_path = folder / EVAL_NAME
    if not eval_path.exists():
        raise EvalLockError(f"{eval_path}: the locked eval file is missing")
    actual = sha256_file(eval_path)
    if actual != lock.eval_sha256:
        raise EvalLockError(
            f"{eval_path}: changed since it was locked (sha256 {actual[:12]}…, lock says "
            f"{lock.eval_sha256[:12]}…). Results on a changed eval set are not comparable; "
            "re-run `adaptlab data prepare` and every strategy"
        )
    return lock


def require_same_eval(eval_hashes: Mapping[str, str]) -> str:
    """The shared eval hash of several runs (name → eval sha256); raises naming the runs whose
    eval set differs."""
    by_hash: dict[str, list[str]] = {}
    for name, digest in eval_hashes.items():
        by_hash.setdefault(digest, []).append(name)
    if len(by_hash) > 1:
        groups = "; ".join(f"{h[:12]}…: {', '.join(sorted(names))}" for h, names in by_hash.items())
        raise EvalLockError(
            f"these results were computed on different eval sets and cannot be compared: {groups}"
        )
    if not by_hash:
        raise EvalLockError("no results to compare")
    return next(iter(by_hash))


def split_indices(
    labels: Sequence[str] | None,
    n: int,
    val_set_size: float,
    seed: int,
    stratify: bool,
    multi_label: bool = False,
) -> tuple[list[int], list[int], list[str]]:
    """Deterministic train/eval indices (same input + seed → same split), and notes.

    With labels and ``stratify``, each class keeps its proportion in both parts. Classes with a
    single example cannot be split; they stay in train and are named in the notes.
    ``multi_label`` data has no one class per record to stratify on: a plain seeded split, and
    a note saying so.
    """
    from sklearn.model_selection import train_test_split

    eval_count = _eval_count(n, val_set_size)
    indices = list(range(n))
    notes: list[str] = []
    if multi_label:
        notes.append(
            "multi-label data: the split is not stratified (a plain seeded split), so label "
            "proportions may differ between train and eval"
        )
    if not (labels is not None and stratify) or multi_label:
        train, held = train_test_split(indices, test_size=eval_count, random_state=seed)
        return sorted(train), sorted(held), notes
    counts = Counter(labels)
    singletons = sorted(label for label, c in counts.items() if c < 2)
    if singletons:
        notes.append(
            f"{len(singletons)} classes have a single example and stay in train only: "
            f"{', '.join(singletons[:10])}"
        )
    pool = [i for i in indices if counts[labels[i]] >= 2]
    classes = len(counts) - len(singletons)
    if eval_count < classes:
        raise DataError(
            f"val_set_size={val_set_size} gives {eval_count} eval examples for {classes} classes; "
            f"a stratified split needs at least one per class: raise val_set_size"
        )
    train, held = train_test_split(
        pool, test_size=eval_count, random_state=seed, stratify=[labels[i] for i in pool]
    )
    singles = [i for i in indices if counts[labels[i]] < 2]
    return sorted([*train, *singles]), sorted(held), notes


def _eval_count(n: int, val_set_size: float) -> int:
    count = round(n * val_set_size) if val_set_size < 1 else int(val_set_size)
    if not 1 <= count < n:
        raise DataError(
            f"val_set_size={val_set_size} leaves {count} of {n} examples for eval; it must leave "
            "at least one example on each side"
        )
    return count
