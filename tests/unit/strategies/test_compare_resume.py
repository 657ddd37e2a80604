"""A ``compare`` killed mid-run resumes that run from its checkpoint and ends where an
uninterrupted run ends: the same eval metrics and the same per-example probabilities.

The kill is real: a child process runs ``compare`` and sends itself SIGKILL the moment the
training loop has committed its first checkpoint (the end of epoch 1 of 2), so nothing after
that point (epoch 2, the eval, the manifest) is written. The second ``compare`` finds the run
unfinished, with a checkpoint and the same ``config.yaml``, and resumes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file
from tests.unit.strategies.test_compare import experiment

from adaptlab.compare import compare

TRAIN = {"num_epochs": 2, "micro_batch_size": 8, "learning_rate": 1e-3, "warmup_ratio": 0.0}

CHILD = """
import json, os, signal, sys
import adaptlab.train.loop as loop
from adaptlab.compare import compare
from adaptlab.config import ExperimentConfig

real_save = loop._save_checkpoint

def save_then_die(run):
    real_save(run)
    os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: as a crash or an OOM kill

loop._save_checkpoint = save_then_die
compare(ExperimentConfig.model_validate(json.loads(sys.argv[1])), ["full"], log=print)
"""


def the_experiment(tmp_path: Path, tiny_encoder: Path, out: str) -> Any:
    config = experiment(tmp_path, tiny_encoder, train=TRAIN)
    return config.model_copy(update={"output_dir": str(tmp_path / out)})


def outcome(folder: Path) -> tuple[dict[str, Any], np.ndarray]:
    evaluation = json.loads((folder / "eval.json").read_text())
    predictions = load_file(str(folder / "predictions.safetensors"))
    return evaluation, predictions["probabilities"]


def test_a_killed_compare_resumes_its_run_and_ends_as_an_uninterrupted_one(
    tmp_path: Path, tiny_encoder: Path
) -> None:
    uninterrupted = compare(the_experiment(tmp_path, tiny_encoder, "straight"), ["full"], log=str)
    killed = the_experiment(tmp_path, tiny_encoder, "killed")
    payload = json.dumps(killed.model_dump(mode="json"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, payload], capture_output=True, text=True, env=env, timeout=120
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    run = tmp_path / "killed" / "tiny" / "runs" / "full"
    assert (run / "checkpoint").is_dir() and not (run / "manifest.json").exists()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    checkpoint_step = state["position"]["global_step"]
    assert 0 < checkpoint_step == max(steps)  # killed right after epoch 1's checkpoint

    logs: list[str] = []
    resumed = compare(killed, ["full"], log=logs.append)

    assert "[full] resuming the interrupted run from its checkpoint" in logs
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == sorted({r["step"] for r in rows})
    straight, probabilities = outcome(uninterrupted.folder / "runs" / "full")
    after, resumed_probabilities = outcome(resumed.folder / "runs" / "full")
    assert after["metrics"] == straight["metrics"]
    assert after["accuracy_ci"] == straight["accuracy_ci"]
    np.testing.assert_array_equal(resumed_probabilities, probabilities)
    assert not (run / "checkpoint").exists()  # a finished run keeps no checkpoint
