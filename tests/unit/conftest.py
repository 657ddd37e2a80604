"""Fixtures shared by the unit tests of more than one package.

``tiny_encoder`` is a 2-layer BERT with hidden size 32, randomly initialised and saved as a
local model folder with the bundled MiniLM tokenizer, so code loads it through the same path
as a real model (strategy tests, the cost estimate's tests).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adaptlab.models.bundled import MINILM, resolve_model


def build_tiny_bert(folder: Path, hidden_size: int = 32) -> Path:
    """A 2-layer BERT with seeded random weights and MiniLM's tokenizer, saved in ``folder``."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(resolve_model(MINILM)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))
