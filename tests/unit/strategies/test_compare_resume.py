"""A ``compare`` killed mid-run resumes that run from its checkpoint and ends where an
uninterrupted run ends: the same eval metrics and the same per-example probabilities.

The kill is real: a child process runs ``compare`` and sends itself SIGKILL the moment the
training loop has committed its first checkpoint (the end of epoch 1 of 2), or once training
is over and the eval begins, so nothing after that point is written. The second ``compare``
finds the run unfinished, with a checkpoint and the same ``config.yaml``, and resumes: from
epoch 2, or with nothing left to train (the checkpoint is removed only after the manifest).
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
import adaptlab.compare
import adaptlab.train.loop as loop
from adaptlab.config import ExperimentConfig

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: as a crash or an OOM kill

if sys.argv[2] == "after-first-checkpoint":
    real_save = loop._save_checkpoint
    loop._save_checkpoint = lambda run: (real_save(run), die())
else:  # "while-evaluating": trained and saved, nothing of the eval written
    adaptlab.compare._evaluate = die
experiment = ExperimentConfig.model_validate(json.loads(sys.argv[1]))
adaptlab.compare.compare(experiment, ["full"], log=print)
"""


def the_experiment(tmp_path: Path, tiny_encoder: Path, out: str) -> Any:
    config = experiment(tmp_path, tiny_encoder, train=TRAIN)
    return config.model_copy(update={"output_dir": str(tmp_path / out)})


def outcome(folder: Path) -> tuple[dict[str, Any], np.ndarray]:
    evaluation = json.loads((folder / "eval.json").read_text())
    predictions = load_file(str(folder / "predictions.safetensors"))
    return evaluation, predictions["probabilities"]


def kill_compare_at(moment: str, experiment: Any) -> Path:
    """Run ``compare`` of ``full`` in a child process that SIGKILLs itself at ``moment``."""
    payload = json.dumps(experiment.model_dump(mode="json"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, payload, moment],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    return Path(experiment.output_dir) / experiment.name / "runs" / "full"


def test_a_killed_compare_resumes_its_run_and_ends_as_an_uninterrupted_one(
    tmp_path: Path, tiny_encoder: Path
) -> None:
    uninterrupted = compare(the_experiment(tmp_path, tiny_encoder, "straight"), ["full"], log=str)
    killed = the_experiment(tmp_path, tiny_encoder, "killed")
    run = kill_compare_at("after-first-checkpoint", killed)
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
    assert not (run / "checkpoint").exists()  # a committed run keeps no checkpoint
    cost = json.loads((run / "cost.json").read_text())
    assert cost["resumed_after_train_s"] > 0  # training time before the kill counts
    assert cost["fit_wall_s"] >= cost["resumed_after_train_s"]


def test_a_compare_killed_while_evaluating_does_not_train_again(
    tmp_path: Path, tiny_encoder: Path
) -> None:
    uninterrupted = compare(the_experiment(tmp_path, tiny_encoder, "straight"), ["full"], log=str)
    killed = the_experiment(tmp_path, tiny_encoder, "killed")
    run = kill_compare_at("while-evaluating", killed)
    assert (run / "checkpoint").is_dir() and not (run / "eval.json").exists()
    rows_before = (run / "metrics.jsonl").read_text()

    logs: list[str] = []
    resumed = compare(killed, ["full"], log=logs.append)

    assert "[full] resuming the interrupted run from its checkpoint" in logs
    assert (run / "metrics.jsonl").read_text() == rows_before  # no step trained again
    straight, probabilities = outcome(uninterrupted.folder / "runs" / "full")
    after, resumed_probabilities = outcome(resumed.folder / "runs" / "full")
    assert after["metrics"] == straight["metrics"]
    np.testing.assert_array_equal(resumed_probabilities, probabilities)
    assert not (run / "checkpoint").exists()
