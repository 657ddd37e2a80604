"""Transfer learning with a frozen backbone: embeddings computed once, a head trained on them.

The backbone's weights never change, so the training embeddings are cached per (model, data)
and shared with every other strategy that needs them; only the head is learned. The head is
scikit-learn's multinomial logistic regression (or a small MLP), which is what a practitioner
would write by hand, and it fits in seconds.

On label sets (multi-label data) the head is one-vs-rest: one binary logistic regression per
label (or an MLP with one sigmoid output per label, trained on the summed binary cross-entropy),
so every label gets its own probability and a record may have none, one or several.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import numpy as np
import torch
from annotated_types import Gt
from pydantic import Field
from safetensors.numpy import load_file, save_file
from torch import nn

from adaptlab.models.encoder import (
    ClassifierParts,
    FrozenEncoder,
    head_graph,
    linear_head,
    softmax,
)
from adaptlab.models.onnx_encoder import OnnxEncoder, Runtime
from adaptlab.paths import atomic_path, write_text_atomic
from adaptlab.profile import DataNeed, StrategyProfile
from adaptlab.strategies.base import (
    MIN_PER_CLASS,
    ClassificationTask,
    RunContext,
    StrategyConfig,
    register,
)

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression

HEAD = "head.safetensors"
META = "classifier.json"


class HeadConfig(StrategyConfig):
    """The head fitted on sentence embeddings (shared with SetFit's second stage)."""

    head: Literal["logistic", "mlp"] = Field("logistic", description="Head on the embeddings.")
    regularization_c: Annotated[float, Gt(0)] = Field(
        10.0, description="Inverse L2 strength of the logistic head (scikit-learn's C)."
    )
    max_iter: Annotated[int, Gt(0)] = Field(2000, description="Solver iterations.")
    hidden_size: Annotated[int, Gt(0)] = Field(512, description="MLP head width.")


class FrozenConfig(HeadConfig):
    runtime: Runtime = Field(
        "onnx-int8",
        description="What runs the frozen encoder: 'torch' (eager fp32), 'onnx' (ONNX Runtime "
        "fp32, fused) or 'onnx-int8' (ONNX Runtime, int8 weights per channel); the graph is "
        "exported once per base model and cached. Training and serving use the same one.",
    )


@dataclass(frozen=True)
class LayeredHead:
    """The fitted head as ``(weight, bias)`` layers with a ReLU between two (one layer: the
    logistic regression; two: the MLP). Called on embeddings it gives probabilities (numpy):
    a softmax over the labels, or with ``multi_label`` a sigmoid per label; :meth:`module` is
    the same head in torch, giving logits, for export."""

    layers: tuple[tuple[np.ndarray, np.ndarray], ...]
    multi_label: bool = False

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        values = embeddings
        for position, (weight, bias) in enumerate(self.layers):
            if position:
                values = np.maximum(values, 0.0)  # ReLU, as sklearn's MLP
            values = values @ weight.T + bias
        return sigmoid(values) if self.multi_label else softmax(values)

    def graph(self) -> dict[str, Any]:
        """The head's widths, input first (``[in, out]`` for a linear head), and its output."""
        widths = [int(self.layers[0][0].shape[1])] + [int(w.shape[0]) for w, _ in self.layers]
        return head_graph(widths, self.multi_label)

    def module(self) -> nn.Sequential:
        torch_layers: list[nn.Module] = []
        for position, (weight, bias) in enumerate(self.layers):
            if position:
                torch_layers.append(nn.ReLU())
            torch_layers.append(linear_head(torch.tensor(weight), torch.tensor(bias)))
        return nn.Sequential(*torch_layers).eval()


@dataclass
class LinearHeadClassifier:
    """Frozen encoder + a linear (or MLP-turned-linear-readout) head over its embeddings."""

    encoder: FrozenEncoder | OnnxEncoder
    head: LayeredHead
    label_names: Sequence[str]
    base_model: str | None = None
    """Where a torch copy of the encoder comes from when ``encoder`` runs on ONNX Runtime."""

    @property
    def max_length(self) -> int:
        return self.encoder.max_length

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.head(self.encoder.embed(texts)))

    def inference_graph(self) -> dict[str, Any]:
        """The encoder's graph (torch or ONNX Runtime) and the head's layer widths."""
        return {**self.encoder.inference_graph(), **self.head.graph()}

    def export_parts(self) -> ClassifierParts:
        if self.head.multi_label:
            # ClassifierParts promises a softmax over the head's logits; a one-vs-rest head
            # needs a sigmoid per label, which the exported formats cannot say yet.
            raise ValueError(
                "multi-label export is not supported yet: this run's head gives each label its "
                "own sigmoid probability, and exported classifiers apply a softmax"
            )
        if not isinstance(self.encoder, OnnxEncoder):
            return ClassifierParts(self.encoder.tokenizer, self.encoder.model, self.head.module())
        # A session is no transformers model: the base model's own weights, which the run's
        # graph was exported from, are what other tools load.
        if self.base_model is None:
            raise ValueError("an encoder on ONNX Runtime is exported only with its base model")
        runtime = self.encoder.runtime
        rounding = ", so its probabilities differ from the run's by the int8 rounding"
        note = (
            f"the run embeds through ONNX Runtime ({runtime}); this export holds the base "
            f"model's float32 weights{rounding if runtime == 'onnx-int8' else ''}"
        )
        torch_encoder = FrozenEncoder.load(self.base_model, self.encoder.max_length)
        parts = (torch_encoder.tokenizer, torch_encoder.model, self.head.module())
        return ClassifierParts(*parts, notes=(note,))


class FrozenStrategy:
    name: ClassVar[str] = "frozen"
    config_type: ClassVar[type[StrategyConfig]] = FrozenConfig
    trains: ClassVar[bool] = False
    profile: ClassVar[StrategyProfile] = StrategyProfile(
        role="tuned",
        method="features",
        data_need=DataNeed(
            0, MIN_PER_CLASS, f"a linear head wants ~{MIN_PER_CLASS} examples per class"
        ),
        tasks=("classification",),
        multi_label=True,
    )

    def requires(self, config: StrategyConfig) -> list[str]:
        return []

    def fit(self, run: RunContext[ClassificationTask, FrozenConfig]) -> LinearHeadClassifier:
        config = run.config
        encoder = load_embedder(run.base_model, run.max_length, config.runtime)
        task = run.task
        embeddings = encoder.embed_cached(run.base_model, task.train_texts)
        head, tensors = _fit_head(
            config, embeddings, task.train_labels, task.num_labels, run.train.seed
        )
        with atomic_path(run.folder / HEAD) as tmp:
            save_file(tensors, str(tmp))
        write_text_atomic(
            run.folder / META,
            json.dumps(
                {
                    "head": config.head,
                    "runtime": config.runtime,
                    "label_names": list(task.label_names),
                    "multi_label": task.multi_label,
                }
            )
            + "\n",
        )
        head_params = sum(int(t.size) for t in tensors.values())
        run.record(
            trainable_params=head_params,
            total_params=encoder.parameter_count() + head_params,
            needs_base_model=True,
            runtime=config.runtime,
        )
        if isinstance(encoder, OnnxEncoder) and encoder.build_s:
            run.record(onnx_build_s=encoder.build_s)  # once per base model, then cached
        return LinearHeadClassifier(encoder, head, task.label_names, run.base_model)

    def load(self, run: RunContext) -> LinearHeadClassifier:
        meta = json.loads((run.folder / META).read_text())
        tensors = load_file(str(run.folder / HEAD))
        encoder = load_embedder(run.base_model, run.max_length, meta.get("runtime", "torch"))
        head = _head_from(meta["head"], tensors, bool(meta.get("multi_label", False)))
        return LinearHeadClassifier(encoder, head, meta["label_names"], run.base_model)


def load_embedder(name: str, max_length: int, runtime: Runtime) -> FrozenEncoder | OnnxEncoder:
    if runtime == "torch":
        return FrozenEncoder.load(name, max_length)
    return OnnxEncoder.load(name, max_length, runtime)


def _fit_head(
    config: HeadConfig, x: np.ndarray, y: np.ndarray, num_labels: int, seed: int
) -> tuple[LayeredHead, dict[str, np.ndarray]]:
    """Fit the head; return it as a callable and its weights as arrays for safetensors.

    ``y`` holds label ids, or for label sets an ``(n, num_labels)`` 0/1 matrix: the head is
    then one-vs-rest (a sigmoid per label)."""
    multi_label = y.ndim == 2
    if config.head == "logistic":
        if multi_label:
            weight, bias = _one_vs_rest_rows(config, x, y, seed)
        else:
            model = _logistic(config, seed).fit(x, y)
            weight, bias = _output_rows(model.coef_, model.intercept_, model.classes_, num_labels)
        tensors = {"weight": weight, "bias": bias}
    else:
        from sklearn.neural_network import MLPClassifier

        # On an indicator matrix scikit-learn's MLP has one logistic output per label and
        # minimises their summed binary cross-entropy (its "multilabel" mode).
        mlp = MLPClassifier(
            hidden_layer_sizes=(config.hidden_size,), max_iter=config.max_iter, random_state=seed
        ).fit(x, y)
        if multi_label:
            weight, bias = _constant_rows(y, mlp.coefs_[1].T, mlp.intercepts_[1])
        else:
            weight, bias = _output_rows(
                mlp.coefs_[1].T, mlp.intercepts_[1], mlp.classes_, num_labels
            )
        tensors = {
            # safetensors writes arrays in memory order: a transposed view must be made
            # contiguous or it reloads as a different matrix.
            "hidden.weight": np.ascontiguousarray(mlp.coefs_[0].T, dtype=np.float32),
            "hidden.bias": mlp.intercepts_[0].astype(np.float32),
            "weight": weight,
            "bias": bias,
        }
    return _head_from(config.head, tensors, multi_label), tensors


def _logistic(config: HeadConfig, seed: int) -> LogisticRegression:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(
        C=config.regularization_c, max_iter=config.max_iter, random_state=seed
    )


def _one_vs_rest_rows(
    config: HeadConfig, x: np.ndarray, y: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """One binary logistic regression per label column (scikit-learn's OneVsRestClassifier,
    written out so the weights stay plain arrays): row ``label`` gives that label's logit."""
    weight, bias = _constant_rows(y, np.zeros((y.shape[1], x.shape[1])), np.zeros(y.shape[1]))
    for label in np.flatnonzero(_two_sided(y)):
        model = _logistic(config, seed).fit(x, y[:, label])
        weight[label], bias[label] = model.coef_[0], model.intercept_[0]
    return weight, bias


def _two_sided(y: np.ndarray) -> np.ndarray:
    """The label columns with both a positive and a negative training record."""
    return np.asarray(y.any(axis=0) & ~y.all(axis=0))


def _constant_rows(
    y: np.ndarray, weight: np.ndarray, bias: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Output rows as float32, a label without both positive and negative training records
    made constant.

    Such a label cannot be learnt (scikit-learn's logistic regression refuses one class), so it
    gets a constant probability, its training frequency: 0 with no positive record, 1 with no
    negative one. The row's weights are zero and its bias saturates the sigmoid (+-1e4, as
    :func:`_output_rows` does for a label never seen in single-label training)."""
    # A copy in C order: safetensors writes memory order, and the MLP's rows are a transpose.
    weight = np.array(weight, dtype=np.float32, order="C")
    bias = np.array(bias, dtype=np.float32)
    constant = ~_two_sided(y)
    weight[constant] = 0.0
    bias[constant] = np.where(y[:, constant].all(axis=0), 1e4, -1e4)
    return weight, bias


def _output_rows(
    coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray, num_labels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax rows in label-id order.

    A two-class model in scikit-learn has one logistic output; sigmoid(z) equals the softmax of
    (0, z), so it becomes the rows (0, w). Labels never seen in training get a bias of -1e4 (a
    probability of zero) rather than disappearing from the output.
    """
    if coef.shape[0] == 1 and len(classes) == 2:
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], np.atleast_1d(intercept)])
    weight = np.zeros((num_labels, coef.shape[1]), dtype=np.float32)
    bias = np.full(num_labels, -1e4, dtype=np.float32)
    weight[classes] = coef
    bias[classes] = intercept
    return weight, bias


def _head_from(kind: str, tensors: dict[str, np.ndarray], multi_label: bool = False) -> LayeredHead:
    output = (tensors["weight"], tensors["bias"])
    if kind == "logistic":
        return LayeredHead((output,), multi_label)
    return LayeredHead(((tensors["hidden.weight"], tensors["hidden.bias"]), output), multi_label)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) written as exp(-log(1 + exp(-z))), which neither overflows nor warns
    at the saturated (+-1e4) biases of constant labels."""
    return np.asarray(np.exp(-np.logaddexp(0.0, -logits)))


register(FrozenStrategy)
