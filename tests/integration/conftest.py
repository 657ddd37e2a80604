"""The integration tier: real bundled models and the data in ../shared (read in place).

Without ../shared/data at all, a test skips and says so. Where ../shared/data is there but a
file a test needs is missing or unreadable, the test fails under CI (``CI`` set) instead of
skipping: a broken data folder must not pass for an absent one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def require_shared(*paths: Path) -> None:
    """Skip when ../shared/data is absent; fail under CI (skip elsewhere) when it is present
    but one of ``paths`` cannot be read."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA.resolve()} is absent: the integration test needs it")
    for path in paths:
        try:
            readable = path.is_dir() or (path.is_file() and path.open("rb").read(1) is not None)
        except OSError:
            readable = False
        if not readable:
            message = f"{path.resolve()} is missing or unreadable although ../shared/data exists"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
