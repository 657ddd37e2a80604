"""The drift reference of a served model: where its training data is, and what is kept of it.

A registered version holds its run folder, not the data it was trained on; the data is the
experiment's prepared ``data/train.jsonl``, whose sha256 the run's manifest records
(``train_sha256``). So the reference's embeddings are built from that file when it can be
found and still has that sha256:

- a run folder served as is: ``<experiment>/data/train.jsonl`` two levels up;
- a registered version: the file its lineage recorded at promotion (``training_data.file``),
  else the experiment folder its lineage names;
- else the file given to ``adaptlab monitor reference TARGET --data FILE``.

The embeddings of a seeded sample of its texts are cached under that sha256 (with the encoder,
the sample size and the seed) in ``<cache>/drift/``, so the server finds them after the
experiment folder is gone. A file whose sha256 differs is refused, never used: drift measured
against other data than the model's is meaningless. The labels and confidences (or answer
lengths) come from the run folder itself (:mod:`adaptlab.serve.drift` says why the eval set's).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from adaptlab.data.formats import load, record_input
from adaptlab.data.issues import DataError
from adaptlab.data.lock import TRAIN_NAME, sha256_file
from adaptlab.models.encoder import FrozenEncoder, model_fingerprint
from adaptlab.paths import atomic_path, cache_dir
from adaptlab.predict import LoadedModel
from adaptlab.registry import Registry, RegistryError, registry_root
from adaptlab.registry.lineage import experiment_folder
from adaptlab.runs import RunError, RunRecord
from adaptlab.serve.drift import DriftConfig, Reference, label_counts

CACHE_FOLDER = "drift"


class ReferenceUnavailable(RuntimeError):
    """No reference can be built for a model; the message says why and what to do."""


@dataclass(frozen=True)
class TrainingData:
    """Where a model's training data is, or why it cannot be found."""

    sha256: str
    path: Path | None
    why_not: str = ""


def request_text(messages: Sequence[dict[str, Any]]) -> str:
    """What a chat request asks, as drift sees it: its user turns, one per line (the same text
    :func:`adaptlab.data.formats.record_input` takes from a training conversation)."""
    return "\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "user")


# --------------------------------------------------------------------------- finding the data


def training_data(loaded: LoadedModel, registry: Path | None) -> TrainingData:
    """The prepared training file of ``loaded``'s run, checked against its manifest's sha256."""
    sha256 = loaded.record.manifest.train_sha256
    candidates = _candidates(loaded, registry)
    for path in candidates:
        if path.is_file() and sha256_file(path) == sha256:
            return TrainingData(sha256, path)
    looked = ", ".join(str(p) for p in candidates) or "no experiment folder is known"
    return TrainingData(
        sha256,
        None,
        f"its training data (sha256 {sha256[:12]}...) is not where it was prepared ({looked}: "
        "missing or changed)",
    )


def _candidates(loaded: LoadedModel, registry: Path | None) -> list[Path]:
    experiment = experiment_folder(loaded.record.folder)
    if experiment is not None:
        return [experiment / "data" / TRAIN_NAME]
    if Path(loaded.source).is_dir():
        return []
    try:
        lineage = Registry(registry_root(registry)).version(loaded.source).lineage
    except (RegistryError, ValueError):
        return []
    found = []
    recorded = (lineage.get("training_data") or {}).get("file")
    if isinstance(recorded, str):
        found.append(Path(recorded))
    if isinstance(lineage.get("experiment"), str):
        found.append(Path(lineage["experiment"]) / "data" / TRAIN_NAME)
    return list(dict.fromkeys(found))


def training_texts(path: Path, record: RunRecord) -> list[str]:
    """The input of every record of the prepared training file (a classifier's text, a chat
    record's user turns, a prompt)."""
    data = _data_settings(record)
    try:
        loaded = load(path, text_field=data.get("text_field"), label_field=data.get("label_field"))
    except DataError as exc:
        raise ReferenceUnavailable(f"{path}: {exc}") from None
    texts = [record_input(loaded, r.data) for r in loaded.records]
    if len(texts) < 2:
        raise ReferenceUnavailable(f"{path}: {len(texts)} readable records; drift needs 2")
    return texts


def _data_settings(record: RunRecord) -> dict[str, Any]:
    try:
        resolved = yaml.safe_load(record.config_yaml) if record.config_yaml else None
    except yaml.YAMLError:
        return {}
    data = resolved.get("data") if isinstance(resolved, dict) else None
    return data if isinstance(data, dict) else {}


# --------------------------------------------------------------------------- embeddings


def cache_path(train_sha256: str, config: DriftConfig) -> Path:
    """Where the reference embeddings of the training data ``train_sha256`` are cached."""
    settings = f"{model_fingerprint(config.encoder)}:{config.max_length}:"
    settings += f"{config.reference_size}:{config.seed}"
    key = hashlib.sha256(settings.encode()).hexdigest()[:16]
    return cache_dir() / CACHE_FOLDER / f"{train_sha256}-{key}.safetensors"


def sample_texts(texts: Sequence[str], size: int, seed: int) -> list[str]:
    """At most ``size`` of ``texts``, drawn without replacement (seeded), in file order."""
    if len(texts) <= size:
        return list(texts)
    chosen = np.sort(np.random.default_rng(seed).choice(len(texts), size, replace=False))
    return [texts[i] for i in chosen]


def build_embeddings(
    path: Path, record: RunRecord, encoder: FrozenEncoder, config: DriftConfig
) -> tuple[np.ndarray, dict[str, Any]]:
    """Embed a sample of the training file ``path`` (whose sha256 must be the run's) and cache
    the embeddings under that sha256."""
    sha256 = record.manifest.train_sha256
    found = sha256_file(path)
    if found != sha256:
        raise ReferenceUnavailable(
            f"{path} is not the data the run was trained on: its sha256 is {found[:12]}..., the "
            f"run's manifest says {sha256[:12]}... (give the experiment's prepared "
            f"data/{TRAIN_NAME})"
        )
    texts = training_texts(path, record)
    sample = sample_texts(texts, config.reference_size, config.seed)
    embeddings = np.ascontiguousarray(encoder.embed(sample), dtype=np.float32)
    facts = {
        "train_sha256": sha256,
        "training_file": str(path),
        "training_texts": len(texts),
        "embedded": len(sample),
        "encoder": config.encoder,
        "max_length": config.max_length,
        "seed": config.seed,
    }
    with atomic_path(cache_path(sha256, config)) as tmp:
        save_file(
            {"embeddings": torch.from_numpy(embeddings)},
            str(tmp),
            metadata={"facts": json.dumps(facts)},
        )
    return embeddings, facts


def cached_embeddings(sha256: str, config: DriftConfig) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The cached reference embeddings of training data ``sha256``, or None."""
    path = cache_path(sha256, config)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            facts = json.loads((handle.metadata() or {}).get("facts", "{}"))
        embeddings = load_file(str(path))["embeddings"].numpy()
    except Exception:  # a damaged cache entry is rebuilt, not trusted
        return None
    return np.asarray(embeddings, dtype=np.float32), {**facts, "cached": str(path)}


# --------------------------------------------------------------------------- the reference


def build_reference(
    loaded: LoadedModel,
    encoder: FrozenEncoder,
    config: DriftConfig,
    registry: Path | None = None,
) -> Reference:
    """The reference of a served model: cached embeddings of its training data (built now when
    the data is found), and its eval-set predictions; :class:`ReferenceUnavailable` saying why
    when there is none."""
    record = loaded.record
    cached = cached_embeddings(record.manifest.train_sha256, config)
    if cached is None:
        data = training_data(loaded, registry)
        if data.path is None:
            raise ReferenceUnavailable(
                f"{data.why_not}; build the reference with: adaptlab monitor reference "
                f"{loaded.source} --data <experiment>/data/{TRAIN_NAME}"
            )
        cached = build_embeddings(data.path, record, encoder, config)
    embeddings, facts = cached
    try:
        return _with_eval_predictions(loaded, embeddings, facts)
    except (RunError, KeyError, ValueError) as exc:
        raise ReferenceUnavailable(f"{record.folder}: the eval predictions: {exc}") from None


def _with_eval_predictions(
    loaded: LoadedModel, embeddings: np.ndarray, facts: dict[str, Any]
) -> Reference:
    record = loaded.record
    if loaded.is_classifier:
        probabilities = np.asarray(record.predictions["probabilities"], dtype=np.float64)
        names = loaded.label_names
        predicted = [names[i] for i in probabilities.argmax(axis=1)]
        facts = {**facts, "eval_items": len(probabilities)}
        return Reference(
            embeddings,
            probabilities.max(axis=1),
            "confidence",
            tuple(names),
            label_counts(predicted, names),
            facts,
        )
    lengths = np.asarray([row.generated_tokens for row in record.generations], dtype=np.float64)
    facts = {**facts, "eval_items": len(lengths)}
    return Reference(embeddings, lengths if len(lengths) else None, "answer_tokens", facts=facts)
