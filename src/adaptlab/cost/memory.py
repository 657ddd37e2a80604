"""Peak memory of one stage, not of the whole process.

``compare`` runs strategies one after another in one process, and ``ru_maxrss`` only ever grows,
so it would charge every strategy with the largest one before it. On Linux, writing 5 to
``/proc/self/clear_refs`` resets the resident-set high-water mark (``VmHWM``), which gives a
per-stage peak; elsewhere the process-lifetime peak is reported and marked as such.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak() -> bool:
    """Start a new measurement window; False where only the lifetime peak is available."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _status_bytes(field: str) -> int | None:
    """One memory field of ``/proc/self/status`` (Linux; kB there) in bytes, else None."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """Resident-set peak since :func:`reset_peak` (Linux), else since the process started."""
    peak = _status_bytes("VmHWM")
    if peak is not None:
        return peak
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def current_rss_bytes() -> int:
    """This process's resident set now (Linux), else its peak so far."""
    now = _status_bytes("VmRSS")
    return peak_rss_bytes() if now is None else now


def peak_cuda_bytes() -> int | None:
    return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None
