"""One strategy run through the shared loop, and the cost facts it leaves in the run.

Every trainable strategy's fit ends the same way: seed, train (resuming an interrupted run),
drop the resume checkpoint, record parameters, steps, time and throughput for ``cost.json``.
``fit_classifier`` and ``fit_causal_lm`` build the :class:`TrainTask`; this runs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from adaptlab.train.checkpoint import remove_checkpoint
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
    if not run.resume:  # a fresh run starts over: a checkpoint left by an earlier fit is stale
        remove_checkpoint(run.folder)
    result = train(task, run.train, run.folder, resume=run.resume, show_progress=True)
    # The checkpoint stays until the run is committed (compare removes it after the manifest):
    # a crash while the strategy saves or the run is evaluated then resumes without retraining.
    trainable, total = parameter_counts(task.model)
    if result.earlier_wall_time_s:
        run.record(resumed_after_train_s=round(result.earlier_wall_time_s, 2))
    run.record(
        trainable_params=trainable,
        total_params=total,
        train_steps=result.steps,
        train_wall_s=round(result.wall_time_s + result.earlier_wall_time_s, 2),
        train_examples_per_s=round(result.examples_per_s, 1),
        skipped_steps=result.skipped_steps,
    )
    return result
