"""One evaluation for every classifier: the locked eval set, the same metrics, the same timing."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from adaptlab.config import CompareConfig
from adaptlab.evaluate.bootstrap import bootstrap_interval
from adaptlab.evaluate.latency import measure_latency
from adaptlab.evaluate.metrics import classification_metrics, reliability_bins
from adaptlab.strategies.base import ClassificationTask, Classifier


def sample_indices(n: int, limit: int | None, seed: int = 0) -> np.ndarray:
    """All eval indices, or a fixed seeded sample of ``limit`` of them (sorted).

    Strategies too slow for the whole eval set (an LLM prompted per example) are scored on the
    same sample every time, and the comparison pairs them with the others on that sample.
    """
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def evaluate_classifier(
    classifier: Classifier,
    task: ClassificationTask,
    settings: CompareConfig,
    indices: np.ndarray | None = None,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Metrics, calibration and latency on the eval set (or the given sample of it).

    Returns the ``eval.json`` payload, the probabilities and the eval indices they belong to.
    """
    indices = np.arange(len(task.eval_texts)) if indices is None else indices
    texts = [task.eval_texts[i] for i in indices]
    gold = task.eval_labels[indices]
    start = time.perf_counter()
    probabilities = classifier.predict_proba(texts)
    seconds = time.perf_counter() - start
    metrics = classification_metrics(probabilities, gold, task.label_names)
    correct = (probabilities.argmax(axis=1) == gold).astype(np.float64)
    low, high = bootstrap_interval(
        correct, resamples=settings.bootstrap_resamples, confidence=settings.confidence
    )
    payload = {
        "n": len(indices),
        "eval_size": len(task.eval_texts),
        "sampled": bool(len(indices) < len(task.eval_texts)),
        "metrics": metrics.to_dict(),
        "accuracy_ci": [low, high],
        "confidence": settings.confidence,
        "reliability": reliability_bins(probabilities.max(axis=1), correct.astype(bool)),
        "eval_seconds": round(seconds, 3),
        "latency": latency_profile(classifier, texts, settings),
    }
    return payload, probabilities, indices


def latency_profile(
    classifier: Classifier, texts: Sequence[str], settings: CompareConfig
) -> dict[str, dict[str, float | int]]:
    """Per-call CPU latency at each configured batch size."""
    profile = {}
    for batch_size in settings.latency_batch_sizes:
        latency = measure_latency(
            classifier.predict_proba,
            texts,
            batch_size=batch_size,
            time_budget_s=settings.latency_budget_s,
        )
        profile[f"batch_{batch_size}"] = latency.to_dict()
    return profile
