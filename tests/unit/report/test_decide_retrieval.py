"""The decision rules on free-text rows where some runs answer from documents: the rule that
cites retrieval against closed-book fine-tuning (winner first, the paired difference with its
interval, the sign flipped with the pair), and the prompted baseline each run is held against
(like for like: a closed-book run is not blamed for losing to retrieval). Rows are shaped as
``comparison.json`` writes them for a ``generation`` task ranked on ROUGE-L."""

from __future__ import annotations

from typing import Any

import pytest

from adaptlab.comparison import Difference
from adaptlab.profile import StrategyProfile
from adaptlab.report.decide import (
    RULES,
    Evidence,
    Finding,
    candidates_from_comparison,
    decide,
    evidence_from_comparison,
    process_problem,
    retrieval_vs_fine_tuning,
    tuned_vs_prompted,
)
from adaptlab.strategies.base import get_strategy

COSTS = {"prompt": 1.0, "few_shot": 2.0, "rag": 3.0, "sft_lora": 10.0, "rag_sft": 12.0}


def row(name: str, rouge: float, strategy: str | None = None) -> dict[str, Any]:
    """A free-text leaderboard row (no difference to the best: pairs are given apart)."""
    return {
        "strategy": name,
        "registered_strategy": strategy or name,
        "task": "generation",
        "n": 264,
        "sampled": False,
        "score": rouge,
        "rougeL": rouge,
        "rougeL_ci": [rouge - 0.03, rouge + 0.03],
        "primary_metric": "rougeL",
        "latency_batch1_p50_ms": 300.0,
        "vs_best": None,
    }


def evidence(
    *rows: dict[str, Any], pairs: dict[tuple[str, str], Difference] | None = None
) -> Evidence:
    runs: dict[str, tuple[str, StrategyProfile | None]] = {
        str(r["strategy"]): (kind := str(r["registered_strategy"]), get_strategy(kind).profile)
        for r in rows
    }
    comparison = {"task": "generation", "metric": "rougeL", "best": None, "rows": list(rows)}
    return evidence_from_comparison(comparison, COSTS, runs, paired=pairs)


def finding(ev: Evidence, name: str) -> Finding:
    candidate = next(c for c in ev.candidates if c.name == name)
    return retrieval_vs_fine_tuning(candidate, ev)


PROMPT, FEW_SHOT = row("prompt", 0.20), row("few_shot", 0.25)
LORA, RAG, RAG_SFT = row("sft_lora", 0.35), row("rag", 0.55), row("rag_sft", 0.65)

RETRIEVAL_WINS = (
    "retrieval (rag) beats closed-book fine-tuning (sft_lora) on this knowledge task by "
    "+12.0 points of ROUGE-L F1 [+8.0, +16.0] (paired bootstrap)."
)
FINE_TUNING_WINS = (
    "closed-book fine-tuning (sft_lora) beats retrieval (rag) on this knowledge task by "
    "+12.0 points of ROUGE-L F1 [+8.0, +16.0] (paired bootstrap)."
)
TIED = (
    "retrieval (rag) and closed-book fine-tuning (sft_lora) are tied on this knowledge task: "
    "Δ {} points of ROUGE-L F1 [{}, {}] (paired bootstrap)."
)


@pytest.mark.parametrize(
    ("pair", "difference", "message"),
    [
        (("rag", "sft_lora"), Difference(0.12, 0.08, 0.16), RETRIEVAL_WINS),
        (("rag", "sft_lora"), Difference(-0.12, -0.16, -0.08), FINE_TUNING_WINS),
        # the same pair stored the other way round: the same sentence
        (("sft_lora", "rag"), Difference(-0.12, -0.16, -0.08), RETRIEVAL_WINS),
        (("sft_lora", "rag"), Difference(0.12, 0.08, 0.16), FINE_TUNING_WINS),
        (("rag", "sft_lora"), Difference(0.01, -0.03, 0.05), TIED.format("+1.0", "-3.0", "+5.0")),
        (("sft_lora", "rag"), Difference(0.01, -0.03, 0.05), TIED.format("-1.0", "-5.0", "+3.0")),
    ],
)
def test_the_finding_names_the_winner_and_cites_the_paired_difference(
    pair: tuple[str, str], difference: Difference, message: str
) -> None:
    found = finding(evidence(PROMPT, LORA, RAG, pairs={pair: difference}), "rag")
    assert (found.fired, found.effect, found.other) == (True, "flag", "sft_lora")
    assert found.message == message


def test_the_difference_to_the_best_serves_when_no_pair_was_stored() -> None:
    rag = {**RAG, "vs_best": {"difference": -0.12, "low": -0.16, "high": -0.08}}
    comparison = {"task": "generation", "metric": "rougeL", "best": "sft_lora"}
    runs = {n: (n, get_strategy(n).profile) for n in ("sft_lora", "rag")}
    ev = evidence_from_comparison({**comparison, "rows": [LORA, rag]}, COSTS, runs)
    assert finding(ev, "rag").message == FINE_TUNING_WINS


def test_without_a_paired_difference_the_intervals_decide_and_it_says_so() -> None:
    found = finding(evidence(LORA, RAG), "rag")  # CIs [32, 38] and [52, 58]: apart
    assert found.message == (
        "retrieval (rag) beats closed-book fine-tuning (sft_lora) on this knowledge task by "
        "+20.0 points of ROUGE-L F1 (unpaired CIs; no paired difference available)."
    )


def test_each_pair_is_cited_once_and_only_where_both_kinds_ran() -> None:
    full = row("sft_full", 0.30)
    pairs = {
        ("rag_sft", "sft_lora"): Difference(0.30, 0.25, 0.35),
        ("rag", "sft_lora"): Difference(0.20, 0.15, 0.25),
        ("rag_sft", "sft_full"): Difference(0.35, 0.30, 0.40),
    }
    ev = evidence(PROMPT, FEW_SHOT, full, LORA, RAG, RAG_SFT, pairs=pairs)
    fired = {
        f.subject: f.other for c in ev.candidates if (f := retrieval_vs_fine_tuning(c, ev)).fired
    }
    # each retrieval run against the best closed-book fine-tuned run, and the other
    # closed-book fine-tuned run against the best retrieval run; the prompts against nothing
    assert fired == {"rag": "sft_lora", "rag_sft": "sft_lora", "sft_full": "rag_sft"}
    assert finding(ev, "rag_sft").message.startswith(
        "retrieval with fine-tuning (rag_sft) beats closed-book fine-tuning (sft_lora) on this "
        "knowledge task by +30.0 points of ROUGE-L F1 [+25.0, +35.0]"
    )
    assert finding(ev, "sft_full").message.startswith(
        "retrieval with fine-tuning (rag_sft) beats closed-book fine-tuning (sft_full)"
    )
    for name in ("prompt", "few_shot", "sft_lora"):
        assert not finding(ev, name).fired
    closed_book = evidence(PROMPT, FEW_SHOT, LORA)
    assert finding(closed_book, "sft_lora").message == "no retrieval run"
    untrained = evidence(PROMPT, RAG)
    assert finding(untrained, "rag").message == "no closed-book fine-tuned run"


def test_candidates_carry_whether_their_strategy_retrieves() -> None:
    runs = {n: (n, get_strategy(n).profile) for n in ("prompt", "sft_lora", "rag", "rag_sft")}
    comparison = {"task": "generation", "metric": "rougeL", "rows": [PROMPT, LORA, RAG, RAG_SFT]}
    retrieves = {c.name: c.retrieves for c in candidates_from_comparison(comparison, COSTS, runs)}
    assert retrieves == {"prompt": False, "sft_lora": False, "rag": True, "rag_sft": True}


def test_a_run_is_held_against_the_prompted_baseline_that_answers_as_it_does() -> None:
    pairs = {
        ("sft_lora", "prompt"): Difference(0.15, 0.10, 0.20),
        ("sft_lora", "few_shot"): Difference(0.10, 0.05, 0.15),
        ("sft_lora", "rag"): Difference(-0.20, -0.25, -0.15),
        ("rag_sft", "rag"): Difference(0.10, 0.05, 0.15),
    }
    ev = evidence(PROMPT, FEW_SHOT, LORA, RAG, RAG_SFT, pairs=pairs)
    lora = next(c for c in ev.candidates if c.name == "sft_lora")
    # losing to retrieval is no process problem of a closed-book model: few_shot is its bar
    assert tuned_vs_prompted(lora, ev).other == "few_shot"
    assert not process_problem(lora, ev).fired
    # retrieval with fine-tuning is held against retrieval with a prompt
    rag_sft = next(c for c in ev.candidates if c.name == "rag_sft")
    assert tuned_vs_prompted(rag_sft, ev).message.startswith(
        "rag_sft beats the prompted rag: +10.0"
    )
    # with no prompted retrieval run, against the closed-book prompts
    ev = evidence(PROMPT, FEW_SHOT, RAG_SFT)
    rag_sft = next(c for c in ev.candidates if c.name == "rag_sft")
    assert tuned_vs_prompted(rag_sft, ev).other == "few_shot"


def test_the_rule_runs_with_the_other_quality_comparisons() -> None:
    names = [rule.__name__ for rule in RULES]
    assert names.index("retrieval_vs_fine_tuning") == names.index("process_problem") + 1
    pairs = {("rag", "sft_lora"): Difference(0.20, 0.15, 0.25)}
    decision = decide(evidence(PROMPT, LORA, RAG, pairs=pairs))
    assert [f.subject for f in decision.fired("retrieval_vs_fine_tuning")] == ["rag"]
