"""Training a chat model from scratch: the base model's architecture, tokenizer and chat
template, random weights, the task's conversations only.

The same data, loss, loop and saving as ``sft_full``; only the starting point differs. Its
slot F1 against ``sft_full``'s is what pre-training buys on this task (``scratch`` is the same
reference for classification).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from adaptlab.models.bundled import ModelNotAvailable, loadable, unavailable_message
from adaptlab.models.causal_lm import CausalLM
from adaptlab.profile import StrategyProfile
from adaptlab.safeload import PRETRAINED_SAFE
from adaptlab.strategies.base import (
    GenerativeTask,
    RunContext,
    StrategyConfig,
    from_scratch_need,
    register,
)
from adaptlab.strategies.sft_full import MODEL_DIR, SftConfig, fit_whole_model, load_model
from adaptlab.train.sft import TunedGenerator


class SftScratchConfig(SftConfig):
    """Training a randomly initialised chat model.

    - ``learning_rate: 1e-3`` with ``warmup_ratio: 0.1`` — random weights have no features to
      keep; language models trained from scratch at this size use 1e-3 to 3e-3 (SmolLM2's
      own pre-training peaked at 3e-3) and need warmup to avoid early divergence.
    - ``num_epochs: 10`` — every token statistic must be learned from the task's answers.
    """

    def default_train(self) -> dict[str, Any]:
        return {**super().default_train(), "learning_rate": 1e-3, "num_epochs": 10.0}


def random_model(name: str, seed: int) -> CausalLM:
    """The architecture and tokenizer of ``name`` with seeded random weights."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    location = loadable(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **PRETRAINED_SAFE)
        architecture = AutoConfig.from_pretrained(location, **PRETRAINED_SAFE)
    except OSError as exc:
        raise ModelNotAvailable(unavailable_message(name, exc)) from exc
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
        architecture, dtype=torch.float32
    )
    return CausalLM(name, tokenizer, model)


class SftScratchStrategy:
    name: ClassVar[str] = "sft_scratch"
    config_type: ClassVar[type[StrategyConfig]] = SftScratchConfig
    trains: ClassVar[bool] = True
    profile: ClassVar[StrategyProfile] = StrategyProfile(
        role="tuned",
        method="full",
        data_need=from_scratch_need(0, "task-specific"),
        tasks=("generative", "generation"),
    )

    def requires(self, config: StrategyConfig) -> list[str]:
        return []

    def fit(self, run: RunContext[GenerativeTask, SftScratchConfig]) -> TunedGenerator:
        return fit_whole_model(run, random_model(run.base_model, run.train.seed))

    def load(self, run: RunContext[GenerativeTask]) -> TunedGenerator:
        return load_model(run.folder / MODEL_DIR)


register(SftScratchStrategy)
