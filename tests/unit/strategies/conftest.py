"""Tiny in-process models and data for strategy tests (seconds on a CPU).

``tiny_encoder`` is a 2-layer BERT with hidden size 32, randomly initialised and saved as a
local model folder with the bundled MiniLM tokenizer, so every strategy loads it through the
same code path as a real model. ``tiny_task`` is a 3-class toy task whose classes are separable
by their words. ``tiny_llm`` is a random 2-layer Llama for the prompted strategy, and
``make_teacher`` puts a finished fine-tuned run (``teacher_model``) where distill looks for one.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from adaptlab.config import ExperimentConfig, TrainConfig
from adaptlab.models.bundled import MINILM, resolve_model
from adaptlab.models.encoder import SentenceClassifier, load_encoder, save_classifier
from adaptlab.runs import RunFolder, base_manifest
from adaptlab.strategies.base import (
    ClassificationTask,
    RunContext,
    StrategyConfig,
    get_strategy,
    merged_train_config,
    strategy_config,
)
from adaptlab.train.classifier import fit_classifier

TOPICS = {
    "cards": ["card", "pin", "atm", "contactless", "chip", "debit"],
    "transfers": ["transfer", "iban", "wire", "payee", "sepa", "beneficiary"],
    "refunds": ["refund", "return", "merchant", "dispute", "chargeback", "receipt"],
}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # tiny models on two contended cores run faster single-threaded


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(resolve_model(MINILM)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama with a ChatML template, saved as a local model folder."""
    from tests.unit.models.test_causal_lm import build_tiny_llm

    return build_tiny_llm(tmp_path_factory.mktemp("tiny-llama"))


def _texts(rng: np.random.Generator, n_per_class: int) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    for label, words in enumerate(TOPICS.values()):
        for _ in range(n_per_class):
            chosen = rng.choice(words, size=3, replace=True)
            texts.append(f"my {chosen[0]} and the {chosen[1]} {chosen[2]} please")
            labels.append(label)
    return texts, labels


@pytest.fixture(scope="session")
def tiny_task() -> ClassificationTask:
    rng = np.random.default_rng(0)
    train_texts, train_labels = _texts(rng, 12)
    eval_texts, eval_labels = _texts(rng, 4)
    return ClassificationTask(
        tuple(TOPICS),
        train_texts,
        np.array(train_labels),
        eval_texts,
        np.array(eval_labels),
        "train-sha",
        "eval-sha",
    )


RunFactory = Callable[..., RunContext]


@pytest.fixture
def make_run(tmp_path: Path, tiny_encoder: Path, tiny_task: ClassificationTask) -> RunFactory:
    """A RunContext for strategy ``name`` on the tiny encoder and task.

    ``train`` overrides training settings (default: 2 optimizer steps of 8 examples, dropout
    aside, so tests are quick); ``settings`` is the strategy's own config.
    """

    def make(name: str, settings: dict[str, Any] | None = None, **train: Any) -> RunContext:
        experiment = ExperimentConfig.model_validate(
            {
                "model": {"base_model": str(tiny_encoder), "sequence_len": 32},
                "strategies": {name: settings or {}},
            }
        )
        config = strategy_config(name, settings)
        base = TrainConfig(
            **{
                "max_steps": 2,
                "micro_batch_size": 8,
                "learning_rate": 1e-3,
                "warmup_ratio": 0.0,
                **train,
            }
        )
        merged = merged_train_config(base, set(base.model_fields_set), config)
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True, exist_ok=True)
        assert get_strategy(name).config_type is type(config)
        return RunContext(name, folder, tiny_task, experiment, config, merged, tmp_path / "runs")

    return make


TeacherFactory = Callable[..., Path]


@pytest.fixture(scope="session")
def teacher_model(
    tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path, tiny_task: ClassificationTask
) -> Path:
    """A fine-tuned tiny classifier saved as a ``model/`` folder, as the full strategy saves it."""
    folder = tmp_path_factory.mktemp("teacher")
    experiment = ExperimentConfig.model_validate(
        {"model": {"base_model": str(tiny_encoder), "sequence_len": 32}}
    )
    train = TrainConfig(max_steps=4, micro_batch_size=8, learning_rate=1e-3, warmup_ratio=0.0)
    run = RunContext("full", folder, tiny_task, experiment, StrategyConfig(), train, folder)
    tokenizer, encoder = load_encoder(str(tiny_encoder))
    model = SentenceClassifier(encoder, tiny_task.num_labels)
    fit_classifier(run, model, tokenizer)
    meta = {"label_names": list(tiny_task.label_names), "max_length": 32}
    save_classifier(model.eval(), tokenizer, folder / "model", meta)
    return folder / "model"


@pytest.fixture
def make_teacher(teacher_model: Path, tiny_task: ClassificationTask) -> TeacherFactory:
    """A finished teacher run ``runs_root/name`` with the given eval accuracy.

    ``weights`` names the folder the teacher's weights are copied to; ``manifest`` entries
    override the manifest's (another ``train_sha256``, a later ``created_at``).
    """

    def make(
        runs_root: Path, name: str, accuracy: float, *, weights: str = "model", **manifest: Any
    ) -> Path:
        folder = RunFolder(runs_root / name)
        folder.reset()
        shutil.copytree(teacher_model, folder.path / weights)
        folder.write_json("eval.json", {"strategy": name, "metrics": {"accuracy": accuracy}})
        values = base_manifest(
            name, tiny_task.train_sha256, tiny_task.eval_sha256, "tiny", "fp", "", 42, False
        )
        folder.write_json("manifest.json", {**values, **manifest})
        return folder.path

    return make


def copy_run(run: RunContext, destination: Path) -> RunContext:
    """The same run context pointing at a copy of its folder (for save → load tests)."""
    shutil.copytree(run.folder, destination)
    return RunContext(
        run.name, destination, run.task, run.experiment, run.config, run.train, run.runs_root
    )
