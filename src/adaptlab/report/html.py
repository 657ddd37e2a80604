"""The report as one self-contained HTML file: styles inline, plots as base64 PNG data URIs,
no script and no external reference, so it opens offline and can be mailed or archived as is.

Every piece of text is escaped (run names, file paths and config values come from disk).
"""

from __future__ import annotations

import base64
import re
from html import escape

from adaptlab.report.document import (
    Block,
    Bullets,
    Code,
    Details,
    Document,
    Image,
    Notice,
    Paragraph,
    Section,
    Table,
)

DETAIL = re.compile(r" (?=[\[(])")
"""Where a number's detail starts in a cell: the space before its first "[" or "("."""

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 1.5rem; color: #1b1b1b; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } .subtitle { color: #555; margin-top: 0; }
nav a { margin-right: 0.8rem; font-size: 0.9rem; }
section { margin-top: 2rem; }
#recommendation { background: #eef6ee; border: 2px solid #2e7d32; border-radius: 8px;
                  padding: 0.5rem 1.2rem; }
#recommendation p:first-of-type { font-size: 1.35rem; font-weight: 600; }
.notice { background: #fff4e5; border-left: 4px solid #e65100; padding: 0.4rem 0.8rem;
          margin: 0.4rem 0; font-family: ui-monospace, monospace; font-size: 0.85rem; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.6rem 0; max-width: 100%; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.4rem; overflow-wrap: break-word; }
th { background: #f0f0f0; font-size: 0.8rem; vertical-align: bottom; }
td { max-width: 28rem; } td:first-child { white-space: nowrap; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; font-size: 0.8rem; }
.detail { display: block; color: #555; font-size: 0.72rem; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 1rem 0; } img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.85rem; max-width: 900px; }
details { margin: 0.3rem 0; } pre { background: #f6f6f6; padding: 0.6rem; overflow-x: auto;
                                     font-size: 0.8rem; }
"""


def render(document: Document) -> str:
    nav = " ".join(f'<a href="#{escape(s.id)}">{escape(s.title)}</a>' for s in document.sections)
    body = "\n".join(_section(section) for section in document.sections)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(document.title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{escape(document.title)}</h1>\n"
        f'<p class="subtitle">{escape(document.subtitle)}</p>\n<nav>{nav}</nav>\n'
        f"{body}\n</body>\n</html>\n"
    )


def _section(section: Section) -> str:
    blocks = "\n".join(_block(block) for block in section.blocks)
    return (
        f'<section id="{escape(section.id)}">\n<h2>{escape(section.title)}</h2>\n'
        f"{blocks}\n</section>"
    )


def _block(block: Block) -> str:
    if isinstance(block, Paragraph):
        return f"<p>{escape(block.text)}</p>"
    if isinstance(block, Bullets):
        items = "".join(f"<li>{escape(item)}</li>" for item in block.items)
        return f"<ul>{items}</ul>"
    if isinstance(block, Notice):
        return f'<div class="notice" role="alert">{escape(block.text)}</div>'
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Image):
        return _image(block)
    if isinstance(block, Details):
        inner = "\n".join(_block(b) for b in block.blocks)
        return (
            f'<details class="fold"><summary>{escape(block.summary)}</summary>\n{inner}\n</details>'
        )
    return _code(block)


def _table(table: Table) -> str:
    ident = f' id="{escape(table.id)}"' if table.id else ""
    kinds = [' class="num"' if numeric else "" for numeric in table.numeric()]
    head = "".join(
        f"<th{kind}>{_header(h)}</th>" for h, kind in zip(table.headers, kinds, strict=True)
    )
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td{kind}>{_cell(cell) if kind else escape(cell)}</td>"
            for cell, kind in zip(row, kinds, strict=True)
        )
        + "</tr>"
        for row in table.rows
    )
    return (
        f'<div class="table-wrap"><table{ident}><thead><tr>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table></div>"
    )


def _header(header: str) -> str:
    """A column title that may wrap after a slash too ("tokens/request"): a header's longest
    word sets its column's narrowest width."""
    return escape(header).replace("/", "/<wbr>")


def _cell(cell: str) -> str:
    """A number's detail, its interval ("94.9% [92.8, 96.9]") or what is in brackets after it
    ("70.0% (-5.0)", "13.00 (×1.300)"), on a line of its own under the number, so a table of
    many such columns stays narrow enough for a 1,280-pixel window."""
    found = DETAIL.search(cell)
    if found is None or found.start() == 0:
        return escape(cell)
    value, detail = cell[: found.start()], cell[found.end() :]
    return f'{escape(value)} <span class="detail">{escape(detail)}</span>'


def _image(image: Image) -> str:
    plot = image.plot
    data = base64.b64encode(plot.png).decode("ascii")
    return (
        f'<figure><img id="{escape(plot.id)}" alt="{escape(plot.alt)}" '
        f'src="data:image/png;base64,{data}">'
        f"<figcaption>{escape(plot.alt)}</figcaption></figure>"
    )


def _code(code: Code) -> str:
    return (
        f"<details><summary>{escape(code.summary)}</summary>"
        f"<pre><code>{escape(code.text)}</code></pre></details>"
    )
