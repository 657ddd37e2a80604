"""The registry's SQLite database: models, their versions, aliases and the event log.

One file, ``<registry>/registry.sqlite``, in WAL mode (readers never wait for a writer) with
foreign keys on. Every change runs in a ``BEGIN IMMEDIATE`` transaction: the write lock is
taken before the next version number is read, so two processes promoting the same model at
once are serialised and both get their own number. ``events`` is append-only, and so are
``models`` and ``versions``: triggers refuse any UPDATE or DELETE of them, so a mistake in
code (or a hand-typed query) cannot rewrite the audit trail. They do not stop someone who
edits the file itself; ``adaptlab registry verify`` re-checks the artefacts, not the history.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from adaptlab.registry.errors import RegistryError

DATABASE = "registry.sqlite"
SCHEMA_VERSION = 1
"""``PRAGMA user_version`` of the layout below; a database from a newer adaptlab is refused."""
BUSY_TIMEOUT_S = 60.0
"""How long a writer waits for another's transaction (each holds it for milliseconds)."""
CREATE_RETRY_S = 0.02
"""The pause between tries to create a database another process is creating."""

_APPEND_ONLY = ("models", "versions", "events")
_TABLES = (
    """CREATE TABLE models (
        name TEXT PRIMARY KEY,
        created_at TEXT NOT NULL
    )""",
    """CREATE TABLE versions (
        name TEXT NOT NULL REFERENCES models (name),
        version INTEGER NOT NULL CHECK (version >= 1),
        run TEXT NOT NULL,
        strategy TEXT NOT NULL,
        created_at TEXT NOT NULL,
        who TEXT NOT NULL,
        manifest TEXT NOT NULL,
        lineage TEXT NOT NULL,
        PRIMARY KEY (name, version)
    )""",
    """CREATE TABLE aliases (
        name TEXT NOT NULL,
        alias TEXT NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (name, alias),
        FOREIGN KEY (name, version) REFERENCES versions (name, version)
    )""",
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        who TEXT NOT NULL,
        why TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('promote', 'alias', 'rollback')),
        name TEXT NOT NULL REFERENCES models (name),
        alias TEXT,
        from_version INTEGER,
        to_version INTEGER NOT NULL
    )""",
)


def _triggers() -> Iterator[str]:
    for table in _APPEND_ONLY:
        for action in ("UPDATE", "DELETE"):
            yield (
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} are append-only: no {action}'); END"
            )


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the database at ``path``, created with its tables when new; refused
    (:class:`RegistryError` naming the file) when it is not a registry this adaptlab reads."""
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA foreign_keys = ON")
        _prepare(connection, path)
    except sqlite3.OperationalError as exc:
        connection.close()
        raise RegistryError(explain(path, exc)) from None
    except sqlite3.DatabaseError as exc:
        connection.close()
        raise RegistryError(
            f"{path}: not a registry database this adaptlab can read: {exc}"
        ) from None
    except BaseException:
        connection.close()
        raise
    return connection


def explain(path: Path, exc: sqlite3.DatabaseError) -> str:
    """A message for a database error: a lock held too long says so."""
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return (
            f"{path}: busy: another process held it for over {BUSY_TIMEOUT_S:.0f} s; try again "
            "when it has finished"
        )
    return f"{path}: {exc}"


def _user_version(connection: sqlite3.Connection) -> int:
    return int(connection.execute("PRAGMA user_version").fetchone()[0])


def _prepare(connection: sqlite3.Connection, path: Path) -> None:
    version = _user_version(connection)
    if version > SCHEMA_VERSION:
        raise RegistryError(
            f"{path}: written with registry schema {version}; this adaptlab reads up to "
            f"{SCHEMA_VERSION}: upgrade adaptlab to use it"
        )
    if version == SCHEMA_VERSION:
        return
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            _create(connection)
            return
        except sqlite3.OperationalError as exc:
            # Switching to WAL needs the file to itself, and SQLite answers "locked" at once,
            # without its busy wait, while another process is creating the tables: wait here.
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(CREATE_RETRY_S)


def _create(connection: sqlite3.Connection) -> None:
    """WAL mode, then the tables and triggers, unless another process made them meanwhile."""
    connection.execute("PRAGMA journal_mode = WAL")
    with transaction(connection):
        if _user_version(connection) == 0:
            for statement in (*_TABLES, *_triggers()):
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
