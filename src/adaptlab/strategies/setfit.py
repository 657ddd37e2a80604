"""SetFit: few-shot classification by contrastive fine-tuning of a sentence encoder.

Tunstall et al. 2022, "Efficient Few-Shot Learning Without Prompts" (arXiv:2209.11055): from
``shots`` labelled examples per class, pairs are formed (same class: target similarity 1,
different classes: 0); the encoder is fine-tuned so that the cosine similarity of each pair's
embeddings approaches its target (§3.1, the CosineSimilarityLoss of sentence-transformers); a
logistic head is then fitted on the fine-tuned embeddings of the same few examples (§3.2).

What differs from the SetFit library, and why (see the strategy's entry in ``bench/RESULTS.md``):

- Every shot gets one positive and one negative partner per round, so pairs are balanced
  exactly; positive partners cycle through the class instead of being drawn with replacement,
  so ``shots - 1`` rounds cover every positive pair.
- Some negative partners are *hard*: the other-class shots nearest to the anchor before
  fine-tuning. With many classes a random negative is almost always an easy one (77 banking
  intents: 1 in 76 random negatives comes from a confusable intent), and easy pairs teach
  little; the confusable intents are where the frozen encoder's errors are.
- The head is frozen.py's logistic regression with weak regularisation (C=10, as frozen):
  scikit-learn's default C=1 underfits 77 classes of unit-length vectors.

Label sets (multi-label data) follow the SetFit library's multi-label mode: two examples form a
positive pair when their label sets share at least one label and a negative pair otherwise
(``ContrastiveDataset.generate_multilabel_pairs`` in setfit/sampler.py), so an example with no
label is never anyone's positive partner but is every example's negative; the head is
one-vs-rest (the library's ``multi_target_strategy="one-vs-rest"``), frozen.py's one-vs-rest
logistic regression. Shots are drawn per label, a record counting for each of its labels, plus
``shots`` records with no label at all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
import torch
from annotated_types import Ge, Le, Lt
from pydantic import Field
from safetensors.numpy import load_file, save_file
from torch import nn

from adaptlab.cost.workload import Workload, architecture, meta_model, trained_workload
from adaptlab.models.bundled import load_tokenizer
from adaptlab.models.encoder import (
    FrozenEncoder,
    PooledEncoder,
    load_encoder,
    pad_values,
    tokenize,
)
from adaptlab.paths import atomic_path, write_folder, write_text_atomic
from adaptlab.profile import DataNeed, StrategyProfile
from adaptlab.strategies.base import ClassificationTask, RunContext, StrategyConfig, register
from adaptlab.strategies.frozen import HeadConfig, LinearHeadClassifier, _fit_head, _head_from
from adaptlab.train.batching import pad_collate
from adaptlab.train.classifier import freeze
from adaptlab.train.fit import parameter_counts, run_loop
from adaptlab.train.loop import Batch, TrainTask

MODEL = "model"
HEAD = "head.safetensors"
META = "classifier.json"


class SetFitConfig(HeadConfig):
    """SetFit's settings; the head's (``head``, ``regularization_c``, ...) are frozen's."""

    shots: Annotated[int, Ge(2)] = Field(
        8,
        description="Training examples per class (a class with fewer uses all it has). At "
        "least 2: a positive pair needs two examples of a class. With label sets: examples per "
        "label, a record counting for each of its labels, and as many with no label.",
    )
    pair_iterations: Annotated[int, Ge(1)] = Field(
        5,
        description="Rounds of pair generation; each gives every shot one positive and one "
        "negative partner, so there are 2 x rounds x shots x classes pairs.",
    )
    hard_negatives: Annotated[float, Ge(0), Le(1)] = Field(
        0.4,
        description="Fraction of rounds whose negative partner is the anchor's nearest "
        "other-class shot not used yet (by the base encoder's embeddings); the other rounds "
        "draw negatives at random.",
    )
    freeze_embeddings: bool = Field(
        True,
        description="Keep the token embedding matrix as pretrained: few shots update only the "
        "rows of the tokens they contain, which moves them away from the unseen tokens' rows.",
    )
    pretrained_share: Annotated[float, Ge(0), Lt(1)] = Field(
        0.25,
        description="After the contrastive stage every trained weight is moved back this share "
        "of the way to its pretrained value (WiSE-FT weight averaging); 0 keeps the tuned "
        "weights.",
    )

    def default_train(self) -> dict[str, Any]:
        # One pass over the pairs at SetFit's rate (2e-5) with 10% warmup, as the library does.
        return {"learning_rate": 2e-5, "num_epochs": 1.0, "warmup_ratio": 0.1}


@dataclass(frozen=True)
class Pairs:
    """Sentence pairs as indices into the shots, and their target cosine similarity."""

    first: np.ndarray
    second: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)


# --------------------------------------------------------------------------- shots and pairs


def sample_shots(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Sorted indices of ``shots`` random examples of every label (all of a smaller class).

    ``labels`` may be label sets (``(n, num_labels)`` 0/1 rows): see :func:`_sample_label_sets`.
    """
    rng = np.random.default_rng(seed)
    if labels.ndim == 2:
        return _sample_label_sets(labels, shots, rng)
    chosen = [
        rng.permutation(np.flatnonzero(labels == label))[:shots] for label in np.unique(labels)
    ]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def _sample_label_sets(labels: np.ndarray, shots: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of records drawn until every label is carried by ``shots`` of them (or by
    all its records), then ``shots`` records with no label (all of them if fewer).

    A record counts for each of its labels, so one drawn for a label may also fill another's
    quota. Labels are filled rarest first, as iterative stratification does (Sechidis et al.
    2011, "On the stratification of multi-label data"): a rare label's records then also fill
    the common labels they carry, instead of the common labels taking all the draws. Records
    with no label are a class of their own here: the head learns them as negative for every
    label, and the pairs use them as every anchor's negatives.
    """
    chosen = np.zeros(len(labels), dtype=bool)
    for label in np.argsort(labels.sum(axis=0), kind="stable"):
        carriers = np.flatnonzero(labels[:, label])
        missing = shots - int(np.count_nonzero(chosen[carriers]))
        if missing > 0:
            chosen[rng.permutation(carriers[~chosen[carriers]])[:missing]] = True
    unlabelled = np.flatnonzero(~labels.any(axis=1))
    chosen[rng.permutation(unlabelled)[:shots]] = True
    return np.flatnonzero(chosen)


def shots_per_class(labels: np.ndarray, shots: int, label_names: Sequence[str]) -> dict[str, int]:
    """The classes with fewer than ``shots`` examples (none at all included) and their count;
    with label sets, the labels carried by fewer than ``shots`` of them."""
    if labels.ndim == 2:
        counts = labels.sum(axis=0)
    else:
        counts = np.bincount(labels, minlength=len(label_names))
    return {name: int(n) for name, n in zip(label_names, counts, strict=True) if n < shots}


def generate_pairs(
    labels: np.ndarray,
    iterations: int,
    seed: int,
    similarity: np.ndarray | None = None,
    hard_negatives: float = 0.0,
) -> Pairs:
    """Balanced pairs: per round, every shot of a class with two or more shots is paired with
    one shot of its class (target 1) and one of another class (target 0).

    Positive partners cycle through a fixed random order of the class, so no pair repeats
    before all have been used. The first ``hard_negatives * iterations`` rounds (half a round
    counts as one) take the anchor's nearest other-class shots by ``similarity``, the next
    nearest each round; the other rounds a random other-class shot.

    With label sets "of its class" means sharing at least one label (see :func:`same_class`);
    an anchor is a shot with both a positive and a negative partner.
    """
    same = same_class(labels)
    _check_pairable(same)
    rng = np.random.default_rng(seed)
    anchors = [i for i in range(len(labels)) if len(_same_class(same, i)) > 0 and not same[i].all()]
    positives = {i: rng.permutation(_same_class(same, i)) for i in anchors}
    nearest = (
        {} if similarity is None else {i: _nearest_others(same, i, similarity) for i in anchors}
    )
    # Python's round() rounds half to even: 0.5 x 1 round would give no hard round at all.
    hard_rounds = int(hard_negatives * iterations + 0.5) if nearest else 0
    rows: list[tuple[int, int, float]] = []
    for round_index in range(iterations):
        for i in anchors:
            if round_index < hard_rounds:
                negative = nearest[i][round_index % len(nearest[i])]
            else:
                negative = rng.choice(np.flatnonzero(~same[i]))
            positive = positives[i][round_index % len(positives[i])]
            rows += [(i, int(positive), 1.0), (i, int(negative), 0.0)]
    first, second, targets = (np.array(column) for column in zip(*rows, strict=True))
    return Pairs(first, second, targets.astype(np.float32))


def same_class(labels: np.ndarray) -> np.ndarray:
    """``(n, n)`` booleans: may shots ``i`` and ``j`` form a positive pair? Label ids: the same
    label. Label sets: at least one label in common, the SetFit library's multi-label rule
    (``any(np.logical_and(a, b))`` in setfit/sampler.py), so two shots with no label form a
    negative pair. The diagonal is True: a shot is never its own negative partner."""
    if labels.ndim == 2:
        same = (labels @ labels.T) > 0
        np.fill_diagonal(same, True)
        return np.asarray(same)
    return np.asarray(labels[:, None] == labels[None, :])


def _check_pairable(same: np.ndarray) -> None:
    # For label sets a positive and a negative pair imply a shot with both partners: a shot
    # of the positive pair shares a label with every shot only if no negative pair exists.
    if same.all():
        raise ValueError(
            "setfit needs examples of at least two classes to form negative pairs (with label "
            "sets: two examples with no label in common)"
        )
    if np.array_equal(same, np.eye(len(same), dtype=bool)):
        raise ValueError(
            "setfit needs a class with at least two examples to form positive pairs (with "
            "label sets: two examples sharing a label)"
        )


def _same_class(same: np.ndarray, index: int) -> np.ndarray:
    return np.setdiff1d(np.flatnonzero(same[index]), [index])


def _nearest_others(same: np.ndarray, index: int, similarity: np.ndarray) -> np.ndarray:
    """The other-class shots, most similar to shot ``index`` first."""
    others = np.flatnonzero(~same[index])
    return others[np.argsort(-similarity[index, others], kind="stable")]


def pair_examples(
    tokenized: Sequence[Mapping[str, list[int]]], pairs: Pairs
) -> list[dict[str, Any]]:
    """One training example per pair, holding both token sequences and the target."""
    return [
        {"first": tokenized[i], "second": tokenized[j], "target": float(target)}
        for i, j, target in zip(pairs.first, pairs.second, pairs.targets, strict=True)
    ]


def pair_collate(examples: Sequence[Mapping[str, Any]], padding: Mapping[str, int]) -> Batch:
    """Both sides of every pair in one padded batch (first sides, then second sides), so the
    encoder runs once per step; ``targets`` holds one value per pair."""
    sides = [example["first"] for example in examples] + [example["second"] for example in examples]
    batch = pad_collate(sides, padding)
    batch["targets"] = torch.tensor([example["target"] for example in examples])
    return batch


def pair_length(example: Mapping[str, Any]) -> int:
    """Both sides are padded to the batch's longest, so a pair costs its longer side."""
    return max(len(example["first"]["input_ids"]), len(example["second"]["input_ids"]))


def move_towards(model: nn.Module, weights: Mapping[str, torch.Tensor], share: float) -> None:
    """Move each named parameter ``share`` of the way to ``weights[name]``: WiSE-FT's weight
    averaging (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models", eq. 1, with
    alpha = 1 - share), which keeps a tuned model's gains on its training distribution while
    recovering the pretrained model's robustness elsewhere."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name in weights:
                parameter.lerp_(weights[name].to(parameter.device), share)


def cosine_similarity_loss(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
    """SetFit's loss (Tunstall et al. 2022, §3.1): the squared difference between the cosine
    similarity of a pair's embeddings and its target, summed over pairs; the loop averages.

    sentence-transformers' CosineSimilarityLoss (Reimers & Gurevych 2019) takes the mean of
    the same terms; the embeddings are unit vectors, so their dot product is the cosine.
    """
    embeddings = model(batch["input_ids"], batch["attention_mask"]).float()
    first, second = embeddings.chunk(2)
    similarity = (first * second).sum(dim=-1)
    targets = batch["targets"].float()
    return ((similarity - targets) ** 2).sum(), int(targets.numel())


# --------------------------------------------------------------------------- the strategy


class SetFitStrategy:
    name: ClassVar[str] = "setfit"
    config_type: ClassVar[type[StrategyConfig]] = SetFitConfig
    trains: ClassVar[bool] = True
    profile: ClassVar[StrategyProfile] = StrategyProfile(
        role="tuned",
        method="full",
        data_need=DataNeed(0, 8, "SetFit is built for 8 examples per class (Tunstall et al. 2022)"),
        tasks=("classification",),
        multi_label=True,
    )

    def requires(self, config: StrategyConfig) -> list[str]:
        return []

    def fit(self, run: RunContext[ClassificationTask, SetFitConfig]) -> LinearHeadClassifier:
        config = run.config
        task, seed = run.task, run.train.seed
        shots = sample_shots(task.train_labels, config.shots, seed)
        texts = [task.train_texts[i] for i in shots]
        labels = task.train_labels[shots]
        base = FrozenEncoder.load(run.base_model, run.max_length)
        pairs = _pairs_for(run, config, base, texts, labels)
        encoder = _fine_tune(run, config, base, texts, pairs)
        head, tensors = _fit_head(config, encoder.embed(texts), labels, task.num_labels, seed)
        _save(run, encoder, tensors, config.head)
        _record(run, config, encoder, tensors, labels, pairs)
        return LinearHeadClassifier(encoder, head, task.label_names)

    def workload(self, run: RunContext[ClassificationTask, SetFitConfig]) -> Workload:
        """The contrastive stage over the pairs (both sides of a pair in one batch); the shots
        are embedded once to mine hard negatives and once more for the head."""
        config = run.config
        task = run.task
        shots = sample_shots(task.train_labels, config.shots, run.train.seed)
        tokenizer = load_tokenizer(run.base_model, run.experiment.model.revision)
        texts = [task.train_texts[i] for i in shots]
        lengths = [len(e["input_ids"]) for e in tokenize(tokenizer, texts, run.max_length)]
        # Random partners stand in for the hard negatives, which need the base encoder's
        # embeddings; the pair count is the same and a pair costs its longer side.
        pairs = generate_pairs(task.train_labels[shots], config.pair_iterations, run.train.seed)
        pair_lengths = [
            max(lengths[i], lengths[j]) for i, j in zip(pairs.first, pairs.second, strict=True)
        ]
        encoder = meta_model(run.base_model, revision=run.experiment.model.revision)
        model = PooledEncoder(encoder)
        freeze_for_pairs(model, encoder, config)
        passes = 2 if config.hard_negatives > 0 else 1
        trained = architecture(model).trainable_params
        return trained_workload(
            "full",
            model,
            pair_lengths,
            run.train,
            sequences_per_example=2,
            one_off_flops=2.0 * passes * architecture(encoder).matmul_params * sum(lengths),
            one_off="the shots embedded for hard-negative mining and for the head",
            held_params=trained,  # the pretrained copy the tuned weights move back towards
            notes=(
                f"{len(pairs):,} pairs of {len(shots):,} shots; random partners stand in for "
                "the hard negatives when counting pair lengths",
            ),
        )

    def load(self, run: RunContext) -> LinearHeadClassifier:
        meta = json.loads((run.folder / META).read_text(encoding="utf-8"))
        tokenizer, model = load_encoder(str(run.folder / MODEL))
        model.eval()
        encoder = FrozenEncoder(tokenizer, model, int(meta["max_length"]))
        tensors = load_file(str(run.folder / HEAD))
        head = _head_from(meta["head"], tensors, bool(meta.get("multi_label", False)))
        return LinearHeadClassifier(encoder, head, meta["label_names"])


def _pairs_for(
    run: RunContext,
    config: SetFitConfig,
    base: FrozenEncoder,
    texts: Sequence[str],
    labels: np.ndarray,
) -> Pairs:
    """The pairs, with hard negatives mined from the base encoder's (cached) embeddings."""
    similarity = None
    if config.hard_negatives > 0:
        embeddings = base.embed_cached(run.base_model, texts)
        similarity = embeddings @ embeddings.T
    return generate_pairs(
        labels, config.pair_iterations, run.train.seed, similarity, config.hard_negatives
    )


def freeze_for_pairs(model: nn.Module, encoder: nn.Module, config: SetFitConfig) -> None:
    """What the contrastive stage trains: every weight but the pooler (and the token
    embeddings with ``freeze_embeddings``)."""
    # Mean pooling never reads BERT's [CLS] pooler: it would get no gradient, so it is frozen
    # rather than reported as trained.
    freeze(model, except_=lambda name: ".pooler." not in f".{name}")
    if config.freeze_embeddings:
        encoder.get_input_embeddings().weight.requires_grad_(False)  # type: ignore[operator]


def _fine_tune(
    run: RunContext, config: SetFitConfig, base: FrozenEncoder, texts: Sequence[str], pairs: Pairs
) -> FrozenEncoder:
    """The contrastive stage, through the shared loop; the base encoder is tuned in place."""
    tokenizer, model = base.tokenizer, PooledEncoder(base.model)
    freeze_for_pairs(model, base.model, config)
    pretrained = {
        name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad
    }
    task = TrainTask(
        model=model,
        train_data=pair_examples(tokenize(tokenizer, texts, run.max_length), pairs),
        collate=partial(pair_collate, padding=pad_values(tokenizer)),
        loss=cosine_similarity_loss,
        length=pair_length,
    )
    run_loop(run, task)  # records steps and time; _record adds the head to the counts
    move_towards(model, pretrained, config.pretrained_share)
    base.model.cpu().eval()  # embedded and served on the CPU, wherever it trained
    return base


def _save(
    run: RunContext, encoder: FrozenEncoder, tensors: dict[str, np.ndarray], head: str
) -> None:
    """``model/`` (safetensors + tokenizer), ``head.safetensors`` and ``classifier.json``, each
    written under a temporary name and renamed into place."""

    def write_model(staging: Path) -> None:
        encoder.model.save_pretrained(staging, safe_serialization=True)  # type: ignore[operator]
        encoder.tokenizer.save_pretrained(staging, legacy_format=False)  # tokenizer.json only

    write_folder(run.folder / MODEL, write_model)
    with atomic_path(run.folder / HEAD) as tmp:
        save_file(tensors, str(tmp))
    meta = {
        "head": head,
        "label_names": list(run.task.label_names),
        "max_length": encoder.max_length,
        "multi_label": run.task.multi_label,
    }
    write_text_atomic(run.folder / META, json.dumps(meta, indent=2) + "\n")


def _record(
    run: RunContext,
    config: SetFitConfig,
    encoder: FrozenEncoder,
    tensors: dict[str, np.ndarray],
    labels: np.ndarray,
    pairs: Pairs,
) -> None:
    """Parameters, shots and pairs for cost.json; classes short of ``shots`` by name."""
    trainable, total = parameter_counts(encoder.model)
    head_params = sum(int(t.size) for t in tensors.values())
    positives = int(np.count_nonzero(pairs.targets == 1.0))
    run.record(
        trainable_params=trainable + head_params,
        total_params=total + head_params,
        needs_base_model=False,
        shots=config.shots,
        shot_examples=len(labels),
        pairs=len(pairs),
        positive_pairs=positives,
        negative_pairs=len(pairs) - positives,
        classes_with_fewer_shots=shots_per_class(labels, config.shots, run.task.label_names),
    )


register(SetFitStrategy)
