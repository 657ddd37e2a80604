"""Every strategy registers itself when its module is imported; this list imports them all."""

from adaptlab.strategies import (  # noqa: F401
    distill,
    distill_logit,
    distill_seq,
    few_shot,
    frozen,
    full,
    knn,
    llm_prompt,
    lora,
    partial,
    prompt,
    qlora,
    scratch,
    setfit,
    sft_full,
    sft_lora,
    sft_scratch,
    zero_shot,
)
