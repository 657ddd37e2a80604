"""Benchmark: does the recommendation hold across training seeds, and is a cost difference
within timing noise ever what decides it? (issue 19)

    python bench/seed_stability.py [CONFIG] --out DIR [--strategy NAME ...] [--repeat 2]
    python bench/seed_stability.py [CONFIG] --out DIR --no-run

Runs ``adaptlab compare CONFIG --output-dir DIR --repeat N`` (the embedded demo without
CONFIG), which compares with the experiment's own training seed (42) and then reruns the runs
that train with seed 7 (and more with N > 2) in ``<experiment>/repeats/seed_<s>/``. Then, for
each seed's experiment folder, it takes the report's decision exactly as ``adaptlab report``
does and prints one JSON object:

- per seed: the recommendation, the runs it is tied with and why, the confidence, and per
  run its accuracy with interval, batch-1 latency median with interval (interleaved rounds;
  ``pooled_with``: the runs sharing its inference graph, priced on their pooled calls), fit
  wall and CPU time, the share of the CPUs other processes used during the fit, the projected
  12-month cost with its interval, and the decision's rank;
- ``stability``: whether the recommendation held and each run's change between seeds
  (``stability.json``);
- ``untrained_called_dearer``: every finding in which a run that trains nothing loses to a
  tuned run of the same base model on cost (the issue's acceptance: none on noise alone).

``--no-run`` summarises the folders already there.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from adaptlab.report.build import ReportConfig, report_data
from adaptlab.report.inputs import read_inputs
from adaptlab.stability import REPEATS, read_stability


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", help="Experiment YAML (default: the demo).")
    parser.add_argument("--out", type=Path, required=True, help="compare's --output-dir.")
    parser.add_argument("--strategy", "-s", action="append", default=[])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--no-run", action="store_true")
    return parser.parse_args()


def run(args: argparse.Namespace) -> float:
    """``adaptlab compare ... --repeat N``; its wall seconds."""
    command = ["adaptlab", "compare", *([args.config] if args.config else [])]
    command += ["--output-dir", str(args.out), "--repeat", str(args.repeat)]
    command += [f"--strategy={name}" for name in args.strategy]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return round(time.perf_counter() - start, 1)


def experiment_folder(out: Path) -> Path:
    """The one experiment folder compare wrote under ``out``."""
    found = [p.parent for p in out.glob("*/comparison.json")]
    if len(found) != 1:
        raise SystemExit(f"{out}: expected one experiment folder, found {found}")
    return found[0]


def seed_summary(folder: Path) -> dict[str, Any]:
    """The decision on one seed's experiment folder and every run's measured figures."""
    data = report_data(read_inputs([folder]), ReportConfig())
    totals, intervals = data.deployment.totals(), data.deployment.intervals()
    decision = data.decision
    rank = {name: i + 1 for i, name in enumerate(decision.ranking)}
    runs = {}
    for row in data.rows:
        name = str(row["strategy"])
        cost = data.inputs.runs[name].cost.raw
        runs[name] = {
            "accuracy": row.get(data.inputs.metric),
            "accuracy_ci": row.get(f"{data.inputs.metric}_ci"),
            "latency_batch1_p50_ms": row.get("latency_batch1_p50_ms"),
            "latency_batch1_p50_ci": row.get("latency_batch1_p50_ci"),
            "latency_measured": row.get("latency_measured"),
            "pooled_with": row.get("latency_pooled_with"),
            "fit_wall_s": cost.get("fit_wall_s"),
            "fit_cpu_s": cost.get("fit_cpu_s"),
            "fit_contention": cost.get("fit_contention"),
            "fit_load_average": cost.get("fit_load_average"),
            "trainable_params": row.get("trainable_params"),
            "total_cost": totals.get(name),
            "total_cost_ci": intervals.get(name),
            "rank": rank.get(name),
        }
    return {
        "seed": data.inputs.runs[decision.recommended].manifest.raw.get("seed"),
        "recommended": decision.recommended,
        "confidence": decision.confidence,
        "tied_with": dict(decision.tie_reasons),
        "runner_up": decision.runner_up,
        "runs": runs,
        "untrained_called_dearer": untrained_called_dearer(data),
    }


def untrained_called_dearer(data: Any) -> list[str]:
    """Findings where a run that trains nothing loses on cost to a tuned run."""
    roles = {name: (p.role if p else None) for name, p in data.inputs.profiles.items()}
    return [
        finding.message
        for finding in data.decision.fired("cheaper_within_ci")
        if roles.get(finding.subject) in ("base", "prompted")
        and roles.get(finding.other) == "tuned"
    ]


def main() -> None:
    args = arguments()
    wall = None if args.no_run else run(args)
    folder = experiment_folder(args.out)
    seeds = [seed_summary(folder)]
    seeds += [seed_summary(p) for p in sorted((folder / REPEATS).glob("seed_*"))]
    stability = read_stability(folder)
    summary = {
        "command": " ".join(sys.argv),
        "compare_wall_s": wall,
        "seeds": seeds,
        "stability": None if stability is None else stability.to_dict(),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
