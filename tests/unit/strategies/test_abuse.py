"""Path and name abuse, alias bombs, duplicate keys and unwritable outputs, through the command
line a user types: each gets a clear error naming the file and the field, exits non-zero, and
nothing is written outside the experiment's root.

The root is ``tmp_path/root``; beside it lies ``tmp_path/victim`` holding a file. Every file
under ``tmp_path`` outside the root is fingerprinted (path, size, mtime, content hash) before
and after each command, so a deletion, a new file or a rewrite anywhere outside is caught,
not only in the victim folder a case aims at.
"""

from __future__ import annotations

import hashlib
import json
import resource
import time
from pathlib import Path

import pytest
from tests.unit.strategies.test_compare import write_dataset
from tests.unit.test_config import BOMB
from typer.testing import CliRunner, Result

from adaptlab.cli import app

runner = CliRunner()


def fingerprint(top: Path, root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file and folder under ``top`` but outside ``root``."""
    seen: dict[str, tuple[int, int, str]] = {}
    for path in sorted(top.rglob("*")):
        if path == root or path.is_relative_to(root):
            continue
        if path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            seen[str(path)] = (path.stat().st_size, path.stat().st_mtime_ns, digest)
        else:
            seen[str(path)] = (0, 0, "dir")
    return seen


def assert_message_only(result: Result) -> None:
    """The command ended with its own message, not an exception escaping it."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output


@pytest.fixture
def world(tmp_path: Path, tiny_encoder: Path) -> tuple[Path, Path, Path]:
    """``(root, victim, train)``: an experiment root, a folder beside it, training data."""
    root, victim = tmp_path / "root", tmp_path / "victim"
    root.mkdir()
    victim.mkdir()
    (victim / "precious.txt").write_text("do not touch\n")
    train = write_dataset(root / "train.jsonl")
    return root, victim, train


def config_text(root: Path, train: Path, tiny_encoder: Path, **parts: str) -> str:
    base = {
        "name": "tiny",
        "output_dir": json.dumps(str(root / "out")),
        "data": f"{{train: {json.dumps(str(train))}, val_set_size: 0.25}}",
        "model": f"{{base_model: {json.dumps(str(tiny_encoder))}, sequence_len: 32}}",
        "compare": "{latency_budget_s: 0.2, bootstrap_resamples: 200}",
    }
    base.update(parts)
    return "".join(f"{key}: {value}\n" for key, value in base.items())


def abusive_configs(root: Path, victim: Path) -> dict[str, tuple[dict[str, str], str]]:
    """Case -> (config parts, what the message must say)."""
    escape = "../" * (len(root.parts) + 2) + str(victim).lstrip("/")
    return {
        "run name climbs out": (
            {"strategies": f"{{{json.dumps(escape)}: {{strategy: frozen}}}}"},
            "is not a name",
        ),
        "run name is an absolute path": (
            {"strategies": f"{{{json.dumps(str(victim))}: {{strategy: frozen}}}}"},
            "is not a name",
        ),
        "experiment name climbs out": ({"name": json.dumps(f"../{victim.name}")}, "is not a name"),
        "experiment name is absolute": ({"name": json.dumps(str(victim))}, "is not a name"),
        "output_dir is a file": (
            {"output_dir": json.dumps(str(root / "train.jsonl"))},
            "train.jsonl",
        ),
        "output_dir under /proc": ({"output_dir": json.dumps("/proc/adaptlab")}, "/proc"),
    }


CASES = [
    "run name climbs out",
    "run name is an absolute path",
    "experiment name climbs out",
    "experiment name is absolute",
    "output_dir is a file",
    "output_dir under /proc",
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", ["config check", "compare"])
def test_abuse_is_refused_and_nothing_outside_the_root_changes(
    world: tuple[Path, Path, Path], tiny_encoder: Path, case: str, command: str
) -> None:
    root, victim, train = world
    parts, expected = abusive_configs(root, victim)[case]
    if command == "config check" and case.startswith("output_dir"):
        pytest.skip("config check validates the file; it writes nothing, so no output folder")
    path = root / "abuse.yaml"
    path.write_text(config_text(root, train, tiny_encoder, **parts))
    before = fingerprint(root.parent, root)

    result = runner.invoke(app, [*command.split(), str(path)])

    assert result.exit_code != 0, result.output
    assert expected in result.output
    if "name" in case:
        assert f"{path}:" in result.output  # the file and its line
    assert_message_only(result)
    assert fingerprint(root.parent, root) == before
    assert (victim / "precious.txt").read_text() == "do not touch\n"


@pytest.mark.parametrize("out", ["a file", "read-only", "/proc"])
def test_data_check_into_an_unwritable_folder_is_a_message(
    world: tuple[Path, Path, Path], out: str
) -> None:
    root, _, train = world
    target = {
        "a file": train,
        "read-only": root / "locked",
        "/proc": Path("/proc/adaptlab"),
    }[out]
    if out == "read-only":
        target.mkdir()
        target.chmod(0o500)
        probe = target / "probe"
        try:
            probe.write_text("")  # root ignores permissions: nothing to test there
            probe.unlink()
            pytest.skip("running as a user whose writes ignore folder permissions")
        except PermissionError:
            pass
    before = fingerprint(root.parent, root)
    result = runner.invoke(app, ["data", "check", str(train), "--out", str(target)])
    assert result.exit_code != 0
    assert_message_only(result)
    assert str(target) in result.output
    assert fingerprint(root.parent, root) == before


def test_an_alias_bomb_is_refused_at_once_in_bounded_memory(world: tuple[Path, Path, Path]) -> None:
    root, _, _ = world
    path = root / "bomb.yaml"
    path.write_text(BOMB)
    before_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    for command in (["config", "check"], ["compare"]):
        result = runner.invoke(app, [*command, str(path)])
        assert result.exit_code != 0
        assert "aliases expand to more than 100,000 values" in result.output
        assert str(path) in result.output
    assert time.perf_counter() - start < 10
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_rss
    assert grown_kib < 200 * 1024  # the bomb expands to 387 million values: gigabytes
    assert not (root / "out").exists()


def test_a_duplicate_key_names_both_lines(
    world: tuple[Path, Path, Path], tiny_encoder: Path
) -> None:
    root, _, train = world
    path = root / "twice.yaml"
    path.write_text(config_text(root, train, tiny_encoder) + "name: other\n")
    for command in (["config", "check"], ["compare"]):
        result = runner.invoke(app, [*command, str(path)])
        assert result.exit_code != 0
        assert f"{path}:6: key 'name' is given twice" in result.output
        assert "(first on line 1" in result.output
    assert not (root / "out").exists()
