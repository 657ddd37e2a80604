"""The one training loop every trainable strategy uses.

A strategy describes only what is special about it in a :class:`TrainTask` (the model with its
trainable parameters marked, the data, how to collate it and the loss); :func:`train` does the
rest: length-grouped batches with dynamic padding, AdamW with warmup and decay, gradient
accumulation and clipping, bf16 autocast on CUDA, several processes under ``accelerate launch``
or ``torchrun`` (through accelerate), periodic evaluation with early stopping and best weights,
non-finite loss handling, ``metrics.jsonl``, a progress bar, and checkpoints that resume to
bit-identical weights on CPU.

Checkpoints are taken at optimizer-step boundaries only. An interruption inside a gradient
accumulation cycle (or anywhere else) loses the steps since the last checkpoint; resuming
replays them from the same data order and random state, so the result does not change.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast, set_seed
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from adaptlab.config import TrainConfig
from adaptlab.paths import atomic_write
from adaptlab.safeload import check_before_load
from adaptlab.train import checkpoint
from adaptlab.train.batching import batch_count, epoch_batches, shard

METRICS_FILE = "metrics.jsonl"
MAX_CONSECUTIVE_NON_FINITE = 3
_CHECKPOINT_FORMAT = 1

Batch = dict[str, torch.Tensor]
LossFunction = Callable[[torch.nn.Module, Batch], tuple[torch.Tensor, torch.Tensor | int]]


@dataclass
class TrainTask:
    """What a strategy hands to :func:`train`: the parts of training that are its own.

    ``loss(model, batch)`` returns the *sum* of per-item losses and the number of items (items
    are examples for a classification loss, target tokens for a language-model loss). The loop
    divides by the item count of the whole optimizer step — all micro-batches, all processes —
    so that batch 4 x accumulation 1 equals batch 1 x accumulation 4 and every target token
    weighs the same; averaging per micro-batch first weighs tokens of short micro-batches more
    (the gradient accumulation bug fixed in transformers 4.46 with ``num_items_in_batch``).
    Under several processes ``model`` is the DDP wrapper: call it, do not reach into it.
    """

    model: torch.nn.Module
    """Parameters with ``requires_grad=True`` are trained; nothing else changes."""
    train_data: Sequence[Mapping[str, Any]]
    """Tokenised examples."""
    collate: Callable[[list[Mapping[str, Any]]], Batch]
    """Examples to tensors, padded to the longest in the batch (see ``batching.pad_collate``)."""
    loss: LossFunction
    length: Callable[[Mapping[str, Any]], int]
    """An example's length in tokens, for length-grouped batches."""
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None
    """Metrics of the model on held-out data, run in eval mode without gradients; every
    process runs it on the whole held-out set and the main process's metric decides."""
    metric: str = "eval_loss"
    """The ``evaluate`` metric that decides early stopping and the best weights."""
    greater_is_better: bool = False


@dataclass(frozen=True)
class TrainResult:
    """What a call of :func:`train` did. Time, throughput and memory cover this call only."""

    steps: int
    epochs: float
    best_metric: float | None
    best_step: int | None
    skipped_steps: int
    stopped_early: bool
    completed: bool
    """False when ``stop_after_steps`` ended the call before the planned last step."""
    wall_time_s: float
    earlier_wall_time_s: float
    """Training time of the calls before this one resumed (0.0 for a fresh run): the run's
    whole training time is the sum."""
    examples_per_s: float
    peak_rss_bytes: int
    """Peak resident memory of the process (includes whatever ran before in it)."""
    peak_cuda_bytes: int | None


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient norm was NaN or infinite too many optimizer steps in a row."""

    def __init__(self, step: int, learning_rate: float) -> None:
        super().__init__(
            f"the loss or gradient norm was not finite for {MAX_CONSECUTIVE_NON_FINITE} optimizer "
            f"steps in a row, the last at step {step}; training stopped. Lower the learning rate "
            f"(it was {learning_rate:.3g}), set or lower max_grad_norm, or check the data for "
            "examples without targets."
        )
        self.step = step


@dataclass(frozen=True)
class Schedule:
    """The learning rate as a pure function of the optimizer step, so it needs no saved state.

    Warmup ramps linearly to the peak and reaches it at the last warmup step (the first step
    trains at ``peak / warmup_steps``, not at zero as in transformers); then the rate decays
    linearly or along a half cosine towards zero at ``total_steps``, or stays constant.
    """

    kind: Literal["linear", "cosine", "constant"]
    peak: float
    warmup_steps: int
    total_steps: int

    def learning_rate(self, step: int) -> float:
        """The rate of the optimizer step that follows ``step`` completed steps."""
        if step < self.warmup_steps:
            return self.peak * (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return self.peak
        progress = min(
            1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        )
        if self.kind == "cosine":
            return self.peak * 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.peak * (1.0 - progress)


@dataclass
class LoopState:
    """Where the loop is: everything besides tensors that resume needs (saved as JSON)."""

    epoch: int = 0
    batch_index: int = 0
    """The next micro-batch of the epoch; always the start of an accumulation cycle."""
    global_step: int = 0
    skipped_steps: int = 0
    consecutive_non_finite: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    evaluations_without_improvement: int = 0
    stopped_early: bool = False
    elapsed_s: float = 0.0


@dataclass
class _StepOutcome:
    loss_sum: float
    items: float
    grad_norm: float
    learning_rate: float
    examples: int
    seconds: float
    finite: bool


@dataclass
class _Window:
    """Totals since the last metrics row (and, in ``session``, since train() was called)."""

    steps: int = 0
    loss_sum: float = 0.0
    items: float = 0.0
    examples: int = 0
    seconds: float = 0.0
    """Time spent in optimizer steps, without evaluation and checkpointing."""

    def add(self, outcome: _StepOutcome) -> None:
        self.steps += 1
        if outcome.finite:
            self.loss_sum += outcome.loss_sum
            self.items += outcome.items
        self.examples += outcome.examples
        self.seconds += outcome.seconds


@dataclass
class _Run:
    """Everything one call of :func:`train` works with."""

    task: TrainTask
    config: TrainConfig
    run_dir: Path
    accelerator: Accelerator
    model: torch.nn.Module
    """As prepared by accelerate: a DDP wrapper under several processes."""
    parameters: dict[str, torch.nn.Parameter]
    optimizer: torch.optim.AdamW
    schedule: Schedule
    lengths: list[int]
    batches_per_epoch: int
    autocast_dtype: torch.dtype | None
    state: LoopState = field(default_factory=LoopState)
    best_weights: dict[str, torch.Tensor] | None = None
    window: _Window = field(default_factory=_Window)
    session: _Window = field(default_factory=_Window)
    started: float = field(default_factory=time.perf_counter)


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The parameters that ``requires_grad``, by name, in the model's order."""
    return {name: param for name, param in model.named_parameters() if param.requires_grad}


def build_optimizer(
    parameters: Mapping[str, torch.nn.Parameter], config: TrainConfig
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only.

    Biases and norm gains (every parameter with fewer than two dimensions) are not decayed:
    pulling a LayerNorm gain towards zero shrinks activations rather than regularising (the
    rule of nanoGPT's ``configure_optimizers`` and of BERT's original optimizer).
    """
    decay = [param for param in parameters.values() if param.dim() >= 2]
    no_decay = [param for param in parameters.values() if param.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # fused: one kernel for every parameter. PyTorch's default on a CPU is a Python loop over
    # the tensors, which cost a 6-layer MiniLM ~0.1 s per step (a fifth of the step) in a
    # profile; HF Trainer's default is the fused kernel too (adamw_torch_fused).
    return torch.optim.AdamW(
        groups, lr=config.learning_rate, betas=(0.9, 0.999), eps=1e-8, fused=True
    )


def train(
    task: TrainTask,
    config: TrainConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    checkpoint_steps: int | None = None,
    stop_after_steps: int | None = None,
    logging_steps: int = 1,
    show_progress: bool = True,
) -> TrainResult:
    """Train ``task.model`` in place and return what happened.

    ``run_dir`` receives ``metrics.jsonl`` (a row every ``logging_steps`` optimizer steps and
    after each evaluation) and ``checkpoint/``. A checkpoint is written every
    ``checkpoint_steps`` optimizer steps (default: at the end of each epoch) and when the run
    reaches ``stop_after_steps`` optimizer steps in all (counting those before a resume) and
    ends early, as a job's time limit would. ``resume=True`` continues from the checkpoint,
    given the same model construction, data and config. When ``evaluate`` is given the model
    is evaluated every ``eval_steps`` (default: each epoch) and at the last step, and ends with
    the weights of its best evaluation.
    """
    _check_positive(checkpoint_steps=checkpoint_steps, stop_after_steps=stop_after_steps)
    _check_positive(logging_steps=logging_steps)
    run = _prepare(task, config, Path(run_dir), resume=resume)
    total = run.schedule.total_steps
    last_step = total if stop_after_steps is None else min(total, stop_after_steps)
    is_main = run.accelerator.is_main_process
    metrics_path = run.run_dir / METRICS_FILE
    with (
        _metrics_log(metrics_path, enabled=is_main, append=resume) as write_row,
        _progress_bar(enabled=show_progress and is_main) as progress,
    ):
        bar = progress.add_task(
            "train", total=total, completed=run.state.global_step, **_bar_fields()
        )
        while _keep_going(run, last_step):
            batches = _batches(run, run.state.epoch)
            epoch = run.state.epoch
            while run.state.epoch == epoch and _keep_going(run, last_step):
                cycle = batches[run.state.batch_index :][: config.gradient_accumulation_steps]
                outcome = _optimizer_step(run, cycle)
                epoch_ended = _advance(run, outcome, len(cycle), len(batches))
                if run.state.global_step % logging_steps == 0 or run.state.global_step == last_step:
                    write_row(_train_row(run, outcome))
                progress.update(bar, completed=run.state.global_step, **_bar_fields(run, outcome))
                _check_finite(run.state, outcome)
                if _evaluation_due(run, epoch_ended):
                    write_row(_evaluate(run))
                interrupted = run.state.global_step == last_step < total
                # The last step is checkpointed too: the run's owner removes the checkpoint
                # once the run is committed, so a crash before then (while saving or
                # evaluating) resumes with nothing left to train.
                finished = run.state.global_step == total
                if interrupted or finished or _checkpoint_due(run, epoch_ended, checkpoint_steps):
                    _save_checkpoint(run)
    _restore_best_weights(run)
    run.accelerator.wait_for_everyone()
    return _result(run, completed=run.state.global_step >= total or run.state.stopped_early)


def _check_positive(**arguments: int | None) -> None:
    for name, value in arguments.items():
        if value is not None and value < 1:
            raise ValueError(f"{name} = {value}: must be >= 1")


def _keep_going(run: _Run, last_step: int) -> bool:
    return run.state.global_step < last_step and not run.state.stopped_early


def _prepare(task: TrainTask, config: TrainConfig, run_dir: Path, *, resume: bool) -> _Run:
    """Set up devices, the optimizer and the step plan; load the checkpoint when resuming."""
    # Precision is ours to decide (config.bf16), not accelerate's environment defaults; its
    # AcceleratorState is a process-wide singleton that refuses a second, different setting.
    # cpu=True on machines without an accelerator is what makes accelerate set up gloo
    # processes under torchrun there.
    has_accelerator = torch.cuda.is_available() or torch.backends.mps.is_available()
    accelerator = Accelerator(cpu=not has_accelerator, mixed_precision="no")
    if accelerator.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(accelerator.device)  # report this call's peak
    set_seed(config.seed)
    task.model.train()
    model = accelerator.prepare_model(task.model)
    parameters = trainable_parameters(task.model)
    if not parameters:
        raise ValueError("the model has no trainable parameters (none has requires_grad=True)")
    lengths = [task.length(example) for example in task.train_data]
    processes = accelerator.num_processes
    batches_per_epoch = batch_count(
        len(lengths), config.micro_batch_size * processes, min_last_batch=processes
    )
    if batches_per_epoch == 0:
        raise ValueError(f"{len(lengths)} training examples: need at least one per process")
    run = _Run(
        task=task,
        config=config,
        run_dir=run_dir,
        accelerator=accelerator,
        model=model,
        parameters=parameters,
        optimizer=build_optimizer(parameters, config),
        schedule=_schedule(config, batches_per_epoch),
        lengths=lengths,
        batches_per_epoch=batches_per_epoch,
        autocast_dtype=_autocast_dtype(config.bf16, accelerator.device),
    )
    if resume:
        _load_checkpoint(run)
    elif checkpoint.find_checkpoint(run_dir) is not None:
        raise FileExistsError(
            f"{run_dir} already holds a checkpoint: pass resume=True to continue that run, "
            "or train into a new run directory"
        )
    return run


def _schedule(config: TrainConfig, batches_per_epoch: int) -> Schedule:
    steps_per_epoch = math.ceil(batches_per_epoch / config.gradient_accumulation_steps)
    total = config.max_steps or max(1, math.ceil(config.num_epochs * steps_per_epoch))
    warmup = math.ceil(config.warmup_ratio * total)
    return Schedule(config.lr_scheduler, config.learning_rate, warmup, total)


def planned_batches(
    lengths: Sequence[int], config: TrainConfig, processes: int = 1
) -> list[list[int]]:
    """The global micro-batches :func:`train` runs, in order, for examples of ``lengths``: every
    planned optimizer step of an uninterrupted run that does not stop early. What the cost
    estimate counts training tokens over, from the same plan and batch order as the loop."""
    size = config.micro_batch_size * processes
    per_epoch = batch_count(len(lengths), size, min_last_batch=processes)
    if per_epoch == 0:
        return []
    total = _schedule(config, per_epoch).total_steps
    accumulation = config.gradient_accumulation_steps
    planned: list[list[int]] = []
    steps, epoch = 0, 0
    while steps < total:
        batches = epoch_batches(
            lengths,
            size,
            seed=config.seed,
            epoch=epoch,
            group_by_length=config.group_by_length,
            min_last_batch=processes,
        )
        for start in range(0, len(batches), accumulation):
            if steps == total:
                break
            planned.extend(batches[start : start + accumulation])
            steps += 1
        epoch += 1
    return planned


def _autocast_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast: on request, or under "auto" on CUDA devices that support it."""
    if setting == "true":
        return torch.bfloat16
    if setting == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def _batches(run: _Run, epoch: int) -> list[list[int]]:
    """The epoch's global batches: micro_batch_size examples per process each."""
    processes = run.accelerator.num_processes
    return epoch_batches(
        run.lengths,
        run.config.micro_batch_size * processes,
        seed=run.config.seed,
        epoch=epoch,
        group_by_length=run.config.group_by_length,
        min_last_batch=processes,
    )


def _optimizer_step(run: _Run, cycle: Sequence[Sequence[int]]) -> _StepOutcome:
    """Accumulate gradients over the cycle's micro-batches, normalise, clip and step."""
    started = time.perf_counter()
    learning_rate = run.schedule.learning_rate(run.state.global_step)
    for group in run.optimizer.param_groups:
        group["lr"] = learning_rate
    local = _accumulate_gradients(run, cycle)
    loss_sum, items = run.accelerator.reduce(local, reduction="sum").tolist()
    # DDP averaged the gradients of the per-item loss sums over processes; this turns them into
    # the gradient of the mean over every item of the step.
    scale = run.accelerator.num_processes / max(items, 1.0)
    for param in run.parameters.values():
        if param.grad is not None:
            param.grad.mul_(scale)
    grad_norm = _clip_gradients(run)
    finite = math.isfinite(loss_sum) and math.isfinite(grad_norm)
    if finite:
        run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    examples = sum(len(batch) for batch in cycle)
    seconds = time.perf_counter() - started
    return _StepOutcome(loss_sum, items, grad_norm, learning_rate, examples, seconds, finite)


def _accumulate_gradients(run: _Run, cycle: Sequence[Sequence[int]]) -> torch.Tensor:
    """Backward through each micro-batch; return this process's [loss sum, item count]."""
    accelerator, device = run.accelerator, run.accelerator.device
    totals = torch.zeros(2, device=device)
    for position, batch in enumerate(cycle):
        indices = shard(batch, accelerator.process_index, accelerator.num_processes)
        examples = [run.task.train_data[index] for index in indices]
        inputs = {key: value.to(device) for key, value in run.task.collate(examples).items()}
        # DDP all-reduces gradients in every backward; only the cycle's last one needs to.
        last = position == len(cycle) - 1
        with nullcontext() if last else accelerator.no_sync(run.model):
            with _autocast(device, run.autocast_dtype):
                loss_sum, items = run.task.loss(run.model, inputs)
            # Not accelerator.backward: it divides by an accumulation count that `accelerate
            # launch` may set in the environment; the normalisation here is ours.
            torch.autograd.backward(loss_sum)
        totals[0] += loss_sum.detach().float()
        totals[1] += torch.as_tensor(items, dtype=torch.float32, device=device)
    return totals


def _autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def _clip_gradients(run: _Run) -> float:
    """Clip to max_grad_norm and return the total norm before clipping.

    Without max_grad_norm the limit is infinite: the norm is still measured, and the gradients
    are multiplied by exactly 1.
    """
    limit = run.config.max_grad_norm or math.inf
    return float(run.accelerator.clip_grad_norm_(list(run.parameters.values()), limit))


def _advance(run: _Run, outcome: _StepOutcome, micro_batches: int, epoch_length: int) -> bool:
    """Move the loop position past one optimizer step; return whether the epoch ended."""
    state = run.state
    state.global_step += 1
    state.batch_index += micro_batches
    run.window.add(outcome)
    run.session.add(outcome)
    if outcome.finite:
        state.consecutive_non_finite = 0
    else:
        state.skipped_steps += 1
        state.consecutive_non_finite += 1
    if state.batch_index < epoch_length:
        return False
    state.epoch, state.batch_index = state.epoch + 1, 0
    return True


def _check_finite(state: LoopState, outcome: _StepOutcome) -> None:
    """A skipped step now and then is noise; several in a row means training diverged."""
    if state.consecutive_non_finite >= MAX_CONSECUTIVE_NON_FINITE:
        raise NonFiniteLossError(state.global_step, outcome.learning_rate)


def _elapsed(run: _Run) -> float:
    """Wall time of the run so far, over every call that resumed it."""
    return run.state.elapsed_s + time.perf_counter() - run.started


def _fractional_epoch(run: _Run) -> float:
    return run.state.epoch + run.state.batch_index / run.batches_per_epoch


def _train_row(run: _Run, outcome: _StepOutcome) -> dict[str, Any]:
    """The metrics row of a logged step; loss and throughput cover the steps since the last."""
    window, run.window = run.window, _Window()
    return {
        "kind": "train",
        "step": run.state.global_step,
        "epoch": _fractional_epoch(run),
        "loss": window.loss_sum / window.items if window.items else None,
        "lr": outcome.learning_rate,
        "grad_norm": outcome.grad_norm,
        "examples_per_s": window.examples / window.seconds if window.seconds else None,
        "elapsed_s": _elapsed(run),
        "skipped_steps": run.state.skipped_steps,
    }


def _evaluation_due(run: _Run, epoch_ended: bool) -> bool:
    if run.task.evaluate is None:
        return False
    if run.state.global_step == run.schedule.total_steps:
        return True
    every = run.config.eval_steps
    return epoch_ended if every is None else run.state.global_step % every == 0


def _evaluate(run: _Run) -> dict[str, Any]:
    """Evaluate, update early stopping and the best weights; return the metrics row."""
    assert run.task.evaluate is not None
    started = time.perf_counter()
    modes = {module: module.training for module in run.task.model.modules()}
    run.task.model.eval()
    with torch.no_grad(), _autocast(run.accelerator.device, run.autocast_dtype):
        metrics = run.task.evaluate(run.task.model)
    for module, training in modes.items():
        module.train(training)
    if run.task.metric not in metrics:
        raise KeyError(
            f"evaluate() returned {sorted(metrics)}, without the early-stopping metric "
            f"{run.task.metric!r} (TrainTask.metric)"
        )
    # Processes may disagree in the last bits (nondeterministic kernels); all must take the
    # main process's early-stopping decision, or the ones that stop leave the others waiting.
    value = torch.tensor([float(metrics[run.task.metric])], device=run.accelerator.device)
    _update_best(run, float(broadcast(value, from_process=0).item()))
    return {
        "kind": "eval",
        "step": run.state.global_step,
        "epoch": _fractional_epoch(run),
        "elapsed_s": _elapsed(run),
        "eval_s": time.perf_counter() - started,
        **metrics,
    }


def _update_best(run: _Run, value: float) -> None:
    state, patience = run.state, run.config.early_stopping_patience
    best = state.best_metric
    better = best is None or (value > best if run.task.greater_is_better else value < best)
    if math.isfinite(value) and better:
        state.best_metric, state.best_step = value, state.global_step
        state.evaluations_without_improvement = 0
        run.best_weights = {
            name: param.detach().to("cpu", copy=True) for name, param in run.parameters.items()
        }
        return
    state.evaluations_without_improvement += 1
    if patience is not None and state.evaluations_without_improvement >= patience:
        state.stopped_early = True


def _restore_best_weights(run: _Run) -> None:
    if run.best_weights is None:
        return
    with torch.no_grad():
        for name, param in run.parameters.items():
            param.copy_(run.best_weights[name])


def _checkpoint_due(run: _Run, epoch_ended: bool, checkpoint_steps: int | None) -> bool:
    if checkpoint_steps is None:
        return epoch_ended
    return run.state.global_step % checkpoint_steps == 0


def _save_checkpoint(run: _Run) -> None:
    """Write every process's random state and the main process's tensors and position."""
    accelerator = run.accelerator
    rank = accelerator.process_index
    with checkpoint.staged_checkpoint(
        run.run_dir, is_main=accelerator.is_main_process, barrier=accelerator.wait_for_everyone
    ) as folder:
        rng_tensors, rng_data = checkpoint.capture_rng()
        checkpoint.write_tensors(folder, f"rng_rank{rank}", rng_tensors)
        checkpoint.write_json(folder, f"rng_rank{rank}", rng_data)
        if accelerator.is_main_process:
            checkpoint.write_tensors(folder, "trainable", run.parameters)
            optimizer_state = checkpoint.optimizer_tensors(run.optimizer, run.parameters)
            checkpoint.write_tensors(folder, "optimizer", optimizer_state)
            if run.best_weights is not None:
                checkpoint.write_tensors(folder, "best", run.best_weights)
            checkpoint.write_json(folder, "state", _checkpoint_state(run))


def _checkpoint_state(run: _Run) -> dict[str, Any]:
    position = asdict(run.state)
    position["elapsed_s"] = _elapsed(run)
    return {
        "format": _CHECKPOINT_FORMAT,
        "position": position,
        "schedule": asdict(run.schedule),
        "compatibility": _compatibility(run),
    }


def _compatibility(run: _Run) -> dict[str, Any]:
    """What must not change between a checkpoint and its resume for the result to hold."""
    return {
        "config": run.config.model_dump(mode="json"),
        "train_examples": len(run.lengths),
        "processes": run.accelerator.num_processes,
        "trainable": sorted(run.parameters),
    }


def _load_checkpoint(run: _Run) -> None:
    folder = checkpoint.find_checkpoint(run.run_dir)
    if folder is None:
        raise FileNotFoundError(f"{run.run_dir}: no checkpoint to resume from")
    check_before_load(folder, "checkpoint")
    saved = checkpoint.read_json(folder, "state")
    _check_compatible(folder, saved, run)
    weights = checkpoint.read_tensors(folder, "trainable")
    with torch.no_grad():
        for name, param in run.parameters.items():
            param.copy_(weights[name])
    optimizer_state = checkpoint.read_tensors(folder, "optimizer")
    checkpoint.load_optimizer_tensors(run.optimizer, run.parameters, optimizer_state)
    if (folder / "best.safetensors").is_file():
        run.best_weights = checkpoint.read_tensors(folder, "best")
    run.state = LoopState(**saved["position"])
    rank = run.accelerator.process_index
    checkpoint.restore_rng(
        checkpoint.read_tensors(folder, f"rng_rank{rank}"),
        checkpoint.read_json(folder, f"rng_rank{rank}"),
    )
    if run.accelerator.is_main_process:
        _truncate_metrics(run.run_dir / METRICS_FILE, run.state.global_step)
    run.accelerator.wait_for_everyone()


def _check_compatible(folder: Path, saved: Mapping[str, Any], run: _Run) -> None:
    if saved.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(f"{folder}: checkpoint format {saved.get('format')!r} is not supported")
    then, now = saved["compatibility"], _compatibility(run)
    changed = sorted(key for key in now if then.get(key) != now[key])
    if "config" in changed:
        changed.remove("config")
        changed += [
            f"config.{key}"
            for key in now["config"]
            if then["config"].get(key) != now["config"][key]
        ]
    if changed:
        raise ValueError(
            f"{folder}: cannot resume, these differ from when the checkpoint was written: "
            f"{', '.join(changed)}; restore them or start a new run"
        )


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop rows logged after the checkpoint: the resumed run writes them again."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a row cut short by the crash
        if row["step"] <= step:
            kept.append(line + "\n")
    with atomic_write(path) as handle:
        handle.writelines(kept)


@contextmanager
def _metrics_log(
    path: Path, *, enabled: bool, append: bool
) -> Iterator[Callable[[Mapping[str, Any]], None]]:
    """A row writer for ``metrics.jsonl``; each row is flushed, so a crash keeps what was logged."""
    if not enabled:
        yield lambda row: None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w", encoding="utf-8") as handle:
        yield lambda row: _write_row(handle, row)


def _write_row(handle: IO[str], row: Mapping[str, Any]) -> None:
    # NaN and infinity are not JSON; a skipped step's values are recorded as null.
    clean = {
        key: None if isinstance(value, float) and not math.isfinite(value) else value
        for key, value in row.items()
    }
    handle.write(json.dumps(clean, allow_nan=False) + "\n")
    handle.flush()


def _progress_bar(*, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[rate]} it/s"),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def _bar_fields(run: _Run | None = None, outcome: _StepOutcome | None = None) -> dict[str, Any]:
    """The progress bar's fields after a step (placeholders before the first)."""
    if run is None or outcome is None:
        return {"loss": "-", "lr": "-", "rate": "-"}
    loss = outcome.loss_sum / outcome.items if outcome.items else math.nan
    rate = run.session.steps / run.session.seconds if run.session.seconds else 0.0
    return {"loss": f"{loss:.4f}", "lr": f"{outcome.learning_rate:.2e}", "rate": f"{rate:.2f}"}


def _result(run: _Run, *, completed: bool) -> TrainResult:
    session = run.session
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    on_cuda = run.accelerator.device.type == "cuda"
    return TrainResult(
        steps=run.state.global_step,
        epochs=_fractional_epoch(run),
        best_metric=run.state.best_metric,
        best_step=run.state.best_step,
        skipped_steps=run.state.skipped_steps,
        stopped_early=run.state.stopped_early,
        completed=completed,
        wall_time_s=time.perf_counter() - run.started,
        earlier_wall_time_s=run.state.elapsed_s,
        examples_per_s=session.examples / session.seconds if session.seconds else 0.0,
        # ru_maxrss is in kilobytes on Linux and in bytes on macOS.
        peak_rss_bytes=rss if sys.platform == "darwin" else rss * 1024,
        peak_cuda_bytes=torch.cuda.max_memory_allocated(run.accelerator.device)
        if on_cuda
        else None,
    )
