"""Checkpoint files: atomic replacement, safetensors and JSON only, exact state round trips."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from adaptlab_tests_train_tiny_task import (
    make_config,
    make_task,
    synthetic_examples,
    tiny_classifier,
)
from safetensors import safe_open

from adaptlab.train import checkpoint
from adaptlab.train.loop import train


def save(run_dir: Path, value: float) -> None:
    with checkpoint.staged_checkpoint(run_dir, is_main=True) as folder:
        checkpoint.write_tensors(folder, "weights", {"w": torch.full((3,), value)})
        checkpoint.write_json(folder, "state", {"value": value})


def saved_value(run_dir: Path) -> float:
    folder = checkpoint.find_checkpoint(run_dir)
    assert folder is not None
    value = checkpoint.read_json(folder, "state")["value"]
    assert torch.equal(checkpoint.read_tensors(folder, "weights")["w"], torch.full((3,), value))
    return float(value)


def test_a_failed_save_keeps_the_previous_checkpoint_and_leaves_no_temporary_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save(tmp_path, 1.0)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save(tmp_path, 2.0)

    assert saved_value(tmp_path) == 1.0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint"]
    monkeypatch.undo()
    save(tmp_path, 3.0)
    assert saved_value(tmp_path) == 3.0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint"]


def test_a_crash_between_the_two_renames_falls_back_to_the_previous_checkpoint(
    tmp_path: Path,
) -> None:
    save(tmp_path, 1.0)
    (tmp_path / "checkpoint").rename(tmp_path / ".checkpoint.old")  # swapped out, not yet in
    assert saved_value(tmp_path) == 1.0
    save(tmp_path, 2.0)
    assert saved_value(tmp_path) == 2.0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint"]


def test_a_stale_staging_folder_from_a_crash_is_replaced(tmp_path: Path) -> None:
    (tmp_path / ".checkpoint.tmp").mkdir()
    (tmp_path / ".checkpoint.tmp" / "half-written.safetensors").write_bytes(b"\x00")
    save(tmp_path, 1.0)
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == [
        "state.json",
        "weights.safetensors",
    ]


def test_a_failed_save_inside_the_loop_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saves = 0
    write_json = checkpoint.write_json

    def failing_on_second_save(folder: Path, name: str, data: dict[str, object]) -> None:
        nonlocal saves
        if name == "state":
            saves += 1
            if saves == 2:
                raise OSError("No space left on device")
        write_json(folder, name, data)

    monkeypatch.setattr(checkpoint, "write_json", failing_on_second_save)
    task = make_task(tiny_classifier(), synthetic_examples(16))
    with pytest.raises(OSError, match="No space left"):
        train(task, make_config(max_steps=4), tmp_path, checkpoint_steps=1, show_progress=False)
    state = checkpoint.read_json(tmp_path / "checkpoint", "state")
    assert state["position"]["global_step"] == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint", "metrics.jsonl"]


def test_the_loop_checkpoint_holds_only_safetensors_and_json(tmp_path: Path) -> None:
    model = tiny_classifier()
    task = make_task(model, synthetic_examples(16), evaluate=lambda m: {"eval_loss": 1.0})
    config = make_config(max_steps=3, eval_steps=1)
    train(task, config, tmp_path, stop_after_steps=2, show_progress=False)

    folder = tmp_path / "checkpoint"
    names = sorted(path.name for path in folder.iterdir())
    assert names == [
        "best.safetensors",
        "optimizer.safetensors",
        "rng_rank0.json",
        "rng_rank0.safetensors",
        "state.json",
        "trainable.safetensors",
    ]
    for path in folder.iterdir():
        assert not path.read_bytes().startswith(b"\x80")  # the pickle protocol marker
        if path.suffix == ".json":
            json.loads(path.read_text())
        else:
            with safe_open(str(path), framework="pt") as handle:
                assert list(handle.keys())
    trainable = checkpoint.read_tensors(folder, "trainable")
    assert set(trainable) == {name for name, _ in model.named_parameters()}
    optimizer = checkpoint.read_tensors(folder, "optimizer")
    assert {"classifier.weight.exp_avg", "classifier.weight.exp_avg_sq"} <= set(optimizer)
    assert optimizer["classifier.weight.step"].item() == 2
    position = checkpoint.read_json(folder, "state")["position"]
    assert (position["global_step"], position["epoch"], position["batch_index"]) == (2, 0, 2)


def test_random_states_round_trip() -> None:
    states = checkpoint.capture_rng()
    first = (torch.rand(4), np.random.rand(4), random.random(), np.random.randn())
    checkpoint.restore_rng(*states)
    second = (torch.rand(4), np.random.rand(4), random.random(), np.random.randn())
    assert torch.equal(first[0], second[0])
    assert np.array_equal(first[1], second[1])
    assert first[2:] == second[2:]


def test_optimizer_state_round_trips_to_identical_steps(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    twin = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    twin.load_state_dict(model.state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    twin_optimizer = torch.optim.AdamW(twin.parameters(), lr=0.1)
    inputs = torch.randn(8, 4)
    for _ in range(2):
        model(inputs).square().sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    twin.load_state_dict(model.state_dict())
    params, twin_params = dict(model.named_parameters()), dict(twin.named_parameters())
    checkpoint.write_tensors(tmp_path, "optimizer", checkpoint.optimizer_tensors(optimizer, params))
    flat = checkpoint.read_tensors(tmp_path, "optimizer")
    checkpoint.load_optimizer_tensors(twin_optimizer, twin_params, flat)
    for net, opt in ((model, optimizer), (twin, twin_optimizer)):
        net(inputs).square().sum().backward()
        opt.step()
    for name, param in params.items():
        assert torch.equal(param, twin_params[name]), name
