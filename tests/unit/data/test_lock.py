"""The eval lock: deterministic stratified splits, hash verification, and refusal to compare."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from adaptlab.data.issues import DataError
from adaptlab.data.lock import (
    EvalLock,
    EvalLockError,
    read_lock,
    require_same_eval,
    sha256_file,
    split_indices,
    verify_lock,
    write_lock,
)


def test_split_is_deterministic_stratified_and_disjoint() -> None:
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    train, held, notes = split_indices(labels, 100, 0.2, seed=7, stratify=True)
    assert split_indices(labels, 100, 0.2, seed=7, stratify=True) == (train, held, notes)
    assert set(train).isdisjoint(held) and sorted(train + held) == list(range(100))
    assert Counter(labels[i] for i in held) == {"a": 10, "b": 6, "c": 4}
    assert split_indices(labels, 100, 0.2, seed=8, stratify=True)[1] != held


def test_split_by_count_and_without_labels() -> None:
    train, held, _ = split_indices(None, 10, 3, seed=0, stratify=True)
    assert len(held) == 3 and len(train) == 7


def test_singleton_classes_stay_in_train_and_are_named() -> None:
    labels = ["a"] * 10 + ["b"] * 10 + ["lonely"]
    train, held, notes = split_indices(labels, 21, 0.2, seed=0, stratify=True)
    assert 20 in train and 20 not in held
    assert "lonely" in notes[0]


def test_impossible_splits_are_refused() -> None:
    with pytest.raises(DataError, match="at least one per class"):
        split_indices(["a", "a", "b", "b", "c", "c"], 6, 0.2, seed=0, stratify=True)
    with pytest.raises(DataError, match="at least one example on each side"):
        split_indices(None, 3, 0.01, seed=0, stratify=False)


def make_lock(folder: Path, content: str) -> EvalLock:
    (folder / "eval.jsonl").write_text(content)
    lock = EvalLock(
        eval_sha256=sha256_file(folder / "eval.jsonl"),
        size=content.count("\n"),
        format="classification",
        source="split",
        split={"seed": 1},
    )
    write_lock(folder, lock)
    return lock


def test_lock_round_trip_and_verification(tmp_path: Path) -> None:
    lock = make_lock(tmp_path, '{"text": "a", "label": "x"}\n')
    assert read_lock(tmp_path) == lock
    assert verify_lock(tmp_path) == lock


def test_changed_eval_file_is_refused(tmp_path: Path) -> None:
    make_lock(tmp_path, '{"text": "a", "label": "x"}\n')
    (tmp_path / "eval.jsonl").write_text('{"text": "b", "label": "x"}\n')
    with pytest.raises(EvalLockError, match="changed since it was locked"):
        verify_lock(tmp_path)
    (tmp_path / "eval.jsonl").unlink()
    with pytest.raises(EvalLockError, match="locked eval file is missing"):
        verify_lock(tmp_path)


def test_missing_or_malformed_lock_names_the_file_and_field(tmp_path: Path) -> None:
    with pytest.raises(EvalLockError, match="no eval lock; run `adaptlab data prepare`"):
        read_lock(tmp_path)
    (tmp_path / "eval.lock").write_text("{broken")
    with pytest.raises(EvalLockError, match="eval.lock: unreadable"):
        read_lock(tmp_path)
    (tmp_path / "eval.lock").write_text(json.dumps({"eval_sha256": "x", "size": "ten"}))
    with pytest.raises(EvalLockError, match="field 'size'"):
        read_lock(tmp_path)


def test_results_on_different_eval_sets_cannot_be_compared(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    lock_a = make_lock(tmp_path / "a", "one\n")
    lock_b = make_lock(tmp_path / "b", "two\n")
    same = {"run1": lock_a.eval_sha256, "run2": lock_a.eval_sha256}
    assert require_same_eval(same) == lock_a.eval_sha256
    with pytest.raises(EvalLockError, match="different eval sets") as caught:
        require_same_eval({"run1": lock_a.eval_sha256, "run2": lock_b.eval_sha256})
    assert "run1" in str(caught.value) and "run2" in str(caught.value)
