"""What a decision that saw training-seed noise would conclude (issue 19's note).

    python bench/seed_aware_difference.py EXPERIMENT_FOLDER A:B [A:B ...] [--resamples 4000]

EXPERIMENT_FOLDER is one that ``adaptlab compare --repeat N`` wrote: its own runs and
``repeats/seed_<s>/runs``. For each pair, the per-item accuracy difference A − B under every
seed (the same locked eval items), and its mean with a two-level bootstrap interval: each
resample draws the seeds with replacement, then the eval items with replacement, so the
interval holds seed-to-seed variation as well as eval sampling (Bouthillier et al. 2021,
"Accounting for Variance in Machine Learning Benchmarks"). With two seeds the seed level has
three distinct draws: a rough interval. Prints one JSON line per pair.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from adaptlab.comparison import per_item, read_runs
from adaptlab.stability import REPEATS


def differences(folders: list[Path], a: str, b: str) -> np.ndarray:
    """(seeds, items) of A's per-item score minus B's."""
    rows = []
    for folder in folders:
        (first,), _ = read_runs([folder / "runs" / a])
        (second,), _ = read_runs([folder / "runs" / b])
        if not np.array_equal(first.indices, second.indices):
            raise SystemExit(f"{folder}: {a} and {b} were scored on different eval items")
        scores_a, scores_b = per_item(first), per_item(second)
        if scores_a is None or scores_b is None:
            raise SystemExit(f"{folder}: no per-item scores for {a} or {b}")
        rows.append(scores_a - scores_b)
    return np.stack(rows)


def two_level_interval(diff: np.ndarray, resamples: int, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    seeds, items = diff.shape
    means = [
        diff[rng.integers(0, seeds, seeds)][:, rng.integers(0, items, items)].mean()
        for _ in range(resamples)
    ]
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", type=Path)
    parser.add_argument("pairs", nargs="+", help="A:B, run names")
    parser.add_argument("--resamples", type=int, default=4000)
    args = parser.parse_args()
    folders = [args.experiment, *sorted((args.experiment / REPEATS).glob("seed_*"))]
    for pair in args.pairs:
        a, b = pair.split(":")
        diff = differences(folders, a, b)
        low, high = two_level_interval(diff, args.resamples)
        print(
            json.dumps(
                {
                    "pair": f"{a} - {b}",
                    "seeds": [folder.name for folder in folders],
                    "per_seed": [round(float(row.mean()), 5) for row in diff],
                    "mean": round(float(diff.mean()), 5),
                    "interval": [round(low, 5), round(high, 5)],
                }
            )
        )


if __name__ == "__main__":
    main()
