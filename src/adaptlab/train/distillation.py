"""Knowledge distillation pieces shared by every student: soft-target losses, the DistilBERT-style
half-depth student, and teacher logits computed once and cached.

The losses work on logits of any shape ``(..., vocab)`` with an optional mask over the leading
dimensions, so the same functions serve a sentence classifier (``(batch, labels)``) and a
language model (``(batch, tokens, vocab)``). They return *sums* over positions, as the training
loop expects (it divides by the item count of the whole optimizer step). For a language model
distilled from top-k teacher logits, gather the student's logits at the teacher's top-k indices
(``torch.gather(student, -1, indices)``) and pass both ``(..., k)`` tensors: the divergences
are then over the renormalised top-k support. A multi-label classifier (label sets: a sigmoid
per label, not one softmax) has its own pair, :func:`binary_kd_loss` and
:func:`combined_binary_kd_loss`.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file, save_file
from safetensors.torch import load_file as load_torch_file
from safetensors.torch import save_file as save_torch_file
from torch import nn

from adaptlab.models.encoder import EncoderClassifier, run_batched, texts_fingerprint
from adaptlab.paths import atomic_path, cache_dir
from adaptlab.train.chat import trained_logits, trained_owners
from adaptlab.train.loop import Batch, LossFunction

Divergence = Literal["forward_kl", "reverse_kl", "jsd"]
KeepLayers = Literal["alternate", "first", "last"] | Sequence[int]
IGNORE_INDEX = -100
LAYER_LIST_NAMES = ("layer", "layers", "h", "block", "blocks")
"""Names under which transformers models keep their blocks: BERT, MiniLM and RoBERTa
``encoder.layer``, DistilBERT ``transformer.layer``, Llama ``layers``, GPT-2 ``h``, T5 ``block``."""


# --------------------------------------------------------------------------- divergences


def forward_kl(student_log_probs: torch.Tensor, teacher_log_probs: torch.Tensor) -> torch.Tensor:
    """KL(teacher ‖ student) = Σ p_T (log p_T − log p_S) per position, shape ``(...)``.

    Hinton et al. 2015, "Distilling the Knowledge in a Neural Network", §2: the cross-entropy
    with the teacher's soft targets, less the teacher's entropy (a constant), so it has the same
    gradient and is zero at equality. Mass-covering: the student is pushed to put probability
    wherever the teacher does (Agarwal et al. 2024, §2).
    """
    teacher_probs = teacher_log_probs.exp()
    return (teacher_probs * (teacher_log_probs - student_log_probs)).sum(-1)


def reverse_kl(student_log_probs: torch.Tensor, teacher_log_probs: torch.Tensor) -> torch.Tensor:
    """KL(student ‖ teacher) = Σ p_S (log p_S − log p_T) per position, shape ``(...)``.

    Agarwal et al. 2024, "On-Policy Distillation of Language Models: Learning from
    Self-Generated Mistakes", §2: mode-seeking; a student too small to cover every teacher mode
    concentrates on the ones it can fit.
    """
    return forward_kl(teacher_log_probs, student_log_probs)


def generalized_jsd(
    student_log_probs: torch.Tensor, teacher_log_probs: torch.Tensor, beta: float
) -> torch.Tensor:
    """Generalised Jensen-Shannon divergence JSD(β) per position, shape ``(...)``.

    Agarwal et al. 2024, §2 eq. (1), with P the teacher and Q the student:
    ``JSD(β)(P‖Q) = β KL(P ‖ M) + (1−β) KL(Q ‖ M)`` where ``M = βP + (1−β)Q``. β = 0.5 is the
    symmetric Jensen-Shannon divergence; towards β → 0 it behaves like β·KL(P‖Q) (forward), towards
    β → 1 like (1−β)·KL(Q‖P) (reverse). Use :func:`forward_kl` / :func:`reverse_kl` for the ends.
    """
    if not 0.0 < beta < 1.0:
        raise ValueError(f"beta = {beta}: JSD(β) needs 0 < β < 1 (use forward_kl or reverse_kl)")
    # log M by log-sum-exp: mixing probabilities directly underflows for large vocabularies.
    mixture = torch.logsumexp(
        torch.stack([teacher_log_probs + math.log(beta), student_log_probs + math.log(1 - beta)]),
        dim=0,
    )
    return beta * forward_kl(mixture, teacher_log_probs) + (1 - beta) * forward_kl(
        mixture, student_log_probs
    )


def soft_target_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    divergence: Divergence = "forward_kl",
    beta: float = 0.5,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """T² × Σ over (unmasked) positions of a divergence between the softened distributions.

    Both distributions are softmaxes at temperature T (Hinton et al. 2015, §2, eq. (1):
    ``q_i = exp(z_i/T) / Σ_j exp(z_j/T)``). The gradient of a soft-target term scales as 1/T²,
    so it is multiplied by T² to keep its weight against the hard-label term independent of T
    (§2, last paragraph). The teacher is detached: it is never trained. ``mask`` (shape
    ``logits.shape[:-1]``, true where the position counts) drops padding or prompt tokens.
    """
    _check_logits(student_logits, teacher_logits, temperature, mask)
    student_log_probs = F.log_softmax(_upcast(student_logits) / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(_upcast(teacher_logits.detach()) / temperature, dim=-1)
    if divergence == "forward_kl":
        per_position = forward_kl(student_log_probs, teacher_log_probs)
    elif divergence == "reverse_kl":
        per_position = reverse_kl(student_log_probs, teacher_log_probs)
    elif divergence == "jsd":
        per_position = generalized_jsd(student_log_probs, teacher_log_probs, beta)
    else:
        raise ValueError(f"divergence = {divergence!r}: expected forward_kl, reverse_kl or jsd")
    if mask is not None:
        per_position = per_position * mask.to(per_position.dtype)
    return per_position.sum() * temperature**2


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    """float32 at least: a softmax over a large vocabulary in bf16 loses the small entries."""
    return logits if logits.dtype == torch.float64 else logits.float()


def _check_logits(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float, mask: torch.Tensor | None
) -> None:
    if student.shape != teacher.shape:
        raise ValueError(
            f"student logits {tuple(student.shape)} and teacher logits {tuple(teacher.shape)} "
            "must have the same shape"
        )
    if not temperature > 0:
        raise ValueError(f"temperature = {temperature}: must be > 0")
    if mask is not None and mask.shape != student.shape[:-1]:
        raise ValueError(
            f"mask {tuple(mask.shape)} must have the logits' shape without the last dimension, "
            f"{tuple(student.shape[:-1])}"
        )


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Hinton et al. 2015, §2: T² × KL(teacher_T ‖ student_T), summed over positions."""
    return soft_target_loss(student_logits, teacher_logits, temperature=temperature, mask=mask)


def combined_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
    divergence: Divergence = "forward_kl",
    beta: float = 0.5,
) -> torch.Tensor:
    """``alpha × hard-label cross-entropy + (1 − alpha) × soft-target loss``, both summed.

    ``alpha`` weighs the gold labels and ``1 − alpha`` the teacher: alpha = 0 is pure
    distillation, alpha = 1 ordinary fine-tuning. Hinton et al. 2015, §2: a weighted average of
    the two objectives, the hard one at T = 1, with best results from "a considerably lower
    weight on the second objective function" (the hard labels). Positions whose label is
    ``-100`` count in neither term.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha = {alpha}: must be between 0 and 1")
    vocab = student_logits.shape[-1]
    hard = F.cross_entropy(
        _upcast(student_logits).reshape(-1, vocab),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    soft = soft_target_loss(
        student_logits,
        teacher_logits,
        temperature=temperature,
        divergence=divergence,
        beta=beta,
        mask=labels != IGNORE_INDEX,
    )
    return alpha * hard + (1 - alpha) * soft


def binary_kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Label sets: T² × Σ over examples and labels of KL(Bern(σ(v/T)) ‖ Bern(σ(z/T))).

    Each label of a multi-label classifier is its own yes/no distribution, so the soft target
    of label l is the teacher's sigmoid at temperature T, ``p_l = σ(v_l/T)`` (Hinton et al.
    2015, §2, with the two-way softmax that a sigmoid is). The term is the binary
    cross-entropy of the student's ``σ(z_l/T)`` against ``p_l`` less the teacher's own
    binary entropy (a constant): the same gradient, ``(σ(z_l/T) − p_l)/T``, and zero at
    equality, as :func:`forward_kl` is for a softmax. The gradient is ≈ (z_l − v_l)/(4T²) at
    high T, so the T² factor keeps the term's weight independent of T (§2, last paragraph).
    """
    _check_logits(student_logits, teacher_logits, temperature, None)
    student = _upcast(student_logits) / temperature
    teacher = _upcast(teacher_logits.detach()) / temperature
    targets = torch.sigmoid(teacher)
    cross = F.binary_cross_entropy_with_logits(student, targets, reduction="none")
    entropy = F.binary_cross_entropy_with_logits(teacher, targets, reduction="none")
    return (cross - entropy).sum() * temperature**2


def combined_binary_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    label_sets: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Label sets: ``alpha × Σ BCE(z, y) + (1 − alpha) × binary_kd_loss``, both summed over
    examples and labels.

    :func:`combined_kd_loss` with each label's yes/no in place of one distribution over the
    labels: the hard term is the binary cross-entropy with the gold 0/1 sets at T = 1, the
    soft one :func:`binary_kd_loss` (Hinton et al. 2015, §2, a weighted average of the two).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha = {alpha}: must be between 0 and 1")
    student = _upcast(student_logits)
    hard = F.binary_cross_entropy_with_logits(
        student, label_sets.to(student.dtype), reduction="sum"
    )
    soft = binary_kd_loss(student_logits, teacher_logits, temperature)
    return alpha * hard + (1 - alpha) * soft


def cached_teacher_loss(
    teacher_logits: torch.Tensor, temperature: float, alpha: float, *, multi_label: bool = False
) -> LossFunction:
    """The training loss of a sentence-classifier student, reading teacher logits by example.

    ``teacher_logits[i]`` belongs to training example ``i`` (its ``index``), so the teacher
    never runs during training. ``multi_label``: the labels are 0/1 sets and the loss
    :func:`combined_binary_kd_loss`, else :func:`combined_kd_loss`. Returns the loop's (loss
    sum, number of examples).
    """
    combined = combined_binary_kd_loss if multi_label else combined_kd_loss

    def loss(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        logits = model(batch["input_ids"], batch["attention_mask"])
        teacher = teacher_logits[batch["index"].cpu()].to(logits.device)
        value = combined(logits, teacher, batch["labels"], temperature=temperature, alpha=alpha)
        return value, int(batch["labels"].shape[0])

    return loss


# --------------------------------------------------------------------------- the student


def layers_to_keep(total: int, count: int, keep: KeepLayers = "alternate") -> list[int]:
    """Indices of the teacher layers a ``count``-layer student starts from.

    ``alternate`` spreads them evenly from the first layer to the last: one out of two, as
    DistilBERT (Sanh et al. 2019, §3), and for 12 → 6 exactly the layers DistilBERT's
    extraction script copies, [0, 2, 4, 7, 9, 11]. ``first`` / ``last`` keep the bottom / top
    ``count``; a list names them.
    """
    if not 1 <= count <= total:
        raise ValueError(f"a student of {count} layers from a teacher of {total}: need 1..{total}")
    if keep == "alternate":
        return [int(i) for i in np.linspace(0, total - 1, count).round()]
    if keep == "first":
        return list(range(count))
    if keep == "last":
        return list(range(total - count, total))
    if isinstance(keep, str):
        raise ValueError(f"keep = {keep!r}: expected alternate, first, last or a list of indices")
    chosen = [int(i) for i in keep]
    increasing = sorted(set(chosen)) == chosen
    if len(chosen) != count or not increasing or chosen[0] < 0 or chosen[-1] >= total:
        raise ValueError(
            f"keep = {chosen}: expected {count} increasing layer indices in 0..{total - 1}"
        )
    return chosen


def find_layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's list of transformer blocks: the one ``nn.ModuleList`` named like one
    (``encoder.layer``, ``layers``, ``h``, ...) with ``config.num_hidden_layers`` entries."""
    depth = _depth(model)
    found = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList)
        and name.rsplit(".", 1)[-1] in LAYER_LIST_NAMES
        and len(module) == depth
    ]
    if len(found) != 1:
        names = ", ".join(name for name, _ in found) or "none"
        raise ValueError(
            f"{type(model).__name__}: expected one ModuleList of {depth} transformer blocks "
            f"named one of {', '.join(LAYER_LIST_NAMES)}; found {names}"
        )
    return found[0]


def _depth(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    depth = getattr(config, "num_hidden_layers", None)
    if not isinstance(depth, int):
        raise ValueError(
            f"{type(model).__name__}: a student needs a transformers model whose config has "
            "num_hidden_layers"
        )
    return depth


def half_depth_student(
    teacher_encoder: nn.Module, keep: KeepLayers = "alternate", num_layers: int | None = None
) -> nn.Module:
    """A copy of the teacher with half its transformer layers (or ``num_layers``).

    Sanh et al. 2019, "DistilBERT", §3: the student keeps the teacher's architecture with fewer
    layers and is initialised "from the teacher by taking one layer out of two"; here the
    embeddings and the chosen layers are copied (``keep``, see :func:`layers_to_keep`). The
    teacher is left untouched.
    """
    total = _depth(teacher_encoder)
    chosen = layers_to_keep(total, num_layers or max(1, total // 2), keep)
    student = copy.deepcopy(teacher_encoder)
    path, layers = find_layer_list(student)
    parent_name, _, attribute = path.rpartition(".")
    parent = student.get_submodule(parent_name) if parent_name else student
    setattr(parent, attribute, nn.ModuleList(layers[i] for i in chosen))
    _renumber_layers(getattr(parent, attribute))
    _shrink_config(getattr(student, "config"), chosen)  # noqa: B009 (Module typing)
    return student


def _renumber_layers(layers: nn.ModuleList) -> None:
    """Decoders index their key/value cache by ``layer_idx``; the kept layers get new places."""
    for position, layer in enumerate(layers):
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                setattr(module, "layer_idx", position)  # noqa: B010 (mypy: Module)


def _shrink_config(config: object, chosen: list[int]) -> None:
    setattr(config, "num_hidden_layers", len(chosen))  # noqa: B010 (transformers config)
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) > max(chosen):
        setattr(config, "layer_types", [layer_types[i] for i in chosen])  # noqa: B010


# --------------------------------------------------------------------------- teacher logits


def classifier_logits(
    teacher: EncoderClassifier, texts: Sequence[str], max_length: int
) -> torch.Tensor:
    """The teacher's logits for every text, in eval mode (no dropout), float32 on the CPU."""
    teacher.model.eval()
    logits = run_batched(teacher.model, teacher.tokenizer, texts, max_length, teacher.batch_size)
    return logits.float().cpu().contiguous()


def teacher_logits(
    teacher: EncoderClassifier,
    texts: Sequence[str],
    *,
    teacher_key: str,
    max_length: int | None = None,
) -> np.ndarray:
    """``(len(texts), num_labels)`` teacher logits, computed once and then read from the cache.

    The cache is a safetensors file keyed by ``teacher_key`` (what identifies the teacher's
    weights: its run's manifest and files), the texts and the truncation length. Row ``i``
    belongs to ``texts[i]``: a student's example ``index``.
    """
    length = teacher.max_length if max_length is None else max_length
    key = hashlib.sha256(f"{teacher_key}:{texts_fingerprint(texts)}:{length}".encode()).hexdigest()
    path = cache_dir() / "teacher_logits" / f"{key[:32]}.safetensors"
    if path.exists():
        return load_file(str(path))["logits"]
    logits = classifier_logits(teacher, texts, length).numpy()
    with atomic_path(path) as tmp:  # processes of one run race here; each has its own name
        save_file({"logits": logits}, str(tmp))
    return logits


# --------------------------------------------------------------------------- language models


@dataclass(frozen=True)
class TopLogits:
    """A teacher's top-k next-token logits at every trained position of every example.

    Rows ``offsets[e]:offsets[e + 1]`` of ``values`` and ``indices`` belong to example ``e``
    (its ``index``), in the order of its trained positions. Only the top k of a 49k-word
    vocabulary are kept: the divergences are then over the renormalised top-k support (module
    docstring), which for k = 64 holds nearly all of a fine-tuned teacher's mass and takes
    ~0.1% of the full logits' disk.
    """

    values: torch.Tensor  # (positions, k) float32
    indices: torch.Tensor  # (positions, k) int64
    offsets: torch.Tensor  # (examples + 1,) int64

    @property
    def k(self) -> int:
        return int(self.values.shape[1])

    def for_positions(self, owners: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows of a batch's trained positions, given each position's example index.

        A packed or padded batch lists an example's trained positions contiguously and in
        order, so the rows are each example's block, taken in order of appearance.
        """
        examples = torch.unique_consecutive(owners.cpu())
        blocks = [torch.arange(int(self.offsets[e]), int(self.offsets[e + 1])) for e in examples]
        rows = torch.cat(blocks) if blocks else torch.zeros(0, dtype=torch.long)
        if len(rows) != len(owners):
            raise ValueError(
                f"the cached teacher logits cover {len(rows)} trained positions of examples "
                f"{examples.tolist()[:5]}..., the batch has {len(owners)}: the examples were "
                "encoded differently from when the cache was made"
            )
        return self.values[rows], self.indices[rows]

    def save(self, path: Path) -> None:
        tensors = {"values": self.values, "indices": self.indices, "offsets": self.offsets}
        with atomic_path(path) as tmp:  # a crash half-way leaves no truncated cache entry
            save_torch_file({name: t.contiguous() for name, t in tensors.items()}, str(tmp))

    @classmethod
    def load(cls, path: Path) -> TopLogits:
        tensors = load_torch_file(str(path))
        return cls(tensors["values"], tensors["indices"], tensors["offsets"])


def teacher_top_logits(
    teacher: nn.Module, batches: Iterable[Batch], k: int, examples: int
) -> TopLogits:
    """Run the teacher (eval mode, no gradients) over ``batches`` of chat rows and keep the
    top-``k`` logits of every trained position, grouped by example index ``0..examples-1``."""
    teacher.eval()
    values: list[list[torch.Tensor]] = [[] for _ in range(examples)]
    indices: list[list[torch.Tensor]] = [[] for _ in range(examples)]
    device = next(teacher.parameters()).device
    with torch.no_grad():
        for batch in batches:
            batch = {name: tensor.to(device) for name, tensor in batch.items()}
            logits, _, trained = trained_logits(teacher, batch)
            top = torch.topk(logits.float(), k, dim=-1)
            owners = trained_owners(batch, trained).cpu()
            for example in torch.unique_consecutive(owners).tolist():
                chosen = (owners == example).nonzero().squeeze(1)
                values[example].append(top.values[chosen].cpu())
                indices[example].append(top.indices[chosen].cpu())
    counts = [sum(len(part) for part in parts) for parts in values]
    empty = torch.zeros(0, k)
    return TopLogits(
        torch.cat([torch.cat(parts) if parts else empty for parts in values]),
        torch.cat([torch.cat(parts) if parts else empty.long() for parts in indices]).long(),
        torch.tensor([0, *np.cumsum(counts)], dtype=torch.long),
    )


def rows_fingerprint(rows: Sequence[Mapping[str, Any]]) -> str:
    """What the cached teacher logits depend on in the training rows: tokens, labels, owners."""
    digest = hashlib.sha256()
    for row in rows:
        for key in ("input_ids", "labels", "sequence_index", "index"):
            if key in row:
                digest.update(np.asarray(row[key], dtype=np.int64).tobytes() + key.encode())
    return digest.hexdigest()


def cached_top_logits(
    teacher: nn.Module,
    rows: Sequence[Mapping[str, Any]],
    collate: Callable[[list[Mapping[str, Any]]], Batch],
    *,
    k: int,
    teacher_key: str,
    batch_size: int,
) -> TopLogits:
    """:func:`teacher_top_logits` over ``rows``, computed once per (teacher, rows, k) and then
    read from a safetensors file in the cache."""
    key = hashlib.sha256(f"{teacher_key}:{rows_fingerprint(rows)}:{k}".encode()).hexdigest()
    path = cache_dir() / "teacher_top_logits" / f"{key[:32]}.safetensors"
    if path.exists():
        return TopLogits.load(path)
    examples = 1 + max(int(i) for row in rows for i in _row_owners(row))
    batches = (collate(list(rows[i : i + batch_size])) for i in range(0, len(rows), batch_size))
    top = teacher_top_logits(teacher, batches, k, examples)
    top.save(path)
    return top


def _row_owners(row: Mapping[str, Any]) -> Sequence[int]:
    return row["sequence_index"] if "sequence_index" in row else [row["index"]]


def lm_kd_loss(
    top: TopLogits,
    *,
    temperature: float,
    alpha: float,
    divergence: Divergence = "forward_kl",
    beta: float = 0.5,
) -> LossFunction:
    """The training loss of a causal-LM student from cached top-k teacher logits.

    ``alpha ×`` the next-token cross-entropy on the gold answer (over the whole vocabulary)
    ``+ (1 − alpha) ×`` the chosen divergence between teacher and student over the teacher's
    top-k words at each answer position (:func:`soft_target_loss`: forward KL as Hinton et
    al. 2015, reverse KL or generalised JSD as Agarwal et al. 2024, eq. 1), summed; the loop
    divides by the number of answer tokens.
    """

    def loss(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        logits, targets, trained = trained_logits(model, batch)
        values, indices = top.for_positions(trained_owners(batch, trained))
        return _kd_terms(logits, targets, values, indices, temperature, alpha, divergence, beta)

    return loss


def online_lm_kd_loss(
    teacher: nn.Module,
    k: int,
    *,
    temperature: float,
    alpha: float,
    divergence: Divergence = "forward_kl",
    beta: float = 0.5,
) -> LossFunction:
    """:func:`lm_kd_loss` with the teacher run on each batch instead of read from a cache
    (the reference the cache must match; it costs a teacher forward pass per step)."""

    def loss(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        logits, targets, _ = trained_logits(model, batch)
        with torch.no_grad():
            teacher.eval()
            top = torch.topk(trained_logits(teacher, batch)[0].float(), k, dim=-1)
        return _kd_terms(
            logits, targets, top.values, top.indices, temperature, alpha, divergence, beta
        )

    return loss


def _kd_terms(
    logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_values: torch.Tensor,
    teacher_indices: torch.Tensor,
    temperature: float,
    alpha: float,
    divergence: Divergence,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    hard = F.cross_entropy(_upcast(logits), targets, reduction="sum")
    device = logits.device
    student_top = torch.gather(logits, -1, teacher_indices.to(device))
    soft = soft_target_loss(
        student_top,
        teacher_values.to(device),
        temperature=temperature,
        divergence=divergence,
        beta=beta,
    )
    return alpha * hard + (1 - alpha) * soft, torch.tensor(targets.numel())
