"""Promotion, versions, aliases and the event log: what a promotion records, that the run
folder is only read, that unsafe or unfinished runs are refused with nothing registered, and
that the history is append-only."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from tests.unit.registry.conftest import promote, snapshot

from adaptlab.registry import ENVIRONMENT, Registry, RegistryError, registry_root
from adaptlab.registry.database import DATABASE
from adaptlab.runs import RunError
from adaptlab.safeload import UnsafeArtifactError

RUN_FILES = ("config.yaml", "cost.json", "eval.json", "manifest.json", "predictions.safetensors")


def test_promote_then_list_and_show(registry: Registry, run_dir: Path) -> None:
    promotion = promote(registry, run_dir, alias="champion")
    version = promotion.version
    assert (version.name, version.version, version.run, version.strategy) == (
        "intent",
        1,
        "full",
        "full",
    )
    assert version.who == "ana@bank" and version.aliases == ("champion",)
    assert tuple(f.path for f in version.files) == RUN_FILES
    for stored in version.files:
        assert stored.size == (run_dir / stored.path).stat().st_size
        assert (
            registry.store.path_of(stored.sha256).read_bytes()
            == (run_dir / stored.path).read_bytes()
        )
    [model] = registry.models()
    assert (model.name, model.latest, model.aliases) == ("intent", 1, {"champion": 1})
    assert registry.version("intent@champion") == registry.version("intent:1") == version
    assert [(e.kind, e.alias, e.from_version, e.to_version) for e in promotion.events] == [
        ("promote", None, None, 1),
        ("alias", "champion", None, 1),
    ]
    assert all(e.why == "best on the locked eval set" for e in promotion.events)


def test_a_second_promotion_is_version_2_sharing_unchanged_objects(
    registry: Registry, run_dir: Path, experiment: Path
) -> None:
    first = promote(registry, run_dir).version
    second = promote(registry, experiment / "runs" / "knn").version
    assert (second.version, second.run) == (2, "knn")
    assert registry.version("intent") == second  # a bare name is the latest version
    again = promote(registry, run_dir).version
    assert again.version == 3 and again.files == first.files  # same bytes, same objects
    assert registry.verify().objects == 10


def test_alias_and_rollback_walk_back_through_the_history(
    registry: Registry, run_dir: Path, experiment: Path
) -> None:
    promote(registry, run_dir, alias="champion")
    promote(registry, experiment / "runs" / "knn", alias="champion")
    assert registry.version("intent@champion").version == 2
    rolled = registry.rollback("intent", "champion", approver="bo", reason="knn regressed")
    assert (rolled.kind, rolled.from_version, rolled.to_version) == ("rollback", 2, 1)
    assert registry.version("intent@champion").version == 1
    history = [(e.kind, e.alias, e.from_version, e.to_version) for e in registry.history("intent")]
    assert history == [
        ("promote", None, None, 1),
        ("alias", "champion", None, 1),
        ("promote", None, 1, 2),
        ("alias", "champion", 1, 2),
        ("rollback", "champion", 2, 1),
    ]
    with pytest.raises(RegistryError, match="no earlier version to roll back to"):
        registry.rollback("intent", "champion", approver="bo", reason="again")


def test_rollback_undoes_alias_moves_in_order_never_ping_pong(
    registry: Registry, run_dir: Path
) -> None:
    for _ in range(3):
        promote(registry, run_dir)
    for version in (1, 2, 3):
        registry.set_alias("intent", "champion", version, approver="ana", reason="move")
    assert registry.set_alias("intent", "champion", 3, approver="ana", reason="same") is None
    targets = [
        registry.rollback("intent", "champion", approver="bo", reason="back").to_version
        for _ in range(2)
    ]
    assert targets == [2, 1]
    with pytest.raises(RegistryError, match="no earlier version"):
        registry.rollback("intent", "champion", approver="bo", reason="back")


def test_aliases_and_references_to_what_does_not_exist_are_errors(
    registry: Registry, run_dir: Path
) -> None:
    promote(registry, run_dir)
    with pytest.raises(RegistryError, match="no such version"):
        registry.set_alias("intent", "champion", 2, approver="ana", reason="typo")
    with pytest.raises(RegistryError, match="no such alias"):
        registry.rollback("intent", "champion", approver="ana", reason="nothing set")
    with pytest.raises(RegistryError, match="no model named 'other'"):
        registry.version("other")
    with pytest.raises(RegistryError, match="intent:7: no such version"):
        registry.version("intent:7")


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET who = 'mallory'",
        "DELETE FROM events",
        "UPDATE versions SET run = 'other'",
        "DELETE FROM versions",
        "DELETE FROM models",
    ],
)
def test_the_history_cannot_be_updated_or_deleted(
    registry: Registry, run_dir: Path, statement: str
) -> None:
    promote(registry, run_dir, alias="champion")
    connection = sqlite3.connect(registry.database)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            connection.execute(statement)
    finally:
        connection.close()
    assert len(registry.history("intent")) == 2
    assert registry.version("intent:1").run == "full"


def test_the_database_is_wal_with_foreign_keys(registry: Registry, run_dir: Path) -> None:
    promote(registry, run_dir)
    connection = sqlite3.connect(registry.database)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        connection.execute("PRAGMA foreign_keys = ON")
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            connection.execute("INSERT INTO aliases VALUES ('intent', 'champion', 9)")
    finally:
        connection.close()


def test_the_run_folder_is_byte_identical_after_promotion(
    registry: Registry, run_dir: Path, experiment: Path
) -> None:
    before = snapshot(experiment)
    promote(registry, run_dir, alias="champion")
    assert snapshot(experiment) == before
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(RUN_FILES)


def test_an_unfinished_run_is_refused(registry: Registry, run_dir: Path) -> None:
    (run_dir / "manifest.json").unlink()
    with pytest.raises(RunError, match="no manifest.json"):
        promote(registry, run_dir)
    assert registry.models() == []


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("extra.pkl", b"\x80\x04K\x01.", "extra.pkl: refused, '.pkl' files are pickle-based"),
        ("model/pytorch_model.bin", b"\x80\x04K\x01.", "pytorch_model.bin: refused"),
        ("head.safetensors", b"\x80\x04K\x01." * 4, "head.safetensors: refused, not a safetensors"),
        ("model/weights.npy", b"\x93NUMPY", "weights.npy: refused, the registry stores only"),
        (
            "model/config.json",
            b'{"auto_map": {"x": "y"}}',
            "config.json: refused, field 'auto_map'",
        ),
    ],
)
def test_a_file_that_could_run_code_or_is_unknown_is_refused_by_name(
    registry: Registry, run_dir: Path, name: str, content: bytes, match: str
) -> None:
    (run_dir / name).parent.mkdir(exist_ok=True)
    (run_dir / name).write_bytes(content)
    with pytest.raises(UnsafeArtifactError, match=match):
        promote(registry, run_dir)
    assert registry.models() == []
    assert not (registry.root / "objects").exists()  # refused before anything was stored


def test_a_symbolic_link_is_refused(registry: Registry, run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "outside.json").write_text("{}")
    (run_dir / "linked.json").symlink_to(tmp_path / "outside.json")
    with pytest.raises(UnsafeArtifactError, match="linked.json: refused, a symbolic link"):
        promote(registry, run_dir)


def test_temporary_files_are_left_out_and_weights_in_folders_kept(
    registry: Registry, run_dir: Path
) -> None:
    (run_dir / ".eval.json.x1y2.tmp").write_text("half")
    (run_dir / "adapter").mkdir()
    (run_dir / "adapter" / "adapter_config.json").write_text('{"r": 8}')
    (run_dir / "adapter" / "vocab.txt").write_text("[PAD]\n")
    promotion = promote(registry, run_dir)
    assert promotion.left_out == (".eval.json.x1y2.tmp",)
    paths = [f.path for f in promotion.version.files]
    assert "adapter/adapter_config.json" in paths and "adapter/vocab.txt" in paths


def test_where_the_registry_is(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(ENVIRONMENT, raising=False)
    assert registry_root() == tmp_path / "cache" / "registry"
    monkeypatch.setenv(ENVIRONMENT, str(tmp_path / "env"))
    assert registry_root() == tmp_path / "env"
    assert registry_root(tmp_path / "given") == tmp_path / "given"
    with pytest.raises(RegistryError, match="no registry here yet"):
        Registry(tmp_path / "env")
    assert not (tmp_path / "env").exists()  # reading never creates one


def test_a_registry_from_a_newer_adaptlab_is_refused(registry: Registry, run_dir: Path) -> None:
    promote(registry, run_dir)
    connection = sqlite3.connect(registry.root / DATABASE)
    connection.execute("PRAGMA user_version = 99")
    connection.close()
    with pytest.raises(RegistryError, match="registry schema 99.*upgrade adaptlab"):
        registry.models()


def test_a_file_that_is_not_a_database_is_named(tmp_path: Path) -> None:
    (tmp_path / DATABASE).write_bytes(os.urandom(4096))
    with pytest.raises(RegistryError, match=f"{DATABASE}: not a registry database"):
        Registry(tmp_path).models()
