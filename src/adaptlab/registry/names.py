"""Names in the registry: models, aliases, references to a version, and who/why texts.

Model names and aliases follow the rule for experiment and run names
(:func:`adaptlab.config.check_name`): letters, digits, ``_``, ``-`` and ``.``, starting with a
letter or digit, no ``..``, at most 64 characters. So no path separator, NUL or control
character ever reaches a query, a message or a file name. A reference is ``NAME`` (the latest
version), ``NAME@ALIAS`` or ``NAME:VERSION``; ``@`` and ``:`` cannot occur in a name, so the
three forms never overlap.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from adaptlab.config import NAME_MAX, check_name
from adaptlab.registry.errors import RegistryError

APPROVER_MAX = 128
REASON_MAX = 4000
_SHOWN_MAX = 80


def _shown(value: str) -> str:
    """``value`` as a message may quote it: escaped (``repr``) and cut short."""
    return repr(value if len(value) <= _SHOWN_MAX else value[:_SHOWN_MAX] + "...")


def _check(value: str, what: str) -> str:
    try:
        return check_name(value)
    except ValueError:
        raise RegistryError(
            f"{what} {_shown(value)} refused: use letters, digits, '_', '-' and '.', starting "
            f"with a letter or digit, without '..', at most {NAME_MAX} characters"
        ) from None


def check_model_name(value: str) -> str:
    """``value`` when it is a valid model name; :class:`RegistryError` otherwise."""
    return _check(value, "model name")


def check_alias(value: str) -> str:
    """``value`` when it is a valid alias (``champion``, ``staging``); :class:`RegistryError`
    otherwise."""
    return _check(value, "alias")


@dataclass(frozen=True)
class Reference:
    """A model's version: by alias, by number, or (neither) its latest."""

    name: str
    alias: str | None = None
    version: int | None = None

    def __str__(self) -> str:
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name if self.version is None else f"{self.name}:{self.version}"


def parse_reference(text: str) -> Reference:
    """``NAME``, ``NAME@ALIAS`` or ``NAME:VERSION`` (a whole number from 1), checked."""
    if "@" in text:
        name, alias = text.split("@", 1)
        return Reference(check_model_name(name), alias=check_alias(alias))
    if ":" in text:
        name, number = text.split(":", 1)
        return Reference(check_model_name(name), version=check_version(number, text))
    return Reference(check_model_name(text))


def check_version(value: str | int, where: str) -> int:
    """A version number (1, 2, ...) from ``value``; ``where`` names it in the message."""
    text = str(value)
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise RegistryError(f"{_shown(where)}: version {_shown(text)} is not a number from 1")
    return int(text)


def check_text(value: str, what: str, limit: int, *, lines: bool = False) -> str:
    """``value`` stripped, when it is not empty, at most ``limit`` characters and free of
    control characters (``lines``: newlines and tabs allowed). It goes into the audit trail
    as written, so it is refused rather than cleaned."""
    text = value.strip()
    allowed = "\n\t" if lines else ""
    if not text:
        raise RegistryError(f"{what} is empty: say who approves and why; it is recorded")
    if len(text) > limit:
        raise RegistryError(f"{what} is {len(text):,} characters; at most {limit:,}")
    if any(unicodedata.category(c) == "Cc" and c not in allowed for c in text):
        raise RegistryError(f"{what} {_shown(text)} holds a control character")
    return text


def check_approver(value: str) -> str:
    return check_text(value, "approver", APPROVER_MAX)


def check_reason(value: str) -> str:
    return check_text(value, "reason", REASON_MAX, lines=True)
