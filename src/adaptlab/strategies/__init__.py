"""The strategies. Each module of this package defines one and ends in ``register(...)``;
:func:`discover` imports them all, so adding a strategy is adding its file. A strategy that
lives in another installed package is found through its ``adaptlab.strategies`` entry point
(``[project.entry-points."adaptlab.strategies"] my_strategy = "my_pkg.my_strategy"``): the
module it names is imported, and registers itself the same way."""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil

ENTRY_POINTS = "adaptlab.strategies"
_SKIP = {"base"}


def discover() -> None:
    """Import every module of this package, and every module an ``adaptlab.strategies`` entry
    point names; each registers its strategy (a module already imported is not run again)."""
    for module in pkgutil.iter_modules(__path__):
        if module.name not in _SKIP and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
    for entry in importlib.metadata.entry_points(group=ENTRY_POINTS):
        importlib.import_module(entry.value.split(":")[0])


discover()
