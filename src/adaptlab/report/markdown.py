"""The report as Markdown, for terminals and pull requests: the same sections and words as the
HTML; each plot is described by its alt text (the pictures are in ``report.html``)."""

from __future__ import annotations

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


def render(document: Document) -> str:
    parts = [f"# {document.title}", f"_{_inline(document.subtitle)}_"]
    parts += [_section(section) for section in document.sections]
    return "\n\n".join(parts) + "\n"


def _section(section: Section) -> str:
    return "\n\n".join([f"## {section.title}", *(_block(block) for block in section.blocks)])


def _block(block: Block) -> str:
    if isinstance(block, Paragraph):
        return _inline(block.text)
    if isinstance(block, Bullets):
        return "\n".join(f"- {_inline(item)}" for item in block.items)
    if isinstance(block, Notice):
        return f"> **warning:** {_inline(block.text)}"
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Image):
        plot = block.plot
        return f"_Plot ({plot.title}, in report.html): {_inline(plot.alt)}_"
    if isinstance(block, Details):
        # Blank lines around the blocks let GitHub render them as Markdown inside the HTML.
        inner = "\n\n".join(_block(b) for b in block.blocks)
        return f"<details><summary>{_inline(block.summary)}</summary>\n\n{inner}\n\n</details>"
    return _code(block)


def _table(table: Table) -> str:
    lines = [
        "| " + " | ".join(_cell(h) for h in table.headers) + " |",
        "|" + "".join("---:|" if numeric else "---|" for numeric in table.numeric()),
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def _code(code: Code) -> str:
    # A fence longer than any run of backticks inside keeps the file's text verbatim.
    fence = "`" * max(3, _longest_backtick_run(code.text) + 1)
    return (
        f"<details><summary>{_inline(code.summary)}</summary>\n\n"
        f"{fence}{code.language}\n{code.text.rstrip()}\n{fence}\n\n</details>"
    )


def _inline(text: str) -> str:
    """Plain text that Markdown shows as written: no stray emphasis, code or HTML. Underscores
    stay: GitHub's Markdown leaves them alone inside words (``zero_shot``), and a terminal
    reader is spared ``zero\\_shot``."""
    for char in ("`", "*", "<"):
        text = text.replace(char, "\\" + char)
    return " ".join(text.split())


def _cell(text: str) -> str:
    return _inline(text).replace("|", "\\|")


def _longest_backtick_run(text: str) -> int:
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    return longest
