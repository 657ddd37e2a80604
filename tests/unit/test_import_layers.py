"""No import cycle among adaptlab's modules, a function-level import included (one "imported
here to avoid a circle" hides a cycle from the interpreter, not from the design). Read from the
source with ``ast``: nothing is imported, so the test takes milliseconds. Imports under
``if TYPE_CHECKING:`` are annotations, not dependencies, and are left out. The layer contracts
themselves are import-linter's (``[tool.importlinter]`` in pyproject.toml, run by make check)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "src"

Edge = tuple[str, str, str]
"""(importer, imported, "file:line")."""


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node``, in functions too, except TYPE_CHECKING blocks."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield from _imports(other)
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        yield from _imports(child)


def import_edges(root: Path, package: str) -> list[Edge]:
    """Edges between the modules of ``package`` under ``root`` (``from a import b`` counts as
    importing ``a.b`` when that is a module, else ``a``)."""
    files = {module_name(p, root): p for p in (root / package).rglob("*.py")}
    edges = []
    for importer, path in files.items():
        is_package = path.name == "__init__.py"
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            where = f"{path.relative_to(root)}:{node.lineno}"
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parts = importer.split(".")
                    keep = len(parts) - node.level + (1 if is_package else 0)
                    base = ".".join([*parts[:keep], *([base] if base else [])])
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                    for alias in node.names
                ]
            for target in targets:
                while target and target not in files:  # import a.b.c of a module a.b
                    target = target.rpartition(".")[0]
                if target and target != importer and target.split(".")[0] == package:
                    edges.append((importer, target, where))
    return edges


def cycles(edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    graph: dict[str, set[str]] = {}
    for a, b, _ in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def describe(component: list[str], edges: list[Edge]) -> str:
    inside = set(component)
    lines = [f"{a} -> {b} ({where})" for a, b, where in edges if a in inside and b in inside]
    return "cycle among " + ", ".join(component) + ":\n  " + "\n  ".join(sorted(lines))


def test_no_import_cycle_in_adaptlab() -> None:
    edges = import_edges(SOURCE, "adaptlab")
    assert len(edges) > 100  # the walk found the package's imports
    found = cycles(edges)
    assert not found, "\n".join(describe(c, edges) for c in found)


def write_package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_cycle_hidden_in_a_function_level_import_is_found(tmp_path: Path) -> None:
    write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/low.py": "def f():\n    from pkg.high import g  # hidden\n    return g\n",
            "pkg/high.py": "from pkg import low\n\ndef g():\n    return low\n",
            "pkg/leaf.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from pkg.high import g\n",
            "pkg/user.py": "from . import leaf\nfrom .leaf import *\n",
        },
    )
    edges = import_edges(tmp_path, "pkg")
    assert cycles(edges) == [["pkg.high", "pkg.low"]]
    assert ("pkg.leaf", "pkg.high") not in {(a, b) for a, b, _ in edges}  # TYPE_CHECKING only
    assert ("pkg.user", "pkg.leaf") in {(a, b) for a, b, _ in edges}  # relative imports resolve
    assert "pkg/low.py:2" in describe(cycles(edges)[0], edges)


def test_an_acyclic_package_passes(tmp_path: Path) -> None:
    write_package(
        tmp_path,
        {"pkg/__init__.py": "", "pkg/a.py": "import pkg.b\n", "pkg/b.py": "import os\n"},
    )
    assert cycles(import_edges(tmp_path, "pkg")) == []
