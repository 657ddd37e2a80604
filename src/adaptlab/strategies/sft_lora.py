"""Supervised fine-tuning of a chat model through LoRA (or DoRA) adapters, with PEFT.

Every base weight stays as it is; PEFT adds a low-rank update ``B·A`` (scaled by
``lora_alpha / lora_r``) beside each targeted linear layer — every linear layer of the
decoder blocks by default (``all-linear``; the output layer is left out), which QLoRA found
necessary to match full fine-tuning (Dettmers et al. 2023, §4) — or, with ``use_dora``, a
trained magnitude per output feature times a low-rank-updated direction (Liu et al. 2024).
The adapter settings come from the experiment's ``lora:`` section with this run's changes
under ``strategies.<run>.lora``.

The run saves ``adapter/`` (PEFT's safetensors and config, and ``generator.json``); serving it
needs the base model too. Loading merges the update into the base weights, so generation
runs at the speed of the plain model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import peft
import torch
from torch import nn

from adaptlab.config import LoraConfig as LoraSettings
from adaptlab.cost.workload import Workload, meta_model, trained_workload, training_lengths
from adaptlab.evaluate.generation import DecodingConfig
from adaptlab.models.causal_lm import CausalLM
from adaptlab.paths import write_folder
from adaptlab.profile import StrategyProfile
from adaptlab.safeload import check_before_load
from adaptlab.strategies.base import (
    EXTRACTION_NEED,
    GenerativeTask,
    RunContext,
    StrategyConfig,
    register,
)
from adaptlab.strategies.lora import AdapterConfig
from adaptlab.strategies.sft_full import SftConfig, trainable_copy, tuned_generator
from adaptlab.train.sft import TunedGenerator, read_generator_meta, save_generator_meta

ADAPTER_DIR = "adapter"


class SftLoraConfig(AdapterConfig, SftConfig):
    """Fine-tuning's data and schedule; the model learns through adapters only.

    - ``learning_rate: 1e-3`` — ten times ``sft_full``'s: the B factors start at zero and the
      low-rank update carries the whole change (LoRA's own runs use rates an order of
      magnitude above full fine-tuning's, Hu et al. 2021, Table 9).
    """

    def default_train(self) -> dict[str, Any]:
        return {**super().default_train(), "learning_rate": 1e-3}


def causal_lm_peft_config(settings: LoraSettings) -> peft.LoraConfig:
    targets = settings.lora_target_modules
    return peft.LoraConfig(
        task_type="CAUSAL_LM",
        r=settings.lora_r,
        # PEFT annotates an int but only ever divides it by r; a float alpha works as is.
        lora_alpha=settings.lora_alpha,  # type: ignore[arg-type]
        lora_dropout=settings.lora_dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        use_dora=settings.use_dora,
        bias="none",
    )


def with_adapter(
    run: RunContext[GenerativeTask, SftLoraConfig], model: nn.Module
) -> peft.PeftModel:
    """``model`` with fresh adapters (every base weight frozen), seeded so that the A factors
    start the same on a resume."""
    config = run.config
    torch.manual_seed(run.train.seed)
    settings = config.adapter_settings(run.experiment.lora)
    return peft.get_peft_model(model, causal_lm_peft_config(settings))


def adapter_workload(run: RunContext[GenerativeTask, SftLoraConfig]) -> Workload:
    """Adapters on the base model train; the frozen base is run through both ways."""
    model = meta_model(run.base_model, revision=run.experiment.model.revision)
    with torch.device("meta"):
        adapted = with_adapter(run, model)
    return trained_workload("adapter", adapted, training_lengths(run), run.train)


def save_adapter(model: peft.PeftModel, folder: Path, **meta: Any) -> None:
    """``adapter/``: PEFT's adapter files and ``generator.json``, written whole or not at all."""

    def write(staging: Path) -> None:
        model.save_pretrained(str(staging), safe_serialization=True)
        # The run's model card describes the run; PEFT's template README would be a second one.
        (staging / "README.md").unlink(missing_ok=True)
        save_generator_meta(staging, **meta)

    write_folder(folder, write)


def adapted_generator(folder: Path, lm: CausalLM, merge: bool) -> TunedGenerator:
    """``lm`` with the adapter saved in ``folder``, merged into its weights or kept apart."""

    def attach() -> CausalLM:
        adapted: Any = peft.PeftModel.from_pretrained(lm.model, str(folder))
        model = adapted.merge_and_unload() if merge else adapted
        model.eval()
        return CausalLM(lm.name, lm.tokenizer, model)

    return _checked_generator(folder, attach)


def loaded_adapter(run: RunContext[GenerativeTask], merge: bool) -> TunedGenerator:
    """The run's ``adapter/`` on its base model: merged into a copy of the base loaded for it,
    or, when the run is loaded next to others (``run.bases``), added unmerged to the one copy
    of the base they share."""
    folder = run.folder / ADAPTER_DIR
    bases = run.bases
    if bases is None:
        return adapted_generator(folder, CausalLM.load(run.base_model), merge)
    return _checked_generator(folder, lambda: bases.adapted(run.base_model, folder))


def _checked_generator(folder: Path, attach: Callable[[], CausalLM]) -> TunedGenerator:
    """The adapter in ``folder`` (checked before anything loads it) attached by ``attach``,
    with the decoding settings saved beside it."""
    check_before_load(folder, "adapter")
    meta = read_generator_meta(folder)
    return TunedGenerator(attach(), DecodingConfig(**meta["decoding"]))


class SftLoraStrategy:
    name: ClassVar[str] = "sft_lora"
    config_type: ClassVar[type[StrategyConfig]] = SftLoraConfig
    trains: ClassVar[bool] = True
    profile: ClassVar[StrategyProfile] = StrategyProfile(
        role="tuned",
        method="adapter",
        data_need=EXTRACTION_NEED,
        teaches=True,
        tasks=("generative", "generation"),
    )

    def requires(self, config: StrategyConfig) -> list[str]:
        return []

    def fit(self, run: RunContext[GenerativeTask, SftLoraConfig]) -> TunedGenerator:
        config = run.config
        lm = trainable_copy(run.base_model)
        adapted = with_adapter(run, lm.model)
        tuned_generator(run, CausalLM(lm.name, lm.tokenizer, adapted), config)
        decoding = config.decoding.model_dump(mode="json")
        save_adapter(adapted, run.folder / ADAPTER_DIR, decoding=decoding, base_model=lm.name)
        run.record(needs_base_model=True)  # the adapter is a difference from the base weights
        merged = adapted.merge_and_unload().eval()
        return TunedGenerator(CausalLM(lm.name, lm.tokenizer, merged), config.decoding)

    def workload(self, run: RunContext[GenerativeTask, SftLoraConfig]) -> Workload:
        return adapter_workload(run)

    def load(self, run: RunContext[GenerativeTask], merge: bool = True) -> TunedGenerator:
        """Base model + adapter; ``merge=False`` keeps the adapter apart."""
        return loaded_adapter(run, merge)


register(SftLoraStrategy)
