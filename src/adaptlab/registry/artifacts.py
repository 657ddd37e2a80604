"""Which files of a run folder the registry copies, and what it refuses.

Every file of the run is copied (the weights, ``config.yaml``, ``eval.json``, ``cost.json``,
the predictions, ``manifest.json``...), but only kinds that cannot run code when read:
safetensors, JSON, JSON lines, YAML, text and Markdown, and the tokenizer files that are
neither (sentencepiece models, which are protobuf). Anything else is refused by name before
anything is stored: a pickle (``.bin``, ``.pt``, ``.pkl``...) above all, but also a kind the
registry does not know, since a later stage would have to load it. Each file also passes
:func:`adaptlab.safeload.check_before_load`: a ``.safetensors`` name over pickle or zip bytes,
or a model config that asks for its own code, is refused the same way.

Names starting with a dot are left out, not refused: adaptlab writes every file under such a
temporary name first (``.eval.json.x1y2.tmp``), so one there is the debris of an interrupted
write, never part of the run. A symbolic link is refused: what it points at is not the run's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from adaptlab.safeload import MAX_FILES, UnsafeArtifactError, check_before_load

STORED_SUFFIXES = frozenset({".safetensors", ".json", ".jsonl", ".yaml", ".yml", ".txt", ".md"})
TOKENIZER_FILES = frozenset({"tokenizer.model", "spiece.model", "sentencepiece.bpe.model"})
"""Sentencepiece tokenizer models: protobuf, not pickle; tokenizers read them as data."""
WHAT = "registry artefact"


@dataclass(frozen=True)
class RunFiles:
    """The files of a run folder to store, and the temporary ones left out (both relative,
    with ``/`` between parts)."""

    files: tuple[str, ...]
    left_out: tuple[str, ...]


def run_files(folder: Path) -> RunFiles:
    """The files of ``folder`` to store; :class:`UnsafeArtifactError` naming the first one
    refused (nothing is stored then)."""
    files: list[str] = []
    left_out: list[str] = []
    for path in _walk(folder, left_out, folder):
        check_artifact(path)
        files.append(path.relative_to(folder).as_posix())
        if len(files) > MAX_FILES:
            raise UnsafeArtifactError(
                f"{WHAT} {folder}: more than {MAX_FILES:,} files; not a run folder"
            )
    return RunFiles(tuple(files), tuple(left_out))


def _walk(folder: Path, left_out: list[str], root: Path) -> Iterator[Path]:
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            left_out.append(child.relative_to(root).as_posix())
        elif child.is_symlink():
            raise UnsafeArtifactError(
                f"{WHAT} {child}: refused, a symbolic link; the registry stores the run's own "
                "files only"
            )
        elif child.is_dir():
            yield from _walk(child, left_out, root)
        elif child.is_file():
            yield child
        else:
            raise UnsafeArtifactError(f"{WHAT} {child}: refused, not a regular file")


def check_artifact(path: Path) -> None:
    """Refuse ``path`` unless it is a kind the registry stores and passes adaptlab's load
    check."""
    check_before_load(path, WHAT)  # pickles by name, disguised safetensors, code configs
    suffix = path.suffix.lower()
    if suffix in STORED_SUFFIXES or path.name in TOKENIZER_FILES:
        return
    kinds = ", ".join(sorted(STORED_SUFFIXES))
    raise UnsafeArtifactError(
        f"{WHAT} {path}: refused, the registry stores only {kinds} and tokenizer files; "
        f"'{suffix or path.name}' is none of them"
    )
