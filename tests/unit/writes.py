"""Which files a block of code writes, and which of them it wrote in place.

A file of a run or experiment folder must be written under a temporary name (or inside a
staging folder) and renamed into place, so that a crash never leaves it half-written (issue 12).
:func:`trace_writes` records every file opened for writing: Python's opens through an audit
hook, safetensors' (native code, invisible to the hook) by wrapping its entry point.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import safetensors.numpy
import safetensors.torch

# A log whose rows are each flushed whole; a resumed run drops a torn last row (train/loop.py).
APPEND_ONLY = {"metrics.jsonl"}

_LOGS: list[list[Path]] = []
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_TMPFILE = getattr(os, "O_TMPFILE", 0) or -1  # Linux only; -1 matches no flags elsewhere
_hooked = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "open" or not _LOGS or not isinstance(args[0], str | bytes | os.PathLike):
        return
    path, mode, flags = args
    if isinstance(flags, int) and flags & _TMPFILE == _TMPFILE:
        return  # an anonymous file (O_TMPFILE: filelock's probe) has no name to half-write
    writes = any(c in mode for c in "wax+") if isinstance(mode, str) else flags & _WRITE_FLAGS
    if writes:
        _LOGS[-1].append(Path(os.fsdecode(path)).absolute())


@contextmanager
def trace_writes() -> Iterator[list[Path]]:
    """Yield the list of paths opened for writing inside the block (absolute)."""
    global _hooked
    if not _hooked:  # an audit hook cannot be removed: one, gated by _LOGS
        sys.addaudithook(_audit)
        _hooked = True
    log: list[Path] = []
    modules = (safetensors.numpy, safetensors.torch)
    originals = [module.serialize_file for module in modules]
    for module, real in zip(modules, originals, strict=True):

        def traced(tensors: Any, filename: Any, *args: Any, _real: Any = real, **kw: Any) -> Any:
            log.append(Path(os.fsdecode(filename)).absolute())
            return _real(tensors, filename, *args, **kw)

        module.serialize_file = traced  # type: ignore[assignment]
    _LOGS.append(log)
    try:
        yield log
    finally:
        _LOGS.remove(log)
        for module, real in zip(modules, originals, strict=True):
            module.serialize_file = real  # type: ignore[assignment]


def written_in_place(writes: list[Path], folder: Path) -> list[Path]:
    """The files of ``folder`` (relative to it) that were written under their own name rather
    than under a temporary one or inside a staging folder, both of which start with a dot."""
    root = folder.absolute()
    return sorted(
        {
            path.relative_to(root)
            for path in writes
            if path.is_relative_to(root)
            and not any(part.startswith(".") for part in path.relative_to(root).parts)
            and path.name not in APPEND_ONLY
        }
    )
