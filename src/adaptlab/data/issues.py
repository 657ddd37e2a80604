"""What is wrong with one record, said so that a person can find and fix it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class DataIssue:
    """One problem with one record: where it is, what class of problem, and why.

    ``error`` records are left out of the cleaned data; ``warning`` records are kept (for
    example a record longer than the model's context is kept and reported, never truncated).
    The message never contains a raw PII value.
    """

    path: str
    line: int
    error: str
    message: str
    field: str | None = None
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f" [{self.field}]" if self.field else ""
        return f"{self.path}:{self.line}: {self.error}{where}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class DataError(ValueError):
    """Input that cannot be used at all (unreadable file, unknown format, broken lock...)."""
