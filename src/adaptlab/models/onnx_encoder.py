"""A frozen encoder under ONNX Runtime, optionally with int8 weights.

A frozen backbone is pure inference, so nothing ties it to PyTorch's eager mode. The sentence
embedding (encoder → mean pooling → L2 normalisation, the same graph as
:class:`~adaptlab.models.encoder.PooledEncoder`) is exported once per base model to ONNX,
BERT-family graphs get ONNX Runtime's transformer fusions (attention, LayerNorm, GELU), and
``onnx-int8`` quantises every MatMul's weights to int8 per output channel (activations are
quantised per batch at run time: "dynamic" quantisation, no calibration data), which runs on the
CPU's integer dot-product (VNNI) units. The int8 embeddings are not the fp32 ones: a run records
which runtime made them, the embedding cache keys on it, and training and evaluation of one run
always use the same runtime. bench/RESULTS.md shows the accuracy cost on banking77.

The exported graphs are a cache derived from the base model's safetensors weights (keyed by
their content fingerprint), written to a temporary name and renamed, never shipped in a run.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from adaptlab.models.bundled import load_tokenizer, resolve_model
from adaptlab.models.encoder import (
    PooledEncoder,
    cached_embeddings,
    encoder_architecture,
    encoder_graph,
    load_encoder,
    model_fingerprint,
    run_batched,
)
from adaptlab.paths import cache_dir
from adaptlab.safeload import PRETRAINED_SAFE

Runtime = Literal["torch", "onnx", "onnx-int8"]
OPSET = 17
# Model types whose graphs ONNX Runtime's "bert" optimizer knows how to fuse.
BERT_FAMILY = {"bert", "roberta", "xlm-roberta", "camembert", "electra", "mpnet"}


def onnx_path(name: str, int8: bool) -> Path:
    folder = cache_dir() / "onnx" / model_fingerprint(name)[:32]
    return folder / ("encoder.int8.onnx" if int8 else "encoder.onnx")


def build_onnx(name: str, int8: bool, encoder: tuple[Any, torch.nn.Module] | None = None) -> Path:
    """The exported (and fused, and for ``int8`` quantised) encoder, built on first use."""
    target = onnx_path(name, int8)
    if target.exists():
        return target
    source = onnx_path(name, int8=False)
    if not source.exists():
        _export(name, source, encoder)
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = _scratch(target, "tmp")
        # The quantiser logs advice about pre-processing on the root logger at WARNING;
        # the fused graph needs none of it.
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            quantize_dynamic(
                source,
                tmp,
                weight_type=QuantType.QInt8,
                per_channel=True,
                # Fused contrib ops carry no inferable output type; they are float32.
                extra_options={"DefaultTensorType": 1},  # onnx.TensorProto.FLOAT
            )
        finally:
            root.setLevel(level)
        tmp.replace(target)
    return target


def export_token_graph(module: torch.nn.Module, path: Path, output: str) -> None:
    """``module(input_ids, attention_mask)`` as an ONNX graph at ``path``, batch and sequence
    length dynamic, its result named ``output`` (one row per text)."""
    parameter = next(module.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    sample = torch.ones(2, 8, dtype=torch.long, device=device)
    dynamic = {0: "batch", 1: "tokens"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # exporter deprecation chatter
        torch.onnx.export(
            module,
            (sample, torch.ones_like(sample)),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=[output],
            dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic, output: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def _scratch(target: Path, stage: str) -> Path:
    """A temporary name beside ``target`` that no other process uses: two processes building
    the same cache entry at once (Ray replicas starting together) each rename a whole file
    into place instead of overwriting each other's half-written one."""
    return target.with_name(f".{target.stem}.{stage}.{os.getpid()}.onnx")


def _export(name: str, target: Path, encoder: tuple[Any, torch.nn.Module] | None) -> None:
    _, model = encoder or load_encoder(name)
    model.eval()
    target.parent.mkdir(parents=True, exist_ok=True)
    raw = _scratch(target, "raw")
    export_token_graph(PooledEncoder(model), raw, "embedding")
    config = getattr(model, "config")  # noqa: B009 (Module typing)
    if config.model_type in BERT_FAMILY:
        from onnxruntime.transformers import optimizer

        fused = optimizer.optimize_model(
            str(raw),
            model_type="bert",
            num_heads=int(config.num_attention_heads),
            hidden_size=int(config.hidden_size),
        )
        tmp = _scratch(target, "tmp")
        fused.save_model_to_file(str(tmp))
        raw.unlink()
        tmp.replace(target)
    else:
        raw.replace(target)


def stored_parameter_count(name: str) -> int:
    """Floating-point values in the model's safetensors files, read from their headers."""
    from safetensors import safe_open

    total = 0
    for path in sorted(Path(resolve_model(name)).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as weights:
            for key in weights.keys():  # noqa: SIM118 (safe_open is no mapping)
                piece = weights.get_slice(key)
                if piece.get_dtype().startswith(("F", "BF")):
                    total += int(np.prod(piece.get_shape()))
    return total


@dataclass
class OnnxEncoder:
    """Texts in, pooled normalised embeddings out, through an ONNX Runtime session; the same
    interface as :class:`~adaptlab.models.encoder.FrozenEncoder`."""

    tokenizer: Any
    session: Any
    max_length: int
    runtime: Runtime
    parameters: int
    build_s: float = 0.0  # time spent exporting/quantising on this load (0 when cached)
    batch_size: int = 128
    architecture: dict[str, Any] | None = None
    """The exported encoder's architecture (:func:`encoder_architecture` of its config)."""

    @classmethod
    def load(cls, name: str, max_length: int, runtime: Runtime) -> OnnxEncoder:
        import onnxruntime as ort
        from transformers import AutoConfig

        tokenizer = load_tokenizer(name)
        start = time.perf_counter()
        int8 = runtime == "onnx-int8"
        built = onnx_path(name, int8).exists()
        path = build_onnx(name, int8)  # loads the PyTorch model only to export it
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        build_s = 0.0 if built else time.perf_counter() - start
        parameters = stored_parameter_count(name)
        architecture = encoder_architecture(
            AutoConfig.from_pretrained(resolve_model(name), **PRETRAINED_SAFE)
        )
        return cls(
            tokenizer,
            session,
            max_length,
            runtime,
            parameters,
            round(build_s, 2),
            architecture=architecture,
        )

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            feeds = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
            return torch.from_numpy(self.session.run(None, feeds)[0])

        vectors = run_batched(forward, self.tokenizer, texts, self.max_length, self.batch_size)
        return vectors.float().numpy()

    def embed_cached(self, name: str, texts: Sequence[str]) -> np.ndarray:
        return cached_embeddings(
            name, texts, self.max_length, lambda: self.embed(texts), runtime=self.runtime
        )

    def parameter_count(self) -> int:
        return self.parameters

    def inference_graph(self) -> dict[str, Any]:
        """What embedding a batch computes: as a torch encoder's graph, but on this runtime
        (fused, and for ``onnx-int8`` with integer matrix products), so never the same graph."""
        return encoder_graph(self.runtime, self.architecture, self.tokenizer, self.max_length)
