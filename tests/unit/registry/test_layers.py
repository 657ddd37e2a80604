"""The registry sits above the run folder and below serving: it reads runs through
``adaptlab.runs`` and never imports training, a strategy, compare, the server or the CLI,
directly or through another module (import-linter's contract in pyproject.toml says the same
for train and strategies; this test reads the source, so it also runs without lint-imports)."""

from __future__ import annotations

from tests.unit.test_import_layers import SOURCE, import_edges

FORBIDDEN = (
    "adaptlab.train",
    "adaptlab.strategies",
    "adaptlab.predict",
    "adaptlab.export",
    "adaptlab.compare",
    "adaptlab.serve",
    "adaptlab.cli",
)


def test_the_registry_reaches_no_training_strategy_or_serving_module() -> None:
    graph: dict[str, set[str]] = {}
    for importer, imported, _ in import_edges(SOURCE, "adaptlab"):
        graph.setdefault(importer, set()).add(imported)
    reached: set[str] = set()
    stack = [module for module in graph if module.startswith("adaptlab.registry")]
    while stack:
        module = stack.pop()
        for imported in graph.get(module, ()):
            if imported not in reached:
                reached.add(imported)
                stack.append(imported)
    assert "adaptlab.runs" in reached
    bad = sorted(m for m in reached if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))
    assert not bad, f"adaptlab.registry reaches {bad}"
