"""Two ``adaptlab compare`` processes on one experiment folder: one runs, the other is refused
at once naming the first, and nothing is corrupted.

Both are real command-line processes. They import everything, say they are ready, and start
``compare`` when a go-file appears: both at that instant, or the second once the first has
reached a stage (its data folder, its first metrics row, its first checkpoint exist: while it
prepares data or trains, the windows in which two writers once broke ``metrics.jsonl`` or
deleted each other's run). The winner's runs must then
equal those of a run made alone: the same metrics and per-example probabilities, every
``metrics.jsonl`` row whole and every step once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file
from tests.unit.strategies.test_compare import experiment

TRAIN = {"num_epochs": 2, "micro_batch_size": 8, "learning_rate": 1e-3, "warmup_ratio": 0.0}
RUNS = ["full"]  # it trains: the metrics rows and checkpoints two writers once broke
CHILD = """
import sys, time
from pathlib import Path
import adaptlab.compare  # the command imports it on first use: seconds, before the lock
from adaptlab.cli import main
go, after = Path(sys.argv[1]), sys.argv[2]
print("ready", flush=True)
while not go.exists() or (after and not Path(after).exists()):
    time.sleep(0.005)
sys.argv = ["adaptlab", *sys.argv[3:]]
main()
"""


def start(go: Path, after: str, config: Path, cache: Path) -> subprocess.Popen[str]:
    """A ``compare`` process that starts once ``go`` exists and then ``after`` (a path the
    other writer creates at a known stage; empty: at once)."""
    args = ["compare", str(config), *[f"--strategy={name}" for name in RUNS]]
    env = {**os.environ, "ADAPTLAB_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(go), after, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    return child


def outcome(folder: Path) -> dict[str, tuple[dict[str, Any], np.ndarray]]:
    result = {}
    for name in RUNS:
        run = folder / "runs" / name
        metrics = json.loads((run / "eval.json").read_text())["metrics"]
        result[name] = (metrics, load_file(str(run / "predictions.safetensors"))["probabilities"])
    return result


def assert_whole(folder: Path) -> None:
    """Every JSON file parses; every metrics row is whole and each step comes once, in order."""
    for path in folder.rglob("*.json"):
        json.loads(path.read_text())
    for path in folder.rglob("metrics.jsonl"):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        steps = [row["step"] for row in rows if "loss" in row]
        assert steps == sorted(set(steps)), f"{path}: steps {steps}"


def race(
    root: Path, tiny_encoder: Path, moments: list[str]
) -> tuple[Path, list[int], list[int], list[str]]:
    """``compare`` in one process per moment, all on one experiment folder under ``root``; a
    moment is a path inside the experiment folder the process waits for ("": none)."""
    root.mkdir()
    config = experiment(root, tiny_encoder, train=TRAIN)
    path = root / "experiment.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_unset=True)))
    go = root / "go"
    folder = Path(config.output_dir) / config.name
    children = [
        start(go, str(folder / moment) if moment else "", path, root / "cache")
        for moment in moments
    ]
    go.touch()
    outputs = []
    for child in children:
        out, _ = child.communicate(timeout=300)
        outputs.append(out)
    codes, pids = [c.returncode for c in children], [c.pid for c in children]
    return Path(config.output_dir) / config.name, codes, pids, outputs


@pytest.fixture(scope="module")
def alone(
    tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path
) -> dict[str, tuple[dict[str, Any], np.ndarray]]:
    """The same compare, by the same command, with no other writer."""
    root = tmp_path_factory.mktemp("alone") / "alone"
    folder, codes, _, outputs = race(root, tiny_encoder, [""])
    assert codes == [0], outputs[0]
    return outcome(folder)


def check_race(
    tmp_path: Path,
    tiny_encoder: Path,
    moment: str,
    alone: dict[str, tuple[dict[str, Any], np.ndarray]],
) -> None:
    started = time.perf_counter()
    folder, codes, pids, outputs = race(tmp_path / "race", tiny_encoder, ["", moment])
    assert codes.count(0) == 1, f"second at {moment!r}: exit codes {codes}\n" + "\n".join(outputs)
    winner = codes.index(0)
    loser = outputs[1 - winner]
    assert f"is being written by adaptlab compare (PID {pids[winner]}, started " in loser, loser
    assert_whole(folder)
    got = outcome(folder)
    for name in RUNS:
        assert got[name][0] == alone[name][0], f"second at {moment!r}: {name} metrics differ"
        np.testing.assert_array_equal(got[name][1], alone[name][1])
    assert time.perf_counter() - started < 300


@pytest.mark.fault  # the unit tier's sample: test_compare_one_writer.py, against a held lock
def test_two_compares_started_together(
    tmp_path: Path, tiny_encoder: Path, alone: dict[str, tuple[dict[str, Any], np.ndarray]]
) -> None:
    check_race(tmp_path, tiny_encoder, "", alone)


@pytest.mark.fault
@pytest.mark.parametrize("moment", ["runs/full/metrics.jsonl"], ids=["training"])
def test_a_second_compare_while_the_first_is_under_way(
    tmp_path: Path,
    tiny_encoder: Path,
    alone: dict[str, tuple[dict[str, Any], np.ndarray]],
    moment: str,
) -> None:
    check_race(tmp_path, tiny_encoder, moment, alone)
