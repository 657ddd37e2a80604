"""Checkpoint files of the training loop: safetensors and JSON only, replaced atomically.

A checkpoint is the folder ``run_dir/checkpoint/``. It is written complete into a staging
folder and renamed into place, so a crash while saving leaves the previous checkpoint as it
was. A directory cannot be renamed over a non-empty one, so the old checkpoint is first renamed
aside (``.checkpoint.old``) and removed after the swap; :func:`find_checkpoint` falls back to it
when a crash came between the two renames.

Nothing here unpickles: tensors are read with safetensors, everything else is JSON.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from adaptlab.paths import fsync_path

CHECKPOINT_DIR = "checkpoint"
_STAGING_DIR = ".checkpoint.tmp"
_PREVIOUS_DIR = ".checkpoint.old"
_REMOVED_DIR = ".checkpoint.removed"


def find_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint folder of ``run_dir``, or ``None`` when there is none."""
    for name in (CHECKPOINT_DIR, _PREVIOUS_DIR):
        if (run_dir / name).is_dir():
            return run_dir / name
    return None


@contextmanager
def staged_checkpoint(
    run_dir: Path, *, is_main: bool, barrier: Callable[[], None] = lambda: None
) -> Iterator[Path]:
    """Yield an empty staging folder to write into; on success it becomes the checkpoint.

    Under several processes every one of them enters, each writes its own files, and the main
    process alone creates, commits or discards the folder (``barrier`` waits for all of them).
    """
    staging = run_dir / _STAGING_DIR
    if is_main:
        shutil.rmtree(staging, ignore_errors=True)  # a leftover of an earlier crash
        staging.mkdir(parents=True)
    barrier()
    try:
        yield staging
        barrier()
    except BaseException:
        if is_main:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    if is_main:
        _commit(run_dir, staging)


def remove_checkpoint(run_dir: Path) -> None:
    """Drop the checkpoint of a committed run. It is renamed aside first, so a crash half-way
    through the removal never leaves a partial ``checkpoint/`` to resume from."""
    doomed = run_dir / _REMOVED_DIR
    shutil.rmtree(doomed, ignore_errors=True)
    if (run_dir / CHECKPOINT_DIR).is_dir():
        (run_dir / CHECKPOINT_DIR).rename(doomed)
    for name in (_PREVIOUS_DIR, _STAGING_DIR, _REMOVED_DIR):
        shutil.rmtree(run_dir / name, ignore_errors=True)


def _commit(run_dir: Path, staging: Path) -> None:
    final, previous = run_dir / CHECKPOINT_DIR, run_dir / _PREVIOUS_DIR
    fsync_path(staging)
    shutil.rmtree(previous, ignore_errors=True)
    if final.exists():
        final.rename(previous)
    staging.rename(final)
    fsync_path(run_dir)
    shutil.rmtree(previous, ignore_errors=True)


def write_tensors(folder: Path, name: str, tensors: Mapping[str, torch.Tensor]) -> None:
    """Write ``folder/name.safetensors`` (CPU copies; shared storage is not allowed there)."""
    path = folder / f"{name}.safetensors"
    save_file({key: value.detach().to("cpu").contiguous() for key, value in tensors.items()}, path)
    fsync_path(path)


def read_tensors(folder: Path, name: str) -> dict[str, torch.Tensor]:
    """Read ``folder/name.safetensors`` onto the CPU."""
    return load_file(folder / f"{name}.safetensors", device="cpu")


def write_json(folder: Path, name: str, data: Mapping[str, Any]) -> None:
    """Write ``folder/name.json``."""
    path = folder / f"{name}.json"
    path.write_text(json.dumps(data, indent=1, allow_nan=False), encoding="utf-8")
    fsync_path(path)


def read_json(folder: Path, name: str) -> dict[str, Any]:
    """Read ``folder/name.json``."""
    data = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{folder / name}.json: expected a JSON object")
    return data


def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The states of every random generator a step may draw from: torch (CPU and CUDA),
    numpy's global one and Python's ``random`` (a strategy's collate may use either)."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda.{index}"] = state
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    tensors["numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, python_state, gauss_next = random.getstate()
    data = {
        "numpy": [int(position), int(has_gauss), float(cached_gaussian)],
        "python": [version, list(python_state), gauss_next],
    }
    return tensors, data


def restore_rng(tensors: Mapping[str, torch.Tensor], data: Mapping[str, Any]) -> None:
    """Put back the generator states recorded by :func:`capture_rng`."""
    torch.set_rng_state(tensors["torch_cpu"])
    cuda_states = [tensors[key] for key in sorted(tensors) if key.startswith("torch_cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    position, has_gauss, cached_gaussian = data["numpy"]
    keys = tensors["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, position, has_gauss, cached_gaussian))
    version, python_state, gauss_next = data["python"]
    random.setstate((version, tuple(python_state), gauss_next))


def optimizer_tensors(
    optimizer: torch.optim.Optimizer, parameters: Mapping[str, torch.nn.Parameter]
) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state as named tensors (``<param>.exp_avg`` ...)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, parameter in parameters.items():
        for key, value in optimizer.state.get(parameter, {}).items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"optimizer state {name}.{key} is not a tensor: {value!r}")
            tensors[f"{name}.{key}"] = value
    return tensors


def load_optimizer_tensors(
    optimizer: torch.optim.Optimizer,
    parameters: Mapping[str, torch.nn.Parameter],
    tensors: Mapping[str, torch.Tensor],
) -> None:
    """Put back the state written by :func:`optimizer_tensors`."""
    states: dict[str, dict[str, torch.Tensor]] = {}
    for flat_name, value in tensors.items():
        name, key = flat_name.rsplit(".", 1)
        if name not in parameters:
            raise KeyError(f"checkpoint has optimizer state for unknown parameter {name!r}")
        states.setdefault(name, {})[key] = value
    # Moments live beside their parameter. AdamW keeps its scalar step count on the CPU, except
    # the fused (and capturable) kernels, which read it on the parameter's device.
    defaults = optimizer.defaults
    steps_beside = bool(defaults.get("fused") or defaults.get("capturable"))
    for name, state in states.items():
        parameter = parameters[name]
        optimizer.state[parameter] = {
            key: value.to(parameter.device)
            if value.shape == parameter.shape or steps_beside
            else value
            for key, value in state.items()
        }
