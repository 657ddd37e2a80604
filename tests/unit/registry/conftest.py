"""A finished experiment for registry tests: the report tests' hand-written classification
experiment (five runs, eval lock, data report) with the ``comparison.json`` ``compare`` would
leave, built once per session and copied for each test (milliseconds, no model runs)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from tests.unit.report.conftest import classification_folder
from tests.unit.report.test_report import write_comparison

from adaptlab.registry import Promotion, Registry

WINNER = "full"
"""The best run of the experiment (accuracy 0.95 of five)."""


@pytest.fixture(scope="session")
def experiment_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = classification_folder(tmp_path_factory.mktemp("registry-experiment"))
    write_comparison(folder)
    return folder


@pytest.fixture
def experiment(experiment_template: Path, tmp_path: Path) -> Path:
    """A fresh copy, so a test may add files to a run without touching the others'."""
    return Path(shutil.copytree(experiment_template, tmp_path / "runs" / "tiny"))


@pytest.fixture
def run_dir(experiment: Path) -> Path:
    return experiment / "runs" / WINNER


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry", create=True)


def promote(
    registry: Registry, run_dir: Path, name: str = "intent", alias: str | None = None
) -> Promotion:
    return registry.promote(
        run_dir, name, approver="ana@bank", reason="best on the locked eval set", alias=alias
    )


def flip_byte(path: Path) -> None:
    """Change one byte in the middle of ``path`` (stored objects are read-only)."""
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def snapshot(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under ``folder``: its bytes, mode and modification time."""
    return {
        path.relative_to(folder).as_posix(): (
            path.read_bytes(),
            path.stat().st_mode,
            path.stat().st_mtime_ns,
        )
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
