"""Paired-bootstrap differences between every two runs, for the decision rules.

``comparison.json`` holds each run's difference to the best run only; the rules also compare
a run with every cheaper one, and a tuned run with the base and the prompted baseline. Without
a paired difference they fall back on overlapping intervals, which call many real differences
ties. So the report pairs every two runs on the eval items both scored, from the per-item
results in their run folders (``predictions.safetensors``), as ``compare`` does against the
best: accuracy from per-item correctness, slot F1 from per-item slot counts (pooled).
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations
from pathlib import Path

import numpy as np

from adaptlab.config import CompareConfig
from adaptlab.evaluate.bootstrap import paired_bootstrap, paired_bootstrap_micro_f1
from adaptlab.report.decide import Difference
from adaptlab.runs import RunError, RunFolder

PerItem = tuple[np.ndarray, np.ndarray]
"""A run's eval item indices and its per-item scores (correctness, or slot counts)."""


def paired_differences(
    folders: Mapping[str, Path], task: str, settings: CompareConfig
) -> dict[tuple[str, str], Difference]:
    """``(a, b) -> a - b`` for every two runs that share eval items (each pair once)."""
    scored = {name: per_item(folder, task) for name, folder in folders.items()}
    usable = {name: items for name, items in scored.items() if items is not None}
    pairs = {}
    for a, b in combinations(usable, 2):
        difference = paired(usable[a], usable[b], task, settings)
        if difference is not None:
            pairs[(a, b)] = difference
    return pairs


def per_item(folder: Path, task: str) -> PerItem | None:
    """The run's per-item scores; ``None`` when its predictions lack them (then the rules use
    its difference to the best, or the intervals)."""
    try:
        arrays = RunFolder(folder).read_prediction_arrays()
    except RunError:
        return None
    if task == "generative":
        counts = arrays.get("counts")
        return None if counts is None else (arrays["indices"], counts)
    probabilities, gold = arrays.get("probabilities"), arrays.get("gold")
    if probabilities is None or gold is None:
        return None
    correct = (probabilities.argmax(axis=1) == gold).astype(np.float64)
    return arrays["indices"], correct


def paired(a: PerItem, b: PerItem, task: str, settings: CompareConfig) -> Difference | None:
    shared, in_a, in_b = np.intersect1d(a[0], b[0], return_indices=True)
    if len(shared) == 0:
        return None
    resamples, confidence = settings.bootstrap_resamples, settings.confidence
    if task == "generative":
        result = paired_bootstrap_micro_f1(
            a[1][in_a], b[1][in_b], resamples=resamples, confidence=confidence
        )
    else:
        result = paired_bootstrap(
            a[1][in_a], b[1][in_b], resamples=resamples, confidence=confidence
        )
    return Difference(result.difference, result.low, result.high)
