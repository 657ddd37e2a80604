"""Few-shot generation: the training examples nearest to the request, shown as earlier turns.

The well-prompted base of issue 4: ``prompt``'s system turn (instruction and slots), then the
``k`` training conversations whose user message is most similar to the request's (sentence
embeddings of the bundled MiniLM; see :mod:`adaptlab.models.retrieval`) as user/assistant
turns with their reference answers, closest last, then the request. Nothing is trained; every
request pays for its examples in prompt tokens, which the run records.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, ClassVar

from annotated_types import Ge
from pydantic import Field

from adaptlab.evaluate.generation import DecodingConfig, request_messages
from adaptlab.models.bundled import MINILM
from adaptlab.models.causal_lm import CausalLM
from adaptlab.models.retrieval import ExampleIndex
from adaptlab.paths import write_text_atomic
from adaptlab.profile import DataNeed, StrategyProfile
from adaptlab.strategies.base import (
    GenerativeTask,
    Messages,
    RunContext,
    StrategyConfig,
    register,
)
from adaptlab.strategies.prompt import (
    PromptConfig,
    PromptGenerator,
    PromptSpec,
    record_prompt_facts,
)

SETTINGS = "few_shot.json"
EXAMPLES = "few_shot_examples.json"
VECTORS = "few_shot_vectors.safetensors"


class FewShotConfig(PromptConfig):
    k: Annotated[int, Ge(1)] = Field(5, description="Training examples shown per request.")
    retriever: str = Field(MINILM, description="Sentence encoder that picks the examples.")

    def other_models(self) -> list[str]:
        return [*super().other_models(), self.retriever]


def query_text(request: Messages) -> str:
    """What examples are matched on: the request's last user message."""
    users = [message for message in request if message.get("role") == "user"]
    return str(users[-1].get("content", "")) if users else ""


def example_turns(record: Messages) -> Messages:
    """A training conversation as example turns: its messages up to its reference answer,
    without a system turn (the prompt has its own)."""
    request = request_messages({"messages": record})
    answer = record[len(request)]
    return [dict(m) for m in request if m.get("role") != "system"] + [dict(answer)]


@dataclass
class FewShotGenerator:
    """``prompt``'s conversation with the ``k`` nearest training examples inserted."""

    prompt: PromptGenerator
    index: ExampleIndex
    examples: list[Messages]
    """Example turns of every training record, in the order of ``index``'s vectors."""
    k: int

    @property
    def lm(self) -> CausalLM:
        return self.prompt.lm

    @property
    def decoding(self) -> DecodingConfig:
        return self.prompt.decoding

    def shots(self, requests: Sequence[Messages]) -> list[list[Messages]]:
        """The examples shown with each request, least similar first."""
        if not requests:
            return []
        nearest = self.index.nearest([query_text(r) for r in requests], self.k)
        return [[self.examples[int(i)] for i in row] for row in nearest]

    def conversations(self, requests: Sequence[Messages]) -> list[Messages]:
        return [
            self.prompt.conversation(request, shots)
            for request, shots in zip(requests, self.shots(requests), strict=True)
        ]


class FewShotStrategy:
    name: ClassVar[str] = "few_shot"
    config_type: ClassVar[type[StrategyConfig]] = FewShotConfig
    trains: ClassVar[bool] = False
    profile: ClassVar[StrategyProfile] = StrategyProfile(
        role="prompted",
        method="none",
        data_need=DataNeed(0, 0, "it shows a few retrieved training examples per request"),
        tasks=("generative", "generation"),
    )

    def requires(self, config: StrategyConfig) -> list[str]:
        return []

    def fit(self, run: RunContext[GenerativeTask, FewShotConfig]) -> FewShotGenerator:
        config = run.config
        spec = PromptSpec.from_run(run)
        examples = [example_turns(record) for record in run.task.train_records]
        queries = [query_text(turns[:-1]) for turns in examples]
        index = ExampleIndex.build(config.retriever, queries, run.max_length)
        generator = FewShotGenerator(PromptGenerator.from_spec(spec), index, examples, config.k)
        spec.save(run.folder)
        index.save(run.folder / VECTORS)
        write_text_atomic(run.folder / EXAMPLES, json.dumps(examples, ensure_ascii=False) + "\n")
        settings = {"k": config.k, "retriever": config.retriever, "max_length": run.max_length}
        write_text_atomic(run.folder / SETTINGS, json.dumps(settings, indent=2) + "\n")
        record_prompt_facts(run, generator, needs_base_model=config.model is None)
        run.record(retriever_params=index.encoder.parameter_count())
        return generator

    def load(self, run: RunContext[GenerativeTask]) -> FewShotGenerator:
        settings = json.loads((run.folder / SETTINGS).read_text(encoding="utf-8"))
        index, _ = ExampleIndex.load(
            run.folder / VECTORS, settings["retriever"], settings["max_length"]
        )
        examples = json.loads((run.folder / EXAMPLES).read_text(encoding="utf-8"))
        prompt = PromptGenerator.from_spec(PromptSpec.read(run.folder))
        return FewShotGenerator(prompt, index, examples, settings["k"])


register(FewShotStrategy)
