"""The registry: promote a finished run to a numbered version, move aliases, read versions back.

A registry is a folder (``--registry``, else ``$ADAPTLAB_REGISTRY``, else ``registry/`` in
adaptlab's cache) holding ``registry.sqlite`` (:mod:`adaptlab.registry.database`) and the
artefact store ``objects/`` (:mod:`adaptlab.registry.store`). Promoting copies every file of
the run folder into the store (the run folder is only read) and records the version, its
files' sha256 and its lineage; every change (a promotion, an alias set, a rollback) is also
one event: who, when, why, from which version to which.

An alias's history is its events: each ``alias`` event pushes a version, each ``rollback``
pops one, so a rollback returns the alias to the version it pointed at before the last move,
and successive rollbacks walk further back (never ping-pong between two versions).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from adaptlab.paths import cache_dir, inside, writable_folder, write_folder
from adaptlab.registry.artifacts import run_files
from adaptlab.registry.database import DATABASE, connect, explain, transaction
from adaptlab.registry.errors import IntegrityError, RegistryError
from adaptlab.registry.lineage import run_lineage
from adaptlab.registry.names import (
    Reference,
    check_alias,
    check_approver,
    check_model_name,
    check_reason,
    parse_reference,
)
from adaptlab.registry.store import ObjectStore, StoredFile
from adaptlab.runs import RunRecord, read_run

ENVIRONMENT = "ADAPTLAB_REGISTRY"
EventKind = Literal["promote", "alias", "rollback"]


def registry_root(given: Path | None = None) -> Path:
    """The registry folder: ``given``, else ``$ADAPTLAB_REGISTRY``, else the cache's."""
    if given is not None:
        return given.expanduser()
    from_environment = os.environ.get(ENVIRONMENT)
    if from_environment:
        return Path(from_environment).expanduser()
    return cache_dir() / "registry"


@dataclass(frozen=True)
class Event:
    """One change, as the append-only ``events`` table keeps it."""

    id: int
    at: str
    who: str
    why: str
    kind: EventKind
    name: str
    alias: str | None
    from_version: int | None
    to_version: int


@dataclass(frozen=True)
class Version:
    """One registered version of a model."""

    name: str
    version: int
    run: str
    strategy: str
    created_at: str
    who: str
    files: tuple[StoredFile, ...]
    lineage: dict[str, Any]
    aliases: tuple[str, ...]
    """The aliases pointing at this version now."""

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class ModelSummary:
    name: str
    latest: int
    aliases: dict[str, int]
    changed_at: str
    """When its last event happened."""


@dataclass(frozen=True)
class Promotion:
    version: Version
    events: tuple[Event, ...]
    left_out: tuple[str, ...]
    """Temporary files of the run folder that were not stored."""


@dataclass(frozen=True)
class Problem:
    """A stored file whose bytes are not those promoted."""

    name: str
    version: int
    path: str
    message: str


@dataclass(frozen=True)
class Verification:
    versions: int
    files: int
    objects: int
    problems: tuple[Problem, ...]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Registry:
    """The registry in folder ``root``; ``create`` makes it if need be (a promotion does),
    otherwise a folder without a registry is an error naming it."""

    def __init__(self, root: Path, *, create: bool = False) -> None:
        self.root = root
        self.database = root / DATABASE
        self.store = ObjectStore(root)
        if create:
            writable_folder(root)
        elif not self.database.is_file():
            raise RegistryError(
                f"{root}: no registry here yet; 'adaptlab promote' creates it (pass --registry "
                f"or set {ENVIRONMENT} to use another)"
            )

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        connection = connect(self.database)
        try:
            yield connection
        except sqlite3.DatabaseError as exc:
            raise RegistryError(explain(self.database, exc)) from None
        finally:
            connection.close()

    # -- changes -------------------------------------------------------------------------

    def promote(
        self,
        run_folder: Path,
        name: str,
        *,
        approver: str,
        reason: str,
        alias: str | None = None,
    ) -> Promotion:
        """Register the finished run in ``run_folder`` as the next version of ``name`` (and
        point ``alias`` at it): its files are copied into the store, the run folder is only
        read. Refused, with nothing registered, for an unfinished run or a file the registry
        does not store."""
        name, alias = check_model_name(name), None if alias is None else check_alias(alias)
        who, why = check_approver(approver), check_reason(reason)
        record = read_run(run_folder)
        found = run_files(run_folder)
        files = tuple(StoredFile(path, *self.store.put(run_folder / path)) for path in found.files)
        lineage = run_lineage(record)
        with self._connection() as connection, transaction(connection):
            number = _insert_version(connection, name, record, files, lineage, who)
            latest = None if number == 1 else number - 1
            change = Event(0, _now(), who, why, "promote", name, None, latest, number)
            events = [_append(connection, change)]
            moved = None if alias is None else _point(connection, change, alias, number)
        events += [] if moved is None else [moved]
        version = self.version(Reference(name, version=number))
        return Promotion(version, tuple(events), found.left_out)

    def set_alias(
        self, name: str, alias: str, version: int, *, approver: str, reason: str
    ) -> Event | None:
        """Point ``name@alias`` at ``version``; ``None`` (and no event) when it already does."""
        name, alias = check_model_name(name), check_alias(alias)
        who, why = check_approver(approver), check_reason(reason)
        change = Event(0, _now(), who, why, "alias", name, alias, None, version)
        with self._connection() as connection, transaction(connection):
            _version_row(connection, Reference(name, version=version))
            return _point(connection, change, alias, version)

    def rollback(self, name: str, alias: str, *, approver: str, reason: str) -> Event:
        """Move ``name@alias`` back to the version it pointed at before its last move."""
        name, alias = check_model_name(name), check_alias(alias)
        who, why = check_approver(approver), check_reason(reason)
        with self._connection() as connection, transaction(connection):
            current = _alias_target(connection, Reference(name, alias=alias))
            pointed = _alias_history(connection, name, alias)
            if not pointed or pointed[-1] != current:
                raise RegistryError(f"{name}@{alias}: its events do not end at version {current}")
            if len(pointed) < 2:
                raise RegistryError(
                    f"{name}@{alias} has no earlier version to roll back to: it has pointed "
                    f"only at version {current}"
                )
            previous = pointed[-2]
            _set_alias(connection, name, alias, previous)
            change = Event(0, _now(), who, why, "rollback", name, alias, current, previous)
            return _append(connection, change)

    # -- reading -------------------------------------------------------------------------

    def models(self) -> list[ModelSummary]:
        """Every model, by name: its latest version, aliases and last change."""
        with self._connection() as connection:
            rows = connection.execute(
                "SELECT name, MAX(version), (SELECT MAX(at) FROM events WHERE events.name = "
                "versions.name) FROM versions GROUP BY name ORDER BY name"
            ).fetchall()
            return [
                ModelSummary(name, int(latest), _aliases(connection, name), changed_at)
                for name, latest, changed_at in rows
            ]

    def version(self, reference: Reference | str) -> Version:
        """The version ``reference`` (``NAME``: the latest, ``NAME@ALIAS``, ``NAME:N``)."""
        wanted = parse_reference(reference) if isinstance(reference, str) else reference
        with self._connection() as connection:
            row = _version_row(connection, wanted)
            return _version(connection, row)

    def history(self, name: str) -> list[Event]:
        """Every event of model ``name``, oldest first."""
        name = check_model_name(name)
        with self._connection() as connection:
            _require_model(connection, name)
            rows = connection.execute(
                "SELECT * FROM events WHERE name = ? ORDER BY id", (name,)
            ).fetchall()
            return [Event(**dict(row)) for row in rows]

    def versions(self) -> list[Version]:
        with self._connection() as connection:
            rows = connection.execute("SELECT * FROM versions ORDER BY name, version").fetchall()
            return [_version(connection, row) for row in rows]

    def verify(self) -> Verification:
        """Re-hash every stored object; a problem for each version's file whose bytes are not
        those promoted (each object is hashed once, however many versions share it)."""
        versions = self.versions()
        found: dict[str, str | None] = {}
        problems = []
        for version in versions:
            for stored in version.files:
                if stored.sha256 not in found:
                    found[stored.sha256] = self._problem(stored)
                why = found[stored.sha256]
                if why is not None:
                    message = f"{version} file {stored.path}: {why}"
                    problems.append(Problem(version.name, version.version, stored.path, message))
        files = sum(len(v.files) for v in versions)
        return Verification(len(versions), files, len(found), tuple(problems))

    def _problem(self, stored: StoredFile) -> str | None:
        try:
            return self.store.problem(stored)
        except IntegrityError as exc:  # a name that is no sha256: the database was edited
            return str(exc)

    def open_version(self, reference: Reference | str, destination: Path) -> Path:
        """Write the files of version ``reference`` into ``destination`` (a new or empty
        folder), each checked against its sha256 as it is copied; :class:`IntegrityError`
        naming the file at the first mismatch, and then ``destination`` is not created."""
        version = self.version(reference)
        if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
            raise RegistryError(f"{destination}: not an empty folder; {version} is not written")

        def write(folder: Path) -> None:
            for stored in version.files:
                label = f"{version} file {stored.path}"
                target = _confined(folder, stored.path, label)
                target.parent.mkdir(parents=True, exist_ok=True)
                self.store.copy_out(stored, target, label)

        write_folder(destination, write)
        return destination


def _confined(folder: Path, relative: str, label: str) -> Path:
    """``folder / relative``, refused unless it is a plain relative path that stays inside."""
    parts = relative.split("/")
    if (
        relative.startswith("/")
        or any(part in ("", ".", "..") for part in parts)
        or "\\" in relative
    ):
        raise IntegrityError(f"{label}: refused, not a relative path inside the version")
    try:
        return inside(folder, relative)
    except ValueError as exc:
        raise IntegrityError(f"{label}: refused: {exc}") from None


# -- queries, inside a connection --------------------------------------------------------------


def _insert_version(
    connection: sqlite3.Connection,
    name: str,
    record: RunRecord,
    files: tuple[StoredFile, ...],
    lineage: dict[str, Any],
    who: str,
) -> int:
    """Insert the next version of ``name`` (the model too, on its first); its number."""
    at = _now()
    connection.execute("INSERT OR IGNORE INTO models VALUES (?, ?)", (name, at))
    number = (_latest(connection, name) or 0) + 1
    manifest = json.dumps({f.path: f.to_dict() for f in files}, sort_keys=True)
    facts = (name, number, record.name, record.strategy, at, who, manifest, json.dumps(lineage))
    connection.execute("INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?)", facts)
    return number


def _append(connection: sqlite3.Connection, event: Event) -> Event:
    cursor = connection.execute(
        "INSERT INTO events (at, who, why, kind, name, alias, from_version, to_version) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            event.at,
            event.who,
            event.why,
            event.kind,
            event.name,
            event.alias,
            event.from_version,
            event.to_version,
        ),
    )
    return replace(event, id=int(cursor.lastrowid or 0))


def _point(connection: sqlite3.Connection, change: Event, alias: str, version: int) -> Event | None:
    """Point ``alias`` of ``change.name`` at ``version`` and record it; ``None`` when it
    already pointed there."""
    current = _aliases(connection, change.name).get(alias)
    if current == version:
        return None
    _set_alias(connection, change.name, alias, version)
    moved = replace(change, kind="alias", alias=alias, from_version=current, to_version=version)
    return _append(connection, moved)


def _set_alias(connection: sqlite3.Connection, name: str, alias: str, version: int) -> None:
    connection.execute(
        "INSERT INTO aliases VALUES (?, ?, ?) "
        "ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version",
        (name, alias, version),
    )


def _alias_history(connection: sqlite3.Connection, name: str, alias: str) -> list[int]:
    """The versions ``name@alias`` has pointed at, as a stack: the last is the current one."""
    pointed: list[int] = []
    rows = connection.execute(
        "SELECT kind, to_version FROM events WHERE name = ? AND alias = ? ORDER BY id",
        (name, alias),
    )
    for kind, to_version in rows:
        if kind == "alias":
            pointed.append(to_version)
        elif kind == "rollback" and pointed:
            pointed.pop()
    return pointed


def _latest(connection: sqlite3.Connection, name: str) -> int | None:
    value = connection.execute("SELECT MAX(version) FROM versions WHERE name = ?", (name,))
    latest = value.fetchone()[0]
    return None if latest is None else int(latest)


def _aliases(connection: sqlite3.Connection, name: str) -> dict[str, int]:
    rows = connection.execute(
        "SELECT alias, version FROM aliases WHERE name = ? ORDER BY alias", (name,)
    )
    return {alias: int(version) for alias, version in rows}


def _require_model(connection: sqlite3.Connection, name: str) -> None:
    if connection.execute("SELECT 1 FROM models WHERE name = ?", (name,)).fetchone() is None:
        known = [row[0] for row in connection.execute("SELECT name FROM models ORDER BY name")]
        listed = ", ".join(known[:20]) or "none yet"
        raise RegistryError(f"no model named '{name}' in the registry (models: {listed})")


def _alias_target(connection: sqlite3.Connection, reference: Reference) -> int:
    _require_model(connection, reference.name)
    aliases = _aliases(connection, reference.name)
    if reference.alias not in aliases:
        listed = ", ".join(f"@{alias}" for alias in aliases) or "none"
        raise RegistryError(f"{reference}: no such alias (aliases of {reference.name}: {listed})")
    return aliases[reference.alias]


def _version_row(connection: sqlite3.Connection, reference: Reference) -> sqlite3.Row:
    _require_model(connection, reference.name)
    if reference.alias is not None:
        number = _alias_target(connection, reference)
    else:
        number = reference.version or _latest(connection, reference.name) or 0
    row: sqlite3.Row | None = connection.execute(
        "SELECT * FROM versions WHERE name = ? AND version = ?", (reference.name, number)
    ).fetchone()
    if row is None:
        latest = _latest(connection, reference.name)
        raise RegistryError(f"{reference}: no such version ({reference.name} has 1 to {latest})")
    return row


def _version(connection: sqlite3.Connection, row: sqlite3.Row) -> Version:
    aliases = _aliases(connection, row["name"])
    manifest = json.loads(row["manifest"])
    return Version(
        name=row["name"],
        version=row["version"],
        run=row["run"],
        strategy=row["strategy"],
        created_at=row["created_at"],
        who=row["who"],
        files=tuple(StoredFile(path, f["sha256"], f["size"]) for path, f in manifest.items()),
        lineage=json.loads(row["lineage"]),
        aliases=tuple(alias for alias, number in aliases.items() if number == row["version"]),
    )
