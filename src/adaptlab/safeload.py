"""adaptlab's own check before anything is loaded: no pickles, no model code.

A pickle runs code when it is read, and ``trust_remote_code`` runs a model repository's Python.
Neither is needed for what adaptlab loads (weights, adapters, checkpoints, run artefacts are
all safetensors and JSON), so both are refused here *by name*, before transformers, PEFT or
torch see the file, whatever their own defaults are in the installed version:

- a file whose suffix is a pickle format (``.bin``, ``.pt``, ``.pth``, ``.pkl``, ...);
- a file named ``.safetensors`` whose header is not a safetensors header (a renamed pickle or
  ``torch.save`` zip);
- a model configuration that asks for its own code (``auto_map``, ``trust_remote_code``).

Hub names cannot be inspected before the download; for them the loaders pass
:data:`PRETRAINED_SAFE` (safetensors only, no remote code) and transformers enforces the same.
The messages never suggest a way around the check: convert the file to safetensors instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

# torch.save (zip or legacy), pickle, joblib, numpy object pickles, Lightning, Keras-pickle.
PICKLE_SUFFIXES: Final = frozenset(
    {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npz", ".dill", ".pck"}
)
# JSON files transformers and PEFT read to decide what code to build a model with.
CODE_CONFIGS: Final = (
    "config.json",
    "tokenizer_config.json",
    "adapter_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "generation_config.json",
)
CODE_KEYS: Final = ("auto_map", "trust_remote_code")
# Passed to every ``from_pretrained``: the hub side of the same rule.
PRETRAINED_SAFE: Final[dict[str, Any]] = {"trust_remote_code": False}
WEIGHTS_SAFE: Final[dict[str, Any]] = {"trust_remote_code": False, "use_safetensors": True}
# A folder holding more files than this is not a model folder; the walk stops and says so.
MAX_FILES: Final = 10_000
# A safetensors header is JSON of at most 100 MB (the format's own limit).
MAX_HEADER_BYTES: Final = 100_000_000
_CONFIG_READ_LIMIT: Final = 10_000_000


class UnsafeArtifactError(ValueError):
    """A file adaptlab would load is pickle-based, not what its name says, or asks to run code."""


def check_before_load(location: str | Path, what: str) -> None:
    """Refuse ``location`` (a file or folder) if anything in it could run code when loaded.

    ``what`` names the role in messages ("base model", "teacher run", "adapter", "checkpoint",
    "registry artefact"). A name that is not on disk (a hub name) passes: the loaders restrict
    the download with :data:`WEIGHTS_SAFE`.
    """
    path = Path(location).expanduser()
    if path.is_file():
        _check_file(path, what)
        return
    if not path.is_dir():
        return
    for count, child in enumerate(_files(path), start=1):
        if count > MAX_FILES:
            raise UnsafeArtifactError(
                f"{what} {path}: more than {MAX_FILES:,} files; not a model or run folder"
            )
        _check_file(child, what)


def _files(folder: Path) -> Iterator[Path]:
    # Symlinks are followed for files (the hub cache links blobs) but not into folders, so a
    # link cannot make the walk loop or leave the tree.
    for child in sorted(folder.iterdir()):
        if child.is_dir() and not child.is_symlink():
            yield from _files(child)
        elif child.is_file():
            yield child


def _check_file(path: Path, what: str) -> None:
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise UnsafeArtifactError(
            f"{what} {path}: refused, '{suffix}' files are pickle-based and run code when read; "
            "adaptlab loads weights only from safetensors (convert the file, e.g. with "
            "safetensors' convert script, on a machine you trust)"
        )
    if suffix == ".safetensors":
        _check_safetensors_header(path, what)
    elif path.name in CODE_CONFIGS:
        _check_config(path, what)


def _check_safetensors_header(path: Path, what: str) -> None:
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(9)
    length = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    if len(head) < 9 or not 2 <= length <= min(size - 8, MAX_HEADER_BYTES) or head[8:9] != b"{":
        kind = _sniff(head)
        raise UnsafeArtifactError(
            f"{what} {path}: refused, not a safetensors file ({kind}); it is not loaded"
        )


def _sniff(head: bytes) -> str:
    if head[:1] == b"\x80":
        return "its bytes are a pickle"
    if head[:4] == b"PK\x03\x04":
        return "its bytes are a zip archive, as torch.save writes"
    return "its header is malformed"


def _check_config(path: Path, what: str) -> None:
    with path.open("rb") as handle:
        raw = handle.read(_CONFIG_READ_LIMIT + 1)
    if len(raw) > _CONFIG_READ_LIMIT:
        raise UnsafeArtifactError(f"{what} {path}: over {_CONFIG_READ_LIMIT:,} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return  # not ours to judge: the loader reports a malformed config itself
    if not isinstance(data, dict):
        return
    for key in CODE_KEYS:
        if key in data and data[key] not in (None, False, {}):
            raise UnsafeArtifactError(
                f"{what} {path}: refused, field '{key}' asks to run the model's own Python "
                "code; adaptlab never runs code that comes with a model"
            )


__all__ = [
    "CODE_CONFIGS",
    "CODE_KEYS",
    "PICKLE_SUFFIXES",
    "PRETRAINED_SAFE",
    "WEIGHTS_SAFE",
    "UnsafeArtifactError",
    "check_before_load",
]
