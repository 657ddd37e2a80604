"""A strategy's training workload, worked out before anything trains: what it computes and holds.

The pieces every strategy's ``workload(run) -> Workload`` is built from, and the memory
arithmetic over a workload. Nothing is trained and no weight is read: the training data is
tokenised the way training tokenises it, the loop's batch plan
(:func:`adaptlab.train.loop.planned_batches`) says which padded token positions it computes,
and the model is built on PyTorch's meta device from its config to count parameters.

- **FLOPs** = :func:`~adaptlab.cost.model.training_flops` of the method over the trained
  tokens, with N the parameters of the model's linear layers (the ones a token is multiplied
  by: embedding tables are looked up, not multiplied — Kaplan et al. 2020 count N without
  them), plus one-off passes (a teacher's logits or answers: 2·N_teacher per token).
- **Peak memory** without the process baseline (:func:`formula_bytes`) = fp32 weights 4·N
  (teacher included) + gradients and AdamW's two moments 12·N_t + activations of the largest
  micro-batch (:func:`activation_bytes`).

Strategies import this module; it never imports them (the run they describe is typed only),
so the experiment-level estimate (:mod:`adaptlab.estimate`) can sit above both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from adaptlab.config import TrainConfig
from adaptlab.cost.model import training_flops
from adaptlab.profile import TrainingMethod

if TYPE_CHECKING:
    from adaptlab.models.encoder import SentenceClassifier
    from adaptlab.strategies.base import RunContext

BYTES_PER_WEIGHT = 4
"""fp32 weights, as a CPU trains (the loop autocasts to bf16 on CUDA only)."""
OPTIMIZER_BYTES_PER_TRAINABLE = 12
"""An fp32 gradient (4 bytes) and AdamW's two fp32 moments (8 bytes) per trainable weight."""
TRAINING_METHODS: tuple[TrainingMethod, ...] = ("full", "adapter", "top_blocks")
"""Methods that run the training loop (a backward pass and an optimizer)."""
EMBEDDING_BATCH = 128
"""Texts per forward pass when a frozen encoder embeds a data set (``FrozenEncoder``)."""


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Architecture:
    """What the estimate needs to know about a model, counted on the meta device."""

    total_params: int
    matmul_params: int
    """Parameters of linear layers: the weights every token is multiplied by (FLOPs' N)."""
    trainable_params: int
    layers: int
    hidden: int
    heads: int
    vocabulary: int
    """Logits per token of a language model's output layer; 0 for an encoder."""


def architecture(model: nn.Module) -> Architecture:
    """Parameter counts (trainable: ``requires_grad``) and shape of a (meta) model."""
    config = _hf_config_of(model)
    linear = {
        id(p): p.numel()
        for m in model.modules()
        if isinstance(m, nn.Linear)
        for p in m.parameters()
    }
    output = getattr(model, "get_output_embeddings", lambda: None)()
    return Architecture(
        total_params=sum(p.numel() for p in model.parameters()),
        matmul_params=sum(linear.values()),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        layers=int(getattr(config, "num_hidden_layers", 0) or 0),
        hidden=int(getattr(config, "hidden_size", 0) or 0),
        heads=int(getattr(config, "num_attention_heads", 1) or 1),
        vocabulary=int(output.out_features) if isinstance(output, nn.Linear) else 0,
    )


def _hf_config_of(model: nn.Module) -> Any:
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "hidden_size"):
            return config
    return None


def model_config(name: str, revision: str | None = None) -> Any:
    """The transformers config of a bundled, local or hub model (no weights are read)."""
    from transformers import AutoConfig

    from adaptlab.models.bundled import ModelNotAvailable, loadable, unavailable_message
    from adaptlab.safeload import PRETRAINED_SAFE

    try:
        return AutoConfig.from_pretrained(loadable(name), revision=revision, **PRETRAINED_SAFE)
    except OSError as exc:
        raise ModelNotAvailable(unavailable_message(name, exc)) from exc


def meta_model(name: str, *, revision: str | None = None, layers: int | None = None) -> nn.Module:
    """``name``'s architecture on the meta device (shapes only, no memory, no weights): a causal
    LM when its config names one, else the bare encoder; ``layers`` changes the depth."""
    from transformers import AutoModel, AutoModelForCausalLM

    config = model_config(name, revision)
    if layers is not None:
        config.num_hidden_layers = layers
    causal = any(a.endswith("ForCausalLM") for a in getattr(config, "architectures", None) or [])
    kind = AutoModelForCausalLM if causal else AutoModel
    with torch.device("meta"):
        model: nn.Module = kind.from_config(config)  # type: ignore[no-untyped-call]
    return model


def meta_classifier(name: str, num_labels: int, revision: str | None = None) -> SentenceClassifier:
    """The ``SentenceClassifier`` every fine-tuned classification strategy trains, on meta."""
    from adaptlab.models.encoder import SentenceClassifier

    encoder = meta_model(name, revision=revision)
    with torch.device("meta"):
        return SentenceClassifier(encoder, num_labels)


def meta_trained_model(run: RunContext[Any]) -> nn.Module:
    """The model a classification or generative run trains, from its base model, on meta."""
    revision = run.experiment.model.revision
    if run.task.kind == "classification":
        return meta_classifier(run.base_model, run.task.num_labels, revision)
    return meta_model(run.base_model, revision=revision)


# --------------------------------------------------------------------------- the workload


@dataclass(frozen=True)
class Workload:
    """What one strategy's fit computes and holds, before anything runs."""

    method: TrainingMethod
    model: Architecture
    """The model that trains (or, for ``features``/``none``, the one that runs)."""
    tokens: int
    """Token positions the training loop computes over every epoch, padding included (for
    ``features``: one forward pass over the training texts)."""
    batch: tuple[int, int] = (0, 0)
    """The largest micro-batch: (sequences, tokens per sequence)."""
    steps: int = 0
    one_off_flops: float = 0.0
    one_off: str = ""
    held_params: int = 0
    """Weights held besides ``model`` (a teacher; another model a prompt strategy runs)."""
    weight_bytes: float = BYTES_PER_WEIGHT
    """Bytes per weight of ``model`` as it is held (fp32; a 4-bit base holds about half a byte)."""
    notes: tuple[str, ...] = ()
    not_estimated: str | None = None
    """Why no numbers are given (set instead of guessing)."""

    @property
    def flops(self) -> float:
        if self.not_estimated is not None:
            return 0.0
        trainable = min(self.model.trainable_params, self.model.matmul_params)
        return (
            training_flops(self.method, self.model.matmul_params, trainable, self.tokens)
            + self.one_off_flops
        )


def not_estimated(method: TrainingMethod, reason: str) -> Workload:
    return Workload(method, Architecture(0, 0, 0, 0, 0, 1, 0), 0, not_estimated=reason)


def training_lengths(run: RunContext[Any]) -> list[int]:
    """Each training example's length in tokens, tokenised and (for chat with ``packing``)
    packed the way the run's training does; sft's replayed general text included."""
    from adaptlab.models.bundled import load_tokenizer

    tokenizer = load_tokenizer(run.base_model, run.experiment.model.revision)
    task = run.task
    if task.kind == "classification":
        from adaptlab.train.classifier import classification_examples

        examples = classification_examples(
            tokenizer, task.train_texts, task.train_labels, run.max_length
        )
        return [len(example["input_ids"]) for example in examples]
    from adaptlab.train.chat import example_length
    from adaptlab.train.sft import (
        SftDataSettings,
        sft_examples,
        training_examples,
        training_records,
    )

    if isinstance(run.config, SftDataSettings):
        rows = training_examples(run, tokenizer, run.config)
    else:
        rows, _ = sft_examples(tokenizer, training_records(task), run.max_length, packing=False)
    return [example_length(row) for row in rows]


def trained_workload(
    method: TrainingMethod,
    model: nn.Module,
    lengths: Sequence[int],
    train: TrainConfig,
    *,
    sequences_per_example: int = 1,
    **extra: Any,
) -> Workload:
    """The workload of training ``model`` (its ``requires_grad`` parameters) with the shared
    loop on examples of ``lengths`` tokens; ``extra`` sets :class:`Workload`'s other fields."""
    from adaptlab.train.loop import planned_batches

    batches = planned_batches(lengths, train)
    widths = [max((lengths[i] for i in batch), default=0) for batch in batches]
    tokens = sum(width * len(batch) for width, batch in zip(widths, batches, strict=True))
    largest = max(range(len(batches)), key=lambda i: widths[i] * len(batches[i]), default=None)
    shape = (0, 0) if largest is None else (len(batches[largest]), widths[largest])
    optimizer_steps = -(-len(batches) // train.gradient_accumulation_steps)
    return Workload(
        method,
        architecture(model),
        tokens * sequences_per_example,
        (shape[0] * sequences_per_example, shape[1]),
        optimizer_steps,
        **extra,
    )


def distilled_workload(
    teacher: nn.Module,
    student: nn.Module,
    lengths: Sequence[int],
    train: TrainConfig,
    one_off: str,
) -> Workload:
    """A student that trains fully while the teacher is held and runs over the same tokens
    once (its logits or answers): what every distillation strategy costs."""
    held = architecture(teacher)
    return trained_workload(
        "full",
        student,
        lengths,
        train,
        one_off_flops=2.0 * held.matmul_params * sum(lengths),
        one_off=one_off,
        held_params=held.total_params,
    )


def forward_workload(model: nn.Module, lengths: Sequence[int], **extra: Any) -> Workload:
    """One forward pass over examples of ``lengths`` (length-sorted batches: no padding)."""
    return Workload(
        "features",
        replace(architecture(model), trainable_params=0),
        sum(lengths),
        (min(EMBEDDING_BATCH, len(lengths)), max(lengths, default=0)),
        **extra,
    )


def prompt_workload(run: RunContext[Any]) -> Workload:
    """Nothing trains; the models the strategy runs are held: its other models, if it names
    any (an LLM to prompt, a retriever), else the base model."""
    names = run.config.other_models() or [run.base_model]
    models = [replace(architecture(meta_model(name)), trainable_params=0) for name in names]
    first = models[0]
    return Workload(
        "none",
        first,
        0,
        held_params=sum(m.total_params for m in models[1:]),
        notes=("nothing trains: 0 s of training; prompts are built and answered at evaluation",),
    )


# --------------------------------------------------------------------------- memory


def activation_bytes(model: Architecture, batch: int, sequence: int, *, training: bool) -> float:
    """Activations of one micro-batch of ``batch`` sequences of ``sequence`` tokens.

    Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models",
    §4.1, eq. (1): a transformer layer stores s·b·h·(34 + 5·a·s/h) bytes for the backward pass
    at 16-bit precision (s tokens, b sequences, h hidden size, a heads; the 5·a·s/h term is
    the attention scores, softmax and its dropout mask); fp32 doubles it. Every layer's are
    kept while training, adapters included (the backward pass runs through the frozen
    layers to reach them); a forward pass without gradients holds about one layer's. A
    language model adds its output logits (4·b·s·V bytes) and, while training, their gradient.
    """
    s, b, h, a = sequence, batch, model.hidden, model.heads
    if h == 0 or s == 0:
        return 0.0
    per_layer = 2.0 * s * b * h * (34 + 5 * a * s / h)
    layers = model.layers if training else 1
    logits = BYTES_PER_WEIGHT * b * s * model.vocabulary * (2 if training else 1)
    return per_layer * layers + logits


def formula_bytes(workload: Workload) -> float:
    """Peak memory of the fit stage without the process baseline (see the module docstring)."""
    if workload.not_estimated is not None:
        return 0.0
    model = workload.model
    frozen = model.total_params - model.trainable_params
    weights = workload.weight_bytes * frozen + BYTES_PER_WEIGHT * (
        model.trainable_params + workload.held_params
    )
    if workload.method == "none":
        return float(weights)
    training = workload.method in TRAINING_METHODS
    optimizer = OPTIMIZER_BYTES_PER_TRAINABLE * model.trainable_params if training else 0
    batch, sequence = workload.batch
    return weights + optimizer + activation_bytes(model, batch, sequence, training=training)
