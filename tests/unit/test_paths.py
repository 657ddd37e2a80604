"""Atomic writes: the whole file or the previous one, with ordinary permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from adaptlab.paths import (
    OutputError,
    atomic_write,
    inside,
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
