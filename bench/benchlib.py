"""What the benchmark scripts share: running ``adaptlab compare`` on a preset, summarising
finished runs without running anything, paired differences, and the common options.

Imported by the scripts beside it (``python bench/<name>.py`` puts this folder on the path).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def arguments(description: str) -> argparse.Namespace:
    """``--out``, ``--strategies`` and ``--no-run``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--strategies", default="", help="Comma-separated runs (default: all).")
    parser.add_argument(
        "--no-run",
        action="store_true",
        help="Train nothing: summarise the runs already finished in the experiment folder.",
    )
    return parser.parse_args()


def run_compare(config: str, experiment: str, out: Path, only: list[str]) -> dict[str, Any]:
    """``adaptlab compare configs/<config>`` into ``out``; its comparison and wall time."""
    start = time.perf_counter()
    command = ["adaptlab", "compare", str(ROOT / "configs" / config)]
    command += ["--output-dir", str(out)] + [f"--strategy={name}" for name in only]
    subprocess.run(command, check=True, cwd=ROOT)
    comparison: dict[str, Any] = json.loads((out / experiment / "comparison.json").read_text())
    comparison["compare_wall_s"] = round(time.perf_counter() - start, 1)
    return comparison


def finished_comparison(experiment: str, out: Path) -> dict[str, Any]:
    """The leaderboard of every finished run in the experiment folder, running nothing."""
    from adaptlab.comparison import build_comparison
    from adaptlab.config import CompareConfig

    folders = sorted(p.parent for p in (out / experiment / "runs").glob("*/manifest.json"))
    comparison, problems = build_comparison(folders, CompareConfig())
    comparison["problems"] = problems
    comparison["compare_wall_s"] = None
    return comparison


def comparison_for(args: argparse.Namespace, config: str, experiment: str) -> dict[str, Any]:
    """The finished runs' comparison (``--no-run``) or a fresh compare's."""
    if args.no_run:
        return finished_comparison(experiment, args.out)
    only = [name for name in args.strategies.split(",") if name]
    return run_compare(config, experiment, args.out, only)


def paired(runs: Path, a: str, b: str, metric: str) -> dict[str, Any] | None:
    """``metric`` of run ``a`` minus run ``b`` on their shared eval items, paired bootstrap."""
    from adaptlab.comparison import paired_difference
    from adaptlab.config import CompareConfig
    from adaptlab.runs import read_run

    difference = paired_difference(read_run(runs / a), read_run(runs / b), CompareConfig(), metric)
    return None if difference is None else difference.to_dict()
