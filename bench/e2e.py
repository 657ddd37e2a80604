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

import json
import platform
from pathlib import Path
from typing import Any

from benchlib import ROOT, arguments, comparison_for, paired

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
    args = arguments(__doc__.splitlines()[0])
    if not args.no_run:
        prepare()
    comparison = comparison_for(args, "e2e.yaml", EXPERIMENT)
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
