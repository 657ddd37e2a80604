"""The frozen encoder under ONNX Runtime: the same embeddings as PyTorch (fp32), close ones with
int8 weights, exported once and cached, and kept apart from PyTorch's in the embedding cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adaptlab.models.encoder import FrozenEncoder
from adaptlab.models.onnx_encoder import OnnxEncoder, onnx_path

# Different lengths, so batches carry padding that mean pooling must ignore.
TEXTS = [
    "card",
    "my card was declined at the atm yesterday evening",
    "refund please",
    "how long does a transfer to a new payee take when it is sent by wire",
    "pin",
]


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))


def test_fp32_graph_gives_pytorchs_embeddings(tiny_encoder: Path) -> None:
    reference = FrozenEncoder.load(str(tiny_encoder), 32)
    encoder = OnnxEncoder.load(str(tiny_encoder), 32, "onnx")
    encoder.batch_size = reference.batch_size = 2

    np.testing.assert_allclose(encoder.embed(TEXTS), reference.embed(TEXTS), atol=1e-5)
    assert encoder.parameter_count() == reference.parameter_count()


def test_int8_embeddings_stay_close_and_unit_length(tiny_encoder: Path) -> None:
    reference = FrozenEncoder.load(str(tiny_encoder), 32).embed(TEXTS)
    int8 = OnnxEncoder.load(str(tiny_encoder), 32, "onnx-int8").embed(TEXTS)

    np.testing.assert_allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-5)
    cosine = (reference * int8).sum(axis=1)
    assert cosine.min() > 0.98
    assert not np.array_equal(int8, reference)  # it really is another computation


def test_graphs_are_built_once_and_cached(tiny_encoder: Path) -> None:
    first = OnnxEncoder.load(str(tiny_encoder), 32, "onnx-int8")
    second = OnnxEncoder.load(str(tiny_encoder), 32, "onnx-int8")

    assert first.build_s > 0 and second.build_s == 0
    folder = onnx_path(str(tiny_encoder), int8=True).parent
    assert sorted(p.name for p in folder.iterdir()) == ["encoder.int8.onnx", "encoder.onnx"]


def test_embedding_cache_keeps_runtimes_apart(tiny_encoder: Path) -> None:
    name = str(tiny_encoder)
    torch_vectors = FrozenEncoder.load(name, 32).embed_cached(name, TEXTS)
    int8 = OnnxEncoder.load(name, 32, "onnx-int8")
    int8_vectors = int8.embed_cached(name, TEXTS)

    np.testing.assert_array_equal(int8_vectors, int8.embed(TEXTS))
    assert not np.array_equal(int8_vectors, torch_vectors)
    np.testing.assert_array_equal(int8.embed_cached(name, TEXTS), int8_vectors)
