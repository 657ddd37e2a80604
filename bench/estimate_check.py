"""Check `adaptlab estimate` against every finished benchmark run (read-only on runs/).

Each run in ``runs/bench/*/runs/*/`` with a ``manifest.json`` (finished) is estimated from the
*other* runs on record (leave-one-out: a run never calibrates its own estimate) and compared
with what it measured: fit wall time and the fit stage's peak resident memory. Prints a
markdown table, the median absolute error and the share within ±25%.

    python bench/estimate_check.py [RUN_DIRS...]
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from adaptlab.estimate import CheckRow, check_against_runs

TARGET = 0.25


def _error(value: float | None) -> str:
    return "—" if value is None else f"{value:+.0%}"


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _mib(value: float | None) -> str:
    return "—" if value is None else f"{value / 2**20:,.0f}"


def table(rows: list[CheckRow]) -> str:
    lines = [
        "| experiment | run | method | fit s measured | fit s estimated | time error "
        "| peak MiB measured | peak MiB estimated | memory error | utilisation from |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.folder.parent.parent.name} | {row.run} | {row.method} "
            f"| {_seconds(row.measured_s)} | {_seconds(row.estimated_s)} "
            f"| {_error(row.time_error)} "
            f"| {_mib(row.measured_peak)} | {_mib(row.estimated_peak)} "
            f"| {_error(row.memory_error)} | {row.utilisation_source or '— (nothing trains)'} |"
        )
    return "\n".join(lines)


def summary(label: str, errors: list[float]) -> str:
    if not errors:
        return f"- {label}: no runs"
    within = sum(abs(error) <= TARGET for error in errors)
    return (
        f"- {label}: median absolute error {statistics.median(abs(e) for e in errors):.0%} "
        f"over {len(errors)} runs; {within} of {len(errors)} ({within / len(errors):.0%}) "
        f"within ±{TARGET:.0%}"
    )


def main(arguments: list[str]) -> None:
    folders = [Path(a) for a in arguments] or sorted(Path("runs/bench").glob("*/runs/*/"))
    finished = [folder for folder in folders if (folder / "manifest.json").is_file()]
    rows, problems = check_against_runs(finished)
    print(table(rows))
    print()
    print(summary("time", [e for row in rows if (e := row.time_error) is not None]))
    print(summary("peak memory", [e for row in rows if (e := row.memory_error) is not None]))
    skipped = len(folders) - len(finished)
    if skipped:
        print(f"- {skipped} run folder(s) without manifest.json (unfinished) skipped")
    for folder, why in problems.items():
        print(f"- left out {folder}: {why}")


if __name__ == "__main__":
    main(sys.argv[1:])
