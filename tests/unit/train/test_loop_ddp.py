"""Two CPU processes (torchrun, gloo) train to the same weights as one process with the same
global batch: micro-batch 2 x 2 processes == micro-batch 4 x 1 process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from adaptlab_tests_train_tiny_task import ddp_config, ddp_task, trainable_state
from safetensors.torch import load_file

from adaptlab.train.loop import METRICS_FILE, train

WORKER = Path(__file__).with_name("ddp_worker.py")


def train_losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]
    return [row["loss"] for row in rows if row["kind"] == "train"]


@pytest.mark.integration  # two interpreters importing torch and transformers: ~15 s
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(WORKER), str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]

    task = ddp_task()
    single = train(task, ddp_config(micro_batch_size=4), tmp_path / "single", show_progress=False)
    expected = trainable_state(task.model)

    results = json.loads((tmp_path / "results.json").read_text())
    assert results["world_size"] == 2
    assert results["straight"]["steps"] == single.steps == 12
    assert results["straight"]["best_step"] == single.best_step == 12
    straight = load_file(tmp_path / "straight.safetensors")
    for name, value in expected.items():
        # Not bit-identical: gloo sums the two halves' gradients in another order.
        torch.testing.assert_close(straight[name], value, atol=1e-6, rtol=1e-5, msg=name)
    assert train_losses(tmp_path / "straight") == pytest.approx(
        train_losses(tmp_path / "single"), abs=1e-6
    )
    # Resume under two processes is exact, as it is under one.
    resumed = load_file(tmp_path / "resumed.safetensors")
    assert all(torch.equal(resumed[name], value) for name, value in straight.items())
    assert {path.name for path in (tmp_path / "resumed" / "checkpoint").glob("rng_rank*")} == {
        "rng_rank0.json", "rng_rank0.safetensors", "rng_rank1.json", "rng_rank1.safetensors",
    }  # fmt: skip
