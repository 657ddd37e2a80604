"""Benchmark: every classification strategy on banking77 (full data), with the hand-written
anchors run in the same session on the same machine, reported as ratios.

    python bench/banking77.py [--skip-compare] [--strategies a,b] [--anchors probe,trainer,setfit]
                              [--anchors-from EARLIER.json] [--anchor-python PY] [--out DIR]

1. ``adaptlab compare configs/banking77.yaml`` with cold embedding and ONNX caches (so
   ``frozen`` pays for its embeddings, as the anchor does).
2. ``../shared/anchors/linear_probe.py``: sentence-transformers encode + LogisticRegression.
   Ratio: ``frozen`` fit time (embed train + fit head; its one-time ONNX export of the base
   model reported apart, as the anchor's model loading is) / anchor (embed train + fit).
3. ``../shared/anchors/hf_trainer_full.py``: HF Trainer on the same model, batch 32, dynamic
   padding, length grouping. Ratio: our ``full`` seconds per optimizer step / theirs.
4. ``../shared/anchors/setfit_fewshot.py DATA 10``: the SetFit library (needs ``pip install
   setfit``; not a project dependency). Compared with our ``setfit_k10``.

Prints one JSON object; bench/RESULTS.md records it with the command and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared"
DATA = SHARED / "data" / "banking77"


def run_json(command: list[str]) -> dict[str, Any]:
    """Run an anchor script and parse the last JSON line it prints."""
    start = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    result: dict[str, Any] = json.loads(lines[-1])
    result["process_wall_s"] = round(time.perf_counter() - start, 1)
    return result


def run_compare(out: Path, only: list[str]) -> dict[str, Any]:
    from adaptlab.paths import cache_dir

    # Cold caches, like the anchor: embeddings and exported ONNX graphs are computed again.
    shutil.rmtree(cache_dir() / "embeddings", ignore_errors=True)
    shutil.rmtree(cache_dir() / "onnx", ignore_errors=True)
    start = time.perf_counter()
    command = ["adaptlab", "compare", str(ROOT / "configs" / "banking77.yaml")]
    # One seed, as each anchor trains once: the preset's second seed would double the wall time.
    command += ["--output-dir", str(out), "--repeat", "1"] + [f"--strategy={name}" for name in only]
    subprocess.run(command, check=True)
    wall = time.perf_counter() - start
    comparison: dict[str, Any] = json.loads((out / "banking77" / "comparison.json").read_text())
    comparison["compare_wall_s"] = round(wall, 1)
    return comparison


def cost(out: Path, name: str) -> dict[str, Any]:
    path = out / "banking77" / "runs" / name / "cost.json"
    return json.loads(path.read_text()) if path.exists() else {}


def row(comparison: dict[str, Any], name: str) -> dict[str, Any]:
    return next((r for r in comparison.get("rows", []) if r["strategy"] == name), {})


def ratios(comparison: dict[str, Any], anchors: dict[str, Any], out: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}
    probe = anchors.get("probe", {})
    frozen = cost(out, "frozen")
    if "acc_full" in probe and frozen:
        anchor_s = probe["embed_train_s"] + probe["fit_full_s"]
        # The one-time ONNX export/quantisation of the base model is shown apart, as the
        # anchor's model loading is: it is paid once per base model, not per fit.
        build_s = frozen.get("onnx_build_s", 0.0)
        result["frozen_fit_s"] = round(frozen["fit_wall_s"] - build_s, 2)
        result["frozen_onnx_build_s"] = build_s
        result["anchor_probe_s"] = round(anchor_s, 2)
        result["frozen_time_over_anchor"] = round(result["frozen_fit_s"] / anchor_s, 3)
        result["frozen_accuracy"] = row(comparison, "frozen").get("accuracy")
        result["anchor_probe_accuracy"] = probe["acc_full"]
    trainer = anchors.get("trainer", {})
    full = cost(out, "full")
    if "s_per_step" in trainer and full.get("train_steps"):
        ours = full["train_wall_s"] / full["train_steps"]
        result["full_step_s"] = round(ours, 4)
        result["full_step_over_hf_trainer"] = round(ours / trainer["s_per_step"], 3)
        result["hf_trainer_accuracy"] = trainer["acc"]
    setfit = anchors.get("setfit")
    if setfit:
        result["setfit_library"] = setfit
        result["setfit_k10_accuracy"] = row(comparison, "setfit_k10").get("accuracy")
    teacher = comparison.get("rows") and _distill_ratio(comparison)
    if teacher:
        result.update(teacher)
    return result


def _distill_ratio(comparison: dict[str, Any]) -> dict[str, Any]:
    student = row(comparison, "distill")
    teachers = [row(comparison, n) for n in ("full", "lora", "partial")]
    teachers = [t for t in teachers if t]
    if not student or not teachers:
        return {}
    teacher = max(teachers, key=lambda t: t["accuracy"])
    return {
        "distill_teacher": teacher["strategy"],
        "distill_accuracy_kept": round(student["accuracy"] / teacher["accuracy"], 4),
        "distill_batch1_speedup": round(
            teacher["latency_batch1_p50_ms"] / student["latency_batch1_p50_ms"], 2
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--skip-compare", action="store_true")
    parser.add_argument(
        "--strategies",
        default="",
        help="Comma-separated runs to (re)do first; up-to-date runs are reused either way.",
    )
    parser.add_argument("--anchors", default="probe,trainer,setfit")
    parser.add_argument(
        "--anchors-from",
        type=Path,
        help="A previous run's printed JSON: its anchors are reused (marked as such) for those "
        "not run now, so slow anchors can be measured once in a quiet window.",
    )
    parser.add_argument(
        "--anchor-python",
        default=sys.executable,
        help="Interpreter for the anchors (the SetFit library lives in its own venv).",
    )
    args = parser.parse_args()
    only = [name for name in args.strategies.split(",") if name]
    comparison = {} if args.skip_compare else run_compare(args.out, only)
    if args.skip_compare and (args.out / "banking77" / "comparison.json").exists():
        comparison = json.loads((args.out / "banking77" / "comparison.json").read_text())
    anchors: dict[str, Any] = {}
    scripts = {
        "probe": [args.anchor_python, str(SHARED / "anchors" / "linear_probe.py"), str(DATA)],
        "trainer": [
            args.anchor_python,
            str(SHARED / "anchors" / "hf_trainer_full.py"),
            str(DATA),
            str(args.out / "hf_trainer"),
        ],
        "setfit": [
            args.anchor_python,
            str(SHARED / "anchors" / "setfit_fewshot.py"),
            str(DATA),
            "10",
        ],
    }
    for name in filter(None, args.anchors.split(",")):
        try:
            anchors[name] = run_json(scripts[name])
        except (subprocess.CalledProcessError, KeyError) as exc:
            anchors[name] = {"error": str(exc)[:300]}
    if args.anchors_from:
        earlier = json.loads(args.anchors_from.read_text())["anchors"]
        for name, result in earlier.items():
            anchors.setdefault(name, {**result, "from": str(args.anchors_from)})
    summary = {
        "bench": "banking77",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "anchors": anchors,
        "ratios": ratios(comparison, anchors, args.out),
        "leaderboard": comparison.get("rows", []),
        "compare_wall_s": comparison.get("compare_wall_s"),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
