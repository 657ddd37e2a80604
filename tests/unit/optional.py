"""What tests of optional extras and local servers share: skip without the extra (fail under
CI, whose ``.ci/run`` installs it), and a free port on loopback."""

from __future__ import annotations

import importlib
import os
import socket

import pytest


def require_extra(module: str, install: str) -> None:
    """Skip the test when ``module`` cannot be imported, saying ``install``; under CI (``CI``
    set), where ``.ci/run`` installs every extra, fail instead."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        message = f"{module} is not installed ({exc}): {install}"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; .ci/run installs it")
        pytest.skip(message)


def free_port() -> int:
    """A port nothing listens on now, on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
