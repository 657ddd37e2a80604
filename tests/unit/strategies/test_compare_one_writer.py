"""One writer per experiment folder: a second ``compare`` on a folder another process is
writing fails at once and names that process, or waits with ``wait``; a holder killed with
SIGKILL leaves no stale lock. The other writer is a real process holding the real lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.unit.strategies.test_compare import experiment

from adaptlab.compare import compare, experiment_dir
from adaptlab.paths import FolderBusyError

HOLDER = """
import sys, time
from pathlib import Path
from adaptlab.paths import one_writer

with one_writer(Path(sys.argv[1]), "adaptlab compare"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    Path(sys.argv[3]).write_text("done")  # still holding the lock
"""


def hold(folder: Path, seconds: float, done: Path) -> subprocess.Popen[str]:
    """A process that holds ``folder``'s writer lock for ``seconds`` (once it says so), then
    writes ``done`` and lets go."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), str(seconds), str(done)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline() == "held\n"
    return child


def test_a_second_compare_is_refused_naming_the_first_and_a_killed_holder_frees_it(
    tmp_path: Path, tiny_encoder: Path
) -> None:
    config = experiment(tmp_path, tiny_encoder)
    folder = experiment_dir(config)
    child = hold(folder, 120, tmp_path / "done")
    try:
        with pytest.raises(FolderBusyError, match=rf"adaptlab compare \(PID {child.pid}, started "):
            compare(config, ["zero_shot"], log=lambda _: None)
        assert not (folder / "runs").exists()  # refused before writing anything
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    result = compare(config, ["zero_shot"], log=lambda _: None)  # no stale lock after kill -9
    assert result.comparison["best"] == "zero_shot"


def test_with_wait_a_second_compare_starts_when_the_first_ends(
    tmp_path: Path, tiny_encoder: Path
) -> None:
    config = experiment(tmp_path, tiny_encoder)
    done = tmp_path / "done"
    child = hold(experiment_dir(config), 1.0, done)
    try:
        result = compare(config, ["zero_shot"], log=lambda _: None, wait=True)
        assert done.exists()  # it ran only once the holder had finished
        assert child.wait(timeout=30) == 0
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
    assert result.comparison["best"] == "zero_shot"
