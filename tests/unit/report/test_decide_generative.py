"""The decision rules on generative comparison rows: quality is slot F1 (``slot_f1`` with
``slot_f1_ci``), the base is ``prompt``, the well-prompted base ``few_shot``, and rows carry
``forgetting`` and ``perplexity_ratio``. One test per rule, from rows shaped as
``adaptlab compare`` writes them (src/adaptlab/compare.py, ``_row``)."""

from __future__ import annotations

from typing import Any

import pytest

from adaptlab.profile import StrategyProfile
from adaptlab.report.decide import (
    DataFacts,
    Evidence,
    calibration_regression,
    candidates_from_comparison,
    cheaper_within_ci,
    data_facts,
    decide,
    evidence_from_comparison,
    forgetting_regression,
    process_problem,
    sampled_eval,
    too_little_data,
    tuned_vs_base,
    tuned_vs_prompted,
)
from adaptlab.strategies.base import get_strategy

COSTS = {"prompt": 1.0, "few_shot": 2.0, "sft_lora": 10.0, "sft_full": 40.0}


def difference(value: float, low: float, high: float) -> dict[str, Any]:
    return {"difference": value, "low": low, "high": high, "significant": low > 0 or high < 0}


def row(name: str, slot_f1: float, vs_best: dict[str, Any] | None, **more: Any) -> dict[str, Any]:
    """A generative leaderboard row; retention measured (unchanged) unless overridden."""
    return {
        "strategy": name,
        "task": "generative",
        "n": 500,
        "sampled": False,
        "slot_f1": slot_f1,
        "slot_f1_ci": [slot_f1 - 0.03, slot_f1 + 0.03],
        "slot_precision": slot_f1,
        "slot_recall": slot_f1,
        "json_valid_rate": 0.99,
        "exact_match": slot_f1 - 0.1,
        "latency_batch1_p50_ms": 400.0,
        "forgetting": 0.0,
        "instruction_pass_rate": 0.8,
        "perplexity": 20.0,
        "perplexity_ratio": 1.0,
        "vs_best": vs_best,
        **more,
    }


def comparison(*rows: dict[str, Any], best: str = "sft_full") -> dict[str, Any]:
    return {"task": "generative", "metric": "slot_f1", "best": best, "rows": list(rows)}


def declared(*rows: dict[str, Any]) -> dict[str, tuple[str, StrategyProfile | None]]:
    """Each row's run -> its strategy and declared profile, as its manifest records them."""
    names = [str(r["strategy"]) for r in rows]
    return {name: (name, get_strategy(name).profile) for name in names}


def evidence(*rows: dict[str, Any], best: str = "sft_full", **more: Any) -> Evidence:
    more.setdefault("runs", declared(*rows))
    return evidence_from_comparison(comparison(*rows, best=best), total_costs=COSTS, **more)


def find(ev: Evidence, name: str) -> Any:
    return next(c for c in ev.candidates if c.name == name)


# Relative to the best, sft_full: the base prompt far below, few_shot well below, sft_lora tied.
PROMPT = row("prompt", 0.30, difference(-0.55, -0.60, -0.50), forgetting=None)
FEW_SHOT = row("few_shot", 0.60, difference(-0.25, -0.30, -0.20), forgetting=None)
LORA = row("sft_lora", 0.84, difference(-0.01, -0.03, 0.01))
FULL = row("sft_full", 0.85, None)


def test_generative_rows_become_candidates_on_slot_f1() -> None:
    prompt, few_shot, lora, full = candidates_from_comparison(
        comparison(PROMPT, FEW_SHOT, LORA, FULL), COSTS, declared(PROMPT, FEW_SHOT, LORA, FULL)
    )
    assert (prompt.kind_role, few_shot.kind_role, lora.kind_role) == ("base", "prompted", "tuned")
    assert lora.quality == 0.84 and lora.quality_ci == pytest.approx((0.81, 0.87))
    assert lora.forgetting == 0.0 and lora.perplexity_ratio == 1.0 and lora.ece is None
    assert full.vs_best is None and lora.total_cost == 10.0


def test_cheaper_within_ci_on_slot_f1() -> None:
    ev = evidence(PROMPT, FEW_SHOT, LORA, FULL)
    found = cheaper_within_ci(find(ev, "sft_full"), ev)
    assert found.fired and found.other == "sft_lora" and found.effect == "ranking"
    assert "on slot F1, +1.0 points [-1.0, +3.0] (paired bootstrap);" in found.message
    # sft_lora is not compared with sft_full (dearer); against the cheaper ones only CIs remain
    assert not cheaper_within_ci(find(ev, "prompt"), ev).fired


def test_tuned_vs_base_on_slot_f1() -> None:
    # Only the best's differences are known: prompt vs sft_full is paired, and significant.
    ev = evidence(PROMPT, FULL)
    assert not tuned_vs_base(find(ev, "sft_full"), ev).fired
    weak = row("sft_full", 0.31, None)
    ev = evidence(row("prompt", 0.30, difference(-0.01, -0.04, 0.02)), weak)
    found = tuned_vs_base(find(ev, "sft_full"), ev)
    assert found.fired and found.other == "prompt"
    assert "the training bought no measurable slot F1" in found.message


def test_tuned_vs_prompted_uses_few_shot_as_the_well_prompted_base() -> None:
    ev = evidence(FEW_SHOT, FULL)
    assert not tuned_vs_prompted(find(ev, "sft_full"), ev).fired
    tie = row("few_shot", 0.84, difference(-0.01, -0.03, 0.01))
    ev = evidence(tie, FULL)
    found = tuned_vs_prompted(find(ev, "sft_full"), ev)
    assert found.fired and found.other == "few_shot"


def test_process_problem_when_sft_beats_prompt_but_loses_to_few_shot() -> None:
    # few_shot is the best here; sft_lora beats the base prompt (unpaired CIs far apart)
    few_shot = row("few_shot", 0.80, None)
    lora = row("sft_lora", 0.60, difference(-0.20, -0.25, -0.15))
    prompt = row("prompt", 0.30, difference(-0.50, -0.55, -0.45))
    ev = evidence(prompt, few_shot, lora, best="few_shot")
    found = process_problem(find(ev, "sft_lora"), ev)
    assert found.fired and found.other == "few_shot"
    assert "likely a process problem" in found.message
    strong = evidence(PROMPT, FEW_SHOT, FULL)  # sft_full beats both
    assert not process_problem(find(strong, "sft_full"), strong).fired


def test_too_little_data_counts_chat_records() -> None:
    report = {"sources": {"train": {"format": "chat", "valid": 320, "after_dedup": 300}}}
    assert data_facts(report) == DataFacts(train_examples=300)
    ev = evidence(PROMPT, FULL, data_report=report)
    found = too_little_data(find(ev, "sft_full"), ev)
    assert found.fired and found.effect == "confidence"
    assert "300 training examples (needs 1,000)" in found.message
    assert not too_little_data(find(ev, "prompt"), ev).fired
    plenty = {"sources": {"train": {"format": "chat", "valid": 2000, "after_dedup": 2000}}}
    ev = evidence(PROMPT, FULL, data_report=plenty)
    assert not too_little_data(find(ev, "sft_full"), ev).fired


def test_calibration_regression_stays_quiet_without_calibration_numbers() -> None:
    ev = evidence(PROMPT, FULL)
    found = calibration_regression(find(ev, "sft_full"), ev)
    assert not found.fired  # generative rows carry no ECE: nothing to regress


def test_forgetting_regression_on_pass_rate_and_perplexity() -> None:
    forgot = row("sft_full", 0.85, None, forgetting=0.10)
    ev = evidence(PROMPT, forgot)
    found = forgetting_regression(find(ev, "sft_full"), ev)
    assert found.fired and "lost 10.0 points of general capability" in found.message
    confused = row("sft_full", 0.85, None, perplexity_ratio=1.4)
    ev = evidence(PROMPT, confused)
    found = forgetting_regression(find(ev, "sft_full"), ev)
    assert found.fired and "1.40× the base model's perplexity" in found.message
    ev = evidence(PROMPT, FULL)
    assert not forgetting_regression(find(ev, "sft_full"), ev).fired
    unmeasured = row("sft_full", 0.85, None, forgetting=None, perplexity_ratio=None)
    ev = evidence(PROMPT, unmeasured)
    assert "no forgetting measurement" in forgetting_regression(find(ev, "sft_full"), ev).message


def test_sampled_eval_on_generative_rows() -> None:
    sampled = row("few_shot", 0.6, difference(-0.25, -0.3, -0.2), sampled=True, n=100)
    ev = evidence(sampled, FULL)
    assert sampled_eval(find(ev, "few_shot"), ev).fired
    assert not sampled_eval(find(ev, "sft_full"), ev).fired


def test_decide_on_a_generative_comparison() -> None:
    report = {"sources": {"train": {"format": "chat", "after_dedup": 2000}}}
    forgetful_lora = {**LORA, "forgetting": 0.05}
    decision = decide(evidence(PROMPT, FEW_SHOT, forgetful_lora, FULL, data_report=report))
    # sft_full is not significantly better than the cheaper sft_lora, so sft_lora wins, with
    # its forgetting lowering the confidence one step
    assert decision.recommended == "sft_lora"
    assert decision.confidence == "medium"
    assert {f.subject for f in decision.fired("cheaper_within_ci")} >= {"sft_full"}
    assert decision.fired("forgetting_regression")[0].subject == "sft_lora"
