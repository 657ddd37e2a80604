"""The model registry: a finished run promoted to a numbered, approved, verifiable version.

``adaptlab promote RUN_DIR --name NAME --approver WHO --reason TEXT`` copies the run's files
into a content-addressed store and records version n+1 with its lineage (data, eval lock,
config, base model, code, the comparison it ranked in); aliases (``champion``) point at
versions and every change is an append-only event. Runs are read only through
:func:`adaptlab.runs.read_run`; nothing here imports a strategy or the training code.
"""

from adaptlab.registry.catalog import (
    ENVIRONMENT,
    Event,
    ModelSummary,
    Problem,
    Promotion,
    Registry,
    Verification,
    Version,
    registry_root,
)
from adaptlab.registry.errors import IntegrityError, RegistryError
from adaptlab.registry.names import Reference, parse_reference
from adaptlab.registry.store import StoredFile

__all__ = [
    "ENVIRONMENT",
    "Event",
    "IntegrityError",
    "ModelSummary",
    "Problem",
    "Promotion",
    "Reference",
    "Registry",
    "RegistryError",
    "StoredFile",
    "Verification",
    "Version",
    "parse_reference",
    "registry_root",
]
