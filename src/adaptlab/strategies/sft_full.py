"""Supervised fine-tuning of every weight of a chat model (instruction tuning).

The base model (the bundled SmolLM2-135M-Instruct by default) is trained on the task's own
conversations, rendered by its chat template, with the loss on the answers only; packing puts
several short conversations into one row. The run saves the whole model (``model/``,
safetensors, with its tokenizer and chat template), so serving it needs nothing else. The
pieces here (the config, building the training examples, saving the generator) are shared
with ``sft_lora``, ``qlora`` and ``sft_scratch``, which differ in where the weights start and
which of them train.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar

from annotated_types import Ge, Lt
from pydantic import Field
from torch import nn

from adaptlab.evaluate.generation import DecodingConfig
from adaptlab.models.causal_lm import CausalLM
from adaptlab.paths import write_folder
from adaptlab.profile import StrategyProfile
from adaptlab.strategies.base import (
    EXTRACTION_NEED,
    GenerativeTask,
    RunContext,
    StrategyConfig,
    register,
)
from adaptlab.train.sft import (
    TunedGenerator,
    fit_causal_lm,
    read_generator_meta,
    save_generator_meta,
)
from adaptlab.train.sft import training_examples as training_examples  # re-exported (moved)

MODEL_DIR = "model"


class SftConfig(StrategyConfig):
    """Supervised fine-tuning of a chat model on the task's conversations.

    The defaults, and why (the run's own ``train`` settings override them):

    - ``learning_rate: 1e-4`` with ``warmup_ratio: 0.1`` and a cosine decay — a 135M model
      tolerates larger steps than the 1e-5 to 2e-5 usual for 7B models, and a few thousand
      short examples leave little room for a long schedule.
    - ``micro_batch_size: 8`` packed rows — with packing a row holds several conversations
      (three restaurant8k records in 256 tokens), so a step sees ~24 of them.
    - ``num_epochs: 3``.
    """

    decoding: DecodingConfig = Field(
        default_factory=DecodingConfig, description="How answers are decoded (greedy)."
    )
    eval_limit: Annotated[int, Ge(1)] | None = Field(
        500, description="Eval examples answered (a fixed seeded sample); null: all of them."
    )
    packing: bool = Field(
        True,
        description="Pack several conversations into each training row of sequence_len tokens "
        "(each attends only to itself), instead of padding every conversation to the longest.",
    )
    replay_ratio: Annotated[float, Ge(0), Lt(1)] = Field(
        0.0,
        description="Share of the trained tokens that come from general text mixed into "
        "training against forgetting (0.1: a tenth), in windows of sequence_len tokens of "
        "BBC News disjoint from the text the retention check scores.",
    )

    def default_train(self) -> dict[str, Any]:
        return {
            "learning_rate": 1e-4,
            "num_epochs": 3.0,
            "warmup_ratio": 0.1,
            "lr_scheduler": "cosine",
            "micro_batch_size": 8,
        }


def tuned_generator(
    run: RunContext[GenerativeTask], lm: CausalLM, config: SftConfig
) -> TunedGenerator:
    """Fine-tune ``lm.model`` (its trainable parameters) on the run's task."""
    examples = training_examples(run, lm.tokenizer, config)
    fit_causal_lm(run, lm.model, lm.tokenizer, examples)
    return TunedGenerator(lm, config.decoding)


def trainable_copy(name: str) -> CausalLM:
    """The model ``name`` loaded for training: float32 weights (a checkpoint stored in bf16
    would otherwise train in bf16 on a CPU; the loop autocasts on CUDA)."""
    lm = CausalLM.load(name)
    lm.model.float()
    return lm


def fit_whole_model(run: RunContext[GenerativeTask, SftConfig], lm: CausalLM) -> TunedGenerator:
    """Fine-tune every weight of ``lm`` and save it whole as ``model/`` (sft_full and
    sft_scratch, which differ only in where ``lm``'s weights start)."""
    config = run.config
    generator = tuned_generator(run, lm, config)
    decoding = config.decoding.model_dump(mode="json")
    save_model(lm.model, lm.tokenizer, run.folder / MODEL_DIR, decoding=decoding)
    run.record(needs_base_model=False)
    return generator


def save_model(model: nn.Module, tokenizer: Any, folder: Path, **meta: Any) -> None:
    """The model, its tokenizer and ``generator.json``, written whole or not at all."""

    def write(staging: Path) -> None:
        save: Any = model  # a transformers model (nn.Module in CausalLM's type)
        save.save_pretrained(str(staging), safe_serialization=True)
        tokenizer.save_pretrained(str(staging))
        save_generator_meta(staging, **meta)

    write_folder(folder, write)


def load_model(folder: Path) -> TunedGenerator:
    meta = read_generator_meta(folder)
    return TunedGenerator(CausalLM.load(str(folder)), DecodingConfig(**meta["decoding"]))


class SftFullStrategy:
    name: ClassVar[str] = "sft_full"
    config_type: ClassVar[type[StrategyConfig]] = SftConfig
    trains: ClassVar[bool] = True
    profile: ClassVar[StrategyProfile] = StrategyProfile(
        role="tuned",
        method="full",
        data_need=EXTRACTION_NEED,
        teaches=True,
        tasks=("generative", "generation"),
    )

    def requires(self, config: StrategyConfig) -> list[str]:
        return []

    def fit(self, run: RunContext[GenerativeTask, SftConfig]) -> TunedGenerator:
        return fit_whole_model(run, trainable_copy(run.base_model))

    def load(self, run: RunContext[GenerativeTask]) -> TunedGenerator:
        return load_model(run.folder / MODEL_DIR)


register(SftFullStrategy)
