"""Runs that serve the same inference graph get the same fingerprint, whatever their weights:
fine-tuned in full or in part, through a merged LoRA adapter, from scratch, or the frozen
encoder under a linear head; a different runtime, a nearest-neighbour search or another encoder
get their own. The fingerprint is read from the loaded run, as compare's timing reads it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from tests.unit.conftest import build_tiny_bert
from tests.unit.strategies.conftest import RunFactory, TeacherFactory

from adaptlab.evaluate.latency import graph_fingerprint
from adaptlab.strategies.base import get_strategy


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def wider_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another tiny BERT: the same tokenizer and depth, hidden size 48 instead of 32."""
    return build_tiny_bert(tmp_path_factory.mktemp("wider-bert"), hidden_size=48)


def loaded_fingerprint(
    make_run: RunFactory, name: str, settings: dict[str, Any] | None = None
) -> str | None:
    """Fit the strategy on the tiny task (two steps), load the run back, fingerprint it."""
    run = make_run(name, settings)
    strategy = get_strategy(name)
    strategy.fit(run)
    return graph_fingerprint(strategy.load(run))


SAME_GRAPH = [
    ("full", {}),
    ("partial", {"unfreeze_layers": 1}),
    ("lora", {}),
    ("scratch", {}),
    ("setfit", {"shots": 2, "pair_iterations": 1}),
    ("frozen", {"runtime": "torch"}),
    ("zero_shot", {}),
]


def test_runs_of_one_encoder_with_a_linear_head_share_a_fingerprint(make_run: RunFactory) -> None:
    found = {name: loaded_fingerprint(make_run, name, settings) for name, settings in SAME_GRAPH}
    assert None not in found.values()
    assert len(set(found.values())) == 1, found


def test_another_runtime_head_search_or_depth_has_its_own_fingerprint(
    make_run: RunFactory, make_teacher: TeacherFactory
) -> None:
    torch_graph = loaded_fingerprint(make_run, "full")
    others = {
        "onnx": loaded_fingerprint(make_run, "frozen", {"runtime": "onnx"}),
        "mlp": loaded_fingerprint(
            make_run, "frozen", {"runtime": "torch", "head": "mlp", "hidden_size": 8}
        ),
        "knn": loaded_fingerprint(make_run, "knn", {"k": 3}),
    }
    run = make_run("distill")
    make_teacher(run.runs_root, "full", 0.9)
    get_strategy("distill").fit(run)
    others["distill"] = graph_fingerprint(get_strategy("distill").load(run))  # half the layers
    run = make_run("lora")
    lora: Any = get_strategy("lora")
    lora.fit(run)
    others["lora unmerged"] = graph_fingerprint(lora.load(run, merge=False))
    assert None not in others.values()
    assert len({torch_graph, *others.values()}) == 1 + len(others), others


def test_two_encoders_differ(make_run: RunFactory, wider_encoder: Path) -> None:
    tiny = loaded_fingerprint(make_run, "full")
    run = make_run("full")
    wider = run.experiment.model.model_copy(update={"base_model": str(wider_encoder)})
    run = dataclasses.replace(run, experiment=run.experiment.model_copy(update={"model": wider}))
    get_strategy("full").fit(run)
    assert graph_fingerprint(get_strategy("full").load(run)) != tiny
