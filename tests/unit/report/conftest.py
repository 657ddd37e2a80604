"""Hand-written experiment folders for report tests: run directories as ``compare`` writes them
(eval.json, cost.json, manifest.json, config.yaml, predictions.safetensors), the data report
and the eval lock, with scores drawn from a seeded generator and scored by adaptlab's own
metrics. No model runs: a folder takes milliseconds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from adaptlab.evaluate.bootstrap import bootstrap_interval, micro_f1_interval
from adaptlab.evaluate.metrics import classification_metrics, reliability_bins
from adaptlab.evaluate.slots import slot_metrics
from adaptlab.report.build import ReportFiles, build_report
from adaptlab.runs import RunFolder, base_manifest
from adaptlab.strategies.base import get_strategy

LABELS = ("cards", "transfers", "refunds")
SLOTS = ("people", "date", "time")
EVAL_SHA = "e" * 64
TRAIN_SHA = "t" * 64
N = 90

# name -> (registered strategy, accuracy, batch-1 latency ms, fit seconds)
CLASSIFIERS: dict[str, tuple[str, float, float, float]] = {
    "zero_shot": ("zero_shot", 0.45, 4.0, 0.5),
    "knn": ("knn", 0.80, 6.0, 20.0),
    "frozen": ("frozen", 0.82, 3.0, 30.0),
    "setfit_k8": ("setfit", 0.84, 5.0, 200.0),
    "full": ("full", 0.95, 9.0, 600.0),
}
# Five more, for a report the size of the demo's (ten runs): the leaderboard must still fit.
MORE_CLASSIFIERS: dict[str, tuple[str, float, float, float]] = {
    "lora": ("lora", 0.94, 8.0, 300.0),
    "partial": ("partial", 0.93, 9.0, 250.0),
    "distill": ("distill", 0.92, 4.0, 400.0),
    "scratch": ("scratch", 0.30, 9.0, 300.0),
    "llm_prompt": ("llm_prompt", 0.50, 90.0, 1.0),
}
# Free text answered with and without the document collection (the issue-15 four):
# name -> (ROUGE-L target, batch-1 latency ms, fit seconds, prompt tokens per request)
TEXT_RUNS: dict[str, tuple[float, float, float, float]] = {
    "prompt": (0.20, 300.0, 1.0, 40.0),
    "sft_lora": (0.35, 300.0, 400.0, 40.0),
    "rag": (0.55, 420.0, 2.0, 600.0),
    "rag_sft": (0.65, 420.0, 500.0, 600.0),
}
# recall@k and MRR per retriever of a retrieval run's eval.json (as grounding.retrieval_scores
# writes them), by hand: hybrid at or above both, as on COVID-QA.
BY_RETRIEVER: dict[str, dict[str, float]] = {
    "dense": {
        "queries": 80,
        "recall@1": 0.35,
        "recall@3": 0.55,
        "recall@5": 0.6375,
        "recall@10": 0.75,
        "recall@20": 0.85,
        "mrr": 0.4712,
    },
    "sparse": {
        "queries": 80,
        "recall@1": 0.4,
        "recall@3": 0.6,
        "recall@5": 0.675,
        "recall@10": 0.8,
        "recall@20": 0.8875,
        "mrr": 0.5123,
    },
    "hybrid": {
        "queries": 80,
        "recall@1": 0.45,
        "recall@3": 0.6625,
        "recall@5": 0.7375,
        "recall@10": 0.8375,
        "recall@20": 0.925,
        "mrr": 0.5611,
    },
}
# name -> (slot F1 target, latency ms, fit seconds, forgetting, perplexity ratio)
GENERATORS: dict[str, tuple[float, float, float, float | None, float | None]] = {
    "prompt": (0.3, 300.0, 1.0, None, None),
    "few_shot": (0.6, 320.0, 5.0, None, None),
    "sft_lora": (0.9, 300.0, 400.0, 0.05, 1.3),
}


def write_experiment(root: Path, name: str, task: str, strategies: dict[str, str]) -> Path:
    folder = root / name
    (folder / "data").mkdir(parents=True)
    experiment = {
        "name": name,
        "compare": {"bootstrap_resamples": 200, "confidence": 0.95},
        "strategies": {run: {"strategy": kind} for run, kind in strategies.items() if run != kind},
    }
    (folder / "experiment.yaml").write_text(yaml.safe_dump(experiment))
    (folder / "data" / "data_report.json").write_text(json.dumps(data_report(task)))
    lock = {"eval_sha256": EVAL_SHA, "size": N, "source": "split", "format": task}
    (folder / "data" / "eval.lock").write_text(json.dumps(lock))
    return folder


def data_report(task: str) -> dict[str, Any]:
    fmt = "classification" if task == "classification" else "chat"
    source = {"path": "train.jsonl", "format": fmt, "records_read": 400, "valid": 400}
    report: dict[str, Any] = {
        "sources": {"train": {**source, "after_dedup": 390, "errors": 0, "warnings": 0}},
        "guidance": [{"level": "warn", "message": "390 examples; <b>few</b> for fine-tuning."}],
        "duplicates": {"train": {"exact_groups": 2, "near_groups": 3, "dropped": 10}},
        "contamination": {"eval_items": 1, "exact": 1, "near": 0},
        "pii": {"scrubbed": True, "counts": {"train": {"EMAIL": 2}}},
        "tokens": {"train": {"total": 4000, "count": 390}, "eval": {"total": 900, "count": N}},
    }
    if task == "classification":
        counts = {"cards": 140, "transfers": 130, "refunds": 120}
        report["labels"] = {"classes": 3, "train_counts": counts, "min_per_class": 120}
    return report


def manifest(name: str, config_yaml: str) -> dict[str, Any]:
    """A manifest for run ``name``, of the registered strategy it stands for (``setfit_k8``
    ran setfit), with that strategy's declared profile."""
    classifiers = {**CLASSIFIERS, **MORE_CLASSIFIERS}
    kind = classifiers[name][0] if name in classifiers else name
    profile = get_strategy(kind).profile
    return base_manifest(
        name, kind, profile, TRAIN_SHA, EVAL_SHA, "tiny-base", "f" * 64, config_yaml, 42, False
    )


def write_classifier_run(runs: Path, name: str, seed: int) -> Path:
    _, accuracy, latency, fit = {**CLASSIFIERS, **MORE_CLASSIFIERS}[name]
    rng = np.random.default_rng(seed)
    gold = np.random.default_rng(0).integers(0, len(LABELS), N)  # the same eval set for all
    right = rng.random(N) < accuracy
    predicted = np.where(right, gold, (gold + 1 + rng.integers(0, 2, N)) % len(LABELS))
    confidence = rng.uniform(0.4, 0.95, N)
    probabilities = np.full((N, len(LABELS)), 0.0)
    probabilities[:] = ((1 - confidence) / (len(LABELS) - 1))[:, None]
    probabilities[np.arange(N), predicted] = confidence
    correct = (predicted == gold).astype(np.float64)
    metrics = classification_metrics(probabilities, gold, LABELS)
    low, high = bootstrap_interval(correct, resamples=200, confidence=0.95)
    payload = {
        "strategy": name,
        "task": "classification",
        "n": N,
        "eval_size": N,
        "sampled": False,
        "metrics": metrics.to_dict(),
        "accuracy_ci": [low, high],
        "confidence": 0.95,
        "reliability": reliability_bins(probabilities.max(axis=1), correct.astype(bool)),
        "latency": {
            "batch_1": {"p50_ms": latency, "p95_ms": latency * 1.5},
            "batch_32": {"per_example_ms": latency / 4},
        },
    }
    folder = RunFolder(runs / name)
    folder.reset()
    folder.write_predictions(probabilities, gold, np.arange(N))
    return _finish(folder, name, payload, fit)


def write_generator_run(runs: Path, name: str, seed: int) -> Path:
    target, latency, fit, forgot, ratio = GENERATORS[name]
    rng = np.random.default_rng(seed)
    gold = [{SLOTS[i % 3]: str(i), SLOTS[(i + 1) % 3]: f"v{i}"} for i in range(N)]
    answers = [
        json.dumps({k: (v if rng.random() < target else "wrong") for k, v in frame.items()})
        for frame in gold
    ]
    metrics = slot_metrics(answers, gold, SLOTS)
    low, high = micro_f1_interval(metrics.counts_per_example(), resamples=200, confidence=0.95)
    payload: dict[str, Any] = {
        "strategy": name,
        "task": "generative",
        "n": N,
        "eval_size": N,
        "sampled": False,
        "metrics": metrics.to_dict(),
        "slot_f1_ci": [low, high],
        "confidence": 0.95,
        "tokens": {"prompt": {"mean": 120.0}, "generated": {"mean": 12.0}},
        "cost": {"latency": {"p50_ms": latency, "p95_ms": latency * 1.2}},
    }
    if forgot is not None:
        change = {"forgetting": forgot, "instruction_pass_rate": 0.7, "perplexity": 13.0}
        payload["retention"] = {"vs_base": {**change, "perplexity_ratio": ratio}}
    folder = RunFolder(runs / name)
    folder.reset()
    arrays = {"counts": metrics.counts_per_example(), "indices": np.arange(N, dtype=np.int64)}
    folder.write_prediction_arrays(arrays)
    return _finish(folder, name, payload, fit)


def write_text_run(runs: Path, name: str, seed: int) -> Path:
    """A free-text run ranked on ROUGE-L, with per-item ROUGE-L and token F1; a retrieval run
    (by its strategy's profile) also has grounding, recall per retriever and index costs."""
    target, latency, fit, prompt_tokens = TEXT_RUNS[name]
    rng = np.random.default_rng(seed)
    rouge = np.clip(rng.normal(target, 0.15, N), 0.0, 1.0)
    f1 = np.clip(rouge + rng.normal(0.05, 0.05, N), 0.0, 1.0)
    low, high = bootstrap_interval(rouge, resamples=200, confidence=0.95)
    payload: dict[str, Any] = {
        "strategy": name,
        "task": "generation",
        "n": N,
        "eval_size": N,
        "sampled": False,
        "metrics": {"rougeL": float(rouge.mean()), "token_f1": float(f1.mean()), "bleu": 0.1},
        "primary_metric": "rougeL",
        "rougeL_ci": [low, high],
        "confidence": 0.95,
        "tokens": {"prompt": {"mean": prompt_tokens}, "generated": {"mean": 12.0}},
        "cost": {
            "latency": {"p50_ms": latency, "p95_ms": latency * 1.2},
            "output_tokens_per_s": 30.0,
            "prompt_build_latency": {"p50_ms": 6.5 if name.startswith("rag") else 0.1},
        },
    }
    cost: dict[str, Any] = {"prompt_tokens_per_request": prompt_tokens}
    if get_strategy(name).profile.retrieves:
        payload["grounding"] = {
            "groundedness": 0.8,
            "groundedness_ci": [0.75, 0.85],
            "citation_rate": 0.9,
            "citation_accuracy": 0.6,
            "citation_scored": N - 10,
        }
        payload["retrieval"] = {
            "queries_with_gold": N - 10,
            "queries": N,
            "used": "hybrid",
            "k": 3,
            "by_retriever": BY_RETRIEVER,
        }
        cost.update(index_build_s=3.2, index_bytes=2_500_000, index_chunks=400)
    folder = RunFolder(runs / name)
    folder.reset()
    indices = np.arange(N, dtype=np.int64)
    folder.write_prediction_arrays({"rougeL": rouge, "token_f1": f1, "indices": indices})
    return _finish(folder, name, payload, fit, cost)


def _finish(
    folder: RunFolder,
    name: str,
    payload: dict[str, Any],
    fit: float,
    more_cost: dict[str, Any] | None = None,
) -> Path:
    config_yaml = yaml.safe_dump({"strategy": name, "train": {"num_epochs": 3}})
    (folder.path / "config.yaml").write_text(config_yaml)
    folder.write_json("eval.json", payload)
    cost = {"fit_wall_s": fit, "size_on_disk_bytes": 1_000_000, "trainable_params": 0}
    cost |= {"total_params": 1_000_000, "peak_rss_bytes": 2**28, **(more_cost or {})}
    folder.write_json("cost.json", cost)
    folder.write_json("manifest.json", manifest(name, config_yaml))
    return folder.path


def classification_folder(root: Path) -> Path:
    """root/runs/tiny with five classification runs (one renamed: setfit_k8 ran setfit)."""
    kinds = {name: facts[0] for name, facts in CLASSIFIERS.items()}
    folder = write_experiment(root / "runs", "tiny", "classification", kinds)
    for seed, name in enumerate(CLASSIFIERS):
        write_classifier_run(folder / "runs", name, seed + 1)
    return folder


def demo_sized_folder(root: Path) -> Path:
    """root/runs/ten with ten classification runs, as many as the demo compares."""
    runs = {**CLASSIFIERS, **MORE_CLASSIFIERS}
    folder = write_experiment(
        root / "runs", "ten", "classification", {n: f[0] for n, f in runs.items()}
    )
    for seed, name in enumerate(runs):
        write_classifier_run(folder / "runs", name, seed + 1)
    return folder


def generative_folder(root: Path) -> Path:
    """root/runs/chat with three generative runs: the base prompt, few-shot and an SFT LoRA
    that forgot some of the base model's general abilities."""
    folder = write_experiment(root / "runs", "chat", "generative", {n: n for n in GENERATORS})
    for seed, name in enumerate(GENERATORS):
        write_generator_run(folder / "runs", name, seed + 1)
    return folder


def text_folder(root: Path, names: tuple[str, ...] = tuple(TEXT_RUNS)) -> Path:
    """root/runs/qa with free-text runs ``names``: by default the closed-book prompt and
    sft_lora and the retrieval runs rag and rag_sft."""
    folder = write_experiment(root / "runs", "qa", "generation", {n: n for n in names})
    for seed, name in enumerate(names):
        write_text_run(folder / "runs", name, seed + 1)
    return folder


@pytest.fixture
def classification_experiment(tmp_path: Path) -> Path:
    return classification_folder(tmp_path)


@pytest.fixture(scope="module")
def classification_report(tmp_path_factory: pytest.TempPathFactory) -> ReportFiles:
    """The report on an untouched classification experiment, built once per test module
    (rendering the plots is the slow part)."""
    return build_report([classification_folder(tmp_path_factory.mktemp("report"))])


@pytest.fixture(scope="module")
def generative_report(tmp_path_factory: pytest.TempPathFactory) -> ReportFiles:
    return build_report([generative_folder(tmp_path_factory.mktemp("chat-report"))])


@pytest.fixture(scope="module")
def demo_sized_report(tmp_path_factory: pytest.TempPathFactory) -> ReportFiles:
    return build_report([demo_sized_folder(tmp_path_factory.mktemp("ten-report"))])
