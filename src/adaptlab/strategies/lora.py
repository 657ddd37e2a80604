"""LoRA (or DoRA) on the encoder with PEFT, plus the trainable head.

Every encoder weight stays as pretrained; PEFT adds a low-rank update ``B·A`` (scaled by
``lora_alpha / lora_r``) beside each targeted linear layer (Hu et al. 2021), or with
``use_dora`` splits each weight into a trained magnitude and a low-rank-updated direction
(Liu et al. 2024). The adapter settings come from the experiment's ``lora:`` section, with
the run's own changes under ``strategies.<run>.lora`` (so ``lora`` and ``dora`` runs can share
one experiment).

The run saves ``adapter/``: PEFT's adapter (safetensors and its config), the head
(``head.safetensors``) and ``classifier.json``; serving it needs the base model as well.
Loading rebuilds base + adapter + head and merges the update into the base weights
(``merge_and_unload``), so inference runs at the speed of the plain encoder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import peft
import torch
from pydantic import Field, field_validator
from torch import nn

from adaptlab.config import LoraConfig as LoraSettings
from adaptlab.cost.workload import Workload, meta_classifier, trained_workload, training_lengths
from adaptlab.models.encoder import (
    CLASSIFIER_FILE,
    EncoderClassifier,
    SentenceClassifier,
    is_multi_label,
    load_encoder,
    load_head,
    read_meta,
    save_head,
)
from adaptlab.paths import write_folder, write_text_atomic
from adaptlab.profile import StrategyProfile
from adaptlab.safeload import check_before_load
from adaptlab.strategies.base import (
    FINE_TUNING_NEED,
    ClassificationTask,
    RunContext,
    StrategyConfig,
    register,
)
from adaptlab.strategies.full import (
    FullConfig,
    classifier_meta,
    fine_tuning_loss,
    is_pooler,
    pretrained_classifier,
)
from adaptlab.train.classifier import fit_classifier

ADAPTER_DIR = "adapter"


class AdapterConfig(StrategyConfig):
    """The ``lora`` field of every strategy that trains PEFT adapters (lora, sft_lora, qlora):
    this run's changes to the experiment's ``lora:`` section."""

    lora: dict[str, Any] = Field(
        default_factory=dict,
        description="This run's changes to the experiment's lora section, e.g. "
        "{use_dora: true} for a DoRA run beside a LoRA one.",
    )

    @field_validator("lora")
    @classmethod
    def _valid_lora_settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        LoraSettings.model_validate(value)  # unknown keys and values out of range fail here
        return value

    def adapter_settings(self, section: LoraSettings) -> LoraSettings:
        """The experiment's ``lora:`` section with this run's changes."""
        return LoraSettings.model_validate({**section.model_dump(), **self.lora})


class LoraConfig(AdapterConfig, FullConfig):
    """Full fine-tuning's head and loss; the encoder learns through adapters only.

    - ``learning_rate: 5e-4`` — five times full's: the low-rank factors start at zero (B) and
      carry the whole update, and LoRA's own GLUE runs used 4e-4 to 5e-4 on RoBERTa-base
      (Hu et al. 2021, Table 9).
    - ``num_epochs: 8`` — a rank-16 update learns more slowly per step than free weights, and
      a step costs about two thirds of a full one (no encoder weight gradients).
    """

    def default_train(self) -> dict[str, Any]:
        return {**super().default_train(), "learning_rate": 5e-4, "num_epochs": 8.0}


def peft_config(settings: LoraSettings, encoder: nn.Module) -> peft.LoraConfig:
    """PEFT's config from the adapter settings.

    The pooler gets no adapter: mean pooling never calls it, so its factors would get no
    gradient and only add weights.
    """
    pooler = [
        name
        for name, module in encoder.named_modules()
        if isinstance(module, nn.Linear) and is_pooler(name + ".")
    ]
    targets = settings.lora_target_modules
    return peft.LoraConfig(
        r=settings.lora_r,
        # PEFT annotates an int but only ever divides it by r; a float alpha works as is.
        lora_alpha=settings.lora_alpha,  # type: ignore[arg-type]
        lora_dropout=settings.lora_dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        exclude_modules=pooler or None,
        use_dora=settings.use_dora,
        bias="none",
    )


def merged(model: SentenceClassifier) -> SentenceClassifier:
    """Fold the adapter into the encoder's weights (in place) and drop the PEFT wrappers."""
    encoder = model.encoder
    assert isinstance(encoder, peft.PeftModel)
    model.encoder = encoder.merge_and_unload()
    return model


def save_adapter(model: SentenceClassifier, folder: Path, meta: dict[str, Any]) -> None:
    """``adapter/``: PEFT's adapter files, the head and ``classifier.json``."""
    encoder = model.encoder
    assert isinstance(encoder, peft.PeftModel)
    encoder.save_pretrained(str(folder), safe_serialization=True)
    # The run's model card (card.md) describes the run; PEFT's template README would be a
    # second, empty one.
    (folder / "README.md").unlink(missing_ok=True)
    save_head(model, folder)
    write_text_atomic(folder / CLASSIFIER_FILE, json.dumps(meta, indent=2) + "\n")


class LoraStrategy:
    name: ClassVar[str] = "lora"
    config_type: ClassVar[type[StrategyConfig]] = LoraConfig
    trains: ClassVar[bool] = True
    profile: ClassVar[StrategyProfile] = StrategyProfile(
        role="tuned",
        method="adapter",
        data_need=FINE_TUNING_NEED,
        teaches=True,
        tasks=("classification",),
        multi_label=True,
    )

    def requires(self, config: StrategyConfig) -> list[str]:
        return []

    def fit(self, run: RunContext[ClassificationTask, LoraConfig]) -> EncoderClassifier:
        config = run.config
        model, tokenizer = pretrained_classifier(run, config)
        # get_peft_model freezes every encoder weight; the head stays trainable. Seeded so
        # that the A factors start the same on a resume.
        torch.manual_seed(run.train.seed)
        settings = config.adapter_settings(run.experiment.lora)
        model.encoder = peft.get_peft_model(model.encoder, peft_config(settings, model.encoder))
        fit_classifier(run, model, tokenizer, fine_tuning_loss(run.task, config.label_smoothing))
        meta = {**classifier_meta(run), "lora": settings.model_dump(mode="json")}
        write_folder(run.folder / ADAPTER_DIR, lambda staging: save_adapter(model, staging, meta))
        run.record(needs_base_model=True)  # the adapter is a difference from the base weights
        model = merged(model).eval()
        return EncoderClassifier(
            model, tokenizer, run.task.label_names, run.max_length, multi_label=run.task.multi_label
        )

    def workload(self, run: RunContext[ClassificationTask, LoraConfig]) -> Workload:
        """The adapters (and the head) train; the frozen encoder is run through both ways."""
        config = run.config
        model = meta_classifier(run.base_model, run.task.num_labels, run.experiment.model.revision)
        settings = config.adapter_settings(run.experiment.lora)
        with torch.device("meta"):
            model.encoder = peft.get_peft_model(model.encoder, peft_config(settings, model.encoder))
        return trained_workload("adapter", model, training_lengths(run), run.train)

    def load(self, run: RunContext, merge: bool = True) -> EncoderClassifier:
        """Base model + adapter + head; ``merge=False`` keeps the adapter separate."""
        folder = run.folder / ADAPTER_DIR
        check_before_load(folder, "adapter")
        meta = read_meta(folder)
        tokenizer, encoder = load_encoder(run.base_model)
        adapted = peft.PeftModel.from_pretrained(encoder, str(folder))
        model = SentenceClassifier(adapted, len(meta["label_names"]))
        load_head(model, folder)
        if merge:
            model = merged(model)
        model.eval()
        return EncoderClassifier(
            model,
            tokenizer,
            meta["label_names"],
            meta["max_length"],
            multi_label=is_multi_label(meta, folder),
        )


register(LoraStrategy)
