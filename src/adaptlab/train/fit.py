"""One strategy run through the shared loop, and the cost facts it leaves in the run.

Every trainable strategy's fit ends the same way: seed, train (resuming an interrupted run),
drop the resume checkpoint, record parameters, steps, time and throughput for ``cost.json``.
``fit_classifier`` and ``fit_causal_lm`` build the :class:`TrainTask`; this runs it.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from adaptlab.train.loop import TrainResult, TrainTask, train

if TYPE_CHECKING:  # importing strategies.base at run time would import every strategy
    from adaptlab.strategies.base import RunContext


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def run_loop(run: RunContext[Any], task: TrainTask) -> TrainResult:
    """Train ``task.model`` with the run's settings into its folder; record what it cost."""
    torch.manual_seed(run.train.seed)
    result = train(task, run.train, run.folder, resume=run.resume, show_progress=True)
    # The checkpoint (weights + optimizer state) exists to resume an interrupted run; once the
    # run is complete the strategy saves its own artefacts and the checkpoint is dead weight.
    shutil.rmtree(run.folder / "checkpoint", ignore_errors=True)
    trainable, total = parameter_counts(task.model)
    run.record(
        trainable_params=trainable,
        total_params=total,
        train_steps=result.steps,
        train_wall_s=round(result.wall_time_s, 2),
        train_examples_per_s=round(result.examples_per_s, 1),
        skipped_steps=result.skipped_steps,
    )
    return result
