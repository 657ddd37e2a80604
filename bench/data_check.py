"""Benchmark: `adaptlab data check` on banking77 (train 10,003 + test 3,080), wall time.

Acceptance budget (issue 2): under 60 s on the 2-core development machine. Runs the real CLI in a
fresh process, so model and library import time count, as they do for a user. Prints one JSON
line with the timing and the headline counts.

    python bench/data_check.py [../shared/data/banking77]
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else root / ".." / "shared" / "data" / "banking77"
    with tempfile.TemporaryDirectory() as out:
        command = [
            "adaptlab",
            "data",
            "check",
            str(data / "train.csv"),
            "--eval",
            str(data / "test.csv"),
            "--out",
            out,
        ]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        report = json.loads((Path(out) / "data_report.json").read_text())
    print(
        json.dumps(
            {
                "bench": "data_check_banking77",
                "wall_s": round(seconds, 2),
                "budget_s": 60,
                "train_exact_groups": report["duplicates"]["train"]["exact_groups"],
                "train_near_groups": report["duplicates"]["train"]["near_groups"],
                "train_dropped": report["duplicates"]["train"]["dropped"],
                "eval_in_train": report["contamination"]["eval_items"],
                "eval_in_train_exact": report["contamination"]["exact"],
                "classes": report["labels"]["classes"],
                "train_tokens_p50_p95": [
                    report["tokens"]["train"]["p50"],
                    report["tokens"]["train"]["p95"],
                ],
                "machine": f"{platform.machine()}, {platform.python_version()}",
            }
        )
    )


if __name__ == "__main__":
    main()
