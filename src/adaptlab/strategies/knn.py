"""Few-shot by retrieval: the k labelled training examples nearest to the input vote.

Retrieval augmentation for classification: nothing is trained; the training set's embeddings
(cached, shared with ``frozen``) are the model. Votes are weighted by a softmax over cosine
similarity, so near neighbours count more and the output is a probability. With label sets
(multi-label data) each label's probability is the weighted share of the neighbours that carry
it, smoothed toward one half.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import numpy as np
from annotated_types import Ge, Gt
from pydantic import Field
from safetensors.numpy import load_file, save_file

from adaptlab.models.encoder import FrozenEncoder
from adaptlab.models.retrieval import similarities
from adaptlab.paths import atomic_path
from adaptlab.profile import DataNeed, StrategyProfile
from adaptlab.strategies.base import ClassificationTask, RunContext, StrategyConfig, register

INDEX = "index.safetensors"


class KnnConfig(StrategyConfig):
    k: Annotated[int, Ge(1)] = Field(10, description="Neighbours that vote.")
    temperature: Annotated[float, Gt(0)] = Field(
        20.0, description="Scale on cosine similarity in the vote weights."
    )
    smoothing: Annotated[float, Ge(0)] = Field(
        0.01, description="Probability mass spread over all labels, so no label is impossible."
    )


@dataclass
class NearestNeighbourClassifier:
    encoder: FrozenEncoder
    vectors: np.ndarray
    labels: np.ndarray
    config: KnnConfig
    label_names: Sequence[str]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        similarity = similarities(self.encoder.embed(texts), self.vectors)
        k = min(self.config.k, similarity.shape[1])
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        scores = np.take_along_axis(similarity, nearest, axis=1) * self.config.temperature
        weights = np.exp(scores - scores.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
        smoothing = self.config.smoothing
        if self.labels.ndim == 2:  # label sets: each label's weighted share of the neighbours
            shares = np.einsum("nk,nkl->nl", weights, self.labels[nearest].astype(np.float64))
            return np.asarray((1 - smoothing) * shares + smoothing * 0.5)
        votes = np.zeros((len(texts), len(self.label_names)))
        np.add.at(votes, (np.arange(len(texts))[:, None], self.labels[nearest]), weights)
        uniform = 1.0 / len(self.label_names)
        return np.asarray((1 - smoothing) * votes + smoothing * uniform)

    def inference_graph(self) -> dict[str, Any]:
        """The encoder's graph, then a search of the whole index and a vote: more work than a
        linear head, growing with the index, so a graph of its own."""
        search = {"index": list(self.vectors.shape), "k": self.config.k}
        return {**self.encoder.inference_graph(), "head": {"nearest_neighbours": search}}


class KnnStrategy:
    name: ClassVar[str] = "knn"
    config_type: ClassVar[type[StrategyConfig]] = KnnConfig
    trains: ClassVar[bool] = False
    profile: ClassVar[StrategyProfile] = StrategyProfile(
        role="prompted",
        method="features",
        data_need=DataNeed(
            0, 5, "a class with fewer than ~5 examples rarely wins a 10-neighbour vote"
        ),
        tasks=("classification",),
        multi_label=True,
    )

    def requires(self, config: StrategyConfig) -> list[str]:
        return []

    def fit(self, run: RunContext[ClassificationTask, KnnConfig]) -> NearestNeighbourClassifier:
        config = run.config
        encoder = FrozenEncoder.load(run.base_model, run.max_length)
        task = run.task
        vectors = encoder.embed_cached(run.base_model, task.train_texts)
        with atomic_path(run.folder / INDEX) as tmp:
            save_file({"vectors": vectors, "labels": task.train_labels.astype(np.int64)}, str(tmp))
        run.record(
            trainable_params=0,
            total_params=encoder.parameter_count(),
            needs_base_model=True,
            index_vectors=len(vectors),
        )
        return NearestNeighbourClassifier(
            encoder, vectors, task.train_labels, config, task.label_names
        )

    def load(self, run: RunContext[ClassificationTask, KnnConfig]) -> NearestNeighbourClassifier:
        config = run.config
        tensors = load_file(str(run.folder / INDEX))
        encoder = FrozenEncoder.load(run.base_model, run.max_length)
        return NearestNeighbourClassifier(
            encoder, tensors["vectors"], tensors["labels"], config, run.task.label_names
        )


register(KnnStrategy)
