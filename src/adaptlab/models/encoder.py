"""Sentence encoders (BERT-style) as classifiers: load, pool, classify, save, embed.

all-MiniLM-L6-v2 was trained with mean pooling over tokens followed by L2 normalisation, so
that is what its embeddings are; classifiers put a linear head on the same pooled vector, so
the frozen-backbone, partially unfrozen and fully fine-tuned variants differ only in which
parameters train.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from adaptlab.models.bundled import ModelNotAvailable, loadable, resolve_model
from adaptlab.paths import atomic_path, cache_dir, write_text_atomic
from adaptlab.safeload import PRETRAINED_SAFE, WEIGHTS_SAFE
from adaptlab.train.batching import pad_collate

HEAD_FILE = "head.safetensors"
CLASSIFIER_FILE = "classifier.json"
MULTI_LABEL = "multi_label"
"""``classifier.json``'s flag for a head of independent sigmoids (label sets); absent in a
softmax classifier's file, as in every file written before label sets."""


def load_encoder(name: str, revision: str | None = None) -> tuple[Any, nn.Module]:
    """Tokenizer and bare encoder (``AutoModel``) for a bundled, local or hub model."""
    from transformers import AutoModel, AutoTokenizer

    location = loadable(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, revision=revision, **PRETRAINED_SAFE)
        encoder = AutoModel.from_pretrained(location, revision=revision, **WEIGHTS_SAFE)
    except OSError as exc:
        raise ModelNotAvailable(f"cannot load encoder '{name}': {exc}") from exc
    return tokenizer, encoder


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token vectors, ignoring padding."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class PooledEncoder(nn.Module):
    """Encoder → mean pooling → L2 normalisation: the sentence embedding itself."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        return nn.functional.normalize(mean_pool(hidden, attention_mask), dim=-1)


class SentenceClassifier(nn.Module):
    """Encoder → mean pooling → L2 normalisation → dropout → linear head."""

    def __init__(self, encoder: nn.Module, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = int(getattr(encoder, "config").hidden_size)  # noqa: B009 (Module typing)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_labels)
        # Normalised embeddings have small coordinates; a scale on the logits lets the head
        # reach confident predictions without huge weights (cosine-classifier style).
        self.scale = nn.Parameter(torch.tensor(20.0))

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        return nn.functional.normalize(mean_pool(hidden, attention_mask), dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(input_ids, attention_mask))

    def classify(self, embeddings: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.dropout(embeddings)) * self.scale
        return logits


# --------------------------------------------------------------------------- inference graphs

NOT_ARCHITECTURE = frozenset(
    {
        "architectures",
        "transformers_version",
        "torch_dtype",
        "dtype",
        "name_or_path",
        "id2label",
        "label2id",
        "num_labels",
        "problem_type",
        "finetuning_task",
        "return_dict",
        "output_attentions",
        "output_hidden_states",
        "torchscript",
        "use_cache",
        "gradient_checkpointing",
        "tokenizer_class",
        "initializer_range",
    }
)
"""Config keys that do not change what an encoder's forward pass computes at inference: where
it came from, library versions, label names, output switches. Keys starting with ``_`` and
dropout rates (dropout is off at inference) are left out too. The weights' dtype is read from
the weights themselves."""

POOLING = "mean+l2"
"""Mean pooling over tokens, then L2 normalisation: every pooled encoder here."""


def encoder_architecture(config: Any) -> dict[str, Any]:
    """A transformers config as the architecture it describes: what decides a forward pass's
    work (layers, widths, heads, vocabulary, activation...), without names, paths, versions,
    label maps or dropout. A fine-tuned copy of a model, a randomly initialised one and the
    model itself describe the same architecture."""
    raw: dict[str, Any] = config.to_dict()
    return {
        key: value
        for key, value in sorted(raw.items())
        if not key.startswith("_") and key not in NOT_ARCHITECTURE and "dropout" not in key
    }


def pooled_encoder_graph(
    encoder: nn.Module, tokenizer: Any, max_length: int, runtime: str = "torch"
) -> dict[str, Any]:
    """The inference graph of a pooled torch encoder (:class:`PooledEncoder`'s computation):
    the runtime, its architecture and weights' dtype, the tokenizer's kind, truncation and
    pooling. A classifier adds its head (:func:`head_graph`)."""
    parameter = next(encoder.parameters(), None)
    graph = encoder_graph(
        runtime,
        encoder_architecture(getattr(encoder, "config")),  # noqa: B009 (Module typing)
        tokenizer,
        max_length,
        dtype=str(parameter.dtype) if parameter is not None else None,
    )
    adapters = getattr(encoder, "peft_config", None)
    if isinstance(adapters, dict):
        # PEFT adapters kept beside the weights (loaded unmerged) add their own products.
        graph["adapters"] = sorted(adapters)
    return graph


def encoder_graph(
    runtime: str,
    architecture: dict[str, Any] | None,
    tokenizer: Any,
    max_length: int,
    **details: Any,
) -> dict[str, Any]:
    """What embedding a batch computes on ``runtime``: the architecture, the tokenizer's kind,
    truncation and pooling, and ``details`` the runtime knows (a torch encoder's dtype)."""
    head = {"runtime": runtime, "encoder": architecture}
    rest = {"tokenizer": type(tokenizer).__name__, "max_length": max_length, "pooling": POOLING}
    return {**head, **details, **rest}


def head_graph(widths: Sequence[int], multi_label: bool) -> dict[str, Any]:
    """A head on the pooled embedding: its layer widths, input first, and its output."""
    return {"head": list(widths), "output": "sigmoid" if multi_label else "softmax"}


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[dict[str, list[int]]]:
    """Token ids and mask per text, truncated to ``max_length`` (``data check`` reports how
    many texts that truncates)."""
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    return [{"input_ids": ids, "attention_mask": [1] * len(ids)} for ids in encoded["input_ids"]]


def pad_values(tokenizer: Any) -> dict[str, int]:
    """What each list field is padded with (dynamic padding to the batch's longest)."""
    return {"input_ids": int(tokenizer.pad_token_id or 0), "attention_mask": 0}


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices in batches of similar length: inference pads almost nothing."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size].tolist()


@torch.inference_mode()
def run_batched(
    forward: Any, tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int = 64
) -> torch.Tensor:
    """Apply ``forward(input_ids, attention_mask)`` to every text, in the input order.

    A module gets its batches on its own device (a model trained on a GPU stays there); the
    results come back to the CPU."""
    examples = tokenize(tokenizer, texts, max_length)
    outputs: list[torch.Tensor | None] = [None] * len(examples)
    padding = pad_values(tokenizer)
    device = _device_of(forward)
    for indices in length_sorted_batches([len(e["input_ids"]) for e in examples], batch_size):
        batch = pad_collate([examples[i] for i in indices], padding)
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        result = forward(ids, mask).cpu()
        for row, index in enumerate(indices):
            outputs[index] = result[row]
    return torch.stack([o for o in outputs if o is not None])


def _device_of(forward: Any) -> torch.device:
    if isinstance(forward, nn.Module):
        parameter = next(forward.parameters(), None)
        if parameter is not None:
            return parameter.device
    return torch.device("cpu")


class ClassifierParts(NamedTuple):
    """A pooled classifier taken apart for export (the ``PooledClassifier`` protocol of
    :mod:`adaptlab.strategies.base`): probabilities = softmax(head(normalise(mean_pool(encoder(
    tokens))))); ``notes`` say where an exported copy will not match the run exactly."""

    tokenizer: Any
    encoder: nn.Module
    """A transformers ``PreTrainedModel`` (``AutoModel`` loads what it saves)."""
    head: nn.Module
    """Normalised embedding -> logits."""
    notes: tuple[str, ...] = ()


def linear_head(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """An ``nn.Linear`` holding copies of ``weight`` (out x in) and ``bias``, in eval mode."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer.eval()


@dataclass
class EncoderClassifier:
    """A fitted :class:`SentenceClassifier` behind the ``Classifier`` protocol."""

    model: SentenceClassifier
    tokenizer: Any
    label_names: Sequence[str]
    max_length: int
    batch_size: int = 64
    multi_label: bool = False
    """Label sets: each label's probability is the sigmoid of its own logit (the head was
    trained with binary cross-entropy per label), not one softmax over the labels."""

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        self.model.eval()
        logits = run_batched(self.model, self.tokenizer, texts, self.max_length, self.batch_size)
        if self.multi_label:
            return torch.sigmoid(logits.float()).numpy()
        return torch.softmax(logits.float(), dim=-1).numpy()

    def inference_graph(self) -> dict[str, Any]:
        """What a prediction computes (:func:`adaptlab.evaluate.latency.graph_fingerprint`):
        the pooled encoder and a linear head; the logit scale costs nothing worth telling."""
        head = self.model.head
        return {
            **pooled_encoder_graph(self.model.encoder, self.tokenizer, self.max_length),
            **head_graph([head.in_features, head.out_features], self.multi_label),
        }

    def export_parts(self) -> ClassifierParts:
        """The encoder and the head with ``scale`` folded in (dropout is off at inference)."""
        if self.multi_label:
            # ClassifierParts and the exported runtimes apply a softmax over the labels.
            raise ValueError(
                "multi-label export is not supported yet: this classifier gives each label its "
                "own sigmoid probability, and the exported model would apply a softmax"
            )
        head, scale = self.model.head, self.model.scale.detach()
        folded = linear_head(head.weight.detach() * scale, head.bias.detach() * scale)
        return ClassifierParts(self.tokenizer, self.model.encoder, folded)


def save_classifier(
    model: SentenceClassifier, tokenizer: Any, folder: Path, meta: dict[str, Any]
) -> None:
    """``model/``: the encoder (safetensors), the head, the tokenizer and a JSON description."""
    folder.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(folder, safe_serialization=True)  # type: ignore[operator]
    tokenizer.save_pretrained(folder)
    save_head(model, folder)
    write_text_atomic(folder / CLASSIFIER_FILE, json.dumps(meta, indent=2) + "\n")


def save_head(model: SentenceClassifier, folder: Path) -> None:
    tensors = {f"head.{k}": v.detach().contiguous() for k, v in model.head.state_dict().items()}
    tensors["scale"] = model.scale.detach().reshape(1).contiguous()
    with atomic_path(folder / HEAD_FILE) as tmp:
        save_file(tensors, str(tmp))


def load_head(model: SentenceClassifier, folder: Path) -> None:
    tensors = load_file(str(folder / HEAD_FILE))
    model.head.load_state_dict(
        {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
    )
    with torch.no_grad():
        model.scale.copy_(tensors["scale"].reshape(()))


def read_meta(folder: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((folder / CLASSIFIER_FILE).read_text())
    return meta


def output_meta(multi_label: bool) -> dict[str, Any]:
    """What ``classifier.json`` says about the head's output: nothing for a softmax over the
    labels (so single-label files stay as they were), ``multi_label: true`` for sigmoids."""
    return {MULTI_LABEL: True} if multi_label else {}


def is_multi_label(meta: dict[str, Any], folder: Path) -> bool:
    """``classifier.json``'s :data:`MULTI_LABEL` flag (absent: a softmax classifier)."""
    value = meta.get(MULTI_LABEL, False)
    if not isinstance(value, bool):
        raise ValueError(
            f"{folder / CLASSIFIER_FILE}: field '{MULTI_LABEL}' must be true or false, "
            f"found {value!r}"
        )
    return value


def load_classifier(folder: Path, batch_size: int = 64) -> EncoderClassifier:
    """Rebuild an :class:`EncoderClassifier` saved by :func:`save_classifier`."""
    meta = read_meta(folder)
    tokenizer, encoder = load_encoder(str(folder))
    model = SentenceClassifier(encoder, len(meta["label_names"]))
    load_head(model, folder)
    model.eval()
    return EncoderClassifier(
        model,
        tokenizer,
        meta["label_names"],
        meta["max_length"],
        batch_size,
        multi_label=is_multi_label(meta, folder),
    )


# --------------------------------------------------------------------------- embeddings cache


def model_fingerprint(name: str) -> str:
    """A hash that changes when the model's weights change (file sizes and mtimes, cheap)."""
    location = Path(resolve_model(name))
    if not location.is_dir():
        return hashlib.sha256(name.encode()).hexdigest()
    digest = hashlib.sha256()
    for path in sorted(location.glob("*.safetensors")) + sorted(location.glob("*.json")):
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def texts_fingerprint(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()


def embed_texts(
    name: str,
    texts: Sequence[str],
    max_length: int,
    batch_size: int = 128,
    encoder: tuple[Any, nn.Module] | None = None,
) -> np.ndarray:
    """Pooled, normalised embeddings, computed once per (model, texts, max_length) and cached.

    The cache is a safetensors file keyed by a hash of the model files and the texts, shared by
    every strategy that needs embeddings (frozen, kNN, zero-shot, SetFit's head).
    """

    def compute() -> np.ndarray:
        tokenizer, model = encoder or load_encoder(name)
        model.eval()
        return FrozenEncoder(tokenizer, model, max_length, batch_size).embed(texts)

    return cached_embeddings(name, texts, max_length, compute)


def embedding_cache_path(
    name: str, texts: Sequence[str], max_length: int, runtime: str = "torch"
) -> Path:
    """Where the cache keeps this model's (by content) embeddings of these texts."""
    variant = "" if runtime == "torch" else f":{runtime}"  # torch keys predate runtimes
    key = hashlib.sha256(
        f"{model_fingerprint(name)}:{texts_fingerprint(texts)}:{max_length}{variant}".encode()
    ).hexdigest()[:32]
    return cache_dir() / "embeddings" / f"{key}.safetensors"


def cached_embeddings(
    name: str,
    texts: Sequence[str],
    max_length: int,
    compute: Callable[[], np.ndarray],
    runtime: str = "torch",
) -> np.ndarray:
    """``compute()``'s embeddings of ``texts``, read from the cache when this model (by content),
    these texts, this ``max_length`` and this runtime were embedded before."""
    path = embedding_cache_path(name, texts, max_length, runtime)
    if path.exists():
        return np.asarray(load_file(str(path))["embeddings"].numpy())
    vectors = np.ascontiguousarray(compute(), dtype=np.float32)
    with atomic_path(path) as tmp:  # processes embedding the same texts race here
        save_file({"embeddings": torch.from_numpy(vectors)}, str(tmp))
    return vectors


@dataclass
class FrozenEncoder:
    """A pretrained encoder used as is: texts in, pooled normalised embeddings out."""

    tokenizer: Any
    model: nn.Module
    max_length: int
    batch_size: int = 128

    @classmethod
    def load(cls, name: str, max_length: int) -> FrozenEncoder:
        tokenizer, model = load_encoder(name)
        model.eval()
        return cls(tokenizer, model, max_length)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        pooled = PooledEncoder(self.model)
        vectors = run_batched(pooled, self.tokenizer, texts, self.max_length, self.batch_size)
        return vectors.float().numpy()

    def embed_cached(self, name: str, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of a fixed set (the training texts) through the shared cache; ``name``
        is this encoder's model name, part of the cache key."""
        return embed_texts(name, texts, self.max_length, encoder=(self.tokenizer, self.model))

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def inference_graph(self) -> dict[str, Any]:
        """What embedding a batch computes; a classifier on top adds its head."""
        return pooled_encoder_graph(self.model, self.tokenizer, self.max_length)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


def weights_bytes(name: str) -> int:
    """Size of a model's weight files (what serving it costs on disk)."""
    location = Path(resolve_model(name))
    if not location.is_dir():
        return 0
    return sum(p.stat().st_size for p in location.glob("*.safetensors"))
