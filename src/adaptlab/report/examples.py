"""Where a free-text run wins and loses against the well-prompted base, item by item.

For the recommended run and the best prompted run (``few_shot`` by default: the base model shown
the task, without training), the eval items both answered are ranked by the difference of their
per-example scores in the comparison's metric (sentence BLEU and chrF++ for the corpus
metrics), and the largest wins and losses are shown with the input, both answers and the
references. Everything is read from the run folders (``generations.jsonl``, the per-example
arrays of ``predictions.safetensors``) and the experiment's prepared eval set.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adaptlab.runs import RunError, RunRecord

EXAMPLES_SHOWN = 5
EVAL_FILE = Path("data") / "eval.jsonl"


@dataclass(frozen=True)
class Example:
    """One eval item where two runs' answers differ in score."""

    index: int
    """The item's position in the locked eval set."""
    request: str
    """The input: the eval record's turns before its answer, one ``role: content`` line each."""
    references: tuple[str, ...]
    answer: str
    """The recommended run's answer."""
    other_answer: str
    """The well-prompted base's answer."""
    difference: float
    """Score of ``answer`` minus score of ``other_answer`` (0-1)."""


def compared_examples(
    chosen: RunRecord,
    other: RunRecord,
    metric: str,
    eval_records: Sequence[Mapping[str, Any]],
    shown: int = EXAMPLES_SHOWN,
) -> tuple[list[Example], list[Example]]:
    """The ``shown`` largest wins and the ``shown`` largest losses of ``chosen`` against
    ``other`` (largest first; ties by eval position), on the items both answered. An item the
    two score equally on is neither. Raises :class:`RunError` when a run lacks its
    generations or per-example scores."""
    scores = {run.name: _per_example(run, metric) for run in (chosen, other)}
    answers = {
        run.name: {row.index: row.text for row in run.generations} for run in (chosen, other)
    }
    shared, in_chosen, in_other = np.intersect1d(chosen.indices, other.indices, return_indices=True)
    differences = scores[chosen.name][in_chosen] - scores[other.name][in_other]
    order = np.lexsort((shared, -differences))  # largest difference first, then position
    wins = [int(i) for i in order if differences[i] > 0][:shown]
    losses = [int(i) for i in order[::-1] if differences[i] < 0][:shown]

    def example(position: int) -> Example:
        index = int(shared[position])
        record = eval_records[index]
        return Example(
            index,
            request_text(record),
            tuple(references_of(record)),
            answers[chosen.name].get(index, ""),
            answers[other.name].get(index, ""),
            float(differences[position]),
        )

    return [example(i) for i in wins], [example(i) for i in losses]


def _per_example(run: RunRecord, metric: str) -> np.ndarray:
    """Per-example scores in ``metric`` (the corpus metrics' sentence-level scores)."""
    values = run.predictions.get(metric)
    if values is None:
        raise RunError(f"{run.folder}: predictions.safetensors has no per-example '{metric}'")
    return np.asarray(values, dtype=np.float64)


def request_text(record: Mapping[str, Any]) -> str:
    """What the model was asked: every turn before the last assistant turn."""
    messages = list(record.get("messages") or [])
    answers = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    asked = messages[: answers[-1]] if answers else messages
    return "\n".join(f"{m.get('role')}: {m.get('content')}" for m in asked)


def references_of(record: Mapping[str, Any]) -> list[str]:
    """The record's ``references``, or its last assistant answer."""
    given = record.get("references")
    if isinstance(given, list) and given:
        return [str(reference) for reference in given]
    messages = list(record.get("messages") or [])
    answers = [m for m in messages if m.get("role") == "assistant"]
    return [str(answers[-1].get("content"))] if answers else []


def read_eval_records(experiment_folder: Path) -> list[dict[str, Any]]:
    """The prepared eval set's records, in eval order (completion and alpaca records as a user
    turn and an assistant turn, as compare reads them)."""
    path = experiment_folder / EVAL_FILE
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RunError(f"{path}:{number}: not JSON ({exc.msg})") from None
        records.append(_as_chat(record))
    return records


def _as_chat(record: dict[str, Any]) -> dict[str, Any]:
    if "messages" in record:
        return record
    if "completion" in record:
        request, answer = record.get("prompt") or "", record["completion"]
    else:
        parts = [str(record.get("instruction") or ""), str(record.get("input") or "")]
        request, answer = "\n\n".join(p for p in parts if p.strip()), record.get("output", "")
    messages = [{"role": "user", "content": request}, {"role": "assistant", "content": answer}]
    return {**record, "messages": messages}
