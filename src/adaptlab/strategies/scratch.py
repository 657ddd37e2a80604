"""Training from scratch: the base encoder's architecture and tokenizer, random weights.

The same ``SentenceClassifier``, loop, data and loss as ``full``; only the starting point
differs. Its accuracy against ``full``'s is what pre-training buys on this task — the
reference that says whether adapting a pretrained model was worth it at all.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from adaptlab.models.bundled import ModelNotAvailable, loadable
from adaptlab.models.encoder import EncoderClassifier, SentenceClassifier, load_classifier
from adaptlab.profile import StrategyProfile
from adaptlab.safeload import PRETRAINED_SAFE
from adaptlab.strategies.base import (
    MIN_PER_CLASS,
    ClassificationTask,
    RunContext,
    StrategyConfig,
    from_scratch_need,
    register,
)
from adaptlab.strategies.full import (
    MODEL_DIR,
    FineTuneConfig,
    fit_and_save,
    is_pooler,
    set_dropout,
)
from adaptlab.train.classifier import freeze


class ScratchConfig(FineTuneConfig):
    """Training a randomly initialised encoder.

    - ``learning_rate: 5e-4`` — fine-tuning's small steps exist to keep pretrained features;
      random weights have none to keep, and transformers trained from random weights use
      1e-4 to 1e-3 (BERT pre-training 1e-4 at batch 256; smaller models tolerate more).
    - ``warmup_ratio: 0.1`` — post-LayerNorm transformers from random weights diverge
      without warmup (Xiong et al. 2020, "On Layer Normalization in the Transformer
      Architecture").
    - ``num_epochs: 15`` — every feature must be learned from the task's own examples;
      it keeps improving long after a pretrained model has converged. The head starts at
      random: class means of random features carry no information worth imprinting.
    """

    def default_train(self) -> dict[str, Any]:
        return {
            "learning_rate": 5e-4,
            "num_epochs": 15.0,
            "warmup_ratio": 0.1,
            "micro_batch_size": 32,
        }


def random_classifier(run: RunContext, config: FineTuneConfig) -> tuple[SentenceClassifier, Any]:
    """The base model's architecture with seeded random weights, and its tokenizer."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    location = loadable(run.base_model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **PRETRAINED_SAFE)
        architecture = AutoConfig.from_pretrained(location, **PRETRAINED_SAFE)
    except OSError as exc:
        raise ModelNotAvailable(f"cannot load '{run.base_model}': {exc}") from exc
    torch.manual_seed(run.train.seed)
    encoder = AutoModel.from_config(architecture)  # type: ignore[no-untyped-call]
    model = SentenceClassifier(encoder, run.task.num_labels, config.dropout)
    set_dropout(model, config.dropout)
    return model, tokenizer


class ScratchStrategy:
    name: ClassVar[str] = "scratch"
    config_type: ClassVar[type[StrategyConfig]] = ScratchConfig
    trains: ClassVar[bool] = True
    profile: ClassVar[StrategyProfile] = StrategyProfile(
        role="tuned",
        method="full",
        data_need=from_scratch_need(MIN_PER_CLASS, "fine-tuning"),
        tasks=("classification",),
        multi_label=True,
    )

    def requires(self, config: StrategyConfig) -> list[str]:
        return []

    def fit(self, run: RunContext[ClassificationTask, ScratchConfig]) -> EncoderClassifier:
        config = run.config
        model, tokenizer = random_classifier(run, config)
        freeze(model, except_=lambda name: not is_pooler(name))
        return fit_and_save(run, model, tokenizer, config)

    def load(self, run: RunContext) -> EncoderClassifier:
        return load_classifier(run.folder / MODEL_DIR)


register(ScratchStrategy)
