"""Retrieval-augmented generation: the base chat model answers from the chunks retrieved for
each question, and cites them.

The experiment's document collection (``data.documents``, chunked when the data is prepared)
is indexed for dense retrieval (the bundled MiniLM; embeddings cached per model and chunk
texts), BM25 (``bm25s``) and their reciprocal-rank fusion, in which the dense ranking's weight
is tuned on the training questions' gold documents unless set (``dense_weight``); see
:mod:`adaptlab.models.document_retrieval`. For each request the configured retriever's top
``k`` chunks go into the last user turn, numbered ``[1]`` … ``[k]`` (best first), before the
question; the system turn asks for a short answer from the passages that cites the numbers it
used. Nothing is trained. Every request pays for its passages in prompt tokens, which the run
records with the index's build time and size.

The run saves ``index/`` (chunks, vectors, settings) and ``prompt.json``: it is served from
its folder alone, with the base model. ``rag_sft`` fine-tunes the model on this same prompt.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Ge, Le
from pydantic import Field

from adaptlab.evaluate.generation import DecodingConfig, request_messages
from adaptlab.models.bundled import MINILM
from adaptlab.models.causal_lm import CausalLM
from adaptlab.models.document_retrieval import (
    DEFAULT_MAX_LENGTH,
    CollectionIndex,
    Hit,
    Retriever,
    tune_dense_weight,
)
from adaptlab.paths import write_text_atomic
from adaptlab.profile import DataNeed, StrategyProfile
from adaptlab.strategies.base import (
    GenerativeTask,
    Messages,
    RunContext,
    StrategyConfig,
    register,
)
from adaptlab.strategies.few_shot import query_text
from adaptlab.strategies.prompt import PromptGenerator, PromptSpec, record_prompt_facts

INDEX_DIR = "index"
SETTINGS = "rag.json"

RAG_INSTRUCTION = (
    "Answer the question with a short phrase or sentence taken from the numbered passages. "
    "After the answer, give the number of the passage you used in square brackets, like [1]."
)

RetrieverChoice = Literal["dense", "sparse", "hybrid"]


class RetrievalSettings(StrategyConfig):
    """How chunks are retrieved and shown (``rag`` and ``rag_sft``)."""

    k: Annotated[int, Ge(1), Le(50)] = Field(3, description="Chunks shown per request, best first.")
    retriever: RetrieverChoice = Field(
        "hybrid",
        description="dense (sentence embeddings), sparse (BM25) or hybrid (their "
        "reciprocal-rank fusion).",
    )
    encoder: str = Field(MINILM, description="Sentence encoder of dense retrieval.")
    dense_weight: Annotated[float, Ge(0), Le(1)] | Literal["tuned"] = Field(
        "tuned",
        description="The dense ranking's weight in the hybrid fusion (BM25's is 1). tuned: the "
        "weight of 0.25, 0.5, 0.75 or 1 with the best recall@k on the training questions "
        "that name their gold documents (1 without them).",
    )
    instruction: str | None = Field(
        None,
        description="System message. Empty: answer briefly from the numbered passages and "
        "cite the passage number in square brackets.",
    )

    def other_models(self) -> list[str]:
        return [*super().other_models(), self.encoder]


class RagConfig(RetrievalSettings):
    model: str | None = Field(
        None,
        description="Instruction-tuned causal LM to prompt; empty: the experiment's base model.",
    )
    decoding: DecodingConfig = Field(
        default_factory=DecodingConfig, description="How answers are decoded (greedy)."
    )
    eval_limit: Annotated[int, Ge(1)] | None = Field(
        500, description="Eval examples answered (a fixed seeded sample); null: all of them."
    )

    def other_models(self) -> list[str]:
        return [*super().other_models(), *([] if self.model is None else [self.model])]


def rag_system(config: RetrievalSettings) -> str:
    """The system turn of a retrieval prompt: the configured instruction, else
    :data:`RAG_INSTRUCTION`."""
    return (config.instruction or RAG_INSTRUCTION).strip()


def passages_turn(question: str, passages: Sequence[str]) -> str:
    """The user turn: the numbered passages, then the question."""
    numbered = "\n\n".join(f"[{n}] {text.strip()}" for n, text in enumerate(passages, start=1))
    return f"Passages:\n\n{numbered}\n\nQuestion: {question.strip()}"


def grounded_request(request: Messages, passages: Sequence[str]) -> Messages:
    """``request`` with its last user turn preceded by ``passages``; a system turn it carries
    is dropped (the instruction is the generator's)."""
    turns = [dict(m) for m in request if m.get("role") != "system"]
    last = max(i for i, m in enumerate(turns) if m.get("role") == "user")
    turns[last]["content"] = passages_turn(str(turns[last].get("content", "")), passages)
    return turns


@dataclass
class RagGenerator:
    """A chat model shown the top ``k`` chunks of ``retriever_kind`` for each request."""

    prompt: PromptGenerator
    index: CollectionIndex
    k: int
    retriever_kind: str

    @property
    def lm(self) -> CausalLM:
        return self.prompt.lm

    @property
    def decoding(self) -> DecodingConfig:
        return self.prompt.decoding

    @property
    def retrievers(self) -> dict[str, Retriever]:
        return self.index.retrievers

    @property
    def chunk_documents(self) -> Sequence[str]:
        return self.index.chunk_documents

    @property
    def chunk_texts(self) -> Sequence[str]:
        return self.index.chunk_texts

    @property
    def chunk_ids(self) -> Sequence[str]:
        return self.index.chunk_ids

    def query(self, request: Messages) -> str:
        return query_text(request)

    def retrieve(self, requests: Sequence[Messages], k: int | None = None) -> list[list[Hit]]:
        retriever = self.retrievers[self.retriever_kind]
        return retriever.retrieve([self.query(r) for r in requests], k or self.k)

    def grounded_conversations(
        self, requests: Sequence[Messages], hits: Sequence[Sequence[Hit]]
    ) -> list[Messages]:
        return [
            self.prompt.conversation(
                grounded_request(request, [self.chunk_texts[i] for i, _ in shown])
            )
            for request, shown in zip(requests, hits, strict=True)
        ]

    def conversations(self, requests: Sequence[Messages]) -> list[Messages]:
        if not requests:
            return []
        return self.grounded_conversations(requests, self.retrieve(requests))


def collection_index(run: RunContext[GenerativeTask, RetrievalSettings]) -> CollectionIndex:
    """The task's collection indexed for every retriever (vectors through the cache)."""
    collection = run.task.collection
    if collection is None:
        raise ValueError(f"run '{run.name}' answers from documents: set data.documents")
    chunks = collection.chunks
    index = CollectionIndex.build(
        [c.id for c in chunks],
        [c.document_id for c in chunks],
        [c.text for c in chunks],
        run.config.encoder,
        DEFAULT_MAX_LENGTH,
    )
    index.dense_weight = hybrid_weight(run, index)
    return index


def hybrid_weight(
    run: RunContext[GenerativeTask, RetrievalSettings], index: CollectionIndex
) -> float:
    """The configured dense weight, or the one tuned on the training questions that name gold
    documents (recorded with each candidate's recall in the run's cost facts)."""
    config, task = run.config, run.task
    if config.dense_weight != "tuned":
        return float(config.dense_weight)
    golds = task.train_documents or []
    named = [
        (record, gold) for record, gold in zip(task.train_records, golds, strict=False) if gold
    ]
    if config.retriever != "hybrid" or not named:
        return 1.0
    queries = [query_text(request_messages({"messages": record})) for record, _ in named]
    weight, recall = tune_dense_weight(index, queries, [gold for _, gold in named], config.k)
    run.record(
        hybrid_dense_weight=weight,
        hybrid_tuning={f"{w:g}": round(r, 4) for w, r in recall.items()},
        hybrid_tuning_queries=len(queries),
    )
    return weight


def save_retrieval(
    run: RunContext[GenerativeTask, RetrievalSettings], index: CollectionIndex
) -> None:
    """``index/`` and ``rag.json`` into the run folder, and the index's cost facts."""
    config = run.config
    index.save(run.folder / INDEX_DIR)
    collection = run.task.collection
    settings = {
        "k": config.k,
        "retriever": config.retriever,
        "collection_sha256": None if collection is None else collection.sha256,
    }
    write_text_atomic(run.folder / SETTINGS, json.dumps(settings, indent=2) + "\n")
    run.record(
        index_build_s=round(index.build_seconds, 3),
        index_vectors_cached=index.vectors_cached,
        index_bytes=index.size_bytes(),
        index_chunks=len(index.chunk_ids),
        retriever_params=index.dense.encoder.parameter_count(),
    )


def read_retrieval(run: RunContext[GenerativeTask]) -> tuple[CollectionIndex, dict[str, Any]]:
    settings = json.loads((run.folder / SETTINGS).read_text(encoding="utf-8"))
    return CollectionIndex.load(run.folder / INDEX_DIR), settings


class RagStrategy:
    name: ClassVar[str] = "rag"
    config_type: ClassVar[type[StrategyConfig]] = RagConfig
    trains: ClassVar[bool] = False
    profile: ClassVar[StrategyProfile] = StrategyProfile(
        role="prompted",
        method="none",
        data_need=DataNeed(0, 0, "it needs a document collection, not training examples"),
        tasks=("generation",),
        retrieves=True,
    )

    def requires(self, config: StrategyConfig) -> list[str]:
        return []

    def fit(self, run: RunContext[GenerativeTask, RagConfig]) -> RagGenerator:
        config = run.config
        spec = PromptSpec(
            config.model or run.base_model,
            rag_system(config),
            config.decoding.model_dump(mode="json"),
        )
        index = collection_index(run)
        generator = RagGenerator(PromptGenerator.from_spec(spec), index, config.k, config.retriever)
        spec.save(run.folder)
        save_retrieval(run, index)
        record_prompt_facts(run, generator, needs_base_model=config.model is None)
        return generator

    def load(self, run: RunContext[GenerativeTask]) -> RagGenerator:
        index, settings = read_retrieval(run)
        prompt = PromptGenerator.from_spec(PromptSpec.read(run.folder))
        return RagGenerator(prompt, index, int(settings["k"]), str(settings["retriever"]))


register(RagStrategy)
