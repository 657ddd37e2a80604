"""Benchmark: free-text generation on E2E NLG with SmolLM2-135M, against the challenge's TGen.

    python bench/e2e.py [--strategies a,b] [--out DIR] [--no-run]

1. ``adaptlab data convert e2e_nlg`` (in process) of ../shared/data/e2e_nlg/test_multiref.jsonl:
   the official test set's 630 MRs as chat records with every reference (runs/e2e/test.jsonl).
2. ``adaptlab compare configs/e2e.yaml`` (training on the dev set's 4,266 pairs, read in place);
   every strategy answers the same fixed sample of the test MRs (``eval_limit``), each scored
   against all its references.

Prints one JSON object: the leaderboard rows (BLEU, ROUGE-L, chrF++, embedding similarity with
intervals, latency, cost), the targets of issue 14 (the best fine-tuned run against TGen's BLEU
and ROUGE-L; few_shot against prompt, paired bootstrap), and the wall time. bench/RESULTS.md
records it with the command and the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "e2e_nlg"
EXPERIMENT = "e2e"
FINE_TUNED = ("sft_full", "sft_lora")
TGEN = {"bleu": 0.6593, "rougeL": 0.6850}
"""The challenge baseline, trained on the full 42k training set (Dušek et al., "Findings of
the E2E NLG Challenge", INLG 2018), on 0-1 as adaptlab records scores. The challenge's ROUGE-L
is the MS-COCO scorer's, close to but not the same as rouge-score's stemmed F1."""
METRICS = ("bleu", "rougeL", "chrf", "embedding_similarity")


def prepare() -> None:
    from adaptlab.data.convert import convert_e2e_nlg

    folder = ROOT / "runs" / "e2e"
    folder.mkdir(parents=True, exist_ok=True)
    convert_e2e_nlg(DATA / "test_multiref.jsonl", folder / "test.jsonl")


def run_compare(out: Path, only: list[str]) -> dict[str, Any]:
    start = time.perf_counter()
    command = ["adaptlab", "compare", str(ROOT / "configs" / "e2e.yaml")]
    command += ["--output-dir", str(out)] + [f"--strategy={name}" for name in only]
    subprocess.run(command, check=True, cwd=ROOT)
    comparison: dict[str, Any] = json.loads((out / EXPERIMENT / "comparison.json").read_text())
    comparison["compare_wall_s"] = round(time.perf_counter() - start, 1)
    return comparison


def finished_comparison(out: Path) -> dict[str, Any]:
    """The leaderboard of every finished run in the experiment folder, running nothing."""
    from adaptlab.comparison import build_comparison
    from adaptlab.config import CompareConfig

    folders = sorted(p.parent for p in (out / EXPERIMENT / "runs").glob("*/manifest.json"))
    comparison, problems = build_comparison(folders, CompareConfig())
    comparison["problems"] = problems
    comparison["compare_wall_s"] = None
    return comparison


def paired(runs: Path, a: str, b: str, metric: str) -> dict[str, Any] | None:
    """``metric`` of run ``a`` minus run ``b`` on their shared eval items, paired bootstrap."""
    from adaptlab.comparison import paired_difference
    from adaptlab.config import CompareConfig
    from adaptlab.runs import read_run

    difference = paired_difference(read_run(runs / a), read_run(runs / b), CompareConfig(), metric)
    return None if difference is None else difference.to_dict()


def targets(rows: dict[str, dict[str, Any]], runs: Path) -> dict[str, Any]:
    """Issue 14's targets from the finished runs."""
    result: dict[str, Any] = {}
    tuned = [rows[name] for name in FINE_TUNED if name in rows]
    if tuned:
        best = max(tuned, key=lambda row: row["bleu"])
        result["best_fine_tuned"] = {
            "strategy": best["strategy"],
            **{metric: best[metric] for metric in METRICS},
            "bleu_vs_tgen": best["bleu"] - TGEN["bleu"],
            "rougeL_vs_tgen": best["rougeL"] - TGEN["rougeL"],
            "at_or_above_tgen_bleu": best["bleu"] >= TGEN["bleu"],
        }
    if "few_shot" in rows and "prompt" in rows:
        result["few_shot_minus_prompt"] = {
            metric: paired(runs, "few_shot", "prompt", metric) for metric in METRICS
        }
    teachers = [rows[name] for name in FINE_TUNED if name in rows]
    if "distill_seq" in rows and teachers:
        teacher = max(teachers, key=lambda row: row["rougeL"])
        student = rows["distill_seq"]
        result["distill_seq"] = {
            "teacher": teacher["strategy"],
            "rougeL_kept": student["rougeL"] / teacher["rougeL"],
            "batch1_speedup": teacher["latency_batch1_p50_ms"] / student["latency_batch1_p50_ms"],
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
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
        prepare()
        comparison = run_compare(args.out, [name for name in args.strategies.split(",") if name])
    rows = {row["strategy"]: row for row in comparison["rows"]}
    summary = {
        "bench": EXPERIMENT,
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "anchor_tgen": TGEN,
        "targets": targets(rows, args.out / EXPERIMENT / "runs"),
        "leaderboard": comparison["rows"],
        "compare_wall_s": comparison["compare_wall_s"],
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
