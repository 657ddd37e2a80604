"""Free-text generation through ``compare``: records whose answers are prose make a
``generation`` task, every generative strategy runs on it, answers are scored against every
reference with sacrebleu and rouge-score (the values equal the libraries called directly on
the run's own generations), and the comparison ranks on the configured metric with paired
intervals on every difference.

The tiny random Llama answers noise: the tests check the plumbing and the arithmetic.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from rouge_score.rouge_scorer import RougeScorer
from sacrebleu.metrics.bleu import BLEU
from sacrebleu.metrics.chrf import CHRF
from safetensors.numpy import load_file
from tests.unit.strategies.test_generative import write_jsonl
from transformers import AutoTokenizer

from adaptlab.compare import compare, experiment_task, prepare_experiment_data
from adaptlab.comparison import build_comparison
from adaptlab.config import ExperimentConfig
from adaptlab.data.issues import DataError
from adaptlab.evaluate.bootstrap import paired_bootstrap_corpus
from adaptlab.evaluate.free_text import corpus_scorer
from adaptlab.evaluate.harness import TEXT_ARRAYS
from adaptlab.strategies.base import get_strategy, strategies_for

MRS = [
    ("Alimentum", "city centre", "no"),
    ("Aromi", "riverside", "yes"),
    ("Blue Spice", "city centre", "yes"),
    ("Cotto", "riverside", "no"),
    ("Fitzbillies", "city centre", "yes"),
    ("Giraffe", "riverside", "no"),
    ("Loch Fyne", "city centre", "no"),
    ("Strada", "riverside", "yes"),
    ("The Eagle", "city centre", "yes"),
    ("The Mill", "riverside", "no"),
    ("The Punter", "city centre", "no"),
    ("Wildwood", "riverside", "yes"),
]
TRAIN_MRS, EVAL_MRS = MRS[:8], MRS[8:]
INSTRUCTION = "Write a short restaurant description from this meaning representation.\n\n"
QUIET = {"log": lambda _: None}


def mr(name: str, area: str, family: str) -> str:
    return f"name[{name}], area[{area}], familyFriendly[{family}]"


def descriptions(name: str, area: str, family: str) -> list[str]:
    friendly = "is family-friendly" if family == "yes" else "is not family-friendly"
    return [
        f"{name} is in the {area} and {friendly}.",
        f"In the {area} there is {name}, which {friendly}.",
    ]


def chat(request: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": request}, {"role": "assistant", "content": answer}]


def train_records() -> list[dict[str, Any]]:
    """Two descriptions of each training MR, one record each (as E2E's training file)."""
    return [
        {"messages": chat(INSTRUCTION + mr(*m), text)}
        for m in TRAIN_MRS
        for text in descriptions(*m)
    ]


def eval_records() -> list[dict[str, Any]]:
    """One record per eval MR, every description in ``references``."""
    return [
        {
            "messages": chat(INSTRUCTION + mr(*m), descriptions(*m)[0]),
            "references": descriptions(*m),
        }
        for m in EVAL_MRS
    ]


def text_experiment(
    tmp_path: Path, tiny_llm: Path, tiny_encoder: Path, strategies: list[str], **compare_: Any
) -> ExperimentConfig:
    raw: dict[str, Any] = {
        "name": "e2e-tiny",
        "output_dir": str(tmp_path / "runs"),
        "data": {
            "train": write_jsonl(tmp_path / "train.jsonl", train_records()),
            "eval": write_jsonl(tmp_path / "eval.jsonl", eval_records()),
            "dedup": False,
        },
        "model": {"base_model": str(tiny_llm), "sequence_len": 256},
        "train": {"max_steps": 2, "micro_batch_size": 8},
        "strategies": {
            "few_shot": {"k": 2, "retriever": str(tiny_encoder)},
            "sft_dora": {"strategy": "sft_lora", "lora": {"use_dora": True}},
            "distill_seq": {"targets": "gold_where_labelled"},
            "distill_seq_unlabeled": {
                "strategy": "distill_seq",
                "unlabeled": write_jsonl(
                    tmp_path / "unlabeled.jsonl",
                    [{"messages": chat(INSTRUCTION + mr("Zizzi", "riverside", "no"), "-")[:1]}],
                ),
                "targets": "gold_where_labelled",
            },
        },
        "compare": {
            "strategies": strategies,
            "latency_budget_s": 0.05,
            "bootstrap_resamples": 200,
            "similarity_model": str(tiny_encoder),
            "retention": {"perplexity_tokens": 256, "window_tokens": 64, "instructions": 4},
            **compare_,
        },
    }
    return ExperimentConfig.model_validate(raw)


@pytest.fixture(scope="module")
def finished(
    tmp_path_factory: pytest.TempPathFactory, tiny_llm: Path, tiny_encoder: Path
) -> tuple[ExperimentConfig, Any]:
    """prompt, few_shot and sft_lora compared on the tiny free-text task (the acceptance
    test's three, on tiny models)."""
    tmp_path = tmp_path_factory.mktemp("free-text")
    config = text_experiment(tmp_path, tiny_llm, tiny_encoder, ["prompt", "few_shot", "sft_lora"])
    return config, compare(config, **QUIET)


def test_metrics_equal_sacrebleu_and_rouge_score_on_the_runs_own_answers(
    finished: tuple[ExperimentConfig, Any],
) -> None:
    _, result = finished
    assert result.failures == {}
    runs = result.folder / "runs"
    references = [descriptions(*m) for m in EVAL_MRS]
    streams = [[r[k] for r in references] for k in range(2)]
    rouge = RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for name in ("prompt", "few_shot", "sft_lora"):
        evaluation = json.loads((runs / name / "eval.json").read_text())
        assert evaluation["task"] == "generation" and evaluation["primary_metric"] == "rougeL"
        rows = [json.loads(line) for line in (runs / name / "generations.jsonl").open()]
        assert [row["index"] for row in rows] == [0, 1, 2, 3]
        answers = [row["text"] for row in rows]
        metrics = evaluation["metrics"]
        assert metrics["bleu"] * 100 == pytest.approx(BLEU().corpus_score(answers, streams).score)
        chrf = CHRF(word_order=2).corpus_score(answers, streams).score
        assert metrics["chrf"] * 100 == pytest.approx(chrf)
        best = [rouge.score_multi(refs, a) for a, refs in zip(answers, references, strict=True)]
        for kind in ("rouge1", "rouge2", "rougeL"):
            assert metrics[kind] == pytest.approx(np.mean([s[kind].fmeasure for s in best]))
        assert 0 <= metrics["embedding_similarity"] <= 1 and metrics["length_ratio"] > 0
        low, high = evaluation["rougeL_ci"]
        assert low <= metrics["rougeL"] <= high
        arrays = load_file(str(runs / name / "predictions.safetensors"))
        assert set(arrays) == {*TEXT_ARRAYS, "indices"}
        stats = arrays["bleu_stats"]
        assert stats.shape[0] == 4 and stats.dtype == np.int64
        assert corpus_scorer("bleu")(stats.sum(axis=0)) == pytest.approx(metrics["bleu"] * 100)
        assert arrays["rougeL"].mean() == pytest.approx(metrics["rougeL"])


def test_max_new_tokens_is_the_training_answers_p99_and_recorded(
    finished: tuple[ExperimentConfig, Any], tiny_llm: Path
) -> None:
    _, result = finished
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llm))
    answers = [r["messages"][-1]["content"] for r in train_records()]
    lengths = [len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers]
    expected = math.ceil(float(np.percentile(lengths, 99))) + 1  # and the stop token
    for name in ("prompt", "few_shot", "sft_lora"):
        run = result.folder / "runs" / name
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["strategy_config"]["decoding"]["max_new_tokens"] == expected
        decoding = json.loads((run / "eval.json").read_text())["decoding"]
        assert decoding["max_new_tokens"] == expected


def test_the_comparison_ranks_on_rouge_l_with_a_paired_interval_on_every_difference(
    finished: tuple[ExperimentConfig, Any],
) -> None:
    _, result = finished
    comparison = result.comparison
    assert comparison["task"] == "generation" and comparison["metric"] == "rougeL"
    scores = [row["score"] for row in comparison["rows"]]
    assert scores == sorted(scores, reverse=True)
    for row in comparison["rows"]:
        assert row["score"] == row["rougeL"] and len(row["rougeL_ci"]) == 2
        if row["strategy"] == comparison["best"]:
            assert row["vs_best"] is None and row["vs_best_all"] is None
            continue
        assert row["vs_best"] == row["vs_best_all"]["rougeL"]
        for metric in ("bleu", "chrf", "rouge1", "rouge2", "embedding_similarity"):
            difference = row["vs_best_all"][metric]
            assert difference["n"] == 4 and difference["low"] <= difference["high"]
    board = (result.folder / "leaderboard.md").read_text()
    assert board.startswith("| strategy | ROUGE-L F1 | Δ vs best (95% CI) | BLEU | chrF++ |")


def test_ranking_on_bleu_pools_the_corpus_statistics_without_rerunning(
    finished: tuple[ExperimentConfig, Any],
) -> None:
    config, result = finished
    runs = result.folder / "runs"
    folders = [runs / name for name in ("prompt", "few_shot", "sft_lora")]
    settings = config.compare.model_copy(update={"generation_metric": "bleu"})
    comparison, _ = build_comparison(folders, settings)
    assert comparison["metric"] == "bleu"
    best = comparison["best"]
    stats = {f.name: load_file(str(f / "predictions.safetensors"))["bleu_stats"] for f in folders}
    for row in comparison["rows"]:
        assert row["score"] == row["bleu"] and len(row["bleu_ci"]) == 2
        if row["strategy"] == best:
            continue
        expected = paired_bootstrap_corpus(
            stats[row["strategy"]],
            stats[best],
            lambda totals: corpus_scorer("bleu")(totals) / 100,
            metric="bleu",
            resamples=200,
        )
        assert row["vs_best"]["difference"] == pytest.approx(expected.difference)
        assert (row["vs_best"]["low"], row["vs_best"]["high"]) == pytest.approx(
            (expected.low, expected.high)
        )


def test_the_report_shows_the_largest_wins_and_losses_with_the_references(
    finished: tuple[ExperimentConfig, Any],
) -> None:
    _, result = finished
    report = (result.folder / "report.md").read_text()
    section = report[report.index("## Examples") : report.index("## Calibration")]
    assert "Per-class" not in report and "Per-slot" not in report
    if "Not shown" not in section:  # noise answers can tie everywhere: then nothing to rank
        assert "references" in section


def test_every_generative_strategy_runs_on_free_text(
    tmp_path: Path, tiny_llm: Path, tiny_encoder: Path
) -> None:
    # qlora needs CUDA; rag and rag_sft need documents (tests/unit/strategies/test_rag_compare.py)
    names = [
        n
        for n in strategies_for("generation")
        if n != "qlora" and not get_strategy(n).profile.retrieves
    ]
    names += ["sft_dora", "distill_seq_unlabeled"]
    config = text_experiment(tmp_path, tiny_llm, tiny_encoder, names)
    result = compare(config, **QUIET)
    assert result.failures == {}
    rows = {row["strategy"]: row for row in result.comparison["rows"]}
    assert set(rows) == set(names)
    runs = result.folder / "runs"
    for name in names:
        evaluation = json.loads((runs / name / "eval.json").read_text())
        assert evaluation["task"] == "generation" and "rougeL" in evaluation["metrics"]
    for student in ("distill_logit", "distill_seq", "distill_seq_unlabeled"):
        cost = json.loads((runs / student / "cost.json").read_text())
        assert "teacher_rougeL" in cost  # chosen by the experiment's ranking metric
    tuned = [n for n in names if n not in ("prompt", "few_shot")]
    assert all(rows[n]["forgetting"] is not None for n in tuned)  # retention ran


def task_of(
    folder: Path,
    tiny_llm: Path,
    tiny_encoder: Path,
    train: list[dict[str, Any]],
    evaluation: list[dict[str, Any]] | None = None,
    answers: str = "auto",
) -> Any:
    """The task ``compare`` would build from these records (prepared, eval set locked)."""
    folder.mkdir()
    config = text_experiment(folder, tiny_llm, tiny_encoder, ["prompt"])
    update: dict[str, Any] = {"train": write_jsonl(folder / "train.jsonl", train), "task": answers}
    if evaluation is not None:
        update["eval"] = write_jsonl(folder / "eval.jsonl", evaluation)
    config = config.model_copy(update={"data": config.data.model_copy(update=update)})
    prepared = prepare_experiment_data(config, lambda items, *_: items, lambda _: None)
    return experiment_task(prepared, config.data.task)


def test_completion_and_alpaca_records_make_the_same_conversations(
    tmp_path: Path, tiny_llm: Path, tiny_encoder: Path
) -> None:
    pairs = [(INSTRUCTION + mr(*m), descriptions(*m)[0]) for m in TRAIN_MRS]
    completions = [{"prompt": p, "completion": a} for p, a in pairs]
    instruction = INSTRUCTION.strip()
    alpacas = [
        {"instruction": instruction, "input": p[len(INSTRUCTION) :], "output": a} for p, a in pairs
    ]
    completion = task_of(tmp_path / "completion", tiny_llm, tiny_encoder, completions)
    alpaca = task_of(tmp_path / "alpaca", tiny_llm, tiny_encoder, alpacas)
    assert completion.kind == alpaca.kind == "generation"
    assert completion.train_records == [chat(p, a) for p, a in pairs]
    assert alpaca.train_records == completion.train_records


def test_answers_decide_the_task_and_a_mix_names_the_first_odd_record(
    tmp_path: Path, tiny_llm: Path, tiny_encoder: Path
) -> None:
    frames = [
        {"messages": chat(f"a table for {n} please", json.dumps({"people": str(n)}))}
        for n in range(2, 10)
    ]
    evaluation = [{"messages": chat("we are 12", json.dumps({"people": "12"}))}]

    def task(name: str, train: list[dict[str, Any]], answers: str = "auto") -> Any:
        return task_of(tmp_path / name, tiny_llm, tiny_encoder, train, evaluation, answers)

    assert task("frames", frames).kind == "generative"  # every answer a JSON object
    forced = task("forced", frames, "generation")
    assert forced.kind == "generation" and forced.eval_references == [['{"people": "12"}']]
    prose = {"messages": chat("hello there", "Welcome, how can I help?")}
    with pytest.raises(
        DataError, match=r"data/train.jsonl:6: 9 of 10 answers are JSON slot frames"
    ):
        task("mixed", [*frames[:5], prose, *frames[5:]])
    with pytest.raises(DataError, match=r"train.jsonl:6: a slot-extraction task .* generation"):
        task("extraction", [*frames[:5], prose, *frames[5:]], "extraction")
    assert task_of(tmp_path / "prose", tiny_llm, tiny_encoder, train_records()).kind == "generation"
