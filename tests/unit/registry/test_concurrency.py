"""Two processes promoting the same model at once both get their own version, and every event
is kept: the version number is read inside a ``BEGIN IMMEDIATE`` transaction. Real processes
(not threads), started together through a file gate once each has imported adaptlab, against
a registry neither has created yet."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.unit.registry.conftest import snapshot

from adaptlab.registry import Registry

WORKER = """
import sys, time
from pathlib import Path
from adaptlab.registry import Registry

root, run, gate, ready = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
promotions = int(sys.argv[5])
registry = Registry(root, create=True)
ready.touch()
deadline = time.monotonic() + 120
while not gate.exists():
    if time.monotonic() > deadline:
        sys.exit("the gate never opened")
    time.sleep(0.001)
for _ in range(promotions):
    version = registry.promote(run, "intent", approver=ready.name, reason="race", alias="champion")
    print(version.version.version, flush=True)
"""


def race(root: Path, run: Path, tmp_path: Path, count: int) -> list[list[int]]:
    """Start two workers, open the gate when both are ready; the versions each one got."""
    gate = tmp_path / "gate"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, *map(str, (root, run, gate, tmp_path / who, count))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for who in ("first", "second")
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / who).exists() for who in ("first", "second")):
        assert all(w.poll() is None for w in workers), [w.communicate() for w in workers]
        assert time.monotonic() < deadline, "the workers never got ready"
        time.sleep(0.01)
    gate.touch()
    got = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        got.append([int(line) for line in out.split()])
    return got


@pytest.mark.parametrize("promotions", [1, 5])
def test_two_processes_promoting_at_once_get_unique_versions_and_keep_every_event(
    run_dir: Path, tmp_path: Path, promotions: int
) -> None:
    before = snapshot(run_dir)
    root = tmp_path / "registry"
    got = race(root, run_dir, tmp_path, promotions)
    numbers = sorted(got[0] + got[1])
    assert numbers == list(range(1, 2 * promotions + 1))
    registry = Registry(root)
    history = registry.history("intent")
    promoted = [e for e in history if e.kind == "promote"]
    assert sorted(e.to_version for e in promoted) == numbers
    assert {e.who for e in promoted} == {"first", "second"}
    assert [e.from_version for e in promoted] == [None, *numbers[:-1]]
    moved = [e for e in history if e.kind == "alias"]
    assert len(moved) == len(numbers)  # each promotion moved the alias, none was lost
    assert registry.version("intent@champion").version == moved[-1].to_version
    assert registry.verify().problems == ()
    assert snapshot(run_dir) == before
