"""Decision rules: from measured quality and projected cost to one recommendation, with reasons.

Each rule is a small named function ``rule(candidate, evidence) -> Finding``: it says whether it
fired for that strategy, why, and what firing does (``ranking``: the strategy loses its place
to another; ``confidence``: trust in it is lower; ``flag``: reported, nothing changes). The
report cites fired rules by name.

Quality is the comparison's primary metric: accuracy for classification runs, micro slot F1
for slot extraction, the configured free-text metric (ROUGE-L F1 by default) for free text
(``comparison.json``'s ``metric``); every rule reads it the same way.

The ranking follows one rule, ``cheaper_within_ci``: a strategy whose quality is not
significantly better (paired-bootstrap CI of the difference includes 0) than a cheaper one's
loses to the cheaper one. Cheaper means a lower projected total cost (training + re-tuning +
serving, :mod:`adaptlab.cost.projection`), and on a tie a lower latency. The strategies no
rule demotes form a frontier along which each dearer one is significantly better than every
cheaper one; the recommendation is the dearest of them — the most quality that a significant
difference shows to be worth paying for — and the runner-up is the next one down the frontier
(or, with a frontier of one, the best of the rest).

Inputs are plain dataclasses built from ``comparison.json`` rows and cost facts
(:func:`candidates_from_comparison`), so every rule is testable without a model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le
from pydantic import Field

from adaptlab.comparison import METRIC_WORDS as COMPARISON_WORDS
from adaptlab.comparison import Difference
from adaptlab.config import Section
from adaptlab.profile import DataNeed, Role, StrategyProfile

RunFacts = tuple[str, StrategyProfile | None]
"""A run's registered strategy and the profile its manifest recorded (``None``: unknown)."""

Effect = Literal["ranking", "confidence", "flag", "none"]
Outcome = Literal["better", "worse", "tie"]
Confidence = Literal["high", "medium", "low"]

METRIC_WORDS: dict[str, str] = {**COMPARISON_WORDS, "slot_f1": "slot F1"}
"""How the rules' messages name each primary metric of ``comparison.json``."""


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Candidate:
    """One strategy's measured quality and projected cost."""

    name: str
    quality: float
    """The primary metric: accuracy, micro slot F1, or a free-text metric (0-1)."""
    quality_ci: tuple[float, float]
    kind: str = ""
    """The registered strategy it ran (a run may be named otherwise, e.g. ``setfit_k8``)."""
    role: Role | None = None
    """base, prompted or tuned, as its strategy declared (run manifest); empty: tuned."""
    data_need: DataNeed | None = None
    """The training data its strategy declared it needs; empty: no size guidance."""
    ece: float | None = None
    confident_wrong_rate: float | None = None
    n: int | None = None
    sampled: bool = False
    latency_ms: float | None = None
    total_cost: float | None = None
    """Projected total cost of deployment in dollars (training + re-tuning + serving)."""
    vs_best: Difference | None = None
    """This strategy minus the comparison's best (``None`` for the best itself)."""
    forgetting: float | None = None
    """Drop of a general-capability score against the base model, in absolute points
    (positive: worse); ``None`` where it was not measured (classification runs)."""
    perplexity_ratio: float | None = None
    """Held-out perplexity over the base model's (above 1: worse); ``None`` where it was not
    measured."""
    retrieves: bool = False
    """It answers from the experiment's document collection, as its strategy declared."""

    @property
    def strategy(self) -> str:
        return self.kind or self.name

    @property
    def kind_role(self) -> Role:
        return self.role or "tuned"


@dataclass(frozen=True)
class DataFacts:
    """The size of the training data, from the data report."""

    train_examples: int
    classes: int | None = None
    """Classes and the smallest class's size: ``None`` for data without labels (chat)."""
    min_per_class: int | None = None


class DecisionConfig(Section):
    """Thresholds of the decision rules."""

    ece_regression: Annotated[float, Gt(0), Le(1)] = Field(
        0.05,
        description="Flag a strategy whose expected calibration error exceeds the base "
        "model's by at least this much (absolute).",
    )
    confident_wrong_regression: Annotated[float, Gt(0), Le(1)] = Field(
        0.05,
        description="Flag a strategy whose confidently-wrong rate exceeds the base model's by "
        "at least this much (absolute share of eval examples).",
    )
    forgetting_regression: Annotated[float, Ge(0), Le(1)] = Field(
        0.02,
        description="Flag a strategy whose general-capability score drops by at least this "
        "much against the base model.",
    )
    perplexity_regression: Annotated[float, Gt(1)] = Field(
        1.1,
        description="Flag a strategy whose held-out perplexity is at least this many times the "
        "base model's (generative runs).",
    )


_OPPOSITE: dict[Outcome, Outcome] = {"better": "worse", "worse": "better", "tie": "tie"}


@dataclass(frozen=True)
class Verdict:
    """How one strategy's quality compares with another's, and on what evidence."""

    outcome: Outcome
    difference: float
    low: float | None
    high: float | None
    basis: Literal["paired bootstrap", "unpaired CIs"]

    def flipped(self) -> Verdict:
        """The same comparison the other way round (``b`` against ``a``)."""
        outcome = _OPPOSITE[self.outcome]
        low = None if self.high is None else -self.high
        high = None if self.low is None else -self.low
        return Verdict(outcome, -self.difference, low, high, self.basis)

    def describe(self) -> str:
        points = f"{self.difference * 100:+.1f} points"
        if self.low is None or self.high is None:
            return f"{points} ({self.basis}; no paired difference available)"
        return f"{points} [{self.low * 100:+.1f}, {self.high * 100:+.1f}] ({self.basis})"


@dataclass(frozen=True)
class Evidence:
    """Everything the rules look at."""

    candidates: tuple[Candidate, ...]
    best: str | None = None
    """The strategy every ``vs_best`` difference is measured against."""
    paired: Mapping[tuple[str, str], Difference] = field(default_factory=dict)
    """Extra paired differences, ``(a, b) -> a - b``, beyond those to the best."""
    data: DataFacts | None = None
    settings: DecisionConfig = field(default_factory=DecisionConfig)
    metric: str = "accuracy"
    """The quality metric's name in messages (:data:`METRIC_WORDS`)."""

    def base(self) -> Candidate | None:
        """The base model unchanged (the best, should there be several)."""
        return _best(c for c in self.candidates if c.kind_role == "base")

    def prompted(self, retrieves: bool = False) -> Candidate | None:
        """The strongest prompted baseline a run that does (``retrieves``) or does not answer
        from documents is held against: a closed-book run against closed-book prompts only,
        since no training puts unseen documents into a model (losing to retrieval on
        questions about them is no process problem); a retrieval run against retrieval with
        a prompt (what its training added), else against the closed-book prompts."""
        prompted = [c for c in self.candidates if c.kind_role == "prompted"]
        alike = [c for c in prompted if c.retrieves == retrieves]
        return _best(alike or ([c for c in prompted if not c.retrieves] if retrieves else []))

    def closed_book_tuned(self) -> Candidate | None:
        """The strongest run that trains and answers without documents."""
        return _best(c for c in self.candidates if c.kind_role == "tuned" and not c.retrieves)

    def retrieving(self) -> Candidate | None:
        """The strongest run that answers from the document collection."""
        return _best(c for c in self.candidates if c.retrieves)

    def compare(self, a: Candidate, b: Candidate) -> Verdict:
        """``a`` against ``b``: paired bootstrap where known, else overlap of the two CIs."""
        difference = self._paired(a, b)
        if difference is not None:
            outcome: Outcome = "tie"
            if difference.significant:
                outcome = "better" if difference.difference > 0 else "worse"
            return Verdict(
                outcome, difference.difference, difference.low, difference.high, "paired bootstrap"
            )
        # Two intervals that overlap may still differ significantly when paired; this fallback
        # errs towards "tie", so towards the cheaper strategy.
        overlap = a.quality_ci[0] <= b.quality_ci[1] and b.quality_ci[0] <= a.quality_ci[1]
        gap = a.quality - b.quality
        outcome = "tie" if overlap else ("better" if gap > 0 else "worse")
        return Verdict(outcome, gap, None, None, "unpaired CIs")

    def _paired(self, a: Candidate, b: Candidate) -> Difference | None:
        if (a.name, b.name) in self.paired:
            return self.paired[(a.name, b.name)]
        if (b.name, a.name) in self.paired:
            return self.paired[(b.name, a.name)].flipped()
        if b.name == self.best and a.vs_best is not None:
            return a.vs_best
        if a.name == self.best and b.vs_best is not None:
            return b.vs_best.flipped()
        return None


def cost_key(candidate: Candidate) -> tuple[float, float]:
    """Lower is cheaper: projected total cost, then latency; unknown counts as dearest."""
    cost = math.inf if candidate.total_cost is None else candidate.total_cost
    latency = math.inf if candidate.latency_ms is None else candidate.latency_ms
    return cost, latency


def cheaper(a: Candidate, b: Candidate) -> bool:
    return cost_key(a) < cost_key(b)


def _best(candidates: Iterable[Candidate]) -> Candidate | None:
    return max(candidates, key=lambda c: c.quality, default=None)


# --------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class Finding:
    """What one rule says about one strategy."""

    rule: str
    subject: str
    fired: bool
    effect: Effect
    message: str
    other: str | None = None
    """The strategy the subject was compared with, if any."""


Rule = Callable[[Candidate, Evidence], Finding]


def _finding(
    rule: str,
    subject: Candidate,
    fired: bool,
    effect: Effect,
    message: str,
    other: str | None = None,
) -> Finding:
    return Finding(rule, subject.name, fired, effect if fired else "none", message, other)


def tuned_vs_base(candidate: Candidate, evidence: Evidence) -> Finding:
    """A tuned model must beat the base model it started from, or the training bought nothing."""
    rule = "tuned_vs_base"
    base = evidence.base()
    if candidate.kind_role != "tuned" or base is None:
        why = "not a tuned model" if base is not None else "no base (zero-shot) run to compare"
        return _finding(rule, candidate, False, "none", why)
    verdict = evidence.compare(candidate, base)
    if verdict.outcome == "better":
        message = f"{candidate.name} beats the base {base.name}: {verdict.describe()}."
        return _finding(rule, candidate, False, "none", message, base.name)
    message = (
        f"{candidate.name} is not significantly better than the untrained base {base.name}: "
        f"{verdict.describe()}; the training bought no measurable {evidence.metric}."
    )
    return _finding(rule, candidate, True, "flag", message, base.name)


def tuned_vs_prompted(candidate: Candidate, evidence: Evidence) -> Finding:
    """A tuned model is measured against the best prompted baseline, not only the bare base."""
    rule = "tuned_vs_prompted"
    prompted = evidence.prompted(candidate.retrieves)
    if candidate.kind_role != "tuned" or prompted is None:
        why = "not a tuned model" if prompted is not None else "no prompted baseline run"
        return _finding(rule, candidate, False, "none", why)
    verdict = evidence.compare(candidate, prompted)
    if verdict.outcome == "better":
        message = f"{candidate.name} beats the prompted {prompted.name}: {verdict.describe()}."
        return _finding(rule, candidate, False, "none", message, prompted.name)
    how = "is not significantly better than" if verdict.outcome == "tie" else "is worse than"
    message = f"{candidate.name} {how} the prompted baseline {prompted.name}: {verdict.describe()}."
    return _finding(rule, candidate, True, "flag", message, prompted.name)


def process_problem(candidate: Candidate, evidence: Evidence) -> Finding:
    """Beating the base but losing to the prompted base points at the tuning recipe, not the
    method: a tuned model should at least match what a good prompt gets from a base model."""
    rule = "process_problem"
    base, prompted = evidence.base(), evidence.prompted(candidate.retrieves)
    if candidate.kind_role != "tuned" or base is None or prompted is None:
        return _finding(rule, candidate, False, "none", "needs a tuned model, a base and a prompt")
    over_base = evidence.compare(candidate, base)
    over_prompted = evidence.compare(candidate, prompted)
    fired = over_base.outcome == "better" and over_prompted.outcome == "worse"
    if not fired:
        message = (
            f"{candidate.name} does not both beat the base {base.name} and lose to the prompted "
            f"{prompted.name}."
        )
        return _finding(rule, candidate, False, "none", message, prompted.name)
    message = (
        f"{candidate.name} beats the base {base.name} ({over_base.describe()}) but loses to the "
        f"prompted {prompted.name} ({over_prompted.describe()}): likely a process problem "
        "(learning rate, epochs, label mapping, truncation or too little data), not a limit of "
        "the method."
    )
    return _finding(rule, candidate, True, "flag", message, prompted.name)


def retrieval_vs_fine_tuning(candidate: Candidate, evidence: Evidence) -> Finding:
    """Answering from the documents against training the knowledge into the model, on the
    same questions ("RAG for knowledge, fine-tuning for behaviour" put to the test).

    Each retrieval run is held against the best closed-book fine-tuned run, and each other
    closed-book fine-tuned run against the best retrieval run, so no pair is cited twice. The
    paired difference is cited whichever side wins; the finding changes nothing, since cost
    decides between the two as between any others (``cheaper_within_ci``)."""
    rule = "retrieval_vs_fine_tuning"
    tuned, retrieving = evidence.closed_book_tuned(), evidence.retrieving()
    if tuned is None or retrieving is None:
        why = "no closed-book fine-tuned run" if tuned is None else "no retrieval run"
        return _finding(rule, candidate, False, "none", why)
    if candidate.retrieves:
        documents, closed, other = candidate, tuned, tuned.name
    elif candidate.kind_role == "tuned" and candidate.name != tuned.name:
        documents, closed, other = retrieving, candidate, retrieving.name
    elif candidate.name == tuned.name:
        return _finding(rule, candidate, False, "none", "cited in the retrieval runs' findings")
    else:
        return _finding(rule, candidate, False, "none", "neither retrieves nor fine-tunes")
    message = _retrieval_verdict(documents, closed, evidence)
    return _finding(rule, candidate, True, "flag", message, other)


def _retrieval_verdict(documents: Candidate, closed: Candidate, evidence: Evidence) -> str:
    """The winner first and by how much, with the interval of the paired difference; a tie
    gives the difference with its sign, retrieval minus fine-tuning."""
    verdict = evidence.compare(documents, closed)
    approach = "retrieval with fine-tuning" if documents.kind_role == "tuned" else "retrieval"
    retrieval = f"{approach} ({documents.name})"
    fine_tuning = f"closed-book fine-tuning ({closed.name})"
    if verdict.outcome == "tie":
        return (
            f"{retrieval} and {fine_tuning} are tied on this knowledge task: Δ "
            f"{_in_metric(verdict, evidence.metric)}."
        )
    if verdict.outcome == "better":
        winner, loser, won = retrieval, fine_tuning, verdict
    else:
        winner, loser, won = fine_tuning, retrieval, verdict.flipped()
    return f"{winner} beats {loser} on this knowledge task by {_in_metric(won, evidence.metric)}."


def _in_metric(verdict: Verdict, metric: str) -> str:
    """``+12.0 points of ROUGE-L F1 [+8.0, +16.0] (paired bootstrap)``."""
    points = f"{verdict.difference * 100:+.1f} points of {metric}"
    if verdict.low is None or verdict.high is None:
        return f"{points} ({verdict.basis}; no paired difference available)"
    return f"{points} [{verdict.low * 100:+.1f}, {verdict.high * 100:+.1f}] ({verdict.basis})"


def cheaper_within_ci(candidate: Candidate, evidence: Evidence) -> Finding:
    """A strategy not significantly better than a cheaper one loses to the cheaper one."""
    rule = "cheaper_within_ci"
    rivals = [
        (other, evidence.compare(candidate, other))
        for other in evidence.candidates
        if other.name != candidate.name and cheaper(other, candidate)
    ]
    matched = [(other, v) for other, v in rivals if v.outcome != "better"]
    if not matched:
        message = (
            f"{candidate.name} has significantly higher {evidence.metric} than every cheaper "
            "strategy."
        )
        return _finding(rule, candidate, False, "none", message)
    other, verdict = max(matched, key=lambda pair: pair[0].quality)
    how = "is not significantly better than" if verdict.outcome == "tie" else "is worse than"
    message = (
        f"{candidate.name} loses to the cheaper {other.name}: it {how} it on "
        f"{evidence.metric}, {verdict.describe()}; "
        f"cost {_money(candidate.total_cost)} against {_money(other.total_cost)}."
    )
    return _finding(rule, candidate, True, "ranking", message, other.name)


def too_little_data(candidate: Candidate, evidence: Evidence) -> Finding:
    """Less training data than a strategy needs makes its score less trustworthy."""
    rule = "too_little_data"
    need = candidate.data_need
    data = evidence.data
    if data is None or need is None:
        why = "no data report" if data is None else f"no size guidance for {candidate.strategy}"
        return _finding(rule, candidate, False, "none", why)
    short = []
    if data.train_examples < need.examples:
        short.append(f"{data.train_examples:,} training examples (needs {need.examples:,})")
    # Chat data has no classes (``min_per_class`` None): only the example count applies.
    if data.min_per_class is not None and data.min_per_class < need.per_class:
        short.append(f"{data.min_per_class} in the smallest class (needs {need.per_class})")
    if not short:
        return _finding(rule, candidate, False, "none", f"enough data for {candidate.strategy}")
    message = f"{candidate.name} has {' and '.join(short)}: {need.why}."
    return _finding(rule, candidate, True, "confidence", message)


def calibration_regression(candidate: Candidate, evidence: Evidence) -> Finding:
    """Much worse calibration than the base means confident answers can no longer be trusted."""
    rule = "calibration_regression"
    base = evidence.base()
    if base is None or base.name == candidate.name:
        return _finding(rule, candidate, False, "none", "no base to compare calibration with")
    settings = evidence.settings
    worse = []
    ece_rise = _rise(candidate.ece, base.ece)
    if ece_rise is not None and ece_rise >= settings.ece_regression:
        worse.append(f"ECE {candidate.ece:.3f} against {base.ece:.3f}")
    wrong_rise = _rise(candidate.confident_wrong_rate, base.confident_wrong_rate)
    if wrong_rise is not None and wrong_rise >= settings.confident_wrong_regression:
        worse.append(
            f"confidently wrong on {candidate.confident_wrong_rate:.1%} of examples against "
            f"{base.confident_wrong_rate:.1%}"
        )
    if not worse:
        message = f"{candidate.name} is calibrated not much worse than the base {base.name}."
        return _finding(rule, candidate, False, "none", message, base.name)
    message = f"{candidate.name} is worse calibrated than the base {base.name}: {'; '.join(worse)}."
    return _finding(rule, candidate, True, "confidence", message, base.name)


def forgetting_regression(candidate: Candidate, evidence: Evidence) -> Finding:
    """Tuning that erodes the base model's general abilities is flagged where it is measured:
    a drop in the general-instruction pass rate, or a rise in held-out perplexity."""
    rule = "forgetting_regression"
    if candidate.forgetting is None and candidate.perplexity_ratio is None:
        message = f"no forgetting measurement for {candidate.name} (not measured for this task)"
        return _finding(rule, candidate, False, "none", message)
    settings = evidence.settings
    worse = []
    if candidate.forgetting is not None and candidate.forgetting >= settings.forgetting_regression:
        worse.append(
            f"lost {candidate.forgetting * 100:.1f} points of general capability against the "
            f"base model (threshold {settings.forgetting_regression * 100:.1f})"
        )
    ratio = candidate.perplexity_ratio
    if ratio is not None and ratio >= settings.perplexity_regression:
        worse.append(
            f"has {ratio:.2f}× the base model's perplexity on held-out general text "
            f"(threshold {settings.perplexity_regression:.2f}×)"
        )
    if not worse:
        message = f"{candidate.name} keeps the base model's general abilities."
        return _finding(rule, candidate, False, "none", message)
    return _finding(rule, candidate, True, "confidence", f"{candidate.name} {'; '.join(worse)}.")


def sampled_eval(candidate: Candidate, evidence: Evidence) -> Finding:
    """A score on a sample of the eval set has a wider interval than one on all of it."""
    rule = "sampled_eval"
    if not candidate.sampled:
        return _finding(rule, candidate, False, "none", f"{candidate.name} scored on every item")
    size = f"{candidate.n:,}" if candidate.n is not None else "a sample of"
    message = f"{candidate.name} was scored on {size} eval examples only (too slow for all)."
    return _finding(rule, candidate, True, "confidence", message)


RULES: tuple[Rule, ...] = (
    cheaper_within_ci,
    tuned_vs_base,
    tuned_vs_prompted,
    process_problem,
    retrieval_vs_fine_tuning,
    too_little_data,
    calibration_regression,
    forgetting_regression,
    sampled_eval,
)


def _rise(value: float | None, reference: float | None) -> float | None:
    return None if value is None or reference is None else value - reference


def _money(value: float | None) -> str:
    return "unknown" if value is None else f"${value:,.2f}"


# --------------------------------------------------------------------------- the decision


EFFECT_ORDER: tuple[Effect, ...] = ("ranking", "confidence", "flag", "none")
"""Effects from the one that changes most (the ranking) to the one that changes nothing."""


@dataclass(frozen=True)
class Decision:
    recommended: str
    runner_up: str | None
    confidence: Confidence
    ranking: tuple[str, ...]
    findings: tuple[Finding, ...]

    @property
    def reasons(self) -> tuple[Finding, ...]:
        """Fired findings about the recommendation, or about strategies that lost to it."""
        return tuple(
            f
            for f in self.findings
            if f.fired and (f.subject == self.recommended or f.other == self.recommended)
        )

    def fired(self, rule: str) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.fired and f.rule == rule)

    def by_priority(self) -> tuple[Finding, ...]:
        """Every fired finding, the most telling about this decision first (:meth:`priority`);
        ties keep the order the rules ran in, so the order is the same on every build."""
        fired = [f for f in self.findings if f.fired]
        return tuple(sorted(fired, key=self.priority))

    def priority(self, finding: Finding) -> tuple[int, int]:
        """Lower comes first: whom the finding is about, then what firing did.

        About the recommendation itself first (what a reader must know before adopting it),
        then about runs that lost to it (why it won), then about the runner-up (the
        alternative), then the rest; within each, a finding that moved the ranking before one
        that lowered confidence, before one that is only reported."""
        if finding.subject == self.recommended:
            whom = 0
        elif finding.other == self.recommended:
            whom = 1
        elif self.runner_up is not None and self.runner_up in (finding.subject, finding.other):
            whom = 2
        else:
            whom = 3
        return whom, EFFECT_ORDER.index(finding.effect)


def rank(evidence: Evidence, findings: Sequence[Finding]) -> list[Candidate]:
    """The frontier (no ``ranking`` rule fired), dearest first, then the rest by quality."""
    demoted = {f.subject for f in findings if f.fired and f.effect == "ranking"}
    frontier = [c for c in evidence.candidates if c.name not in demoted]
    rest = [c for c in evidence.candidates if c.name in demoted]
    frontier.sort(key=cost_key, reverse=True)
    rest.sort(key=lambda c: c.quality, reverse=True)
    return frontier + rest


def confidence(findings: Iterable[Finding], subject: str) -> Confidence:
    """High, lowered one step by each ``confidence`` finding about ``subject``."""
    lowered = sum(
        1 for f in findings if f.fired and f.effect == "confidence" and f.subject == subject
    )
    levels: tuple[Confidence, ...] = ("high", "medium", "low")
    return levels[min(lowered, len(levels) - 1)]


def decide(evidence: Evidence, rules: Sequence[Rule] = RULES) -> Decision:
    """The recommended strategy, a runner-up, the confidence, and every rule's finding."""
    if not evidence.candidates:
        raise ValueError("no strategies to decide between")
    names = [c.name for c in evidence.candidates]
    if len(set(names)) != len(names):
        raise ValueError(f"strategy names repeat: {', '.join(names)}")
    findings = tuple(rule(c, evidence) for c in evidence.candidates for rule in rules)
    ranking = rank(evidence, findings)
    recommended = ranking[0].name
    return Decision(
        recommended,
        ranking[1].name if len(ranking) > 1 else None,
        confidence(findings, recommended),
        tuple(c.name for c in ranking),
        findings,
    )


# --------------------------------------------------------------------------- building inputs


def candidates_from_comparison(
    comparison: Mapping[str, Any],
    total_costs: Mapping[str, float] | None = None,
    runs: Mapping[str, RunFacts] | None = None,
) -> list[Candidate]:
    """One candidate per ``comparison.json`` row, with its projected total cost if given.

    Quality is the row's value of the comparison's ``metric`` (``accuracy`` when it names none,
    as comparisons made before generative tasks do) and its interval ``<metric>_ci``."""
    metric = str(comparison.get("metric", "accuracy"))
    total_costs = total_costs or {}
    runs = runs or {}
    return [_candidate(row, metric, total_costs, runs) for row in comparison["rows"]]


def _candidate(
    row: Mapping[str, Any],
    metric: str,
    total_costs: Mapping[str, float],
    runs: Mapping[str, RunFacts],
) -> Candidate:
    name = str(row["strategy"])
    low, high = row[f"{metric}_ci"]
    strategy, profile = runs.get(name, (name, None))
    return Candidate(
        name=name,
        quality=float(row[metric]),
        quality_ci=(float(low), float(high)),
        kind=strategy,
        role=None if profile is None else profile.role,
        data_need=None if profile is None else profile.data_need,
        ece=_optional(row.get("ece")),
        confident_wrong_rate=_optional(row.get("confident_wrong_rate")),
        n=None if row.get("n") is None else int(row["n"]),
        sampled=bool(row.get("sampled", False)),
        latency_ms=_optional(row.get("latency_batch1_p50_ms")),
        total_cost=_optional(total_costs.get(name)),
        vs_best=Difference.from_dict(row.get("vs_best")),
        forgetting=_optional(row.get("forgetting")),
        perplexity_ratio=_optional(row.get("perplexity_ratio")),
        retrieves=profile is not None and profile.retrieves,
    )


def evidence_from_comparison(
    comparison: Mapping[str, Any],
    total_costs: Mapping[str, float] | None = None,
    runs: Mapping[str, RunFacts] | None = None,
    data_report: Mapping[str, Any] | None = None,
    settings: DecisionConfig | None = None,
    paired: Mapping[tuple[str, str], Difference] | None = None,
) -> Evidence:
    """The rules' inputs from ``comparison.json``, projected costs and ``data_report.json``,
    with ``paired`` differences between runs beyond those to the best, where known."""
    metric = str(comparison.get("metric", "accuracy"))
    return Evidence(
        tuple(candidates_from_comparison(comparison, total_costs, runs)),
        best=comparison.get("best"),
        paired=dict(paired or {}),
        data=None if data_report is None else data_facts(data_report),
        settings=settings or DecisionConfig(),
        metric=METRIC_WORDS.get(metric, metric),
    )


def data_facts(report: Mapping[str, Any]) -> DataFacts | None:
    """Training-set size from a data report: label counts for classification data, the
    training records kept for chat data; ``None`` when the report has neither."""
    labels = report.get("labels") or {}
    counts = labels.get("train_counts")
    if counts:
        return DataFacts(
            train_examples=int(sum(counts.values())),
            classes=len(counts),
            min_per_class=int(min(counts.values())),
        )
    train = (report.get("sources") or {}).get("train") or {}
    kept = train.get("after_dedup", train.get("valid"))
    if train.get("format") == "classification" or kept is None:
        return None  # classification data without label counts: nothing to judge by
    return DataFacts(train_examples=int(kept))


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)
