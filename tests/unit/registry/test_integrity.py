"""Integrity and safety: every stored byte re-checked (verify, and every read through
open_version), names and references validated, stored paths confined to the store and to the
folder a version is written into."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from tests.unit.registry.conftest import flip_byte, promote
from tests.unit.registry.test_registry import RUN_FILES

from adaptlab.registry import IntegrityError, Reference, Registry, RegistryError, parse_reference


@pytest.mark.parametrize("damaged", RUN_FILES)
def test_verify_names_the_version_and_file_of_a_flipped_byte(
    registry: Registry, run_dir: Path, damaged: str
) -> None:
    version = promote(registry, run_dir).version
    assert registry.verify().problems == ()
    stored = next(f for f in version.files if f.path == damaged)
    flip_byte(registry.store.path_of(stored.sha256))
    result = registry.verify()
    assert [(p.name, p.version, p.path) for p in result.problems] == [("intent", 1, damaged)]
    assert result.problems[0].message.startswith(f"intent:1 file {damaged}: its stored bytes")


def test_verify_names_every_version_sharing_a_damaged_object_and_a_missing_one(
    registry: Registry, run_dir: Path
) -> None:
    first = promote(registry, run_dir).version
    promote(registry, run_dir)
    by_path = {f.path: f for f in first.files}
    flip_byte(registry.store.path_of(by_path["eval.json"].sha256))
    registry.store.path_of(by_path["cost.json"].sha256).unlink()
    problems = {
        (p.version, p.path, p.message.split(": ", 1)[1]) for p in registry.verify().problems
    }
    assert {(v, p) for v, p, _ in problems} == {
        (v, p) for v in (1, 2) for p in ("eval.json", "cost.json")
    }
    assert any("missing" in why for _, p, why in problems if p == "cost.json")


def test_open_version_writes_the_promoted_bytes(
    registry: Registry, run_dir: Path, tmp_path: Path
) -> None:
    promote(registry, run_dir, alias="champion")
    folder = registry.open_version("intent@champion", tmp_path / "opened")
    assert sorted(p.name for p in folder.iterdir()) == sorted(RUN_FILES)
    for name in RUN_FILES:
        assert (folder / name).read_bytes() == (run_dir / name).read_bytes()


@pytest.mark.parametrize("damaged", ["eval.json", "predictions.safetensors"])
def test_open_version_refuses_a_flipped_byte_naming_the_file(
    registry: Registry, run_dir: Path, tmp_path: Path, damaged: str
) -> None:
    version = promote(registry, run_dir).version
    stored = next(f for f in version.files if f.path == damaged)
    flip_byte(registry.store.path_of(stored.sha256))
    with pytest.raises(IntegrityError, match=f"intent:1 file {damaged}: refused"):
        registry.open_version("intent:1", tmp_path / "opened")
    assert not (tmp_path / "opened").exists()  # nothing half-written


def test_open_version_needs_a_new_or_empty_folder(
    registry: Registry, run_dir: Path, tmp_path: Path
) -> None:
    promote(registry, run_dir)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(RegistryError, match="not an empty folder"):
        registry.open_version("intent", tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"


def tamper(registry: Registry, manifest: dict[str, object]) -> None:
    """Rewrite version 1's file list as only someone editing the database could."""
    connection = sqlite3.connect(registry.database)
    try:
        connection.execute("DROP TRIGGER versions_no_update")
        connection.execute("UPDATE versions SET manifest = ?", (json.dumps(manifest),))
        connection.commit()
    finally:
        connection.close()


@pytest.mark.parametrize("path", ["../escaped.json", "/tmp/escaped.json", "a/../../escaped.json"])
def test_a_stored_path_cannot_leave_the_folder_written_to(
    registry: Registry, run_dir: Path, tmp_path: Path, path: str
) -> None:
    stored = promote(registry, run_dir).version.files[0]
    tamper(registry, {path: stored.to_dict()})
    with pytest.raises(IntegrityError, match="refused, not a relative path inside"):
        registry.open_version("intent", tmp_path / "out" / "opened")
    assert list((tmp_path / "out").iterdir()) == []  # no escaped file, no half-written version


@pytest.mark.parametrize("sha256", ["../../../../etc/passwd", "A" * 64, "ab" * 31 + "/x"])
def test_an_object_name_cannot_leave_the_store(
    registry: Registry, run_dir: Path, tmp_path: Path, sha256: str
) -> None:
    promote(registry, run_dir)
    tamper(registry, {"eval.json": {"sha256": sha256, "size": 10}})
    with pytest.raises(IntegrityError, match="is not a sha256"):
        registry.open_version("intent", tmp_path / "opened")
    [problem] = registry.verify().problems
    assert problem.path == "eval.json" and "is not a sha256" in problem.message


BAD_NAMES = [
    "",
    "..",
    "../intent",
    "a/b",
    "a\\b",
    "/abs",
    "nul\x00byte",
    "line\nbreak",
    "tab\there",
    "bell\x07",
    ".hidden",
    "a..b",
    "with space",
    "ümlaut",
    "x" * 65,
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_model_names_and_aliases_are_refused(
    registry: Registry, run_dir: Path, name: str
) -> None:
    with pytest.raises(RegistryError, match="model name .* refused"):
        promote(registry, run_dir, name=name)
    with pytest.raises(RegistryError, match="alias .* refused"):
        promote(registry, run_dir, alias=name)
    assert registry.models() == []


def test_the_longest_name_is_accepted(registry: Registry, run_dir: Path) -> None:
    name = "m" * 64
    assert promote(registry, run_dir, name=name, alias="a.b-c_1").version.name == name


@pytest.mark.parametrize(
    ("text", "reference"),
    [
        ("intent", Reference("intent")),
        ("intent@champion", Reference("intent", alias="champion")),
        ("intent:12", Reference("intent", version=12)),
    ],
)
def test_references(text: str, reference: Reference) -> None:
    assert parse_reference(text) == reference
    assert str(reference) == text


@pytest.mark.parametrize(
    "text", ["intent@", "intent:", "intent:0", "intent:-1", "intent:x", "intent:1@a", "@a", "a@b@c"]
)
def test_bad_references_are_refused(text: str) -> None:
    with pytest.raises(RegistryError):
        parse_reference(text)


@pytest.mark.parametrize(
    ("approver", "reason", "match"),
    [
        ("", "fine", "approver is empty"),
        ("ana", "   ", "reason is empty"),
        ("ana\x00", "fine", "approver .* control character"),
        ("ana", "fine\x1b[31m", "reason .* control character"),
        ("a" * 129, "fine", "approver is 129 characters"),
    ],
)
def test_who_and_why_are_required_and_plain(
    registry: Registry, run_dir: Path, approver: str, reason: str, match: str
) -> None:
    with pytest.raises(RegistryError, match=match):
        registry.promote(run_dir, "intent", approver=approver, reason=reason)


def test_a_reason_may_span_lines(registry: Registry, run_dir: Path) -> None:
    why = "Best on accuracy.\n\tApproved in the model risk meeting."
    registry.promote(run_dir, "intent", approver="ana", reason=why)
    assert registry.history("intent")[0].why == why
