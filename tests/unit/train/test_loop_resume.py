"""Resume from a checkpoint reaches bit-identical weights to an uninterrupted run (CPU)."""

from __future__ import annotations

import json
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
    trainable_state,
)

from adaptlab.config import TrainConfig
from adaptlab.train import checkpoint
from adaptlab.train.loop import METRICS_FILE, TrainResult, TrainTask, train

EXAMPLES = synthetic_examples(40)  # 10 micro-batches of 4: 5 optimizer steps per epoch
# Evaluated at steps 3, 6, 9 and 10. On held-out data the best weights are those of step 3,
# before most stops, so they must come back from the checkpoint; on the training data they
# are those of step 10, so the whole trajectory must match.
EVALUATION_SETS = {"held-out": synthetic_examples(8, seed=1), "train": EXAMPLES}
BEST_STEP = {"held-out": 3, "train": 10}
# dropout > 0: equal weights need the random state restored, not just the data position
CONFIG = make_config(
    num_epochs=2, gradient_accumulation_steps=2, group_by_length=True, eval_steps=3
)
TIMING = {"elapsed_s", "examples_per_s", "eval_s"}


def fresh_task(loss: Any = example_loss, evaluation: str = "held-out") -> TrainTask:
    """The same model, data and evaluation every time, as a restarted job would build them."""
    model = tiny_classifier(seed=3, dropout=0.1)
    evaluate = eval_loss_on(EVALUATION_SETS[evaluation])
    return make_task(model, EXAMPLES, loss=loss, evaluate=evaluate)


def rows_without_timing(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / METRICS_FILE).read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


Outcome = tuple[dict[str, torch.Tensor], TrainResult, list[dict[str, Any]]]


def run_uninterrupted(run_dir: Path, evaluation: str) -> Outcome:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a module fixture runs outside the function-scoped one
    task = fresh_task(evaluation=evaluation)
    result = train(task, CONFIG, run_dir, show_progress=False)
    torch.set_num_threads(threads)
    assert result.best_step == BEST_STEP[evaluation]
    return trainable_state(task.model), result, rows_without_timing(run_dir)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    return {
        evaluation: run_uninterrupted(tmp_path_factory.mktemp(evaluation), evaluation)
        for evaluation in EVALUATION_SETS
    }


def assert_same_run(task: TrainTask, result: TrainResult, run_dir: Path, expected: Outcome) -> None:
    weights, expected_result, rows = expected
    for name, value in trainable_state(task.model).items():
        assert torch.equal(value, weights[name]), name
    assert (result.steps, result.best_step, result.best_metric) == (
        expected_result.steps,
        expected_result.best_step,
        expected_result.best_metric,
    )
    assert rows_without_timing(run_dir) == rows  # same losses, no duplicated steps


@pytest.mark.parametrize("evaluation", list(EVALUATION_SETS))
@pytest.mark.parametrize("stop_after", [3, 5, 7])  # mid-epoch, epoch end, mid second epoch
def test_stop_and_resume_equals_uninterrupted(
    tmp_path: Path, uninterrupted: dict[str, Outcome], stop_after: int, evaluation: str
) -> None:
    first = train(
        fresh_task(evaluation=evaluation),
        CONFIG,
        tmp_path,
        stop_after_steps=stop_after,
        show_progress=False,
    )
    assert first.steps == stop_after and not first.completed

    task = fresh_task(evaluation=evaluation)
    result = train(task, CONFIG, tmp_path, resume=True, show_progress=False)

    assert result.completed and result.steps == 10
    assert_same_run(task, result, tmp_path, uninterrupted[evaluation])


def test_a_crash_inside_an_accumulation_cycle_resumes_from_the_last_step(
    tmp_path: Path, uninterrupted: dict[str, Outcome]
) -> None:
    calls = 0

    def crashing_loss(
        model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal calls
        calls += 1
        if calls == 14:  # the second micro-batch of step 7, after the first one's backward
            raise RuntimeError("simulated crash")
        return example_loss(model, batch)

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(fresh_task(crashing_loss), CONFIG, tmp_path, checkpoint_steps=2, show_progress=False)
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["position"]["global_step"] == 6
    assert (state["position"]["epoch"], state["position"]["batch_index"]) == (1, 2)

    task = fresh_task()
    result = train(task, CONFIG, tmp_path, resume=True, show_progress=False)
    assert_same_run(task, result, tmp_path, uninterrupted["held-out"])


def test_without_the_random_state_dropout_would_differ(
    tmp_path: Path, uninterrupted: dict[str, Outcome]
) -> None:
    """The resume tests can fail: replaying from the right position with another random
    state (what a loop that saved no RNG state would do) gives other losses and weights."""
    train(fresh_task(evaluation="train"), CONFIG, tmp_path, stop_after_steps=3, show_progress=False)
    folder = tmp_path / "checkpoint"
    tensors = checkpoint.read_tensors(folder, "rng_rank0")
    tensors["torch_cpu"] = torch.Generator().manual_seed(CONFIG.seed).get_state()
    checkpoint.write_tensors(folder, "rng_rank0", tensors)

    task = fresh_task(evaluation="train")
    train(task, CONFIG, tmp_path, resume=True, show_progress=False)

    weights, _, rows = uninterrupted["train"]
    assert not torch.equal(task.model.classifier.weight, weights["classifier.weight"])
    assert rows_without_timing(tmp_path)[:3] == rows[:3]
    assert rows_without_timing(tmp_path)[4]["loss"] != rows[4]["loss"]


def test_resume_refuses_a_changed_config(tmp_path: Path) -> None:
    train(fresh_task(), CONFIG, tmp_path, stop_after_steps=2, show_progress=False)
    changed = TrainConfig(**{**CONFIG.model_dump(), "learning_rate": 5e-4})
    with pytest.raises(ValueError, match=r"config\.learning_rate"):
        train(fresh_task(), changed, tmp_path, resume=True, show_progress=False)


def test_resume_without_a_checkpoint_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(fresh_task(), CONFIG, tmp_path, resume=True, show_progress=False)


def test_a_fresh_run_refuses_to_overwrite_a_checkpoint(tmp_path: Path) -> None:
    train(fresh_task(), CONFIG, tmp_path, stop_after_steps=1, show_progress=False)
    with pytest.raises(FileExistsError, match="resume=True"):
        train(fresh_task(), CONFIG, tmp_path, show_progress=False)


def test_resume_drops_metrics_rows_after_the_checkpoint_and_a_cut_row(
    tmp_path: Path, uninterrupted: dict[str, Outcome]
) -> None:
    """Rows logged between the checkpoint and a crash are written again by the resumed run."""
    train(fresh_task(), CONFIG, tmp_path, stop_after_steps=4, show_progress=False)
    with (tmp_path / METRICS_FILE).open("a", encoding="utf-8") as handle:
        handle.write('{"kind": "train", "step": 5, "loss": 1.0}\n{"kind": "train", "st')

    task = fresh_task()
    result = train(task, CONFIG, tmp_path, resume=True, show_progress=False)
    assert_same_run(task, result, tmp_path, uninterrupted["held-out"])


@pytest.mark.parametrize(
    "arguments", [{"checkpoint_steps": 0}, {"stop_after_steps": 0}, {"logging_steps": 0}]
)
def test_step_arguments_must_be_positive(tmp_path: Path, arguments: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=f"{next(iter(arguments))} = 0: must be >= 1"):
        train(fresh_task(), CONFIG, tmp_path, **arguments)  # type: ignore[arg-type]
