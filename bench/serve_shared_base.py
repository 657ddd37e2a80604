"""Memory and answers of several LoRA adapter runs of one base held by one process.

Opens the given run folders the way ``adaptlab serve`` does, once with each run loading its own
copy of the base (``separate``: the adapter merged into it, what ``adaptlab predict`` does for
one run) and once with the adapters sharing one loaded base (``shared``: what the server does),
each in a fresh process. Records per mode the resident set after imports, its growth after
loading and after answering (weights are memory-mapped, so only the second surely counts them
all), the load time, and each run's answers to the first ``--requests`` eval questions of its
experiment (asked in turn, one run after the other, so the shared base switches adapters on
every request), with the latency of each answer. The two modes' answers are compared.

    python bench/serve_shared_base.py runs/bench/e2e/runs/sft_lora \
        runs/bench/covidqa/runs/sft_lora runs/bench/covidqa/runs/rag_sft --requests 5

Prints a JSON summary; ``--out FILE`` also writes it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

MODES = ("separate", "shared")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="Adapter run folders of one base.")
    parser.add_argument("--requests", type=int, default=5, help="Eval questions per run.")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args()


def requests_of(run: Path, count: int) -> list[list[dict[str, str]]]:
    """The first ``count`` eval questions of the run's experiment (its reference dropped)."""
    rows = (run.parent.parent / "data" / "eval.jsonl").read_text(encoding="utf-8").splitlines()
    asked = []
    for line in rows[:count]:
        messages = json.loads(line)["messages"]
        asked.append(messages[:-1] if messages[-1]["role"] == "assistant" else messages)
    return asked


def child(mode: str, runs: list[Path], count: int) -> dict[str, Any]:
    from adaptlab import predict
    from adaptlab.cost.memory import current_rss_bytes
    from adaptlab.models.shared_base import SharedBases

    result: dict[str, Any] = {"mode": mode, "rss_after_imports": current_rss_bytes()}
    bases = SharedBases() if mode == "shared" else None
    with ExitStack() as stack:
        started = time.perf_counter()
        loaded = [stack.enter_context(predict.open_model(run, bases=bases)) for run in runs]
        result["load_s"] = time.perf_counter() - started
        result["rss_after_load"] = current_rss_bytes()
        asked = {str(run): requests_of(run, count) for run in runs}
        answers: dict[str, list[str]] = {str(run): [] for run in runs}
        latencies = []
        for index in range(count):
            for run, model in zip(runs, loaded, strict=True):
                started = time.perf_counter()
                (answer,) = predict.answer(model, [asked[str(run)][index]])
                latencies.append(time.perf_counter() - started)
                answers[str(run)].append(answer.text)
        result["rss_after_answers"] = current_rss_bytes()
        result["answers"] = answers
        result["latency_s"] = latencies
    return result


def main() -> None:
    args = arguments()
    if args.child:
        print(json.dumps(child(args.child, args.runs, args.requests)))
        return
    measured = {}
    for mode in MODES:
        command = [sys.executable, __file__, *map(str, args.runs), "--requests", str(args.requests)]
        done = subprocess.run([*command, "--child", mode], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{mode}: exit {done.returncode}\n{done.stderr[-4000:]}")
        measured[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    mib = 1024 * 1024
    summary: dict[str, Any] = {"runs": [str(run) for run in args.runs]}
    for mode, result in measured.items():
        latencies = sorted(result["latency_s"])
        imports = result["rss_after_imports"]
        summary[mode] = {
            # Weights are memory-mapped: pages count once read, so the figure after answering
            # is the one that holds the weights; after loading alone it may not.
            "rss_after_imports_mib": round(imports / mib),
            "grown_after_load_mib": round((result["rss_after_load"] - imports) / mib),
            "grown_after_answers_mib": round((result["rss_after_answers"] - imports) / mib),
            "load_s": round(result["load_s"], 1),
            "answer_p50_s": round(latencies[len(latencies) // 2], 2),
        }
    separate, shared = (measured[mode]["answers"] for mode in MODES)
    summary["answers_equal"] = {run: separate[run] == shared[run] for run in separate}
    summary["answers_compared"] = sum(len(texts) for texts in separate.values())
    summary["answers_differing"] = sum(
        a != b for run in separate for a, b in zip(separate[run], shared[run], strict=True)
    )
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
