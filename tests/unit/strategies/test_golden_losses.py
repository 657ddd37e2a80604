"""Golden first losses: a seeded tiny model trained by ``full``, ``lora`` and ``sft_lora``
logs exactly these training losses for its first steps (as torchtune's recipe tests pin theirs).

A change to the loop, a loss, a collator, the data order, the initialisation or a default
that moves what is trained shows up here first, as a number, rather than as a slightly worse
benchmark weeks later. The values are float32 on the CPU with one thread (deterministic).

When a change is meant to move them, regenerate with
``ADAPTLAB_PRINT_GOLDEN=1 python -m pytest -q tests/unit/strategies/test_golden_losses.py -s``
and say in the commit why they moved.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest

from adaptlab.strategies.base import RunContext, get_strategy

RunFactory = Callable[..., RunContext[Any]]
STEPS = 5
GOLDEN: dict[str, list[float]] = {
    # cross-entropy on the tiny encoder's 3-class task (micro-batches of 4, seed 7)
    "full": [0.876453, 1.013710, 1.024959, 0.854896, 1.117132],
    "lora": [0.784056, 0.936077, 0.989234, 0.949291, 0.939475],
    # next-token loss over the assistant's tokens of the tiny Llama's chat records
    "sft_lora": [6.758178, 6.600774, 6.449992, 6.440314, 6.379820],
}
SETTINGS: dict[str, dict[str, Any]] = {"sft_lora": {"decoding": {"max_new_tokens": 4}}}


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))


def first_losses(run: RunContext[Any]) -> list[float]:
    get_strategy(run.name).fit(run)
    rows = [json.loads(line) for line in (run.folder / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if row.get("loss") is not None][:STEPS]


@pytest.mark.parametrize("strategy", sorted(GOLDEN))
def test_the_first_losses_are_the_golden_ones(strategy: str, make_run: RunFactory) -> None:
    run = make_run(strategy, SETTINGS.get(strategy), max_steps=STEPS, micro_batch_size=4, seed=7)
    losses = first_losses(run)
    if os.environ.get("ADAPTLAB_PRINT_GOLDEN"):
        print(f'\n    "{strategy}": {losses},')
    assert len(losses) == STEPS
    assert losses == pytest.approx(GOLDEN[strategy], rel=1e-4, abs=1e-5)
    assert len(set(losses)) > 1  # it trains: the loss moves
