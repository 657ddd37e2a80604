"""Zero-shot: no labelled examples. Each label's name is embedded; the nearest label wins.

``card_arrival`` is read as "card arrival". Probabilities are a softmax over cosine
similarities times a fixed temperature: zero-shot has no labelled data to fit one on, so the
calibration of this strategy is whatever that fixed choice gives, and the report shows it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, ClassVar

import numpy as np
import torch
from annotated_types import Gt
from pydantic import Field
from safetensors.numpy import load_file, save_file

from adaptlab.models.encoder import ClassifierParts, FrozenEncoder, linear_head, softmax
from adaptlab.paths import atomic_path, write_text_atomic
from adaptlab.profile import DataNeed, StrategyProfile
from adaptlab.strategies.base import ClassificationTask, RunContext, StrategyConfig, register

LABELS = "label_embeddings.safetensors"
META = "zero_shot.json"


class ZeroShotConfig(StrategyConfig):
    template: str = Field(
        "{label}", description="How a label name is turned into text; {label} is replaced."
    )
    descriptions: dict[str, str] = Field(
        default_factory=dict, description="Optional text per label, used instead of its name."
    )
    temperature: Annotated[float, Gt(0)] = Field(
        20.0, description="Scale on cosine similarities before the softmax."
    )


def label_text(name: str, template: str, descriptions: dict[str, str]) -> str:
    """A label id such as ``card_arrival`` or ``CardArrival`` as words, in the template."""
    if name in descriptions:
        return descriptions[name]
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).replace("_", " ").replace("-", " ")
    return template.format(label=" ".join(words.split()).lower())


@dataclass
class NearestLabelClassifier:
    encoder: FrozenEncoder
    label_vectors: np.ndarray
    temperature: float
    label_names: Sequence[str]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        similarity = self.encoder.embed(texts) @ self.label_vectors.T
        return softmax(similarity * self.temperature)

    @property
    def max_length(self) -> int:
        return self.encoder.max_length

    def export_parts(self) -> ClassifierParts:
        """Cosine to each label vector times the temperature: a linear head without bias."""
        weight = torch.tensor(self.label_vectors, dtype=torch.float32) * self.temperature
        head = linear_head(weight, None)
        return ClassifierParts(self.encoder.tokenizer, self.encoder.model, head)


class ZeroShotStrategy:
    name: ClassVar[str] = "zero_shot"
    config_type: ClassVar[type[StrategyConfig]] = ZeroShotConfig
    trains: ClassVar[bool] = False
    profile: ClassVar[StrategyProfile] = StrategyProfile(
        role="base",
        method="none",
        data_need=DataNeed(0, 0, "it uses only the label names"),
        tasks=("classification",),
    )

    def requires(self, config: StrategyConfig) -> list[str]:
        return []

    def fit(self, run: RunContext[ClassificationTask, ZeroShotConfig]) -> NearestLabelClassifier:
        config = run.config
        encoder = FrozenEncoder.load(run.base_model, run.max_length)
        names = list(run.task.label_names)
        texts = [label_text(n, config.template, config.descriptions) for n in names]
        vectors = encoder.embed(texts)
        with atomic_path(run.folder / LABELS) as tmp:
            save_file({"labels": vectors}, str(tmp))
        meta = {"label_names": names, "label_texts": texts, "temperature": config.temperature}
        write_text_atomic(run.folder / META, json.dumps(meta, indent=2) + "\n")
        run.record(
            trainable_params=0, total_params=encoder.parameter_count(), needs_base_model=True
        )
        return NearestLabelClassifier(encoder, vectors, config.temperature, names)

    def load(self, run: RunContext) -> NearestLabelClassifier:
        meta = json.loads((run.folder / META).read_text())
        vectors = load_file(str(run.folder / LABELS))["labels"]
        encoder = FrozenEncoder.load(run.base_model, run.max_length)
        return NearestLabelClassifier(encoder, vectors, meta["temperature"], meta["label_names"])


register(ZeroShotStrategy)
