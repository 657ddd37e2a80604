"""The run directory: the contract between stages.

``runs/<experiment>/<strategy>/`` holds ``config.yaml``, ``metrics.jsonl`` (training only),
``eval.json``, ``cost.json``, ``predictions.safetensors`` (per-example scores on the locked
eval set, for paired comparisons: a classifier's probabilities, a generator's slot counts),
``generations.jsonl`` (a generator's answers), the weights (``model/``, ``adapter/`` or
``head.safetensors``) and ``manifest.json`` (what the result depends on). Later stages read only
this folder. ``manifest.json`` is written last: a run without it is unfinished.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from adaptlab import __version__
from adaptlab.paths import write_text_atomic

MANIFEST = "manifest.json"
EVAL = "eval.json"
COST = "cost.json"
CONFIG = "config.yaml"
PREDICTIONS = "predictions.safetensors"
GENERATIONS = "generations.jsonl"
LIBRARIES = ("torch", "transformers", "peft", "accelerate", "scikit-learn", "numpy", "safetensors")


class RunError(RuntimeError):
    """A run directory that is missing, unfinished or unreadable; the message names it."""


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def code_version() -> str:
    """adaptlab's version, plus the git commit when running from a checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def manifest_key(manifest: dict[str, Any]) -> dict[str, Any]:
    """The fields that decide whether an existing run is still valid for a new request."""
    keys = (
        "strategy",
        "train_sha256",
        "eval_sha256",
        "base_model",
        "base_model_fingerprint",
        "config_sha256",
        "seed",
        "dependencies",
        "other_models",
    )
    return {key: manifest.get(key) for key in keys}


def dependency_fingerprints(runs_root: Path, names: list[str]) -> dict[str, str | None]:
    """For each run this one depends on (a distillation teacher), the time its manifest was
    written: redoing the teacher makes the student stale."""
    stamps: dict[str, str | None] = {}
    for name in names:
        manifest = runs_root / name / MANIFEST
        try:
            stamps[name] = str(json.loads(manifest.read_text(encoding="utf-8"))["created_at"])
        except (OSError, ValueError, KeyError, TypeError):
            stamps[name] = None
    return stamps


@dataclass(frozen=True)
class RunFolder:
    path: Path

    def is_complete(self) -> bool:
        return (self.path / MANIFEST).exists() and (self.path / EVAL).exists()

    def matches(self, expected: dict[str, Any]) -> bool:
        """Finished, and computed from the same data, eval set, model and config."""
        if not self.is_complete():
            return False
        try:
            return manifest_key(self.read_json(MANIFEST)) == manifest_key(expected)
        except RunError:
            return False

    def can_resume(self, config_yaml: str) -> bool:
        """Unfinished, with a training checkpoint, and started with exactly this config."""
        config = self.path / CONFIG
        return (
            not self.is_complete()
            and (self.path / "checkpoint").is_dir()
            and config.is_file()
            and config.read_text(encoding="utf-8") == config_yaml
        )

    def reset(self) -> None:
        """Remove a stale or half-written run before it is redone."""
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)

    def write_json(self, name: str, payload: dict[str, Any]) -> None:
        write_text_atomic(self.path / name, json.dumps(payload, indent=2, sort_keys=False) + "\n")

    def read_json(self, name: str) -> dict[str, Any]:
        path = self.path / name
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunError(f"{self.path}: no {name}: the run is missing or unfinished") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RunError(f"{path}: unreadable: {exc}") from None
        if not isinstance(value, dict):
            raise RunError(f"{path}: expected a JSON object")
        return value

    def write_jsonl(self, name: str, rows: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        write_text_atomic(self.path / name, text)

    def write_predictions(
        self, probabilities: np.ndarray, gold: np.ndarray, indices: np.ndarray
    ) -> None:
        """Per-example probabilities, gold labels and their positions in the locked eval set."""
        self.write_prediction_arrays(
            {
                "probabilities": probabilities.astype(np.float32),
                "gold": gold.astype(np.int64),
                "indices": indices.astype(np.int64),
            }
        )

    def read_predictions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        arrays = self.read_prediction_arrays()
        try:
            return arrays["probabilities"], arrays["gold"], arrays["indices"]
        except KeyError as exc:
            raise RunError(f"{self.path / PREDICTIONS}: no {exc} predictions") from None

    def write_prediction_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Per-example arrays on the locked eval set, ``indices`` (their positions) among them."""
        tmp = self.path / f".{PREDICTIONS}.tmp"
        save_file(arrays, str(tmp))
        tmp.replace(self.path / PREDICTIONS)

    def read_prediction_arrays(self) -> dict[str, np.ndarray]:
        path = self.path / PREDICTIONS
        try:
            arrays = load_file(str(path))
        except (OSError, ValueError) as exc:
            raise RunError(f"{path}: unreadable predictions: {exc}") from None
        if "indices" not in arrays:
            raise RunError(f"{path}: no eval indices")
        return arrays


def base_manifest(
    strategy: str,
    train_sha256: str,
    eval_sha256: str,
    base_model: str,
    base_model_fingerprint: str,
    config_yaml: str,
    seed: int,
    allow_contaminated: bool,
) -> dict[str, Any]:
    return {
        "strategy": strategy,
        "train_sha256": train_sha256,
        "eval_sha256": eval_sha256,
        "base_model": base_model,
        "base_model_fingerprint": base_model_fingerprint,
        "config_sha256": sha256_text(config_yaml),
        "seed": seed,
        "allow_contaminated": allow_contaminated,
        "code_version": code_version(),
        "libraries": library_versions(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def folder_size(path: Path, names: tuple[str, ...] = ("model", "adapter")) -> int:
    """Bytes of the weights a run saved (``model/``, ``adapter/`` and ``*.safetensors`` heads)."""
    total = 0
    for child in path.iterdir():
        if child.is_dir() and child.name in names:
            total += sum(f.stat().st_size for f in child.rglob("*") if f.is_file())
        elif child.is_file() and child.suffix == ".safetensors" and child.name != PREDICTIONS:
            total += child.stat().st_size
    return total
