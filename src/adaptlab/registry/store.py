"""The content-addressed artefact store: every file kept once, under its sha256.

``<registry>/objects/ab/cdef...`` holds the bytes whose sha256 is ``abcdef...``. An object is
copied in under a temporary name and renamed into place (:func:`adaptlab.paths.atomic_path`),
so two processes storing the same bytes at once both leave one whole object; it is then made
read-only, since nothing ever edits it. Every read back re-hashes the bytes as they are copied
out, so a flipped byte is refused rather than served. Object names are built only from a
checked sha256 and resolved inside the store (:func:`adaptlab.paths.inside`): a tampered
database cannot point a read or a write outside it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptlab.data.lock import sha256_file
from adaptlab.paths import atomic_path, inside
from adaptlab.registry.errors import IntegrityError, RegistryError

OBJECTS = "objects"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20
_READ_ONLY = 0o444


@dataclass(frozen=True)
class StoredFile:
    """One file of a version: its path in the run folder, and the object holding its bytes."""

    path: str
    """Relative to the run folder, with ``/`` between parts."""
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size}


def copy_hashing(source: Path, target: Path) -> tuple[str, int]:
    """Copy ``source`` to ``target``; the sha256 and size of exactly the bytes copied."""
    digest, size = hashlib.sha256(), 0
    with source.open("rb") as reader, target.open("wb") as writer:
        while block := reader.read(_CHUNK):
            digest.update(block)
            writer.write(block)
            size += len(block)
    return digest.hexdigest(), size


class ObjectStore:
    """The ``objects/`` folder of a registry."""

    def __init__(self, registry_root: Path) -> None:
        self.root = registry_root / OBJECTS

    def path_of(self, sha256: str) -> Path:
        """Where the object ``sha256`` lives; :class:`IntegrityError` for anything that is not
        a sha256 or would resolve outside the store."""
        if not _SHA256.fullmatch(sha256):
            raise IntegrityError(f"{sha256[:80]!r} is not a sha256: refused as an object name")
        try:
            return inside(self.root, f"{sha256[:2]}/{sha256[2:]}")
        except ValueError as exc:
            raise IntegrityError(f"object {sha256}: {exc}") from None

    def put(self, source: Path) -> tuple[str, int]:
        """Store the bytes of ``source`` (read, never changed); their sha256 and size."""
        digest = sha256_file(source)
        target = self.path_of(digest)
        if self._holds(target, digest):
            return digest, target.stat().st_size
        with atomic_path(target) as staging:
            copied, size = copy_hashing(source, staging)
            if copied != digest:
                raise RegistryError(
                    f"{source}: changed while it was copied into the registry; promote again "
                    "once nothing writes to the run folder"
                )
        target.chmod(_READ_ONLY)
        return digest, size

    def _holds(self, target: Path, digest: str) -> bool:
        # An object already there is kept only when its bytes are right: a damaged one is
        # replaced by the good copy at hand rather than referenced again.
        return _present(target) and sha256_file(target) == digest

    def copy_out(self, stored: StoredFile, target: Path, label: str) -> None:
        """Copy the object of ``stored`` to ``target`` and check the bytes copied against its
        sha256 and size; :class:`IntegrityError` naming ``label`` (the version's file) when
        they differ or the object is gone."""
        source = self.path_of(stored.sha256)
        if not _present(source):
            raise IntegrityError(f"{label}: refused, {_MISSING}")
        digest, size = copy_hashing(source, target)
        if digest != stored.sha256 or size != stored.size:
            raise IntegrityError(f"{label}: refused, {_mismatch(stored, digest, size)}")

    def problem(self, stored: StoredFile) -> str | None:
        """Why the object of ``stored`` cannot be trusted (missing, another size, another
        sha256), or ``None`` when its bytes are what was promoted."""
        source = self.path_of(stored.sha256)
        if not _present(source):
            return _MISSING
        size, digest = source.stat().st_size, sha256_file(source)
        if digest != stored.sha256 or size != stored.size:
            return _mismatch(stored, digest, size)
        return None


_MISSING = "its stored object is missing"


def _present(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _mismatch(stored: StoredFile, digest: str, size: int) -> str:
    return (
        f"its stored bytes ({size:,} bytes, sha256 {digest[:12]}...) are not those promoted "
        f"({stored.size:,} bytes, sha256 {stored.sha256[:12]}...): the store was changed on disk"
    )
