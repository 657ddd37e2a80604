"""Where adaptlab keeps what it writes outside a run directory, and how it writes files."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import filelock


def inside(root: Path, name: str) -> Path:
    """``root / name``, refused unless it resolves to a folder strictly inside ``root``: a name
    is data, never a path (config validation refuses such names first; this holds even where
    a name did not come through it)."""
    path = root / name
    base = root.resolve()
    resolved = path.resolve()
    if resolved == base or not resolved.is_relative_to(base):
        raise ValueError(f"{name!r} is not a name: {path} would be outside {root}")
    return path


class OutputError(ValueError):
    """A folder adaptlab was told to write into cannot be written; the message says why."""


def writable_folder(folder: Path) -> Path:
    """``folder``, created if need be, once a file could be made in it; otherwise
    :class:`OutputError` naming it and the reason (a file in the way, no permission, a
    read-only or virtual file system such as ``/proc``)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".adaptlab.probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        raise OutputError(
            f"{folder}: cannot write here: a file of that name is in the way"
        ) from None
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise OutputError(f"{folder}: cannot write here: {reason}") from None
    return folder


def cache_dir() -> Path:
    """The cache for derived artefacts (demo data, converted models, embeddings).

    ``ADAPTLAB_CACHE`` overrides the default ``~/.cache/adaptlab`` so CI and tests can point it
    at a temporary folder.
    """
    root = os.environ.get("ADAPTLAB_CACHE") or Path.home() / ".cache" / "adaptlab"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def atomic_write(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` and rename it into place only on success.

    A crash or an exception half-way leaves the previous file (or no file), never a truncated one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        # mkstemp makes the file private (0600); the result should have the permissions any
        # other file written here gets (0644 under the usual umask), or colleagues cannot read
        # a shared run folder.
        os.fchmod(fd, 0o666 & ~_umask())
        encoding = None if "b" in mode else "utf-8"
        newline = None if "b" in mode else "\n"
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary file name beside ``path`` for writers that take a name, not a handle
    (safetensors' ``save_file``); renamed into place when the block ends without an exception.

    Like :func:`atomic_write`, a crash half-way leaves the previous file or none.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's entries to disk (a rename is durable only after this)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through :func:`atomic_write`."""
    with atomic_write(path) as handle:
        handle.write(text)


def write_folder(folder: Path, write: Callable[[Path], Any]) -> None:
    """Run ``write`` into a new temporary folder beside ``folder``, then rename it into place:
    a crash leaves the previous folder or none, never a half-written one."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        write(staging)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


WRITER_LOCK = ".adaptlab.lock"
"""The advisory lock of a folder with one writer at a time (an experiment folder); beside it,
``.adaptlab.lock.json`` says who holds it."""


class FolderBusyError(RuntimeError):
    """Another process holds the folder's writer lock; the message names it."""


@contextmanager
def one_writer(folder: Path, what: str, *, wait: bool = False) -> Iterator[None]:
    """Hold ``folder``'s writer lock while the block runs (``what`` says what holds it).

    The lock is the operating system's (``flock``, through ``filelock``): it is released when
    the holder exits, killed included, so it is never left stale. A second writer fails at
    once with :class:`FolderBusyError` naming the holder's PID and start time, or with
    ``wait`` waits for it.
    """
    writable_folder(folder)
    holder = folder / f"{WRITER_LOCK}.json"
    lock = filelock.FileLock(folder / WRITER_LOCK, timeout=-1 if wait else 0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise FolderBusyError(
            f"{folder} is being written by {_holder(holder)}: wait for it to finish, or pass "
            "--wait to start when it has"
        ) from None
    try:
        started = datetime.now(UTC).isoformat(timespec="seconds")
        facts = {"pid": os.getpid(), "started_at": started, "what": what}
        write_text_atomic(holder, json.dumps(facts) + "\n")
        yield
    finally:
        holder.unlink(missing_ok=True)
        lock.release()


# The holder writes its facts just after it takes the lock; one refused in that instant (or
# while a holder killed with -9 left its facts behind) waits this long for the live ones.
HOLDER_SETTLE_S = 2.0


def _holder(path: Path) -> str:
    deadline = time.monotonic() + HOLDER_SETTLE_S
    facts = read_json_object(path) or {}
    while not _alive(facts.get("pid")) and time.monotonic() < deadline:
        time.sleep(0.02)
        facts = read_json_object(path) or {}
    if not facts:
        return "another process"
    what, pid, started = facts.get("what", "a process"), facts.get("pid"), facts.get("started_at")
    return f"{what} (PID {pid}, started {started})"


def _alive(pid: object) -> bool:
    """Whether ``pid`` names a running process (one that may be another user's counts)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _umask() -> int:
    """The process's umask (reading it means setting it; set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; ``None`` when it is missing, unreadable or not an object
    (for caches and optional inputs that are rebuilt or left out then)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None
