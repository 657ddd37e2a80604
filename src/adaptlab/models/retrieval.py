"""Nearest examples by sentence-embedding similarity: how few-shot prompts pick their examples.

Choosing in-context examples by their similarity to the input follows Liu et al., 2022 ("What
Makes Good In-Context Examples for GPT-3?"). The examples (training texts) are embedded once,
through the shared embedding cache; a query is embedded by the same encoder and compared by dot
product (the embeddings are normalised: cosine similarity). Examples come back least similar
first, so that in a prompt the closest example sits in the turn right before the query.
Shared by ``llm_prompt``'s and ``few_shot``'s example turns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from adaptlab.models.encoder import FrozenEncoder
from adaptlab.paths import atomic_path

VECTORS = "vectors"


def similarities(queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Dot products of every query row with every vector row, ``(queries, vectors)``.

    Computed by PyTorch, not numpy: numpy's BLAS keeps a thread pool of its own, and a numpy
    product right after a PyTorch encoder call makes the two pools fight for the cores —
    measured on banking77 with 2 threads, knn's batch-1 latency was 96-111 ms this way and
    10-25 ms with one pool.
    """
    return (torch.from_numpy(queries) @ torch.from_numpy(vectors).T).numpy()


def nearest_indices(similarity: np.ndarray, k: int) -> np.ndarray:
    """``(rows, min(k, columns))`` column indices of each row's ``k`` largest similarities,
    least similar first (ties keep the column order)."""
    k = min(k, similarity.shape[1])
    top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    order = np.argsort(np.take_along_axis(similarity, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


@dataclass
class ExampleIndex:
    """Embedded examples and the encoder that embeds queries the same way."""

    encoder: FrozenEncoder
    vectors: np.ndarray

    @classmethod
    def build(cls, name: str, texts: Sequence[str], max_length: int) -> ExampleIndex:
        """Load encoder ``name`` and embed ``texts`` (cached across runs by content)."""
        encoder = FrozenEncoder.load(name, max_length)
        return cls(encoder, encoder.embed_cached(name, texts))

    def nearest(self, texts: Sequence[str], k: int) -> np.ndarray:
        """``(len(texts), k)`` example indices, least similar first: the closest example
        ends up in the turn right before the text."""
        return nearest_indices(similarities(self.encoder.embed(texts), self.vectors), k)

    def save(self, path: Path, **extra: np.ndarray) -> None:
        """The vectors (and ``extra`` arrays, e.g. labels) as safetensors, written atomically."""
        with atomic_path(path) as tmp:
            save_file({VECTORS: self.vectors, **extra}, str(tmp))

    @classmethod
    def load(
        cls, path: Path, name: str, max_length: int
    ) -> tuple[ExampleIndex, dict[str, np.ndarray]]:
        """The index saved at ``path`` with encoder ``name``, and the extra arrays saved with it."""
        tensors = load_file(str(path))
        vectors = tensors.pop(VECTORS)
        return cls(FrozenEncoder.load(name, max_length), vectors), tensors
