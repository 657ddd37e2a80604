"""How much of the machine a measured stage had to itself.

A fit's wall time is its training cost, and on a shared machine other work stretches it: on
2 cores, fits of the same run moved by almost 2x between two compares when another job ran
beside the first. So every fit records, beside its wall time, the CPU time this process
used, the CPU time the rest of the machine used in the same window, and the 1-minute load
average at its end. The share of the machine's CPU time taken by other processes is the
contention figure the report flags (``decision.contention_share``): a run measured under
contention is named, with its figure, next to the cost it overstates.

System-wide and per-process CPU times come from psutil (a dependency of accelerate), which
reads ``/proc`` on Linux and the kernel's counters elsewhere. Child processes that exited and
were waited for count as this process's own (a tokenizer worker, say).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil

CONTENDED_SHARE = 0.1
"""A fit where other processes used at least this share of the machine's CPU time ran under
contention: the report flags it (``decision.contention_share``), and ``estimate`` does not
calibrate on it."""
SHORTEST_CONTENDED_FIT_S = 5.0
"""A fit shorter than this is never called contended: over a fraction of a second, another
process's one scheduling slice is a large share, and a fit that short is too cheap to move a
cost or a calibration."""


def contended(
    share: float | None, wall_s: float | None, threshold: float = CONTENDED_SHARE
) -> bool:
    """A fit of ``wall_s`` seconds during which other processes used ``share`` of the machine
    ran under contention (unknown share or length: not called contended)."""
    if share is None or wall_s is None or wall_s < SHORTEST_CONTENDED_FIT_S:
        return False
    return share >= threshold


@dataclass(frozen=True)
class Window:
    """CPU counters at the start of a measured stage."""

    wall: float
    own: float
    busy: float


@dataclass(frozen=True)
class Contention:
    """What a stage used of the machine, and what other processes used meanwhile."""

    wall_s: float
    cpu_s: float
    """CPU seconds this process (its threads, and waited-for children) used."""
    others_cpu_s: float
    """CPU seconds every other process on the machine used in the same window."""
    cores: int
    load_average: float | None
    """The 1-minute load average at the end (``None`` where the system has none)."""

    @property
    def others_share(self) -> float:
        """Share of the machine's CPU time (wall x cores) other processes used: 0 on a quiet
        machine, 0.5 when another job kept half the cores busy."""
        capacity = self.wall_s * self.cores
        return 0.0 if capacity <= 0 else min(max(self.others_cpu_s / capacity, 0.0), 1.0)

    def to_dict(self) -> dict[str, float | int | None]:
        """The ``cost.json`` fields of a fit (``fit_`` prefixed)."""
        return {
            "fit_cpu_s": round(self.cpu_s, 2),
            "fit_others_cpu_s": round(self.others_cpu_s, 2),
            "fit_contention": round(self.others_share, 4),
            "fit_cores": self.cores,
            "fit_load_average": None if self.load_average is None else round(self.load_average, 2),
        }


def _own_cpu() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system + times.children_user + times.children_system)


def _busy_cpu() -> float:
    """CPU seconds the whole machine has spent on work since boot (idle and waiting excluded)."""
    times = psutil.cpu_times()._asdict()
    # guest time is already counted in user time on Linux; idle and I/O wait are not work
    left_out = ("idle", "iowait", "guest", "guest_nice")
    return float(sum(value for name, value in times.items() if name not in left_out))


def start() -> Window:
    """Open a measurement window now."""
    return Window(time.perf_counter(), _own_cpu(), _busy_cpu())


def finish(window: Window) -> Contention:
    """What the machine did since ``window`` opened."""
    wall = time.perf_counter() - window.wall
    own = _own_cpu() - window.own
    busy = _busy_cpu() - window.busy
    return Contention(wall, own, max(busy - own, 0.0), psutil.cpu_count() or 1, load_average())


def load_average() -> float | None:
    """The machine's 1-minute load average now; ``None`` where the system has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows has no getloadavg
        return None
