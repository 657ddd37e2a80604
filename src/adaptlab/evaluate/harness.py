"""One evaluation for every strategy of a task kind: the locked eval set (or the same fixed
sample of it), the same metrics, the same timing.

Classifiers are scored on accuracy, macro-F1 and calibration; generators answer each eval
request greedily and their answers are scored as slot frames (:mod:`adaptlab.evaluate.slots`)
or, for free text, against the references (:mod:`adaptlab.evaluate.free_text`), with the cost
of answering one request at a time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from adaptlab.config import CompareConfig
from adaptlab.evaluate.bootstrap import bootstrap_interval, micro_f1_interval
from adaptlab.evaluate.free_text import (
    CORPUS_METRICS,
    CORPUS_STATS_METRICS,
    embedding_similarity,
    metric_interval,
    score_free_text,
)
from adaptlab.evaluate.generation import (
    Generation,
    TokenStats,
    generate,
    measure_generation_cost,
)
from adaptlab.evaluate.grounding import (
    RetrievalAugmented,
    grounding_quality,
    retrieval_scores,
    strip_citations,
)
from adaptlab.evaluate.latency import measure_latency
from adaptlab.evaluate.metrics import classification_metrics, reliability_bins
from adaptlab.evaluate.multilabel import (
    DEFAULT_THRESHOLD,
    macro_f1_interval,
    multi_label_metrics,
    predicted_sets,
    tune_thresholds,
)
from adaptlab.evaluate.open_set import (
    OUT_OF_SCOPE,
    PER_QUERY,
    OpenSetError,
    Rejection,
    auroc_interval,
    choose_threshold,
    open_set_metrics,
    per_query,
    tradeoff_curve,
)
from adaptlab.evaluate.slots import slot_metrics
from adaptlab.models.document_retrieval import Hit
from adaptlab.models.encoder import embed_texts
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
    if task.multi_label:
        payload = multi_label_payload(classifier, task, settings, probabilities, gold)
        payload.update(
            n=len(indices),
            eval_size=len(task.eval_texts),
            sampled=bool(len(indices) < len(task.eval_texts)),
            confidence=settings.confidence,
            eval_seconds=round(seconds, 3),
            latency=latency_profile(classifier, texts, settings),
        )
        return payload, probabilities, indices
    # Closed-set quality: over the in-scope queries (all of them without out-of-scope mode).
    inside = gold != OUT_OF_SCOPE
    metrics = classification_metrics(probabilities[inside], gold[inside], task.label_names)
    correct = (probabilities[inside].argmax(axis=1) == gold[inside]).astype(np.float64)
    low, high = bootstrap_interval(
        correct, resamples=settings.bootstrap_resamples, confidence=settings.confidence
    )
    scores: dict[str, Any] = metrics.to_dict()
    payload = {
        "n": len(indices),
        "eval_size": len(task.eval_texts),
        "sampled": bool(len(indices) < len(task.eval_texts)),
        "metrics": scores,
        "accuracy_ci": [low, high],
        "confidence": settings.confidence,
        "reliability": reliability_bins(probabilities[inside].max(axis=1), correct.astype(bool)),
        "eval_seconds": round(seconds, 3),
        "latency": latency_profile(classifier, texts, settings),
    }
    if task.out_of_scope_label is not None:
        open_set = out_of_scope_payload(classifier, task, settings, probabilities, gold)
        scores.update(open_set["out_of_scope"]["metrics"])
        payload.update(open_set)
    return payload, probabilities, indices


def out_of_scope_payload(
    classifier: Classifier,
    task: ClassificationTask,
    settings: CompareConfig,
    probabilities: np.ndarray,
    gold: np.ndarray,
) -> dict[str, Any]:
    """The rejection threshold chosen on the validation split, and what it does on the eval
    queries: ``primary_metric`` (``compare.out_of_scope.rank_on``) with its interval, the
    open-set metrics beside the closed-set ones, and an ``out_of_scope`` section (the rule,
    intervals, AUROC, the trade-off curve)."""
    options = settings.out_of_scope
    validation = classifier.predict_proba(task.validation_texts)
    rejection = choose_threshold(
        validation,
        task.validation_labels,
        rule=options.rule,
        target=options.in_scope_rejection,
        out_of_scope_column=task.out_of_scope_column,
    )
    measured = open_set_metrics(probabilities, gold, rejection)
    rows = per_query(probabilities, gold, rejection)
    resamples, confidence = settings.bootstrap_resamples, settings.confidence
    intervals: dict[str, list[float] | None] = {}
    for name in PER_QUERY:
        values = rows[name][~np.isnan(rows[name])]
        intervals[name] = (
            list(bootstrap_interval(values, resamples=resamples, confidence=confidence))
            if len(values)
            else None
        )
    inside = gold != OUT_OF_SCOPE
    primary = options.rank_on
    if measured[primary] is None or intervals[primary] is None:
        raise OpenSetError(
            f"compare.out_of_scope.rank_on {primary}: the eval set has no query it applies to "
            "(no out-of-scope records in eval?)"
        )
    return {
        "primary_metric": primary,
        f"{primary}_ci": intervals[primary],
        "out_of_scope": {
            "label": task.out_of_scope_label,
            **rejection.to_dict(),
            "metrics": measured,
            "intervals": intervals,
            "auroc_ci": auroc_interval(
                rows["score"], inside, resamples=resamples, confidence=confidence
            ),
            "eval_in_scope": int(inside.sum()),
            "eval_out_of_scope": int((~inside).sum()),
            "curve": tradeoff_curve(rows["score"], inside),
        },
    }


def multi_label_payload(
    classifier: Classifier,
    task: ClassificationTask,
    settings: CompareConfig,
    probabilities: np.ndarray,
    gold: np.ndarray,
) -> dict[str, Any]:
    """Per-label thresholds tuned on the validation split, and the multi-label metrics of the
    eval records with their intervals (:mod:`adaptlab.evaluate.multilabel`); ranked on
    micro-F1."""
    validation = classifier.predict_proba(task.validation_texts)
    thresholds = tune_thresholds(validation, task.validation_labels)
    metrics, arrays = multi_label_metrics(probabilities, gold, thresholds, task.label_names)
    options: dict[str, Any] = {
        "resamples": settings.bootstrap_resamples,
        "confidence": settings.confidence,
    }
    predicted = predicted_sets(probabilities, thresholds)
    positives = np.asarray(task.validation_labels).sum(axis=0)
    return {
        "metrics": metrics,
        "primary_metric": "micro_f1",
        "micro_f1_ci": list(micro_f1_interval(arrays["counts"], **options)),
        "multi_label": {
            "thresholds": {
                name: float(value) for name, value in zip(task.label_names, thresholds, strict=True)
            },
            "tuned_on": "validation",
            "validation_n": len(task.validation_texts),
            "labels_without_validation_positives": [
                name for name, count in zip(task.label_names, positives, strict=True) if not count
            ],
            "default_threshold": DEFAULT_THRESHOLD,
            "macro_f1_ci": list(macro_f1_interval(predicted, gold, **options)),
            "subset_accuracy_ci": list(bootstrap_interval(arrays["subset_accuracy"], **options)),
            "example_f1_ci": list(bootstrap_interval(arrays["example_f1"], **options)),
        },
    }


def per_record_arrays(
    payload: dict[str, Any],
    probabilities: np.ndarray,
    gold: np.ndarray,
    label_names: tuple[str, ...],
) -> dict[str, np.ndarray]:
    """What ``predictions.safetensors`` keeps beside the probabilities for the bootstraps: the
    per-query open-set scores of ``payload``'s rejection rule, or a multi-label run's
    per-record counts, example F1 and exact-set matches; nothing otherwise."""
    section = payload.get("out_of_scope")
    if section is not None:
        rows = per_query(probabilities, gold, Rejection.from_dict(section))
        return {name: values.astype(np.float64) for name, values in rows.items()}
    multi = payload.get("multi_label")
    if multi is not None:
        thresholds = [multi["thresholds"][name] for name in label_names]
        _, arrays = multi_label_metrics(probabilities, gold, thresholds, label_names)
        return arrays
    return {}


def latency_profile(
    classifier: Classifier, texts: Sequence[str], settings: CompareConfig
) -> dict[str, dict[str, float | int]]:
    """Per-call CPU latency at each configured batch size, the median's interval at the
    comparison's confidence level."""
    profile = {}
    for batch_size in settings.latency_batch_sizes:
        latency = measure_latency(
            classifier.predict_proba,
            texts,
            batch_size=batch_size,
            time_budget_s=settings.latency_budget_s,
            resamples=settings.bootstrap_resamples,
            confidence=settings.confidence,
        )
        profile[f"batch_{batch_size}"] = latency.to_dict()
    return profile


# --------------------------------------------------------------------------- generators


@dataclass(frozen=True)
class GeneratedAnswers:
    """A generator's answers to the eval requests it was asked, with per-example scores."""

    indices: np.ndarray
    """Positions in the locked eval set, in the order of the answers."""
    generations: list[Generation]
    per_example: dict[str, np.ndarray]
    """Per-example scores for paired comparisons, by task kind: slot extraction's ``counts``
    (n, 3) true positives, false positives and false negatives, ``exact`` and ``json_valid``
    (0/1); free text's :data:`TEXT_ARRAYS` (and, answering from retrieved chunks,
    ``groundedness``, ``cites`` and ``citation_correct``)."""
    contexts: list[list[str]] | None = None
    """The ids of the chunks shown with each request, in prompt order (retrieval only)."""

    def arrays(self) -> dict[str, np.ndarray]:
        """What ``predictions.safetensors`` holds: :attr:`per_example` and ``indices``."""
        return {**self.per_example, "indices": self.indices.astype(np.int64)}

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-ready row per answer: its eval position, text and token counts."""
        rows = [
            {
                "index": int(index),
                "text": generation.text,
                "finished": generation.finished,
                "prompt_tokens": generation.prompt_tokens,
                "generated_tokens": generation.generated_tokens,
            }
            for index, generation in zip(self.indices, self.generations, strict=True)
        ]
        for row, shown in zip(rows, self.contexts or [], strict=False):
            row["context"] = shown
        return rows


TEXT_ARRAYS = ("bleu_stats", "chrf_stats", *CORPUS_METRICS, "embedding_similarity")
"""A free-text run's per-example arrays: BLEU's and chrF++'s sufficient statistics (rows that
sum to the corpus score), sentence BLEU and chrF++, ROUGE F1, exact match, length ratio and
embedding similarity (all on 0-1 but the length ratio)."""


def evaluate_generator(
    generator: Generator,
    task: GenerativeTask,
    settings: CompareConfig,
    indices: np.ndarray | None = None,
) -> tuple[dict[str, Any], GeneratedAnswers]:
    """Answers to the eval requests (or the given sample of them), scored as slot frames or as
    free text against the references by the task's kind, and the generation cost. Returns the
    ``eval.json`` payload and the scored answers."""
    indices = np.arange(task.eval_size) if indices is None else indices
    requests = task.eval_requests
    asked = [requests[int(i)] for i in indices]
    start = time.perf_counter()
    shown: list[list[Hit]] | None = None
    if isinstance(generator, RetrievalAugmented):
        queries = [generator.query(request) for request in asked]
        shown = generator.retrievers[generator.retriever_kind].retrieve(queries, generator.k)
        conversations = generator.grounded_conversations(asked, shown)
    else:
        conversations = generator.conversations(asked)
    prompts = [encode_prompt(generator.lm.tokenizer, c) for c in conversations]
    generations = generate(generator.lm, prompts, generator.decoding)
    seconds = time.perf_counter() - start
    texts = [g.text for g in generations]
    if task.eval_references is None:
        quality, per_example = _slot_quality(texts, task, indices, settings)
    else:
        references = [task.eval_references[int(i)] for i in indices]
        scored = texts if shown is None else [strip_citations(t) for t in texts]
        quality, per_example = text_quality(scored, references, settings)
    contexts = None
    if shown is not None:
        assert isinstance(generator, RetrievalAugmented)
        gold = (
            None if task.eval_documents is None else [task.eval_documents[int(i)] for i in indices]
        )
        grounding, arrays = grounding_quality(
            texts,
            shown,
            generator,
            gold,
            resamples=settings.bootstrap_resamples,
            confidence=settings.confidence,
        )
        quality["grounding"] = grounding
        per_example.update(arrays)
        if gold is not None:
            quality["retrieval"] = retrieval_scores(generator, asked, gold)
        contexts = [[generator.chunk_ids[i] for i, _ in hits] for hits in shown]
    payload = {
        "task": task.kind,
        "n": len(indices),
        "eval_size": task.eval_size,
        "sampled": bool(len(indices) < task.eval_size),
        **quality,
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
    return payload, GeneratedAnswers(np.asarray(indices), generations, per_example, contexts)


def _slot_quality(
    texts: list[str], task: GenerativeTask, indices: np.ndarray, settings: CompareConfig
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    frames = [task.eval_frames[int(i)] for i in indices]
    metrics = slot_metrics(texts, frames, task.slots)
    low, high = micro_f1_interval(
        metrics.counts_per_example(),
        resamples=settings.bootstrap_resamples,
        confidence=settings.confidence,
    )
    per_example = {
        "counts": metrics.counts_per_example(),
        "exact": metrics.exact_per_example(),
        "json_valid": metrics.json_valid_per_example(),
    }
    return {"metrics": metrics.to_dict(), "slot_f1_ci": [low, high]}, per_example


def text_quality(
    texts: Sequence[str], references: Sequence[Sequence[str]], settings: CompareConfig
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Free-text answers scored against their references (:mod:`adaptlab.evaluate.free_text`):
    every metric per corpus (``metrics``, BLEU/chrF++/ROUGE divided by 100 so that every
    score is on 0-1 like accuracy) and per example (:data:`TEXT_ARRAYS`), the primary metric
    (``compare.generation_metric``) and its bootstrap interval."""
    scores = score_free_text(texts, references)
    embed = partial(embed_texts, settings.similarity_model, max_length=SIMILARITY_MAX_LENGTH)
    similarity = embedding_similarity(texts, references, embed)
    metrics = {name: value / _PERCENT.get(name, 1.0) for name, value in scores.corpus.items()}
    metrics["embedding_similarity"] = float(similarity.mean())
    per_example = {
        "bleu_stats": scores.stats["bleu"],
        "chrf_stats": scores.stats["chrf"],
        **{name: values / _PERCENT.get(name, 1.0) for name, values in scores.per_example.items()},
        "embedding_similarity": similarity,
    }
    primary = settings.generation_metric
    values = per_example[f"{primary}_stats" if primary in CORPUS_STATS_METRICS else primary]
    low, high = metric_interval(
        primary, values, resamples=settings.bootstrap_resamples, confidence=settings.confidence
    )
    quality = {
        "primary_metric": primary,
        "metrics": metrics,
        f"{primary}_ci": [low, high],
        "references_per_item": float(np.mean([len(refs) for refs in references])),
    }
    return quality, per_example


SIMILARITY_MAX_LENGTH = 256
"""Tokens of an answer or reference the similarity encoder reads."""
_PERCENT = dict.fromkeys(("bleu", "chrf", "rouge1", "rouge2", "rougeL"), 100.0)
"""The metrics the libraries give on 0-100 (exact match is a share, the length ratio a ratio)."""


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
