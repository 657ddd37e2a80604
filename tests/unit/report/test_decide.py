"""Decision rules, one test each for firing and not firing, and the recommendation they lead
to; all on hand-made candidates, no models."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from adaptlab.profile import StrategyProfile
from adaptlab.report.decide import (
    RULES,
    Candidate,
    DataFacts,
    DecisionConfig,
    Difference,
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

PLENTY = DataFacts(train_examples=9_932, classes=77, min_per_class=35)
BETTER = Difference(0.10, 0.07, 0.13)
TIE = Difference(0.01, -0.02, 0.04)
WORSE = Difference(-0.10, -0.13, -0.07)


def facts(**kinds: str) -> dict[str, tuple[str, StrategyProfile | None]]:
    """Run name -> (registered strategy, its declared profile), as run manifests record."""
    return {name: (kind, get_strategy(kind).profile) for name, kind in kinds.items()}


def make(name: str, quality: float, cost: float | None = None, **changes: Any) -> Candidate:
    """A candidate whose role and data need are what its strategy (``kind``, else ``name``)
    declares, as a run's manifest would say."""
    profile = get_strategy(str(changes.get("kind") or name)).profile
    values: dict[str, Any] = {
        "role": profile.role,
        "data_need": profile.data_need,
        "quality_ci": (quality - 0.02, quality + 0.02),
        "ece": 0.05,
        "confident_wrong_rate": 0.02,
        "n": 3080,
        "total_cost": cost,
        "latency_ms": 5.0,
    }
    return Candidate(name=name, quality=quality, **{**values, **changes})


BASE = make("zero_shot", 0.40, 1.0)
PROMPTED = make("llm_prompt", 0.70, 500.0)
LORA = make("lora", 0.88, 10.0)


def evidence(*candidates: Candidate, **changes: Any) -> Evidence:
    return Evidence(tuple(candidates), **changes)


def paired(**pairs: Difference) -> dict[tuple[str, str], Difference]:
    """``lora__zero_shot=BETTER`` -> {("lora", "zero_shot"): BETTER}."""
    result = {}
    for key, value in pairs.items():
        a, b = key.split("__")
        result[(a, b)] = value
    return result


# --------------------------------------------------------------------------- tuned_vs_base


def test_tuned_vs_base_fires_when_training_bought_nothing() -> None:
    found = tuned_vs_base(LORA, evidence(BASE, LORA, paired=paired(lora__zero_shot=TIE)))
    assert found.fired and found.effect == "flag" and found.other == "zero_shot"
    assert "not significantly better than the untrained base zero_shot" in found.message
    assert "+1.0 points [-2.0, +4.0] (paired bootstrap)" in found.message


def test_tuned_vs_base_quiet_when_tuned_wins_or_nothing_to_compare() -> None:
    won = tuned_vs_base(LORA, evidence(BASE, LORA, paired=paired(lora__zero_shot=BETTER)))
    assert not won.fired and won.effect == "none"
    assert not tuned_vs_base(BASE, evidence(BASE, LORA)).fired  # the base is not tuned
    assert not tuned_vs_base(LORA, evidence(LORA)).fired  # no base run


# --------------------------------------------------------------------------- tuned_vs_prompted


def test_tuned_vs_prompted_fires_when_a_prompt_does_as_well() -> None:
    found = tuned_vs_prompted(LORA, evidence(PROMPTED, LORA, paired=paired(llm_prompt__lora=TIE)))
    assert found.fired and found.other == "llm_prompt"
    assert "-1.0 points [-4.0, +2.0]" in found.message  # flipped: lora minus llm_prompt
    assert "is not significantly better than the prompted baseline" in found.message


def test_tuned_vs_prompted_says_worse_when_the_prompt_wins_significantly() -> None:
    found = tuned_vs_prompted(LORA, evidence(PROMPTED, LORA, paired=paired(lora__llm_prompt=WORSE)))
    assert found.fired and "lora is worse than the prompted baseline llm_prompt" in found.message


def test_tuned_vs_prompted_compares_with_the_strongest_prompted_baseline() -> None:
    knn = make("knn", 0.90, 2.0)
    found = tuned_vs_prompted(LORA, evidence(PROMPTED, knn, LORA, paired=paired(lora__knn=TIE)))
    assert found.fired and found.other == "knn"
    won = tuned_vs_prompted(LORA, evidence(PROMPTED, LORA, paired=paired(lora__llm_prompt=BETTER)))
    assert not won.fired


# --------------------------------------------------------------------------- process_problem


def test_process_problem_fires_when_tuned_beats_base_but_loses_to_the_prompt() -> None:
    weak = make("full", 0.60, 20.0)
    pairs = paired(full__zero_shot=BETTER, full__llm_prompt=WORSE)
    found = process_problem(weak, evidence(BASE, PROMPTED, weak, paired=pairs))
    assert found.fired and found.effect == "flag"
    assert "likely a process problem" in found.message


def test_process_problem_quiet_when_tuned_also_beats_the_prompt_or_not_the_base() -> None:
    pairs = paired(lora__zero_shot=BETTER, lora__llm_prompt=BETTER)
    assert not process_problem(LORA, evidence(BASE, PROMPTED, LORA, paired=pairs)).fired
    pairs = paired(lora__zero_shot=TIE, lora__llm_prompt=WORSE)
    assert not process_problem(LORA, evidence(BASE, PROMPTED, LORA, paired=pairs)).fired
    assert not process_problem(LORA, evidence(BASE, LORA)).fired  # no prompted baseline


# --------------------------------------------------------------------------- cheaper_within_ci


def test_cheaper_within_ci_fires_against_a_cheaper_strategy_of_equal_quality() -> None:
    full = make("full", 0.885, 40.0)
    found = cheaper_within_ci(full, evidence(LORA, full, paired=paired(full__lora=TIE)))
    assert found.fired and found.effect == "ranking" and found.other == "lora"
    assert "cost $40.00 against $10.00" in found.message
    assert "is not significantly better than it" in found.message


def test_cheaper_within_ci_says_worse_when_the_dearer_one_is_significantly_worse() -> None:
    full = make("full", 0.78, 40.0)
    found = cheaper_within_ci(full, evidence(LORA, full, paired=paired(full__lora=WORSE)))
    assert found.fired and found.other == "lora"
    assert "is worse than it" in found.message and "not significantly" not in found.message


def test_cheaper_within_ci_quiet_when_significantly_better_than_every_cheaper_one() -> None:
    pairs = paired(lora__zero_shot=BETTER)
    assert not cheaper_within_ci(LORA, evidence(BASE, LORA, paired=pairs)).fired
    # nothing is cheaper than the cheapest
    assert not cheaper_within_ci(BASE, evidence(BASE, LORA, paired=pairs)).fired


def test_cheaper_within_ci_compares_latency_when_neither_cost_is_known() -> None:
    fast = make("frozen", 0.80, None, latency_ms=3.0)
    slow = make("knn", 0.81, None, latency_ms=9.0)
    found = cheaper_within_ci(slow, evidence(fast, slow, paired=paired(knn__frozen=TIE)))
    assert found.fired and found.other == "frozen"
    assert not cheaper_within_ci(fast, evidence(fast, slow, paired=paired(knn__frozen=TIE))).fired
    # equal known costs are a tie, whatever the latency: neither is cheaper
    same = evidence(replace(fast, total_cost=2.0), replace(slow, total_cost=2.0))
    assert not cheaper_within_ci(replace(slow, total_cost=2.0), same).fired


def test_cheaper_within_ci_uses_the_difference_to_the_best_or_unpaired_intervals() -> None:
    full = make("full", 0.885, 40.0)
    lora = replace(LORA, vs_best=Difference(-0.005, -0.02, 0.01))  # lora minus full
    found = cheaper_within_ci(full, evidence(lora, full, best="full"))
    assert found.fired and "(paired bootstrap)" in found.message
    # neither is the best and no paired difference: the intervals overlap, so a tie
    found = cheaper_within_ci(full, evidence(LORA, full))
    assert found.fired and "unpaired CIs; no paired difference available" in found.message


# --------------------------------------------------------------------------- too_little_data


def test_too_little_data_fires_for_fine_tuning_on_few_examples() -> None:
    small = DataFacts(train_examples=300, classes=3, min_per_class=100)
    found = too_little_data(LORA, evidence(LORA, data=small))
    assert found.fired and found.effect == "confidence"
    assert "300 training examples (needs 1,000)" in found.message


def test_too_little_data_fires_for_a_thin_class_and_is_quiet_with_plenty() -> None:
    thin = DataFacts(train_examples=5_000, classes=20, min_per_class=4)
    setfit = make("setfit", 0.85, 5.0)
    assert too_little_data(setfit, evidence(setfit, data=thin)).fired
    assert not too_little_data(LORA, evidence(LORA, data=PLENTY)).fired
    assert not too_little_data(BASE, evidence(BASE, data=thin)).fired  # needs no data
    assert not too_little_data(LORA, evidence(LORA)).fired  # no data report


def test_too_little_data_uses_the_kind_of_a_renamed_run() -> None:
    renamed = make("setfit_k8", 0.85, 5.0, kind="setfit")
    thin = DataFacts(train_examples=5_000, classes=20, min_per_class=4)
    assert too_little_data(renamed, evidence(renamed, data=thin)).fired


# --------------------------------------------------------------------------- calibration


def test_calibration_regression_fires_on_much_worse_ece_or_confidently_wrong_rate() -> None:
    overconfident = replace(LORA, ece=0.15)
    found = calibration_regression(overconfident, evidence(BASE, overconfident))
    assert found.fired and "ECE 0.150 against 0.050" in found.message
    fluent = replace(LORA, confident_wrong_rate=0.12)
    found = calibration_regression(fluent, evidence(BASE, fluent))
    assert found.fired and "confidently wrong on 12.0% of examples against 2.0%" in found.message


def test_calibration_regression_quiet_within_the_thresholds_or_without_a_base() -> None:
    slightly = replace(LORA, ece=0.08, confident_wrong_rate=0.05)
    assert not calibration_regression(slightly, evidence(BASE, slightly)).fired
    strict = DecisionConfig(ece_regression=0.01)
    assert calibration_regression(slightly, evidence(BASE, slightly, settings=strict)).fired
    assert not calibration_regression(replace(LORA, ece=0.9), evidence(LORA)).fired
    assert not calibration_regression(replace(LORA, ece=None), evidence(BASE, LORA)).fired


# --------------------------------------------------------------------------- forgetting


def test_forgetting_regression_fires_when_measured_and_large() -> None:
    forgot = replace(LORA, forgetting=0.05)
    found = forgetting_regression(forgot, evidence(forgot))
    assert found.fired and "lost 5.0 points of general capability" in found.message


def test_forgetting_regression_quiet_when_small_or_absent() -> None:
    assert not forgetting_regression(replace(LORA, forgetting=0.01), evidence(LORA)).fired
    absent = forgetting_regression(LORA, evidence(LORA))
    assert not absent.fired and "no forgetting measurement" in absent.message


# --------------------------------------------------------------------------- sampled_eval


def test_sampled_eval_fires_only_for_a_sample() -> None:
    sampled = replace(PROMPTED, sampled=True, n=200)
    found = sampled_eval(sampled, evidence(sampled))
    assert found.fired and "scored on 200 eval examples only" in found.message
    assert not sampled_eval(PROMPTED, evidence(PROMPTED)).fired


# --------------------------------------------------------------------------- decide


def leaderboard() -> Evidence:
    """Six strategies; lora is significantly better than everything cheaper, full and frozen
    are not significantly better than cheaper ones, llm_prompt is worse and dearest."""
    knn = make("knn", 0.80, 2.0)
    frozen = make("frozen", 0.82, 2.5)
    full = make("full", 0.885, 40.0)
    lora = replace(LORA, vs_best=Difference(-0.005, -0.02, 0.01))
    pairs = paired(
        knn__zero_shot=BETTER,
        frozen__zero_shot=BETTER,
        frozen__knn=TIE,
        lora__zero_shot=BETTER,
        lora__knn=BETTER,
        lora__frozen=BETTER,
        lora__llm_prompt=BETTER,
    )
    candidates = (BASE, knn, frozen, lora, full, PROMPTED)
    return Evidence(candidates, best="full", paired=pairs, data=PLENTY)


def test_decide_recommends_the_dearest_strategy_that_a_significant_gain_justifies() -> None:
    decision = decide(leaderboard())
    assert decision.recommended == "lora"
    assert decision.runner_up == "knn"
    assert decision.ranking == ("lora", "knn", "zero_shot", "full", "frozen", "llm_prompt")
    assert decision.confidence == "high"
    demoted = {f.subject: f.other for f in decision.fired("cheaper_within_ci")}
    # each is cited against the most accurate cheaper strategy it does not beat
    assert demoted == {"frozen": "knn", "full": "lora", "llm_prompt": "full"}
    reasons = {(f.rule, f.subject) for f in decision.reasons}
    assert ("cheaper_within_ci", "full") in reasons  # the more accurate run it beat on cost
    assert len(decision.findings) == len(RULES) * 6


def test_decide_lowers_confidence_for_each_doubt_about_the_recommendation() -> None:
    base = leaderboard()
    small = DataFacts(train_examples=600, classes=77, min_per_class=4)
    doubtful = replace(base, data=small)
    assert decide(doubtful).confidence == "medium"  # too_little_data
    sampled = tuple(replace(c, sampled=True) if c.name == "lora" else c for c in base.candidates)
    assert decide(replace(doubtful, candidates=sampled)).confidence == "low"


def test_decide_with_one_strategy_and_bad_input() -> None:
    decision = decide(Evidence((BASE,)))
    assert (decision.recommended, decision.runner_up) == ("zero_shot", None)
    with pytest.raises(ValueError, match="no strategies"):
        decide(Evidence(()))
    with pytest.raises(ValueError, match="names repeat"):
        decide(Evidence((BASE, BASE)))


# --------------------------------------------------------------------------- inputs


def comparison_json() -> dict[str, Any]:
    """The shape `adaptlab compare` writes (src/adaptlab/compare.py, `_row`)."""

    def row(name: str, accuracy: float, vs_best: dict[str, Any] | None, **more: Any) -> dict:
        return {
            "strategy": name,
            "n": 3080,
            "sampled": False,
            "accuracy": accuracy,
            "accuracy_ci": [accuracy - 0.015, accuracy + 0.015],
            "macro_f1": accuracy - 0.01,
            "ece": 0.04,
            "confident_wrong_rate": 0.03,
            "vs_best": vs_best,
            "latency_batch1_p50_ms": 6.0,
            "latency_batch1_p95_ms": 9.0,
            "latency_batch32_per_example_ms": 1.0,
            "size_on_disk_bytes": 90_000_000,
            "trainable_params": 0,
            "total_params": 22_713_216,
            "fit_wall_s": 70.0,
            "peak_memory_bytes": 1_000_000_000,
            **more,
        }

    knn_vs = {"difference": 0.0, "low": -0.01, "high": 0.012, "significant": False, "n": 3080}
    zero_vs = {"difference": -0.4, "low": -0.42, "high": -0.38, "significant": True, "n": 3080}
    return {
        "best": "knn_k10",
        "eval_sha256": "abc",
        "confidence": 0.95,
        "rows": [
            row("knn_k10", 0.85, None),
            row("knn_k5", 0.85, knn_vs),
            row("zero_shot", 0.45, zero_vs, sampled=True, n=200),
        ],
        "problems": [],
    }


def test_candidates_are_built_from_comparison_rows() -> None:
    costs = {"knn_k10": 3.0, "knn_k5": 2.0, "zero_shot": 1.0}
    runs = facts(knn_k10="knn", knn_k5="knn", zero_shot="zero_shot")
    candidates = candidates_from_comparison(comparison_json(), costs, runs)
    k10, k5, zero = candidates
    assert (k10.strategy, k10.kind_role, k10.total_cost, k10.vs_best) == (
        "knn",
        "prompted",
        3.0,
        None,
    )
    assert k5.vs_best == Difference(0.0, -0.01, 0.012) and k5.latency_ms == 6.0
    assert zero.kind_role == "base" and zero.sampled and zero.n == 200
    assert k10.forgetting is None  # classification rows carry no forgetting numbers


def test_evidence_from_comparison_decides_with_vs_best_differences() -> None:
    report = {"labels": {"train_counts": {"a": 40, "b": 60}}}
    ev = evidence_from_comparison(
        comparison_json(),
        total_costs={"knn_k10": 3.0, "knn_k5": 2.0, "zero_shot": 1.0},
        runs=facts(knn_k10="knn", knn_k5="knn", zero_shot="zero_shot"),
        data_report=report,
    )
    assert ev.data == DataFacts(train_examples=100, classes=2, min_per_class=40)
    decision = decide(ev)
    # knn_k10 is the best but not significantly better than the cheaper knn_k5
    assert decision.recommended == "knn_k5"
    assert {f.subject for f in decision.fired("cheaper_within_ci")} == {"knn_k10"}


def test_data_facts_needs_label_counts() -> None:
    assert data_facts({"labels": {}}) is None
    assert data_facts({"labels": {"train_counts": {"x": 3}}}) == DataFacts(3, 1, 3)
