"""The shared training loop on a tiny BERT: what trains, normalisation, non-finite losses,
early stopping, metrics.jsonl."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from adaptlab_tests_train_tiny_task import (
    eval_loss_on,
    example_loss,
    make_config,
    make_task,
    synthetic_examples,
    tiny_classifier,
    tiny_tagger,
    token_loss,
    trainable_state,
)

from adaptlab.train import checkpoint
from adaptlab.train.loop import (
    METRICS_FILE,
    NonFiniteLossError,
    Schedule,
    build_optimizer,
    train,
    trainable_parameters,
)


def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / METRICS_FILE).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_trainable_parameters_change_and_frozen_ones_stay_bit_identical(tmp_path: Path) -> None:
    model = tiny_classifier()
    for name, param in model.named_parameters():
        if name.startswith("bert.embeddings") or ".layer.0." in name:
            param.requires_grad_(False)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = trainable_state(model)
    assert frozen and trainable

    result = train(
        make_task(model, synthetic_examples(16)),
        make_config(max_steps=2),
        tmp_path,
        show_progress=False,
    )

    assert result.steps == 2
    after = dict(model.named_parameters())
    unchanged = [name for name, before in trainable.items() if torch.equal(before, after[name])]
    assert unchanged == []
    for name, before in frozen.items():
        assert torch.equal(before, after[name]), name
        assert after[name].grad is None


def naive_token_mean(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-micro-batch mean that accumulation gets wrong for token losses."""
    total, items = token_loss(model, batch)
    return total / items, torch.tensor(1)


LOSSES: dict[str, tuple[Callable[..., torch.nn.Module], Callable[..., Any]]] = {
    "example-level": (tiny_classifier, example_loss),
    "token-level": (tiny_tagger, token_loss),
    "token-level, naive mean": (tiny_tagger, naive_token_mean),
}


def weights_after(tmp_path: Path, kind: str, micro: int, accumulation: int) -> dict[str, Any]:
    build, loss = LOSSES[kind]
    model = build()
    config = make_config(
        micro_batch_size=micro,
        gradient_accumulation_steps=accumulation,
        group_by_length=False,
        max_grad_norm=None,
        weight_decay=0.0,
    )
    folder = tmp_path / f"{micro}x{accumulation}"
    train(make_task(model, synthetic_examples(32), loss=loss), config, folder, show_progress=False)
    return trainable_state(model)


@pytest.mark.parametrize("kind", ["example-level", "token-level"])
def test_batch_4_x_accumulation_1_equals_batch_1_x_accumulation_4(
    tmp_path: Path, kind: str
) -> None:
    whole = weights_after(tmp_path, kind, micro=4, accumulation=1)
    accumulated = weights_after(tmp_path, kind, micro=1, accumulation=4)
    for name, value in whole.items():
        torch.testing.assert_close(accumulated[name], value, atol=1e-6, rtol=1e-5, msg=name)


def test_per_micro_batch_means_would_break_the_equality(tmp_path: Path) -> None:
    """The invariance test above can fail: averaging each micro-batch's tokens first
    weighs short examples more, and the weights drift apart."""
    whole = weights_after(tmp_path, "token-level, naive mean", micro=4, accumulation=1)
    accumulated = weights_after(tmp_path, "token-level, naive mean", micro=1, accumulation=4)
    drift = max((accumulated[n] - v).abs().max().item() for n, v in whole.items())
    assert drift > 1e-4


class NanOnCalls:
    """The example loss, but NaN on the given (1-based) calls."""

    def __init__(self, calls: set[int]) -> None:
        self.calls, self.count = calls, 0

    def __call__(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.count += 1
        total, items = example_loss(model, batch)
        return (total * math.nan if self.count in self.calls else total), items


def test_a_non_finite_step_is_skipped_and_counted(tmp_path: Path) -> None:
    model = tiny_classifier()
    task = make_task(model, synthetic_examples(24), loss=NanOnCalls({2}))
    result = train(
        task, make_config(max_steps=4), tmp_path, checkpoint_steps=4, show_progress=False
    )

    assert result.skipped_steps == 1 and result.steps == 4
    rows = {row["step"]: row for row in read_rows(tmp_path)}
    assert rows[2]["loss"] is None and rows[2]["grad_norm"] is None
    assert rows[2]["skipped_steps"] == 1 and rows[1]["skipped_steps"] == 0
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # AdamW stepped three times, not four: the skipped step left the optimizer untouched.
    state = checkpoint.read_tensors(tmp_path / "checkpoint", "optimizer")
    assert state["classifier.weight.step"].item() == 3


def test_a_skipped_step_leaves_the_weights_untouched(tmp_path: Path) -> None:
    model = tiny_classifier()
    before = trainable_state(model)
    task = make_task(model, synthetic_examples(8), loss=NanOnCalls({1}))
    result = train(task, make_config(max_steps=1), tmp_path, show_progress=False)
    assert result.skipped_steps == 1
    after = dict(model.named_parameters())
    assert all(torch.equal(value, after[name]) for name, value in before.items())


def test_two_non_finite_steps_in_a_row_are_tolerated(tmp_path: Path) -> None:
    task = make_task(tiny_classifier(), synthetic_examples(24), loss=NanOnCalls({2, 3}))
    result = train(task, make_config(max_steps=5), tmp_path, show_progress=False)
    assert result.skipped_steps == 2 and result.steps == 5


def test_three_non_finite_steps_in_a_row_raise(tmp_path: Path) -> None:
    task = make_task(tiny_classifier(), synthetic_examples(24), loss=NanOnCalls({2, 3, 4}))
    with pytest.raises(NonFiniteLossError, match=r"step 4.*Lower the learning rate") as caught:
        train(task, make_config(max_steps=6), tmp_path, show_progress=False)
    assert caught.value.step == 4
    assert [row["step"] for row in read_rows(tmp_path)] == [1, 2, 3, 4]


@pytest.mark.parametrize("greater_is_better", [False, True])
def test_early_stopping_after_patience_restores_the_best_weights(
    tmp_path: Path, greater_is_better: bool
) -> None:
    sign = -1.0 if greater_is_better else 1.0
    scores = [1.0, 0.5, 0.7, 0.8, 0.9, 0.95]
    snapshots: list[dict[str, torch.Tensor]] = []

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        assert not model.training and not torch.is_grad_enabled()
        snapshots.append(trainable_state(model))
        return {"eval_loss": sign * scores[len(snapshots) - 1]}

    model = tiny_classifier(dropout=0.1)
    task = make_task(
        model, synthetic_examples(40), evaluate=evaluate, greater_is_better=greater_is_better
    )
    config = make_config(max_steps=10, eval_steps=1, early_stopping_patience=2)
    result = train(task, config, tmp_path, show_progress=False)

    assert result.stopped_early and result.completed
    assert result.steps == 4 and len(snapshots) == 4
    assert result.best_step == 2 and result.best_metric == sign * 0.5
    final = trainable_state(model)
    assert all(torch.equal(value, snapshots[1][name]) for name, value in final.items())
    assert not torch.equal(final["classifier.weight"], snapshots[3]["classifier.weight"])
    assert model.training


def test_evaluate_without_the_metric_is_a_clear_error(tmp_path: Path) -> None:
    task = make_task(tiny_classifier(), synthetic_examples(8), evaluate=lambda m: {"acc": 1.0})
    with pytest.raises(KeyError, match="eval_loss"):
        train(task, make_config(max_steps=1), tmp_path, show_progress=False)


TRAIN_KEYS = {
    "kind",
    "step",
    "epoch",
    "loss",
    "lr",
    "grad_norm",
    "examples_per_s",
    "elapsed_s",
    "skipped_steps",
}
EVAL_KEYS = {"kind", "step", "epoch", "elapsed_s", "eval_s", "eval_loss"}


@pytest.mark.parametrize(("logging_steps", "logged"), [(1, [1, 2, 3, 4, 5]), (2, [2, 4, 5])])
def test_metrics_rows_parse_and_carry_the_documented_keys(
    tmp_path: Path, logging_steps: int, logged: list[int]
) -> None:
    task = make_task(
        tiny_classifier(), synthetic_examples(20), evaluate=eval_loss_on(synthetic_examples(8))
    )
    config = make_config(max_steps=5, eval_steps=2)
    train(task, config, tmp_path, logging_steps=logging_steps, show_progress=False)

    rows = read_rows(tmp_path)
    train_rows = [row for row in rows if row["kind"] == "train"]
    eval_rows = [row for row in rows if row["kind"] == "eval"]
    assert len(train_rows) + len(eval_rows) == len(rows)
    assert [row["step"] for row in train_rows] == logged
    assert [row["step"] for row in eval_rows] == [2, 4, 5]  # every 2 steps and at the end
    schedule = Schedule("linear", 1e-3, warmup_steps=1, total_steps=5)
    for row in train_rows:
        assert set(row) == TRAIN_KEYS
        assert row["loss"] > 0 and row["grad_norm"] > 0 and row["examples_per_s"] > 0
        assert row["lr"] == pytest.approx(schedule.learning_rate(row["step"] - 1))
        assert row["epoch"] == pytest.approx(row["step"] * 4 / 20)
    for row in eval_rows:
        assert set(row) == EVAL_KEYS and row["eval_loss"] > 0
    assert [row["elapsed_s"] for row in rows] == sorted(row["elapsed_s"] for row in rows)


def test_metrics_written_before_a_crash_survive_it(tmp_path: Path) -> None:
    calls = 0

    def crashing_loss(
        model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("simulated crash")
        return example_loss(model, batch)

    task = make_task(tiny_classifier(), synthetic_examples(20), loss=crashing_loss)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(task, make_config(max_steps=5), tmp_path, show_progress=False)
    assert [row["step"] for row in read_rows(tmp_path)] == [1, 2]


def test_result_reports_time_throughput_and_memory(tmp_path: Path) -> None:
    task = make_task(tiny_classifier(), synthetic_examples(18))
    result = train(task, make_config(num_epochs=2), tmp_path)  # with the progress bar
    assert result.steps == 10 and result.epochs == 2.0 and result.completed
    assert result.wall_time_s > 0 and result.examples_per_s > 0
    assert result.peak_rss_bytes > 50 * 2**20 and result.peak_cuda_bytes is None
    assert result.best_metric is None and result.skipped_steps == 0


def test_bf16_autocast_trains_and_keeps_float32_weights(tmp_path: Path) -> None:
    model = tiny_classifier()
    before = trainable_state(model)
    result = train(
        make_task(model, synthetic_examples(8)),
        make_config(max_steps=2, bf16="true"),
        tmp_path,
        show_progress=False,
    )
    assert result.skipped_steps == 0
    assert model.classifier.weight.dtype == torch.float32
    assert not torch.equal(before["classifier.weight"], model.classifier.weight)


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant"])
def test_schedule_warms_up_to_the_peak_then_decays(kind: str) -> None:
    schedule = Schedule(kind, 1.0, warmup_steps=4, total_steps=20)  # type: ignore[arg-type]
    rates = [schedule.learning_rate(step) for step in range(20)]
    assert rates[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(0 < rate <= 1.0 for rate in rates)
    if kind == "constant":
        assert rates[4:] == [1.0] * 16
    else:
        assert rates[4:] == sorted(rates[4:], reverse=True) and rates[-1] < 0.1
        midpoint = schedule.learning_rate(12)
        assert midpoint == pytest.approx(0.5)


def test_no_weight_decay_on_biases_and_norm_gains() -> None:
    model = tiny_classifier()
    optimizer = build_optimizer(trainable_parameters(model), make_config(weight_decay=0.1))
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {
        names[id(p)] for g in optimizer.param_groups if g["weight_decay"] for p in g["params"]
    }
    assert "bert.encoder.layer.0.attention.self.query.weight" in decayed
    assert "bert.embeddings.word_embeddings.weight" in decayed
    assert not any(name.endswith(".bias") or "LayerNorm" in name for name in decayed)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(names)


def test_no_trainable_parameters_is_an_error(tmp_path: Path) -> None:
    model = tiny_classifier().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train(make_task(model, synthetic_examples(8)), make_config(), tmp_path)
