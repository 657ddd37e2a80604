"""Retrieval-augmented fine-tuning: LoRA on the training questions asked with retrieved chunks
in the prompt, distractors mixed in (RAFT: Zhang et al. 2024, "RAFT: Adapting Language Model
to Domain Specific RAG").

Each training question is shown ``k`` chunks in ``rag``'s prompt. For a share ``oracle_share``
of the questions (RAFT's P; 0.8 by default, in the range RAFT found best) one of them is the
*oracle*: the chunk of a gold document (the record's ``documents``) that contains the answer,
else the gold chunk ranked highest by the retriever, else the gold document's first chunk. The
others are *distractors*: the retriever's best-ranked chunks of other documents, the hard
negatives a deployed retriever returns. The rest of the questions see distractors only, which
teaches the model to answer from what it learned when the context does not hold the answer.
The chunks are shuffled (seeded), and the target answer cites the oracle's number, ``[n]``, so
the model learns to cite as ``rag`` asks. Records that name no gold document are shown the
retriever's top ``k`` as they come.

At evaluation the model gets exactly ``rag``'s prompt with the retriever's top ``k``. The run
saves ``adapter/`` (as ``sft_lora``), ``index/`` and ``prompt.json``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Annotated, ClassVar

import numpy as np
from annotated_types import Ge, Le
from pydantic import Field

from adaptlab.cost.workload import Workload
from adaptlab.evaluate.free_text import normalise_answer
from adaptlab.evaluate.generation import request_messages
from adaptlab.models.causal_lm import CausalLM
from adaptlab.models.document_retrieval import CollectionIndex
from adaptlab.profile import StrategyProfile
from adaptlab.strategies.base import (
    EXTRACTION_NEED,
    GenerativeTask,
    Messages,
    RunContext,
    StrategyConfig,
    register,
)
from adaptlab.strategies.few_shot import query_text
from adaptlab.strategies.prompt import PromptGenerator, PromptSpec, conversation
from adaptlab.strategies.rag import (
    RagGenerator,
    RetrievalSettings,
    collection_index,
    grounded_request,
    rag_system,
    read_retrieval,
    save_retrieval,
)
from adaptlab.strategies.sft_full import trainable_copy, tuned_generator
from adaptlab.strategies.sft_lora import (
    ADAPTER_DIR,
    SftLoraConfig,
    adapter_workload,
    loaded_adapter,
    save_adapter,
    with_adapter,
)
from adaptlab.train.sft import TunedGenerator

CANDIDATES = 20  # retrieved chunks per training question, oracle and distractors drawn from


class RagSftConfig(RetrievalSettings, SftLoraConfig):
    """``sft_lora``'s settings, ``rag``'s retrieval, and RAFT's share of oracle contexts."""

    oracle_share: Annotated[float, Ge(0), Le(1)] = Field(
        0.8,
        description="Share of training questions whose passages include the gold chunk "
        "(RAFT's P); the others see distractors only.",
    )


def oracle_chunk(
    chunks: Sequence[int], texts: Sequence[str], answer: str, ranked: Sequence[int]
) -> int | None:
    """Of ``chunks`` (the gold documents' chunks, in collection order), the one a training
    answer comes from (see the module docstring); None when there are none."""
    if not chunks:
        return None
    said = normalise_answer(answer)
    holding = [i for i in chunks if said and said in normalise_answer(texts[i])]
    for candidates in (set(holding), set(chunks)):
        in_ranking = [i for i in ranked if i in candidates]
        if in_ranking:
            return in_ranking[0]
    return holding[0] if holding else chunks[0]


def raft_records(
    run: RunContext[GenerativeTask, RagSftConfig], index: CollectionIndex
) -> list[Messages]:
    """The training conversations in ``rag``'s prompt, oracle and distractor chunks mixed as
    the module docstring says; the answer cites the oracle's number."""
    config, task = run.config, run.task
    requests = [request_messages({"messages": record}) for record in task.train_records]
    retriever = index.retrievers[config.retriever]
    ranked = retriever.retrieve([query_text(r) for r in requests], max(CANDIDATES, config.k))
    chunks_of: dict[str, list[int]] = {}
    for number, document in enumerate(index.chunk_documents):
        chunks_of.setdefault(document, []).append(number)
    rng = np.random.default_rng(run.train.seed)
    golds = task.train_documents or [[] for _ in requests]
    system = rag_system(config)
    records = []
    for record, request, hits, gold in zip(
        task.train_records, requests, ranked, golds, strict=True
    ):
        order = [i for i, _ in hits]
        answer = dict(record[len(request)])
        shown = order[: config.k]
        if gold:
            wanted = set(gold)
            chunks = sorted(i for document in wanted for i in chunks_of.get(document, []))
            oracle = oracle_chunk(chunks, index.chunk_texts, str(answer.get("content", "")), order)
            distractors = [i for i in order if index.chunk_documents[i] not in wanted]
            if oracle is not None and rng.random() < config.oracle_share:
                shown = [*distractors[: config.k - 1], oracle]
                shown = [shown[i] for i in rng.permutation(len(shown))]
                citation = f" [{shown.index(oracle) + 1}]"
                answer["content"] = str(answer.get("content", "")).rstrip() + citation
            else:
                shown = [distractors[i] for i in rng.permutation(min(config.k, len(distractors)))]
        passages = [index.chunk_texts[i] for i in shown]
        records.append([*conversation(system, grounded_request(request, passages)), answer])
    return records


def with_records(
    run: RunContext[GenerativeTask, RagSftConfig], records: list[Messages]
) -> RunContext[GenerativeTask, RagSftConfig]:
    """The run, training on ``records`` instead of the task's closed-book conversations."""
    return dataclasses.replace(run, task=dataclasses.replace(run.task, train_records=records))


class RagSftStrategy:
    name: ClassVar[str] = "rag_sft"
    config_type: ClassVar[type[StrategyConfig]] = RagSftConfig
    trains: ClassVar[bool] = True
    profile: ClassVar[StrategyProfile] = StrategyProfile(
        role="tuned",
        method="adapter",
        data_need=EXTRACTION_NEED,
        tasks=("generation",),
        retrieves=True,
    )

    def requires(self, config: StrategyConfig) -> list[str]:
        return []

    def fit(self, run: RunContext[GenerativeTask, RagSftConfig]) -> RagGenerator:
        config = run.config
        lm = trainable_copy(run.base_model)
        index = collection_index(run)
        records = raft_records(run, index)
        adapted = with_adapter(run, lm.model)
        tuned_generator(
            with_records(run, records), CausalLM(lm.name, lm.tokenizer, adapted), config
        )
        decoding = config.decoding.model_dump(mode="json")
        save_adapter(adapted, run.folder / ADAPTER_DIR, decoding=decoding, base_model=lm.name)
        system = rag_system(config)
        PromptSpec(run.base_model, system, decoding).save(run.folder)
        save_retrieval(run, index)
        run.record(needs_base_model=True)
        merged = CausalLM(lm.name, lm.tokenizer, adapted.merge_and_unload().eval())
        tuned = PromptGenerator(merged, config.decoding, system)
        return RagGenerator(tuned, index, config.k, config.retriever)

    def workload(self, run: RunContext[GenerativeTask, RagSftConfig]) -> Workload:
        """``sft_lora``'s, over the training conversations with their passages."""
        return adapter_workload(with_records(run, raft_records(run, collection_index(run))))

    def load(self, run: RunContext[GenerativeTask], merge: bool = True) -> RagGenerator:
        index, settings = read_retrieval(run)
        spec = PromptSpec.read(run.folder)
        tuned: TunedGenerator = loaded_adapter(run, merge)
        prompt = PromptGenerator(tuned.lm, tuned.decoding, spec.system)
        return RagGenerator(prompt, index, int(settings["k"]), str(settings["retriever"]))


register(RagSftStrategy)
