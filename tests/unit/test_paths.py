"""Atomic writes: the whole file or the previous one, with ordinary permissions."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import filelock
import pytest

from adaptlab.paths import (
    WRITER_LOCK,
    FolderBusyError,
    OutputError,
    atomic_write,
    inside,
    one_writer,
    writable_folder,
    write_folder,
    write_text_atomic,
)


def test_an_atomic_write_gets_the_permissions_of_any_other_new_file(tmp_path: Path) -> None:
    write_text_atomic(tmp_path / "eval.json", "{}\n")
    (tmp_path / "plain.json").write_text("{}\n")
    mode = stat.S_IMODE((tmp_path / "eval.json").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode)


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "eval.json"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["eval.json"]


def test_a_failed_folder_write_leaves_the_previous_folder(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    write_folder(folder, lambda staging: (staging / "weights.safetensors").write_text("v1"))

    def crash(staging: Path) -> None:
        (staging / "weights.safetensors").write_text("v2 half")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        write_folder(folder, crash)
    assert (folder / "weights.safetensors").read_text() == "v1"
    assert sorted(os.listdir(tmp_path)) == ["model"]


@pytest.mark.parametrize("name", ["../victim", "/tmp/victim", "..", ".", "a/../../b"])
def test_inside_refuses_a_name_that_leaves_its_root(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="is not a name"):
        inside(tmp_path / "runs", name)


def test_inside_keeps_a_plain_name_under_its_root(tmp_path: Path) -> None:
    assert inside(tmp_path / "runs", "lora_r8") == tmp_path / "runs" / "lora_r8"


def test_writable_folder_names_what_is_in_the_way(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="a_file: cannot write here: a file of that name"):
        writable_folder(blocker)
    with pytest.raises(OutputError, match="a_file/sub: cannot write here: Not a directory"):
        writable_folder(blocker / "sub")
    with pytest.raises(OutputError, match="cannot write here"):
        writable_folder(Path("/proc/adaptlab-test"))
    assert writable_folder(tmp_path / "new" / "deep").is_dir()
    assert list((tmp_path / "new" / "deep").iterdir()) == []  # the probe is gone


@pytest.mark.parametrize("stale", [False, True], ids=["no facts yet", "a killed holder's facts"])
def test_a_writer_refused_just_after_the_holder_locked_names_the_holder(
    tmp_path: Path, stale: bool
) -> None:
    """The holder writes who it is just after it takes the lock; a second writer refused in
    that instant (CI once saw "another process") waits for the facts, also over the stale
    facts a holder killed with -9 left behind."""
    facts = tmp_path / f"{WRITER_LOCK}.json"
    if stale:
        facts.write_text(json.dumps({"pid": 2**22 + 1, "what": "dead", "started_at": "x"}))
    lock = filelock.FileLock(tmp_path / WRITER_LOCK, timeout=0)
    lock.acquire()
    live = {"pid": os.getpid(), "what": "adaptlab compare", "started_at": "2026-12-06T00:00:00"}
    late = threading.Timer(0.3, lambda: write_text_atomic(facts, json.dumps(live)))
    late.start()
    try:
        with (
            pytest.raises(FolderBusyError, match=rf"adaptlab compare \(PID {os.getpid()}, "),
            one_writer(tmp_path, "second"),
        ):
            pass
    finally:
        late.join()
        lock.release()
