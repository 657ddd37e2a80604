"""Tiny in-process models and data for strategy tests (seconds on a CPU).

``tiny_encoder`` (a 2-layer BERT saved as a local model folder) comes from
``tests/unit/conftest.py``. ``tiny_task`` is a 3-class toy task whose classes are separable
by their words. ``tiny_llm`` is a random 2-layer Llama for the prompted strategies,
``tiny_chat_task`` a generative task of restaurant8k-shaped chat records (:func:`chat_records`),
and ``make_teacher`` puts a finished fine-tuned run (``teacher_model``) where distill looks for
one.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from adaptlab.config import ExperimentConfig, TrainConfig
from adaptlab.data.convert import DEFAULT_SLOT_SYSTEM_PROMPT, SLOT_ORDER
from adaptlab.models.encoder import SentenceClassifier, load_encoder, save_classifier
from adaptlab.runs import RunFolder, base_manifest
from adaptlab.strategies.base import (
    ClassificationTask,
    GenerativeTask,
    RunContext,
    StrategyConfig,
    get_strategy,
    merged_train_config,
    resolve_run,
    strategy_config,
    supported_tasks,
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


def _label_sets(rng: np.random.Generator, n: int) -> tuple[list[str], np.ndarray]:
    """Texts about 0, 1 or 2 of the topics, with those topics as their label set."""
    names = list(TOPICS)
    texts, sets = [], np.zeros((n, len(names)), dtype=np.int64)
    for row in range(n):
        chosen = rng.choice(len(names), size=row % 3, replace=False)
        words = [str(rng.choice(TOPICS[names[i]])) for i in chosen] or ["weather"]
        texts.append(f"about my {' and my '.join(words)} today, number {row}")
        sets[row, chosen] = 1
    return texts, sets


@pytest.fixture(scope="session")
def tiny_multilabel_task() -> ClassificationTask:
    """The three topics as a multi-label task: each record names 0, 1 or 2 of them, with a
    validation split for the per-label thresholds."""
    rng = np.random.default_rng(1)
    train_texts, train_sets = _label_sets(rng, 36)
    validation_texts, validation_sets = _label_sets(rng, 12)
    eval_texts, eval_sets = _label_sets(rng, 12)
    return ClassificationTask(
        tuple(TOPICS),
        train_texts,
        train_sets,
        eval_texts,
        eval_sets,
        "train-sha",
        "eval-sha",
        multi_label=True,
        validation_texts=validation_texts,
        validation_labels=validation_sets,
    )


# Restaurant8k-shaped utterances: (text, slots), every value spelled as in the text.
UTTERANCES: list[tuple[str, dict[str, str]]] = [
    ("a table for 2 at 7pm please", {"people": "2", "time": "7pm"}),
    ("can we book for four people tomorrow", {"people": "four", "date": "tomorrow"}),
    ("my name is Anna Berg", {"first_name": "Anna", "last_name": "Berg"}),
    ("is the terrace open in winter?", {}),
    ("reserve friday at noon for 6", {"people": "6", "date": "friday", "time": "noon"}),
    ("the booking is under Tom Reyes", {"first_name": "Tom", "last_name": "Reyes"}),
    ("do you have vegan dishes", {}),
    ("three of us on saturday evening at 8:30", {"people": "three", "time": "8:30"}),
    ("put it under Lee please", {"last_name": "Lee"}),
    ("next monday, 5 guests", {"people": "5", "date": "next monday"}),
    ("what time do you close", {}),
    ("we would like lunch at 1pm", {"time": "1pm"}),
    ("Maria here, booking for 12 on the 14th", {"people": "12", "date": "the 14th"}),
    ("can I bring my dog along", {}),
    ("dinner for two on sunday at half past six", {"people": "two", "date": "sunday"}),
    ("I'm Omar Haddad and we are 3", {"people": "3", "first_name": "Omar"}),
    ("is there parking nearby", {}),
    ("book me in for tonight at 9", {"date": "tonight", "time": "9"}),
    ("a quiet table for 4, surname Novak", {"people": "4", "last_name": "Novak"}),
    ("does the menu change weekly", {}),
    ("eight people on wednesday", {"people": "eight", "date": "wednesday"}),
    ("please hold a table at 7:45 for Ruth", {"time": "7:45", "first_name": "Ruth"}),
    ("are children welcome at dinner", {}),
    ("two adults, thursday lunch at 12:30", {"people": "two", "time": "12:30"}),
]


def chat_record(text: str, slots: dict[str, str]) -> dict[str, Any]:
    """One record as ``adaptlab data convert restaurant8k`` writes it."""
    frame = {slot: slots[slot] for slot in SLOT_ORDER if slot in slots}
    return {
        "messages": [
            {"role": "system", "content": DEFAULT_SLOT_SYSTEM_PROMPT},
            {"role": "user", "content": text},
            {"role": "assistant", "content": json.dumps(frame)},
        ]
    }


def chat_records() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """16 training and 8 eval records."""
    records = [chat_record(text, slots) for text, slots in UTTERANCES]
    return records[:16], records[16:]


@pytest.fixture(scope="session")
def tiny_chat_task() -> GenerativeTask:
    train, evaluation = chat_records()
    return GenerativeTask(
        SLOT_ORDER,
        [record["messages"] for record in train],
        [record["messages"] for record in evaluation],
        [json.loads(record["messages"][-1]["content"]) for record in evaluation],
        "chat-train-sha",
        "chat-eval-sha",
    )


# A tiny collection and questions about it: each answer is said in one document, whose id
# the question names as its gold document.
DOCUMENTS = {
    "cards.md": "Lost cards are blocked at once. A new card arrives in five days.",
    "transfers.md": "A SEPA transfer takes one working day. Wires abroad take three days.",
    "refunds.md": "A refund reaches your account within ten days of the merchant's return.",
}
QUESTIONS = [
    ("When does a new card arrive?", "In five days.", "cards.md"),
    ("What happens to a lost card?", "It is blocked at once.", "cards.md"),
    ("How long does a SEPA transfer take?", "One working day.", "transfers.md"),
    ("How long do wires abroad take?", "Three days.", "transfers.md"),
    ("When does a refund arrive?", "Within ten days.", "refunds.md"),
    ("What starts the refund clock?", "The merchant's return.", "refunds.md"),
]


@pytest.fixture(scope="session")
def tiny_rag_task(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> GenerativeTask:
    """A free-text task over :data:`DOCUMENTS`, chunked with the tiny encoder's tokenizer:
    four training questions and two eval questions, each naming its gold document."""
    from adaptlab.data.documents import ChunkSettings, prepare_collection

    folder = tmp_path_factory.mktemp("documents")
    for name, text in DOCUMENTS.items():
        (folder / name).write_text(text, encoding="utf-8")
    tokenizer, _ = load_encoder(str(tiny_encoder))
    collection = prepare_collection(
        folder, ChunkSettings(12, 4), tokenizer=tokenizer, tokenizer_name=str(tiny_encoder)
    )
    records = [
        [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        for q, a, _ in QUESTIONS
    ]
    gold = [[document] for _, _, document in QUESTIONS]
    order = [0, 2, 3, 5, 1, 4]  # eval: one question on cards, one on refunds
    train, evaluation = order[:4], order[4:]
    return GenerativeTask(
        (),
        [records[i] for i in train],
        [records[i] for i in evaluation],
        [],
        "rag-train-sha",
        "rag-eval-sha",
        eval_references=[[QUESTIONS[i][1]] for i in evaluation],
        collection=collection,
        train_documents=[gold[i] for i in train],
        eval_documents=[gold[i] for i in evaluation],
    )


RunFactory = Callable[..., RunContext[Any]]


@pytest.fixture
def make_run(
    tmp_path: Path,
    tiny_encoder: Path,
    tiny_task: ClassificationTask,
    request: pytest.FixtureRequest,
) -> RunFactory:
    """A RunContext for strategy ``name`` on the tiny encoder and task, or, for a strategy of
    generative tasks, on the tiny Llama and chat task.

    ``train`` overrides training settings (default: 2 optimizer steps of 8 examples, dropout
    aside, so tests are quick); ``settings`` is the strategy's own config.
    """

    def make(name: str, settings: dict[str, Any] | None = None, **train: Any) -> RunContext[Any]:
        kinds = supported_tasks(resolve_run(name, settings)[0])
        generative = "generative" in kinds or "generation" in kinds
        if "generative" in kinds:
            task = request.getfixturevalue("tiny_chat_task")
        else:  # free text only: answers from documents
            task = request.getfixturevalue("tiny_rag_task") if generative else tiny_task
        base_model = request.getfixturevalue("tiny_llm") if generative else tiny_encoder
        experiment = ExperimentConfig.model_validate(
            {
                # A chat record takes ~250 tokens of the tiny Llama's 400-word vocabulary.
                "model": {"base_model": str(base_model), "sequence_len": 512 if generative else 32},
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
        return RunContext(name, folder, task, experiment, config, merged, tmp_path / "runs")

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


@pytest.fixture(scope="session")
def multilabel_teacher_model(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_encoder: Path,
    tiny_multilabel_task: ClassificationTask,
) -> Path:
    """:func:`teacher_model` for label sets: trained with binary cross-entropy per label on
    ``tiny_multilabel_task``, saved with its sigmoid head flagged in ``classifier.json``."""
    folder = tmp_path_factory.mktemp("multilabel-teacher")
    experiment = ExperimentConfig.model_validate(
        {"model": {"base_model": str(tiny_encoder), "sequence_len": 32}}
    )
    train = TrainConfig(max_steps=4, micro_batch_size=8, learning_rate=1e-3, warmup_ratio=0.0)
    task = tiny_multilabel_task
    run = RunContext("full", folder, task, experiment, StrategyConfig(), train, folder)
    tokenizer, encoder = load_encoder(str(tiny_encoder))
    model = SentenceClassifier(encoder, task.num_labels)
    fit_classifier(run, model, tokenizer)  # the task's loss: binary cross-entropy
    meta = {"label_names": list(task.label_names), "max_length": 32, "multi_label": True}
    save_classifier(model.eval(), tokenizer, folder / "model", meta)
    return folder / "model"


@pytest.fixture(scope="session")
def chat_teacher_model(
    tmp_path_factory: pytest.TempPathFactory, tiny_llm: Path, tiny_chat_task: GenerativeTask
) -> Path:
    """The tiny Llama fine-tuned on the chat task, saved as ``sft_full`` saves its ``model/``."""
    folder = tmp_path_factory.mktemp("chat-teacher")
    experiment = ExperimentConfig.model_validate(
        {"model": {"base_model": str(tiny_llm), "sequence_len": 512}}
    )
    # Trained until it ends its answers (sequence distillation keeps only finished ones).
    config = strategy_config("sft_full", {"decoding": {"max_new_tokens": 48}})
    train = TrainConfig(max_steps=40, micro_batch_size=8, learning_rate=1e-2, warmup_ratio=0.0)
    run = RunContext("sft_full", folder, tiny_chat_task, experiment, config, train, folder)
    get_strategy("sft_full").fit(run)
    return folder / "model"


@pytest.fixture
def make_teacher(
    teacher_model: Path,
    multilabel_teacher_model: Path,
    chat_teacher_model: Path,
    tiny_task: ClassificationTask,
    tiny_multilabel_task: ClassificationTask,
    tiny_chat_task: GenerativeTask,
) -> TeacherFactory:
    """A finished teacher run ``runs_root/name`` with the given eval score: for a generative
    strategy (sft_full, ...) the tiny chat teacher and its slot F1, else the tiny classifier
    and its accuracy, or with ``multi_label`` the tiny multi-label classifier and its micro-F1
    (its eval.json with a ``multi_label`` section, as the harness writes it).

    ``weights`` names the folder the teacher's weights are copied to; ``manifest`` entries
    override the manifest's (another ``train_sha256``, a later ``created_at``).
    """

    def make(
        runs_root: Path,
        name: str,
        score: float,
        *,
        weights: str = "model",
        multi_label: bool = False,
        **manifest: Any,
    ) -> Path:
        strategy = str(manifest.pop("strategy", name))
        generative = "generative" in supported_tasks(get_strategy(strategy))
        task: ClassificationTask | GenerativeTask = tiny_chat_task if generative else tiny_task
        source = chat_teacher_model if generative else teacher_model
        metric = "slot_f1" if generative else "accuracy"
        evaluation: dict[str, Any] = {"strategy": name}
        if multi_label:
            task, source, metric = tiny_multilabel_task, multilabel_teacher_model, "micro_f1"
            evaluation.update(primary_metric=metric, multi_label={"tuned_on": "validation"})
        folder = RunFolder(runs_root / name)
        folder.reset()
        shutil.copytree(source, folder.path / weights)
        folder.write_json("eval.json", {**evaluation, "metrics": {metric: score}})
        values = base_manifest(
            name,
            strategy,
            get_strategy(strategy).profile,
            task.train_sha256,
            task.eval_sha256,
            "tiny",
            "fp",
            "",
            42,
            False,
        )
        folder.write_json("manifest.json", {**values, **manifest})
        return folder.path

    return make


def copy_run(run: RunContext[Any], destination: Path) -> RunContext[Any]:
    """The same run context pointing at a copy of its folder (for save → load tests)."""
    shutil.copytree(run.folder, destination)
    return RunContext(
        run.name, destination, run.task, run.experiment, run.config, run.train, run.runs_root
    )
