"""QLoRA: LoRA adapters over a base model stored in 4 bits (Dettmers et al. 2023).

The frozen base weights are quantised to 4-bit NormalFloat with double quantisation of the
scales (bitsandbytes); each forward pass dequantises them block by block to bf16, and only the
adapters (``sft_lora``'s, from the experiment's ``lora:`` section) train, in bf16 compute.
The base takes about a quarter of its bf16 memory, which is what lets a large model fine-tune
on one GPU. bitsandbytes' 4-bit kernels need CUDA: on a machine without it the strategy stops
before loading anything, with a message that says so (``sft_lora`` is the CPU equivalent).

The run saves ``adapter/`` like ``sft_lora``. Loading on CUDA rebuilds the 4-bit base with the
adapter beside it (the model the adapter was trained against); without CUDA the adapter is
merged into the full-precision base instead, which differs from the trained model by the
base's quantisation error.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from typing import ClassVar

import torch

from adaptlab.cost.workload import Workload
from adaptlab.models.bundled import ModelNotAvailable, loadable, unavailable_message
from adaptlab.models.causal_lm import CausalLM
from adaptlab.profile import StrategyProfile
from adaptlab.safeload import PRETRAINED_SAFE, WEIGHTS_SAFE
from adaptlab.strategies.base import (
    EXTRACTION_NEED,
    GenerativeTask,
    RunContext,
    StrategyConfig,
    register,
)
from adaptlab.strategies.sft_full import tuned_generator
from adaptlab.strategies.sft_lora import (
    ADAPTER_DIR,
    SftLoraConfig,
    adapted_generator,
    adapter_workload,
    save_adapter,
    with_adapter,
)
from adaptlab.train.sft import TunedGenerator


class QloraUnavailableError(RuntimeError):
    """QLoRA was asked for where bitsandbytes' 4-bit kernels cannot run."""


def require_qlora_support() -> None:
    """Raise :class:`QloraUnavailableError` unless CUDA and bitsandbytes are both present."""
    if not torch.cuda.is_available():
        raise QloraUnavailableError(
            "qlora needs a CUDA GPU: bitsandbytes' 4-bit layers have no CPU kernels for "
            "training. On this machine use sft_lora (the same adapters over the full-precision "
            "base), or run qlora on a GPU machine."
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise QloraUnavailableError(
            "qlora needs bitsandbytes: pip install bitsandbytes (a CUDA build for this GPU)"
        )


def quantized_base(name: str) -> CausalLM:
    """``name`` with its linear layers in 4-bit NF4 on the current GPU, ready for adapters."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    location = loadable(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **PRETRAINED_SAFE)
        model = AutoModelForCausalLM.from_pretrained(
            location,
            **WEIGHTS_SAFE,
            quantization_config=quantization,
            dtype=torch.bfloat16,
            device_map={"": torch.cuda.current_device()},
        )
    except OSError as exc:
        raise ModelNotAvailable(unavailable_message(name, exc)) from exc
    # Norms and the output layer in fp32 for stable training; gradients reach the adapters
    # through the frozen embeddings (use_gradient_checkpointing off: the loop does not use it).
    model = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
        model, use_gradient_checkpointing=False
    )
    return CausalLM(name, tokenizer, model)


class QloraStrategy:
    name: ClassVar[str] = "qlora"
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

    def unavailable_reason(self, config: StrategyConfig) -> str | None:
        try:
            require_qlora_support()
        except QloraUnavailableError as error:
            return str(error)
        return None

    def fit(self, run: RunContext[GenerativeTask, SftLoraConfig]) -> TunedGenerator:
        config = run.config
        require_qlora_support()
        lm = quantized_base(run.base_model)
        adapted = with_adapter(run, lm.model)
        generator = tuned_generator(run, CausalLM(lm.name, lm.tokenizer, adapted), config)
        decoding = config.decoding.model_dump(mode="json")
        save_adapter(adapted, run.folder / ADAPTER_DIR, decoding=decoding, base_model=lm.name)
        run.record(needs_base_model=True, quantization="nf4-double-quant")
        return generator

    def workload(self, run: RunContext[GenerativeTask, SftLoraConfig]) -> Workload:
        # NF4 with double quantisation stores ~4.1 bits per weight (Dettmers et al. 2023, §3).
        note = "the frozen base counted at 0.5 bytes per weight (4-bit NF4)"
        return replace(adapter_workload(run), weight_bytes=0.5, notes=(note,))

    def load(self, run: RunContext[GenerativeTask]) -> TunedGenerator:
        folder = run.folder / ADAPTER_DIR
        if torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes"):
            return adapted_generator(folder, quantized_base(run.base_model), merge=False)
        return adapted_generator(folder, CausalLM.load(run.base_model), merge=True)


register(QloraStrategy)
