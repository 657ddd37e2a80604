"""The report as data: sections of plain blocks, rendered once as HTML and once as Markdown.

Building the content once and rendering it twice keeps the two reports saying the same thing;
blocks hold plain text (renderers escape it), never markup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from adaptlab.report.plots import Plot


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Notice:
    """Something the reader must not miss: a run left out, a cost that is unknown."""

    text: str


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    id: str = ""
    """An element id for the HTML table (empty: none)."""

    def numeric(self) -> tuple[bool, ...]:
        """Per column: every cell is a number (or "—"), so it is right-aligned."""
        columns = range(len(self.headers))
        return tuple(all(_numeric(row[i]) for row in self.rows) for i in columns)


def _numeric(cell: str) -> bool:
    """A cell that starts with a number: "94.2% [93.4, 95.0]", "-0.4 [...]*", "0.07 (3×)"."""
    return cell == "—" or re.match(r"[-+]?\d", cell) is not None


@dataclass(frozen=True)
class Image:
    plot: Plot


@dataclass(frozen=True)
class Code:
    """A file's text, folded away under ``summary`` (a run's config, its manifest)."""

    summary: str
    text: str
    language: str = ""


@dataclass(frozen=True)
class Details:
    """Blocks folded away under a one-line ``summary``, closed until the reader opens them."""

    summary: str
    blocks: tuple[Block, ...]


Block = Paragraph | Bullets | Notice | Table | Image | Code | Details


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Document:
    title: str
    subtitle: str
    sections: tuple[Section, ...]

    def section(self, section_id: str) -> Section:
        return next(s for s in self.sections if s.id == section_id)

    def plots(self) -> list[Plot]:
        return [b.plot for s in self.sections for b in s.blocks if isinstance(b, Image)]
