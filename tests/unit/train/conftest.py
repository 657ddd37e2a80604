"""Make the tiny models and data of tiny_task.py importable by the train tests.

pytest runs with --import-mode=importlib, which puts no test folder on sys.path; the helper
module is loaded here under a unique name instead.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

_NAME = "adaptlab_tests_train_tiny_task"
if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_NAME, Path(__file__).with_name("tiny_task.py"))
    assert _spec is not None and _spec.loader is not None
    sys.modules[_NAME] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[_NAME])


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models run ~20x faster on one thread than on two contended ones, and the
    comparisons between runs need the same thread count anyway."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
