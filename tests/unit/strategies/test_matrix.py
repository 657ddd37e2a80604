"""The shared strategy matrix: every strategy crossed with the generic checks (STYLE.md).

A row names a strategy, the settings it runs with, and which of the optional checks apply;
adding a strategy is one line in ``ROWS``. A strategy for classification tasks runs on the
tiny encoder and 3-class task, one for generative tasks on the tiny Llama and chat task (see
``make_run``). Every row gets: fit gives valid outputs (a probability for every label; an
answer for every request) and records its cost facts; save → load gives the same outputs
(probabilities; prompts and generated tokens); the run folder holds no pickle
and every file in it was written under a temporary name and renamed into place. ``trains`` rows
also get: the shared loop ran once, every trainable parameter changed and every frozen one is
bit-identical (the loop is spied on, so no strategy needs a hook); other rows must not run the
loop. ``merges`` rows: the merged adapter gives the
unmerged logits.

A setting can name a session fixture (``FromFixture``, e.g. the tiny Llama's folder), and a row
can ask for a finished ``teacher`` run beside its own, as distill needs.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tests.unit.strategies.conftest import TeacherFactory, copy_run
from tests.unit.writes import trace_writes, written_in_place

import adaptlab.strategies  # every strategy module, so the loop spy finds their imports
import adaptlab.train.loop
from adaptlab.evaluate.generation import generate_chat
from adaptlab.models.encoder import EncoderClassifier, run_batched
from adaptlab.strategies.base import (
    ClassificationTask,
    Classifier,
    GenerativeTask,
    Generator,
    RunContext,
    Task,
    get_strategy,
    supported_tasks,
)
from adaptlab.train.chat import encode_prompt

RunFactory = Callable[..., RunContext[Any]]


@dataclass(frozen=True)
class FromFixture:
    """A setting whose value is the path a (session) fixture builds, as a string."""

    fixture: str

    def __str__(self) -> str:
        return self.fixture


TINY_LLM, TINY_ENCODER = FromFixture("tiny_llm"), FromFixture("tiny_encoder")


@dataclass(frozen=True)
class Row:
    strategy: str
    settings: dict[str, Any] = field(default_factory=dict)
    trains: bool = False
    """Runs the shared loop: trainable parameters change, frozen ones do not."""
    merges: bool = False
    """``load(run, merge=False)`` keeps a PEFT adapter apart; merged must give its logits."""
    teacher: str | None = None
    """A finished run of this name (``make_teacher``'s tiny fine-tuned classifier) is put in
    the runs root before fitting."""
    cuda: bool = False
    """Needs CUDA (and bitsandbytes): marked ``gpu``, so only ``pytest -m gpu`` runs it."""

    @property
    def task(self) -> str:
        """The task kind the row runs on: the first its strategy handles."""
        return supported_tasks(get_strategy(self.strategy))[0]

    @property
    def id(self) -> str:
        options = ",".join(f"{key}={value}" for key, value in self.settings.items())
        return f"{self.strategy}[{options}]" if options else self.strategy


ROWS = [
    Row("zero_shot"),
    Row("knn", {"k": 5}),
    Row("frozen"),
    Row("frozen", {"head": "mlp", "hidden_size": 16}),
    Row("frozen", {"runtime": "torch"}),
    Row("frozen", {"runtime": "onnx"}),
    Row("full", trains=True),
    Row("partial", {"unfreeze_layers": 1}, trains=True),
    Row("lora", trains=True, merges=True),
    Row("scratch", trains=True),
    Row("setfit", {"shots": 2, "pair_iterations": 1}, trains=True),
    Row("distill", teacher="full", trains=True),
    Row("llm_prompt", {"model": TINY_LLM}),
    Row("llm_prompt", {"model": TINY_LLM, "few_shot_k": 2, "retriever": TINY_ENCODER}),
    Row("prompt", {"decoding": {"max_new_tokens": 4}}),
    Row("few_shot", {"k": 2, "retriever": TINY_ENCODER, "decoding": {"max_new_tokens": 4}}),
    Row("sft_full", {"decoding": {"max_new_tokens": 4}}, trains=True),
    Row("sft_full", {"packing": False, "decoding": {"max_new_tokens": 4}}, trains=True),
    Row("sft_lora", {"decoding": {"max_new_tokens": 4}}, trains=True, merges=True),
    Row(
        "sft_lora",
        {"lora": {"use_dora": True}, "decoding": {"max_new_tokens": 4}},
        trains=True,
        merges=True,
    ),
    Row("qlora", {"decoding": {"max_new_tokens": 4}}, trains=True, merges=True, cuda=True),
    Row("sft_scratch", {"decoding": {"max_new_tokens": 4}}, trains=True),
    Row("distill_logit", {"decoding": {"max_new_tokens": 4}}, teacher="sft_full", trains=True),
    Row(
        "distill_logit",
        {"teacher": "sft_full", "divergence": "jsd", "top_k": 8, "decoding": {"max_new_tokens": 4}},
        teacher="sft_full",
        trains=True,
    ),
    Row("distill_seq", {"decoding": {"max_new_tokens": 4}}, teacher="sft_full", trains=True),
    Row("rag", {"k": 2, "encoder": TINY_ENCODER, "decoding": {"max_new_tokens": 4}}),
    Row(
        "rag_sft",
        {"k": 2, "encoder": TINY_ENCODER, "decoding": {"max_new_tokens": 4}},
        trains=True,
        merges=True,
    ),
]


def rows(
    *, trains: bool | None = None, merges: bool | None = None, task: str | tuple[str, ...] = ()
) -> Any:
    """``ROWS`` (filtered by the flags given) as pytest parameters named by ``Row.id``."""
    chosen = [
        pytest.param(row, id=row.id, marks=[pytest.mark.gpu] if row.cuda else [])
        for row in ROWS
        if (trains is None or row.trains == trains)
        and (merges is None or row.merges == merges)
        and (not task or row.task in ((task,) if isinstance(task, str) else task))
    ]
    return pytest.mark.parametrize("row", chosen)


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Embeddings cached by one test must not answer for another (or fill ~/.cache)."""
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))


@dataclass
class LoopCall:
    """The model's parameters when the shared loop started and when it returned."""

    before: dict[str, torch.Tensor]
    after: dict[str, torch.Tensor]
    trainable: set[str]


@pytest.fixture
def loop_calls(monkeypatch: pytest.MonkeyPatch) -> list[LoopCall]:
    """Record every call of the shared loop, whichever ``adaptlab`` module it was imported
    into (``fit_classifier``'s module, setfit's, ...)."""
    calls: list[LoopCall] = []
    real_train = adaptlab.train.loop.train

    def spy(task: Any, *args: Any, **kwargs: Any) -> Any:
        named = task.model.named_parameters
        before = {name: p.detach().clone() for name, p in named()}
        trainable = {name for name, p in named() if p.requires_grad}
        result = real_train(task, *args, **kwargs)
        # Copies: a strategy may change weights in place afterwards (a LoRA merge does).
        calls.append(LoopCall(before, {n: p.detach().clone() for n, p in named()}, trainable))
        return result

    for name, module in list(sys.modules.items()):
        if name == "adaptlab" or name.startswith("adaptlab."):
            for attribute, value in list(vars(module).items()):
                if value is real_train:
                    monkeypatch.setattr(module, attribute, spy)
    return calls


RowRunFactory = Callable[..., RunContext[Any]]


@pytest.fixture
def run_for(
    make_run: RunFactory, make_teacher: TeacherFactory, request: pytest.FixtureRequest
) -> RowRunFactory:
    """A run context for ``row`` (``train`` overrides as ``make_run``'s), ready to fit: its
    ``FromFixture`` settings hold their fixture's path and its teacher run is finished.

    ``make_teacher`` is requested here rather than when a row needs it: its session-scoped
    teacher model, which the shared loop trains, is then built before any function-scoped
    fixture, so ``loop_calls`` never records the teacher's training.
    """

    def prepare(row: Row, **train: Any) -> RunContext[Any]:
        settings = {
            key: str(request.getfixturevalue(value.fixture))
            if isinstance(value, FromFixture)
            else value
            for key, value in row.settings.items()
        }
        run = make_run(row.strategy, settings, **train)
        if row.teacher is not None:
            make_teacher(run.runs_root, row.teacher, 0.9)
        return run

    return prepare


def fitted(run_for: RowRunFactory, row: Row) -> tuple[RunContext[Any], Any]:
    run = run_for(row)
    return run, get_strategy(row.strategy).fit(run)


def outputs(model: Classifier | Generator, task: Task) -> Any:
    """A classifier's probabilities on the eval texts; a generator's prompts for the eval
    requests and the tokens it generates for them."""
    if isinstance(task, GenerativeTask):
        assert isinstance(model, Generator)
        conversations = model.conversations(task.eval_requests)
        answers = generate_chat(model.lm, conversations, model.decoding)
        return conversations, [answer.token_ids for answer in answers]
    return model.predict_proba(task.eval_texts)


@rows(task="classification")
def test_fit_gives_a_probability_for_every_label(row: Row, run_for: RowRunFactory) -> None:
    run, classifier = fitted(run_for, row)
    task = run.task

    assert isinstance(classifier, Classifier)
    assert list(classifier.label_names) == list(task.label_names)
    probabilities = outputs(classifier, task)
    assert probabilities.shape == (len(task.eval_texts), 3)
    assert (probabilities >= 0).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def multi_label_rows() -> list[Any]:
    """Classification rows whose strategy says it handles label sets (``profile.multi_label``)."""
    return [
        pytest.param(row, id=row.id)
        for row in ROWS
        if "classification" in supported_tasks(get_strategy(row.strategy))
        and get_strategy(row.strategy).profile.multi_label
    ]


@pytest.mark.parametrize("row", multi_label_rows())
def test_multi_label_fit_gives_each_label_its_own_probability_and_loads_the_same(
    row: Row,
    run_for: RowRunFactory,
    make_teacher: TeacherFactory,
    tiny_multilabel_task: ClassificationTask,
    tmp_path: Path,
) -> None:
    """On label sets (records with 0, 1 or 2 labels) a classifier gives every label a
    probability of its own: in [0, 1], not one distribution over the labels (a record may have
    none or several); save then load gives the same. A row with a teacher gets a multi-label
    one (distill refuses a teacher of the other kind)."""
    run = dataclasses.replace(run_for(row), task=tiny_multilabel_task)
    if row.teacher is not None:
        make_teacher(run.runs_root, row.teacher, 0.9, multi_label=True)
    classifier = get_strategy(row.strategy).fit(run)
    probabilities = outputs(classifier, run.task)
    assert probabilities.shape == (len(tiny_multilabel_task.eval_texts), 3)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    assert not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)
    copy = copy_run(run, tmp_path / "copied")
    shutil.rmtree(run.folder)
    again = outputs(get_strategy(row.strategy).load(copy), copy.task)
    np.testing.assert_allclose(again, probabilities, rtol=0, atol=1e-6)


@rows(task=("generative", "generation"))
def test_fit_gives_an_answer_for_every_request(row: Row, run_for: RowRunFactory) -> None:
    run, generator = fitted(run_for, row)
    task = run.task

    assert isinstance(generator, Generator) and not isinstance(generator, Classifier)
    conversations, answers = outputs(generator, task)
    assert len(conversations) == len(answers) == len(task.eval_requests)
    for conversation, request, tokens in zip(
        conversations, task.eval_requests, answers, strict=True
    ):
        assert conversation[0]["role"] == "system"
        # the request's own turn comes last (after the passages, for a retrieval strategy)
        assert conversation[-1]["role"] == request[-1]["role"]
        assert conversation[-1]["content"].endswith(request[-1]["content"])
        assert 1 <= len(tokens) <= generator.decoding.max_new_tokens


@rows()
def test_fit_records_parameter_counts_and_whether_serving_needs_the_base_model(
    row: Row, run_for: RowRunFactory
) -> None:
    run, _ = fitted(run_for, row)

    facts = run.facts
    assert 0 <= facts["trainable_params"] <= facts["total_params"]
    assert facts["trainable_params"] > 0 or not row.trains
    assert isinstance(facts["needs_base_model"], bool)


@rows()
def test_save_then_load_gives_identical_outputs(
    row: Row, run_for: RowRunFactory, tmp_path: Path
) -> None:
    run, model = fitted(run_for, row)
    before = outputs(model, run.task)
    copy = copy_run(run, tmp_path / "copied")
    shutil.rmtree(run.folder)  # loading may use the copy alone (and the base model)

    after = outputs(get_strategy(row.strategy).load(copy), copy.task)

    if isinstance(before, np.ndarray):
        np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)
    else:
        assert after == before


# .jinja: a chat template, saved beside the tokenizer
SAFE_SUFFIXES = {".safetensors", ".json", ".jsonl", ".yaml", ".txt", ".jinja"}
SENTENCEPIECE_FILES = {"spiece.model", "sentencepiece.bpe.model", "tokenizer.model"}


@rows()
def test_run_folder_holds_no_pickle_and_no_half_written_files(
    row: Row, run_for: RowRunFactory
) -> None:
    with trace_writes() as writes:
        run, _ = fitted(run_for, row)

    assert writes  # the tracing sees the strategy's writes
    assert written_in_place(writes, run.folder) == []  # every file renamed into place

    files = [path for path in run.folder.rglob("*") if path.is_file()]
    assert files
    unsafe = [
        path.relative_to(run.folder)
        for path in files
        if path.suffix not in SAFE_SUFFIXES and path.name not in SENTENCEPIECE_FILES
    ]
    assert unsafe == []
    assert [path.name for path in run.folder.rglob(".*")] == []  # staging folders, temp files


@rows(trains=True)
def test_trainable_parameters_change_and_frozen_ones_stay_bit_identical(
    row: Row, run_for: RowRunFactory, loop_calls: list[LoopCall]
) -> None:
    fitted(run_for, row)

    assert len(loop_calls) == 1
    call = loop_calls[0]
    assert call.trainable
    unchanged = [n for n in sorted(call.trainable) if torch.equal(call.before[n], call.after[n])]
    assert unchanged == []
    frozen = sorted(set(call.before) - call.trainable)
    assert [n for n in frozen if not torch.equal(call.before[n], call.after[n])] == []


@rows(trains=False)
def test_strategies_that_do_not_train_never_run_the_loop(
    row: Row, run_for: RowRunFactory, loop_calls: list[LoopCall]
) -> None:
    fitted(run_for, row)

    assert loop_calls == []
    assert get_strategy(row.strategy).trains is False


def logits(classifier: Classifier, texts: list[str]) -> torch.Tensor:
    assert isinstance(classifier, EncoderClassifier)
    classifier.model.eval()
    return run_batched(classifier.model, classifier.tokenizer, texts, classifier.max_length)


@rows(merges=True, task="classification")
def test_merged_adapter_gives_the_unmerged_logits(
    row: Row, run_for: RowRunFactory, tiny_task: ClassificationTask
) -> None:
    # A large step size, so that the adapter moves the logits well beyond the tolerance.
    run = run_for(row, learning_rate=0.05)
    strategy: Any = get_strategy(row.strategy)
    strategy.fit(run)
    unmerged, merged = strategy.load(run, merge=False), strategy.load(run)
    texts = tiny_task.eval_texts

    torch.testing.assert_close(logits(merged, texts), logits(unmerged, texts), atol=1e-4, rtol=1e-5)
    assert isinstance(unmerged, EncoderClassifier)
    with unmerged.model.encoder.disable_adapter():
        base = logits(unmerged, texts)
    assert (logits(unmerged, texts) - base).abs().max() > 1e-2
    assert parameter_count(merged) < parameter_count(unmerged)  # the adapter was folded in


def parameter_count(classifier: Classifier) -> int:
    assert isinstance(classifier, EncoderClassifier)
    return sum(p.numel() for p in classifier.model.parameters())


def lm_logits(generator: Any, task: GenerativeTask) -> torch.Tensor:
    """The LM's next-token logits at every position of the first eval request's prompt."""
    prompt = encode_prompt(generator.lm.tokenizer, generator.conversations(task.eval_requests)[0])
    model = generator.lm.model
    device = next(model.parameters()).device
    with torch.no_grad():
        return model(torch.tensor([prompt], device=device)).logits.float().cpu()


@rows(merges=True, task=("generative", "generation"))
def test_merged_adapter_gives_the_unmerged_generative_logits(
    row: Row, run_for: RowRunFactory
) -> None:
    run = run_for(row, learning_rate=0.05)
    strategy: Any = get_strategy(row.strategy)
    strategy.fit(run)
    unmerged, merged = strategy.load(run, merge=False), strategy.load(run)
    task = run.task

    torch.testing.assert_close(
        lm_logits(merged, task), lm_logits(unmerged, task), atol=1e-4, rtol=1e-5
    )
    with unmerged.lm.model.disable_adapter():
        base = lm_logits(unmerged, task)
    assert (lm_logits(unmerged, task) - base).abs().max() > 1e-2
    assert sum(p.numel() for p in merged.lm.model.parameters()) < sum(
        p.numel() for p in unmerged.lm.model.parameters()
    )
