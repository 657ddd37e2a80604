"""What the registry refuses: bad names and references, unknown versions, altered artefacts."""

from __future__ import annotations


class RegistryError(RuntimeError):
    """A registry request that cannot be done; the message names what and why."""


class IntegrityError(RegistryError):
    """A stored artefact whose bytes no longer match the sha256 recorded when it was promoted,
    or a stored path that would leave the store; the message names the version and the file."""
