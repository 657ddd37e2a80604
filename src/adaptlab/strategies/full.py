"""Full fine-tuning: every weight of the pretrained encoder and the head trains.

The classifier is ``SentenceClassifier`` (mean pooling → L2 normalisation → linear head × a
learnable scale) over the pretrained encoder, trained with label-smoothed cross-entropy by the
shared loop (for label sets, multi-label data: binary cross-entropy per label, each label a
sigmoid of its own). The head starts from the class means of the pretrained embeddings rather
than at random, so the first steps do not push a random head's noise into the encoder. The
pieces here
(the config base, building, the loss, saving) are shared with ``partial``, ``lora`` and
``scratch``, which differ only in which parameters train and where the weights start.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
from annotated_types import Ge, Lt
from pydantic import Field
from torch import nn

from adaptlab.models.encoder import (
    EncoderClassifier,
    SentenceClassifier,
    embed_texts,
    load_classifier,
    load_encoder,
    output_meta,
    save_classifier,
)
from adaptlab.paths import write_folder
from adaptlab.profile import StrategyProfile
from adaptlab.strategies.base import (
    FINE_TUNING_NEED,
    ClassificationTask,
    RunContext,
    StrategyConfig,
    register,
)
from adaptlab.train.classifier import fit_classifier, freeze
from adaptlab.train.loop import Batch, LossFunction

MODEL_DIR = "model"
LABEL_SMOOTHING_HELP = (
    "Probability mass of the target spread over all labels in the loss (label sets: over the "
    "yes and no of each label: targets y(1 - ε) + ε/2)."
)


class FineTuneConfig(StrategyConfig):
    """Settings of every strategy that trains a ``SentenceClassifier`` with the shared loop."""

    dropout: Annotated[float, Ge(0), Lt(1)] = Field(
        0.1,
        description="Dropout of every dropout layer of the encoder (hidden and attention) and "
        "before the head, while training.",
    )
    label_smoothing: Annotated[float, Ge(0), Lt(1)] = Field(0.1, description=LABEL_SMOOTHING_HELP)


class FullConfig(FineTuneConfig):
    """Full fine-tuning of a MiniLM-sized sentence encoder.

    The defaults, and why (the run's own ``train`` settings override them):

    - ``head_init: class_mean`` — a random head makes the first few hundred steps' gradients
      into the encoder noise that degrades its pretrained features (Kumar et al. 2022,
      "Fine-Tuning can Distort Pretrained Features", whose cure is to fit the head first).
      Class means of the normalised embeddings are that fit in one pass: the head starts as a
      nearest-centroid classifier (weight imprinting, Qi et al. 2018) that is already close to
      the frozen-backbone baseline, so a single learning rate suited to the encoder suits the
      head too and no separate, higher head learning rate is needed.
    - ``learning_rate: 1e-4`` — small encoders take larger steps than BERT-base's usual 2e-5
      (Turc et al. 2019 tune 2–12-layer BERTs over 3e-5 to 1e-4). On banking77 (3 seeds, GPU
      sweep in bench/RESULTS.md) 1e-4 gave 94.3% against 93.9% at 5e-5 and 93.7% at 2e-4.
      The HF Trainer anchor (1e-4, 3 epochs, 85.2% on banking77) differs in more than the
      rate: its head starts at random on the [CLS] pooler, which MiniLM's mean-pooled
      sentence training never used.
    - ``num_epochs: 5`` — ~1,500 steps on banking77's 10k examples: three epochs of a decaying
      schedule stop while accuracy is still rising.
    - ``warmup_ratio: 0.1`` — BERT's own recipe; Adam's early, high-variance steps are where a
      fine-tuning run is most likely to wreck the pretrained weights.
    - ``micro_batch_size: 32`` — enough steps per epoch on 10k examples, efficient on a CPU.
    - ``label_smoothing: 0`` — smoothing (Szegedy et al. 2016, §7) lowers calibration error
      (Müller et al. 2019) but measured no gain in accuracy here (94.38% without, 94.16%
      with 0.1 at 1e-4, one seed), and smoothed teachers distil worse (same paper): a full
      run is the usual distillation teacher. Set it per run when calibration matters more.
    - The logit scale starts at ``SentenceClassifier``'s 20 (cosine-classifier style): with
      unit-norm class means, cosine gaps of ~0.3 between the right and the next label then
      give the ~6-logit margins that a 0.9 target probability needs; the scale and the head's
      norm still train, so the temperature adjusts itself.
    """

    label_smoothing: Annotated[float, Ge(0), Lt(1)] = Field(0.0, description=LABEL_SMOOTHING_HELP)
    head_init: Literal["class_mean", "random"] = Field(
        "class_mean",
        description="Start the head at the normalised class means of the pretrained "
        "embeddings (a nearest-centroid classifier), or at random.",
    )

    def default_train(self) -> dict[str, Any]:
        return {
            "learning_rate": 1e-4,
            "num_epochs": 5.0,
            "warmup_ratio": 0.1,
            "micro_batch_size": 32,
        }


# --------------------------------------------------------------------------- shared pieces


def set_dropout(model: nn.Module, probability: float) -> None:
    """Set every dropout layer (BERT's attention dropout reads its layer's ``p`` as well)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = probability


def pretrained_classifier(run: RunContext, config: FullConfig) -> tuple[SentenceClassifier, Any]:
    """The pretrained encoder under a fresh head, every parameter trainable; seeded."""
    tokenizer, encoder = load_encoder(run.base_model)
    torch.manual_seed(run.train.seed)
    model = SentenceClassifier(encoder, run.task.num_labels, config.dropout)
    set_dropout(model, config.dropout)
    if config.head_init == "class_mean":
        embeddings = embed_texts(
            run.base_model, run.task.train_texts, run.max_length, encoder=(tokenizer, encoder)
        )
        if run.task.multi_label:
            imprint_label_sets(model, embeddings, run.task.train_labels)
        else:
            imprint_head(model, embeddings, run.task.train_labels)
    return model, tokenizer


def imprint_head(model: SentenceClassifier, embeddings: np.ndarray, labels: np.ndarray) -> None:
    """Set each label's head row to the normalised mean of its examples' embeddings.

    ``head(e) * scale`` is then ``scale`` times the cosine to the class centroid. Labels
    without training examples keep their random row.
    """
    vectors = torch.from_numpy(np.asarray(embeddings, dtype=np.float32))
    with torch.no_grad():
        for label in np.unique(labels).tolist():
            centroid = vectors[torch.from_numpy(labels == label)].mean(0)
            model.head.weight[label] = nn.functional.normalize(centroid, dim=0)
        model.head.bias.zero_()


def imprint_label_sets(
    model: SentenceClassifier, embeddings: np.ndarray, label_sets: np.ndarray
) -> None:
    """:func:`imprint_head` for label sets: each label's row is the normalised mean of the
    embeddings of the records that carry it, and its bias puts the sigmoid's 0.5 halfway
    between those records' mean cosine to that centroid and the other records'.

    A softmax reads only the differences between logits; a sigmoid reads each logit itself,
    and with a zero bias every cosine of ~0.3 or more times the scale of 20 would start every
    label near probability 1 (large gradients into the encoder, which imprinting exists to
    avoid). A label no record carries keeps its random row; one every record carries, bias 0.
    """
    vectors = torch.from_numpy(np.asarray(embeddings, dtype=np.float32))
    carries = torch.from_numpy(np.asarray(label_sets) == 1)
    with torch.no_grad():
        model.head.bias.zero_()
        for label in range(carries.shape[1]):
            positive = carries[:, label]
            if not positive.any():
                continue
            centroid = nn.functional.normalize(vectors[positive].mean(0), dim=0)
            model.head.weight[label] = centroid
            if not positive.all():
                cosines = vectors @ centroid
                midpoint = (cosines[positive].mean() + cosines[~positive].mean()) / 2
                model.head.bias[label] = -midpoint


def is_head(name: str) -> bool:
    """The head's weight and bias and the logit scale: everything outside the encoder."""
    return not name.startswith("encoder.")


def is_pooler(name: str) -> bool:
    """BERT's [CLS] pooler: mean pooling never uses it, so it gets no gradient."""
    return ".pooler." in f".{name}"


LAYER_INDEX = re.compile(r"(?:^|\.)layers?\.(\d+)\.")


def layer_index(name: str) -> int | None:
    """The transformer block a parameter belongs to (``encoder.layer.3.…`` → 3), if any."""
    match = LAYER_INDEX.search(name)
    return int(match.group(1)) if match else None


def label_smoothed_cross_entropy(smoothing: float) -> LossFunction:
    """Summed cross-entropy against ``(1 − ε)·one_hot + ε/K`` targets (Szegedy et al. 2016,
    "Rethinking the Inception Architecture", §7, q'(k) = (1 − ε)δ_k,y + ε/K); the loop
    divides by the example count."""

    def loss(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        logits = model(batch["input_ids"], batch["attention_mask"])
        total = nn.functional.cross_entropy(
            logits.float(), batch["labels"], reduction="sum", label_smoothing=smoothing
        )
        return total, int(batch["labels"].numel())

    return loss


def label_smoothed_binary_cross_entropy(smoothing: float) -> LossFunction:
    """Binary cross-entropy with logits, summed over every label of every example, against
    ``y(1 − ε) + ε/2`` targets (label sets; the loop divides by the example count).

    Each label is a two-way question (carried or not), so Szegedy et al.'s q'(k) = (1 − ε)δ_k,y
    + ε/K with K = 2 applies per label: a carried label's target is 1 − ε/2, another's ε/2.
    ε = 0 is :func:`~adaptlab.train.classifier.binary_cross_entropy_sum`.
    """

    def loss(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        logits = model(batch["input_ids"], batch["attention_mask"])
        targets = batch["labels"].float() * (1 - smoothing) + smoothing / 2
        total = nn.functional.binary_cross_entropy_with_logits(
            logits.float(), targets, reduction="sum"
        )
        return total, int(targets.shape[0])

    return loss


def fine_tuning_loss(task: ClassificationTask, smoothing: float) -> LossFunction:
    """Label-smoothed cross-entropy over the labels, or per label for label sets."""
    if task.multi_label:
        return label_smoothed_binary_cross_entropy(smoothing)
    return label_smoothed_cross_entropy(smoothing)


def classifier_meta(run: RunContext) -> dict[str, Any]:
    """``classifier.json``: what loading needs (labels, length, whether the head is sigmoids)
    and where the weights began."""
    return {
        "run": run.name,
        "label_names": list(run.task.label_names),
        "max_length": run.max_length,
        "base_model": run.base_model,
        **output_meta(run.task.multi_label),
    }


def fit_and_save(
    run: RunContext, model: SentenceClassifier, tokenizer: Any, config: FineTuneConfig
) -> EncoderClassifier:
    """Train with the shared loop, save the whole classifier as ``model/``, return it."""
    fit_classifier(run, model, tokenizer, fine_tuning_loss(run.task, config.label_smoothing))
    write_folder(
        run.folder / MODEL_DIR,
        lambda staging: save_classifier(model, tokenizer, staging, classifier_meta(run)),
    )
    run.record(needs_base_model=False)  # model/ holds every weight
    model.eval()
    return EncoderClassifier(
        model, tokenizer, run.task.label_names, run.max_length, multi_label=run.task.multi_label
    )


# --------------------------------------------------------------------------- the strategy


class FullStrategy:
    name: ClassVar[str] = "full"
    config_type: ClassVar[type[StrategyConfig]] = FullConfig
    trains: ClassVar[bool] = True
    profile: ClassVar[StrategyProfile] = StrategyProfile(
        role="tuned",
        method="full",
        data_need=FINE_TUNING_NEED,
        teaches=True,
        tasks=("classification",),
        multi_label=True,
    )

    def requires(self, config: StrategyConfig) -> list[str]:
        return []

    def fit(self, run: RunContext[ClassificationTask, FullConfig]) -> EncoderClassifier:
        config = run.config
        model, tokenizer = pretrained_classifier(run, config)
        # The pooler is frozen, not dropped: saved as it was, the folder loads as a plain model.
        freeze(model, except_=lambda name: not is_pooler(name))
        return fit_and_save(run, model, tokenizer, config)

    def load(self, run: RunContext) -> EncoderClassifier:
        return load_classifier(run.folder / MODEL_DIR)


register(FullStrategy)
