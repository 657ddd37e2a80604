"""Run by test_loop_ddp.py under ``torchrun --nproc_per_node 2``: the tiny classifier trained
on two CPU processes (gloo), once straight through and once stopped after 3 steps and resumed.

Usage: ddp_worker.py OUT_DIR — writes OUT_DIR/{straight,resumed}.safetensors from rank 0.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save_file
from tiny_task import ddp_config, ddp_task, trainable_state

from adaptlab.train.loop import train


def main(out_dir: Path) -> None:
    torch.set_num_threads(1)
    config = ddp_config(micro_batch_size=2)
    runs = {}

    task = ddp_task()
    runs["straight"] = train(task, config, out_dir / "straight", show_progress=False)
    weights = {"straight": trainable_state(task.model)}

    train(ddp_task(), config, out_dir / "resumed", stop_after_steps=3, show_progress=False)
    task = ddp_task()
    runs["resumed"] = train(task, config, out_dir / "resumed", resume=True, show_progress=False)
    weights["resumed"] = trainable_state(task.model)

    rank = torch.distributed.get_rank()
    if rank == 0:
        for name, tensors in weights.items():
            save_file(tensors, out_dir / f"{name}.safetensors")
        results = {name: asdict(result) for name, result in runs.items()}
        (out_dir / "results.json").write_text(
            json.dumps({"world_size": torch.distributed.get_world_size(), **results})
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
