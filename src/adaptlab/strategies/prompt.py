"""Zero-shot generation: an instruction-tuned LLM is told the output schema and asked.

Nothing is trained. For slot extraction the system message is an instruction (extract the
details the message mentions, answer with a JSON object only, ``{}`` when none) followed by the
task's slots; for free text it is the configured instruction, or none (the data's own request,
a system turn included, is the prompt). The request's own messages follow, and the model's
greedy answer is scored as it stands. A system turn the data itself carries is replaced by a
configured one, so that every record is asked with the same instruction. ``few_shot`` adds
retrieved examples to this prompt.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
from annotated_types import Ge
from pydantic import Field

from adaptlab.evaluate.generation import DecodingConfig, request_messages
from adaptlab.models.causal_lm import CausalLM
from adaptlab.paths import write_text_atomic
from adaptlab.profile import DataNeed, StrategyProfile
from adaptlab.strategies.base import (
    GenerativeTask,
    Generator,
    Messages,
    RunContext,
    StrategyConfig,
    register,
)
from adaptlab.train.chat import encode_prompt

PROMPT = "prompt.json"
TOKEN_SAMPLE = 200  # training requests whose prompts are counted for the cost facts

DEFAULT_INSTRUCTION = (
    "Extract the details that the user's message mentions. Answer with a JSON object only, "
    "no other text: map each slot listed below that the message mentions to its exact words "
    "in the message, and leave out the slots it does not mention. Answer {} if it mentions "
    "none of them."
)


class PromptConfig(StrategyConfig):
    model: str | None = Field(
        None,
        description="Instruction-tuned causal LM to prompt (bundled name, local folder or hub); "
        "empty: the experiment's base model.",
    )
    instruction: str | None = Field(
        None,
        description="System message. Empty: for slot extraction an instruction to answer with "
        "a JSON object of the slots, which are listed below it; for free text none (each "
        "request's own turns, a system turn it carries included, as they are).",
    )
    decoding: DecodingConfig = Field(
        default_factory=DecodingConfig, description="How answers are decoded (greedy)."
    )
    eval_limit: Annotated[int, Ge(1)] | None = Field(
        500, description="Eval examples answered (a fixed seeded sample); null: all of them."
    )

    def other_models(self) -> list[str]:
        return [] if self.model is None else [self.model]


def system_message(instruction: str, slots: Sequence[str]) -> str:
    return f"{instruction.strip()}\n\nSlots: {', '.join(slots)}"


def task_system(task: GenerativeTask, instruction: str | None) -> str:
    """The system turn a prompted model is given: the slot instruction and the slots for slot
    extraction; for free text the configured instruction, or none ("")."""
    if task.kind == "generative":
        return system_message(instruction or DEFAULT_INSTRUCTION, task.slots)
    return (instruction or "").strip()


@dataclass(frozen=True)
class PromptSpec:
    """Everything that defines the prompted model; saved as ``prompt.json``."""

    model: str
    system: str
    decoding: dict[str, Any]

    @classmethod
    def from_run(cls, run: RunContext[GenerativeTask, PromptConfig]) -> PromptSpec:
        config = run.config
        return cls(
            config.model or run.base_model,
            task_system(run.task, config.instruction),
            config.decoding.model_dump(mode="json"),
        )

    def save(self, folder: Path) -> None:
        write_text_atomic(folder / PROMPT, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, folder: Path) -> PromptSpec:
        return cls(**json.loads((folder / PROMPT).read_text(encoding="utf-8")))


@dataclass
class PromptGenerator:
    """The instruction as the system turn, then the request (without an instruction, the
    request's own turns as they are)."""

    lm: CausalLM
    decoding: DecodingConfig
    system: str

    @classmethod
    def from_spec(cls, spec: PromptSpec) -> PromptGenerator:
        return cls(CausalLM.load(spec.model), DecodingConfig(**spec.decoding), spec.system)

    def conversations(self, requests: Sequence[Messages]) -> list[Messages]:
        return [self.conversation(request) for request in requests]

    def conversation(self, request: Messages, examples: Sequence[Messages] = ()) -> Messages:
        return conversation(self.system, request, examples)


def conversation(system: str, request: Messages, examples: Sequence[Messages] = ()) -> Messages:
    """The ``system`` turn, the ``examples``' turns in order, then the request's own turns (its
    system turn replaced by ``system``, or, when that is empty, kept first)."""
    own = [dict(m) for m in request if m.get("role") == "system"]
    turns: Messages = [{"role": "system", "content": system}] if system else own
    for example in examples:
        turns.extend(dict(m) for m in example if m.get("role") != "system")
    turns.extend(dict(m) for m in request if m.get("role") != "system")
    return turns


def record_prompt_facts(
    run: RunContext[GenerativeTask], generator: Generator, needs_base_model: bool
) -> None:
    """Cost facts of a prompted model: its size, and the prompt tokens a request costs,
    counted on up to :data:`TOKEN_SAMPLE` training requests."""
    requests = [
        request_messages({"messages": record}) for record in run.task.train_records[:TOKEN_SAMPLE]
    ]
    tokenizer = generator.lm.tokenizer
    lengths = [len(encode_prompt(tokenizer, c)) for c in generator.conversations(requests)]
    run.record(
        trainable_params=0,
        total_params=generator.lm.parameter_count(),
        needs_base_model=needs_base_model,
        model=generator.lm.name,
        prompt_tokens_per_request=round(float(np.mean(lengths)), 1) if lengths else None,
    )


class PromptStrategy:
    name: ClassVar[str] = "prompt"
    config_type: ClassVar[type[StrategyConfig]] = PromptConfig
    trains: ClassVar[bool] = False
    profile: ClassVar[StrategyProfile] = StrategyProfile(
        role="base",
        method="none",
        data_need=DataNeed(0, 0, "it uses only an instruction"),
        tasks=("generative", "generation"),
    )

    def requires(self, config: StrategyConfig) -> list[str]:
        return []

    def fit(self, run: RunContext[GenerativeTask, PromptConfig]) -> PromptGenerator:
        config = run.config
        spec = PromptSpec.from_run(run)
        generator = PromptGenerator.from_spec(spec)
        spec.save(run.folder)
        record_prompt_facts(run, generator, needs_base_model=config.model is None)
        return generator

    def load(self, run: RunContext[GenerativeTask]) -> PromptGenerator:
        return PromptGenerator.from_spec(PromptSpec.read(run.folder))


register(PromptStrategy)
