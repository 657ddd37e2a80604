"""Benchmark: every generative strategy on restaurant8k slot extraction with SmolLM2-135M.

    python bench/restaurant8k.py [--train-size 2000] [--strategies a,b] [--out DIR] [--no-run]

1. ``adaptlab data convert restaurant8k`` (in process) of ``../shared/data/restaurant8k``:
   train_0.json and test.json to chat JSONL. The system turn is one short sentence rather than
   the converter's default instruction: a fine-tuned model needs no instructions, and on this
   CPU every system token is paid in every training step (``prompt`` and ``few_shot`` put
   their own instruction there anyway).
2. A fixed, seeded sample of ``--train-size`` training records (the issue's budget: at most
   2,000) becomes the training file; the remaining training utterances, answers removed,
   become ``unlabeled.jsonl`` for ``distill_seq_unlabeled``.
3. ``adaptlab compare configs/restaurant8k.yaml`` on those files; every strategy answers the
   same fixed 500-example sample of the test set (``eval_limit``).

Prints one JSON object (the leaderboard rows and the issue's target checks); bench/RESULTS.md
records it with the command and the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "restaurant8k"
SYSTEM = "Extract the restaurant-booking slots of the message as JSON."
FINE_TUNED = ("sft_full", "sft_lora", "sft_full_replay", "sft_lora_replay")


def prepare(folder: Path, train_size: int) -> None:
    """Chat JSONL of the training sample, the unlabeled rest, and the test set."""
    from adaptlab.data.convert import convert_restaurant8k

    folder.mkdir(parents=True, exist_ok=True)
    convert_restaurant8k(DATA / "train_0.json", folder / "all_train.jsonl", system_prompt=SYSTEM)
    convert_restaurant8k(DATA / "test.json", folder / "test.jsonl", system_prompt=SYSTEM)
    records = [json.loads(line) for line in (folder / "all_train.jsonl").open()]
    order = list(range(len(records)))
    random.Random(0).shuffle(order)
    chosen, rest = order[:train_size], order[train_size:]
    write(folder / "train.jsonl", [records[i] for i in sorted(chosen)])
    unlabeled = [{"messages": records[i]["messages"][:-1]} for i in sorted(rest)]
    write(folder / "unlabeled.jsonl", unlabeled)


def write(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def run_compare(out: Path, only: list[str]) -> dict[str, Any]:
    start = time.perf_counter()
    command = ["adaptlab", "compare", str(ROOT / "configs" / "restaurant8k.yaml")]
    command += ["--output-dir", str(out)] + [f"--strategy={name}" for name in only]
    subprocess.run(command, check=True, cwd=ROOT)
    comparison: dict[str, Any] = json.loads((out / "restaurant8k" / "comparison.json").read_text())
    comparison["compare_wall_s"] = round(time.perf_counter() - start, 1)
    return comparison


def finished_comparison(out: Path) -> dict[str, Any]:
    """The leaderboard of every finished run in the experiment folder, running nothing."""
    from adaptlab.comparison import build_comparison
    from adaptlab.config import CompareConfig

    folders = sorted(p.parent for p in (out / "restaurant8k" / "runs").glob("*/manifest.json"))
    comparison, problems = build_comparison(folders, CompareConfig())
    comparison["problems"] = problems
    comparison["compare_wall_s"] = None
    return comparison


def targets(rows: dict[str, dict[str, Any]], runs: Path) -> dict[str, Any]:
    """The issue's targets, from the leaderboard rows that exist (and, for the paired
    differences, the per-item results in their folders under ``runs``)."""
    result: dict[str, Any] = {}
    tuned = [rows[name] for name in FINE_TUNED if name in rows]
    if tuned:
        best = max(tuned, key=lambda r: r["slot_f1"])
        result["best_fine_tuned"] = {
            "strategy": best["strategy"],
            "slot_f1": best["slot_f1"],
            "json_valid_rate": best["json_valid_rate"],
        }
    if "few_shot" in rows and "prompt" in rows:
        result["few_shot_minus_prompt"] = rows["few_shot"]["slot_f1"] - rows["prompt"]["slot_f1"]
        result["tuned_minus_few_shot"] = {
            row["strategy"]: row["slot_f1"] - rows["few_shot"]["slot_f1"] for row in tuned
        }
    # The students' teacher: the best of the runs distill_* choose from (teacher: best).
    teachers = [rows[name] for name in ("sft_full", "sft_lora") if name in rows]
    for student in ("distill_logit", "distill_seq", "distill_seq_unlabeled"):
        if student in rows and teachers:
            teacher = max(teachers, key=lambda r: r["slot_f1"])
            result[student] = {
                "f1_kept": rows[student]["slot_f1"] / teacher["slot_f1"],
                "batch1_speedup": teacher["latency_batch1_p50_ms"]
                / rows[student]["latency_batch1_p50_ms"],
            }
    # Do unlabeled inputs help? Both students take the same number of optimizer steps.
    if "distill_seq" in rows and "distill_seq_unlabeled" in rows:
        difference = paired_difference(runs, "distill_seq_unlabeled", "distill_seq")
        if difference is not None:
            result["unlabeled_minus_labelled_only"] = difference
    return result


def paired_difference(runs: Path, a: str, b: str) -> dict[str, float] | None:
    """Slot F1 of run ``a`` minus run ``b`` on their shared eval items, paired bootstrap."""
    from adaptlab.comparison import paired_difference as paired
    from adaptlab.config import CompareConfig
    from adaptlab.runs import read_run

    difference = paired(read_run(runs / a), read_run(runs / b), CompareConfig())
    if difference is None:
        return None
    return {"difference": difference.difference, "low": difference.low, "high": difference.high}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--strategies", default="", help="Comma-separated runs (default: all).")
    parser.add_argument(
        "--no-run",
        action="store_true",
        help="Train nothing: summarise the runs already finished in the experiment folder.",
    )
    args = parser.parse_args()
    if args.no_run:
        comparison = finished_comparison(args.out)
    else:
        prepare(ROOT / "runs" / "r8k", args.train_size)
        comparison = run_compare(args.out, [name for name in args.strategies.split(",") if name])
    rows = {row["strategy"]: row for row in comparison["rows"]}
    summary = {
        "bench": "restaurant8k",
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "train_size": args.train_size,
        "targets": targets(rows, args.out / "restaurant8k" / "runs"),
        "leaderboard": comparison["rows"],
        "compare_wall_s": comparison["compare_wall_s"],
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
