"""One evaluation for every strategy of a task kind: the locked eval set (or the same fixed
sample of it), the same metrics, the same timing.

Classifiers are scored on accuracy, macro-F1 and calibration; generators answer each eval
request greedily and their answers are scored as slot frames (:mod:`adaptlab.evaluate.slots`),
with the cost of answering one request at a time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from adaptlab.config import CompareConfig
from adaptlab.evaluate.bootstrap import bootstrap_interval, micro_f1_interval
from adaptlab.evaluate.generation import (
    Generation,
    TokenStats,
    generate,
    measure_generation_cost,
)
from adaptlab.evaluate.latency import measure_latency
from adaptlab.evaluate.metrics import classification_metrics, reliability_bins
from adaptlab.evaluate.slots import SlotMetrics, slot_metrics
from adaptlab.train.chat import encode_prompt

if TYPE_CHECKING:  # the task and model protocols, as annotations only: evaluate reads no strategy
    from adaptlab.strategies.base import ClassificationTask, Classifier, GenerativeTask, Generator


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


# --------------------------------------------------------------------------- generators


@dataclass(frozen=True)
class GeneratedAnswers:
    """A generator's answers to the eval requests it was asked, scored."""

    indices: np.ndarray
    """Positions in the locked eval set, in the order of the answers."""
    generations: list[Generation]
    metrics: SlotMetrics

    def arrays(self) -> dict[str, np.ndarray]:
        """Per-example scores for paired comparisons: ``counts`` (n, 3) true positives,
        false positives and false negatives, ``exact`` and ``json_valid`` (0/1), ``indices``."""
        return {
            "counts": self.metrics.counts_per_example(),
            "exact": self.metrics.exact_per_example(),
            "json_valid": self.metrics.json_valid_per_example(),
            "indices": self.indices.astype(np.int64),
        }

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-ready row per answer: its eval position, text and token counts."""
        return [
            {
                "index": int(index),
                "text": generation.text,
                "finished": generation.finished,
                "prompt_tokens": generation.prompt_tokens,
                "generated_tokens": generation.generated_tokens,
            }
            for index, generation in zip(self.indices, self.generations, strict=True)
        ]


def evaluate_generator(
    generator: Generator,
    task: GenerativeTask,
    settings: CompareConfig,
    indices: np.ndarray | None = None,
) -> tuple[dict[str, Any], GeneratedAnswers]:
    """Slot metrics, JSON validity, exact match and generation cost on the eval set (or the
    given sample of it). Returns the ``eval.json`` payload and the scored answers."""
    indices = np.arange(task.eval_size) if indices is None else indices
    requests = task.eval_requests
    asked = [requests[int(i)] for i in indices]
    start = time.perf_counter()
    conversations = generator.conversations(asked)
    prompts = [encode_prompt(generator.lm.tokenizer, c) for c in conversations]
    generations = generate(generator.lm, prompts, generator.decoding)
    seconds = time.perf_counter() - start
    frames = [task.eval_frames[int(i)] for i in indices]
    metrics = slot_metrics([g.text for g in generations], frames, task.slots)
    low, high = micro_f1_interval(
        metrics.counts_per_example(),
        resamples=settings.bootstrap_resamples,
        confidence=settings.confidence,
    )
    payload = {
        "task": task.kind,
        "n": len(indices),
        "eval_size": task.eval_size,
        "sampled": bool(len(indices) < task.eval_size),
        "metrics": metrics.to_dict(),
        "slot_f1_ci": [low, high],
        "confidence": settings.confidence,
        "unfinished": sum(not g.finished for g in generations),
        "eval_seconds": round(seconds, 3),
        "decoding": generator.decoding.model_dump(mode="json"),
        "tokens": {
            "prompt": asdict(TokenStats.of([g.prompt_tokens for g in generations])),
            "generated": asdict(TokenStats.of([g.generated_tokens for g in generations])),
        },
        "cost": generation_cost(generator, asked, prompts, settings),
    }
    return payload, GeneratedAnswers(np.asarray(indices), generations, metrics)


def generation_cost(
    generator: Generator,
    requests: Sequence[Any],
    prompts: Sequence[Sequence[int]],
    settings: CompareConfig,
) -> dict[str, Any]:
    """Answering one request at a time: generation latency p50/p95, output tokens/s and
    prompt tokens per request (the same requests, in eval order, for every generator), and
    the latency of building a request's prompt (retrieving examples, say)."""
    cost = measure_generation_cost(
        generator.lm, prompts, generator.decoding, time_budget_s=settings.latency_budget_s
    ).to_dict()
    building = measure_latency(
        generator.conversations, requests, batch_size=1, time_budget_s=settings.latency_budget_s
    )
    return {**cost, "prompt_build_latency": building.to_dict()}
