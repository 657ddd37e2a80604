"""Decision rules: from measured quality and projected cost to one recommendation, with reasons.

Each rule is a small named function ``rule(candidate, evidence) -> Finding``: it says whether it
fired for that strategy, why, and what firing does (``ranking``: the strategy loses its place
to another; ``confidence``: trust in it is lower; ``flag``: reported, nothing changes). The
report cites fired rules by name.

Quality is the comparison's primary metric: accuracy for classification runs, micro slot F1
for slot extraction, the configured free-text metric (ROUGE-L F1 by default) for free text
(``comparison.json``'s ``metric``); every rule reads it the same way.

The ranking follows three rules. One run is *significantly* better than another when the
paired-bootstrap interval of their difference (at ``compare.confidence``, 95%) lies wholly
above 0 — or, with ``decision.quality_margin`` set, above that margin, and the messages then
say *clearly* (:meth:`Evidence.compare`); otherwise the two are tied in quality.
``cheaper_within_ci``: a strategy not significantly better than a cheaper one loses to the
cheaper one. Cheaper means a lower projected total cost (training + re-tuning + serving,
:mod:`adaptlab.cost.projection`) by more than timing noise: two totals are *tied in cost* when
their intervals (from the serving latency's interval) overlap or they differ by less than
``decision.cost_tie_margin`` of the cheaper one (:meth:`Evidence.cost_tied`); with both costs
unknown, latency is compared the same way. ``worse_at_same_cost``: of two runs tied in cost, a
significantly worse one loses to the better. ``tie_break``: of two runs tied in cost and in
quality, one loses to the other by a stated, deterministic rule — fewer trainable parameters,
then the smaller artifact (what serving needs on disk), then the simpler strategy
(:func:`simplicity`) — and the report says "tied with" and names both. The strategies no rule
demotes form a frontier along which each dearer one is significantly better than every cheaper
one; the recommendation is the dearest of them — the most quality that a significant difference
shows to be worth paying for — and the runner-up is the run it is tied with, else the next one
down the frontier (or, with a frontier of one, the best of the rest).

The intervals cover the eval items, not the training seed: a single compare cannot tell a
strategy's edge from the luck of its seed. ``adaptlab compare --repeat`` (or
``compare.repeat`` in the experiment) reruns the runs that train with other seeds, and the
report then decides on every seed's runs together (:mod:`adaptlab.stability`).

Inputs are plain dataclasses built from ``comparison.json`` rows and cost facts
(:func:`candidates_from_comparison`), so every rule is testable without a model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le, Lt
from pydantic import Field

from adaptlab.comparison import METRIC_WORDS as COMPARISON_WORDS
from adaptlab.comparison import Difference
from adaptlab.config import Section
from adaptlab.cost.contention import CONTENDED_SHARE, SHORTEST_CONTENDED_FIT_S, contended
from adaptlab.profile import DataNeed, Role, StrategyProfile, TrainingMethod

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
    total_cost_ci: tuple[float, float] | None = None
    """The projected total's interval, carried from the serving latency's interval
    (``None``: known as a point, or unknown)."""
    latency_ci: tuple[float, float] | None = None
    """The interval of :attr:`latency_ms` (interleaved rounds, or the run's own calls)."""
    trainable_params: int | None = None
    size_on_disk_bytes: int | None = None
    """What serving it needs on disk: its own weights plus the base model's where it needs it."""
    method: TrainingMethod | None = None
    """How its strategy trains, as declared (the tie-break's "simpler strategy")."""
    fit_contention: float | None = None
    """Share of the machine's CPU time other processes used while it was fitted."""
    fit_seconds: float | None = None
    """Its fit's wall time."""

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
    cost_tie_margin: Annotated[float, Ge(0), Lt(1)] = Field(
        0.1,
        description="Two runs count as equal in cost when their projected totals' intervals "
        "overlap or they differ by less than this share of the cheaper one's total; then "
        "quality decides between them, and with quality tied too the tie-break rule (fewer "
        "trainable parameters, smaller artifact, simpler strategy).",
    )
    quality_margin: Annotated[float, Ge(0), Lt(1)] = Field(
        0.0,
        description="The smallest difference in the ranked metric worth acting on (absolute, "
        "in the metric's 0-1 scale: 0.01 is one point). One run counts as better than another "
        "only when the whole interval of their paired difference (at compare.confidence) lies "
        "above this margin; a smaller or less certain difference counts as a tie, so the "
        "cheaper run, or with costs tied the tie-break rule, wins. 0 (the default): "
        "statistical significance alone, so any gain the interval shows is worth its price.",
    )
    contention_share: Annotated[float, Gt(0), Le(1)] = Field(
        CONTENDED_SHARE,
        description="Flag a run whose fit ran while other processes used at least this share "
        "of the machine's CPU time: its fit time, so its training cost, is overstated.",
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
    margin: float = 0.0
    """The quality margin the outcome was judged against (``DecisionConfig.quality_margin``)."""

    def flipped(self) -> Verdict:
        """The same comparison the other way round (``b`` against ``a``)."""
        outcome = _OPPOSITE[self.outcome]
        low = None if self.high is None else -self.high
        high = None if self.low is None else -self.low
        return Verdict(outcome, -self.difference, low, high, self.basis, self.margin)

    @property
    def within_margin(self) -> bool:
        """A tie only because of the margin: the interval excludes 0 but reaches into it."""
        if self.outcome != "tie" or self.low is None or self.high is None:
            return False
        return self.low > 0 or self.high < 0

    def describe(self) -> str:
        points = f"{self.difference * 100:+.1f} points"
        if self.low is None or self.high is None:
            return f"{points} ({self.basis}; no paired difference available)"
        basis: str = self.basis
        if self.within_margin:
            basis += (
                f"; significant, but the interval reaches inside the {_points(self.margin)} margin"
            )
        return f"{points} [{self.low * 100:+.1f}, {self.high * 100:+.1f}] ({basis})"


def _points(margin: float) -> str:
    """``1.0-point``: a quality margin in the metric's points."""
    return f"{margin * 100:.1f}-point"


@dataclass(frozen=True)
class StabilityFacts:
    """What a rerun with other training seeds recommended (``adaptlab compare --repeat``)."""

    picks: Mapping[int, str]
    """Seed -> the run recommended with it, the comparison's own seed first."""

    @property
    def held(self) -> bool:
        return len(set(self.picks.values())) <= 1


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
    stability: StabilityFacts | None = None
    """Recommendations under other training seeds, where the comparison was repeated."""

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

    def cost_tied(self, a: Candidate, b: Candidate) -> bool:
        """Equal in cost within timing noise: the projected totals' intervals overlap, or the
        totals differ by less than ``cost_tie_margin`` of the cheaper one. A known cost is
        never tied with an unknown one (unknown counts as dearest); two unknown costs are
        compared on latency the same way."""
        margin = self.settings.cost_tie_margin
        if a.total_cost is not None and b.total_cost is not None:
            return _within_noise(
                a.total_cost, a.total_cost_ci, b.total_cost, b.total_cost_ci, margin
            )
        if a.total_cost is not None or b.total_cost is not None:
            return False
        if a.latency_ms is None or b.latency_ms is None:
            return a.latency_ms is None and b.latency_ms is None
        return _within_noise(a.latency_ms, a.latency_ci, b.latency_ms, b.latency_ci, margin)

    def cheaper(self, a: Candidate, b: Candidate) -> bool:
        """``a`` costs less than ``b`` by more than timing noise (:meth:`cost_tied`)."""
        return not self.cost_tied(a, b) and cost_key(a) < cost_key(b)

    @property
    def clearly(self) -> str:
        """How the rules' messages qualify "better": beyond a margin, or significance alone."""
        return "clearly" if self.settings.quality_margin > 0 else "significantly"

    def compare(self, a: Candidate, b: Candidate) -> Verdict:
        """``a`` against ``b``: better (worse) when the paired bootstrap's interval of the
        difference lies wholly above (below) ``quality_margin`` (``-quality_margin``), else a
        tie. Without a paired difference, the two runs' own intervals must be further apart
        than the margin."""
        margin = self.settings.quality_margin
        difference = self._paired(a, b)
        if difference is not None:
            low, high = difference.low, difference.high
            outcome: Outcome = "better" if low > margin else "worse" if high < -margin else "tie"
            return Verdict(outcome, difference.difference, low, high, "paired bootstrap", margin)
        # Two intervals that overlap may still differ significantly when paired; this fallback
        # errs towards "tie", so towards the cheaper strategy.
        gap = a.quality - b.quality
        if a.quality_ci[0] - b.quality_ci[1] > margin:
            outcome = "better"
        elif b.quality_ci[0] - a.quality_ci[1] > margin:
            outcome = "worse"
        else:
            outcome = "tie"
        return Verdict(outcome, gap, None, None, "unpaired CIs", margin)

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
    """Lower is cheaper: projected total cost, then latency; unknown counts as dearest. The
    order of the frontier; whether one run is cheaper than another is :meth:`Evidence.cheaper`."""
    cost = math.inf if candidate.total_cost is None else candidate.total_cost
    latency = math.inf if candidate.latency_ms is None else candidate.latency_ms
    return cost, latency


def _within_noise(
    a: float,
    a_interval: tuple[float, float] | None,
    b: float,
    b_interval: tuple[float, float] | None,
    margin: float,
) -> bool:
    """Two measured amounts equal within noise: their intervals overlap (a point counts as an
    interval of width zero), or they differ by less than ``margin`` of the smaller one."""
    low_a, high_a = a_interval or (a, a)
    low_b, high_b = b_interval or (b, b)
    if min(low_a, a) <= max(high_b, b) and min(low_b, b) <= max(high_a, a):
        return True
    return abs(a - b) <= margin * min(a, b)


METHOD_SIMPLICITY: tuple[TrainingMethod, ...] = (
    "none",
    "features",
    "top_blocks",
    "adapter",
    "full",
)
"""Training methods from the simplest (nothing trains) to the most involved (every weight)."""
ROLE_SIMPLICITY: tuple[Role, ...] = ("base", "prompted", "tuned")


def simplicity(candidate: Candidate) -> tuple[float, float, int, int, str]:
    """The tie-break's order, lower first: fewer trainable parameters, then the smaller
    artifact, then the simpler strategy (its role, then its training method), then the name,
    so the order is total and the same on every build. Unknown counts as largest."""
    params = math.inf if candidate.trainable_params is None else candidate.trainable_params
    size = math.inf if candidate.size_on_disk_bytes is None else candidate.size_on_disk_bytes
    method = (
        METHOD_SIMPLICITY.index(candidate.method) if candidate.method else len(METHOD_SIMPLICITY)
    )
    return params, size, ROLE_SIMPLICITY.index(candidate.kind_role), method, candidate.name


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
    margin = evidence.settings.quality_margin
    bought = (
        f"no {evidence.metric} beyond the {_points(margin)} margin"
        if margin > 0
        else f"no measurable {evidence.metric}"
    )
    message = (
        f"{candidate.name} is not {evidence.clearly} better than the untrained base "
        f"{base.name}: {verdict.describe()}; the training bought {bought}."
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
    how = f"is not {evidence.clearly} better than" if verdict.outcome == "tie" else "is worse than"
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
    """A strategy not significantly better than a cheaper one (:meth:`Evidence.compare`)
    loses to the cheaper one."""
    rule = "cheaper_within_ci"
    rivals = [
        (other, evidence.compare(candidate, other))
        for other in evidence.candidates
        if other.name != candidate.name and evidence.cheaper(other, candidate)
    ]
    matched = [(other, v) for other, v in rivals if v.outcome != "better"]
    if not matched:
        message = (
            f"{candidate.name} has {evidence.clearly} higher {evidence.metric} than every "
            "cheaper strategy."
        )
        return _finding(rule, candidate, False, "none", message)
    other, verdict = max(matched, key=lambda pair: pair[0].quality)
    how = f"is not {evidence.clearly} better than" if verdict.outcome == "tie" else "is worse than"
    message = (
        f"{candidate.name} loses to the cheaper {other.name}: it {how} it on "
        f"{evidence.metric}, {verdict.describe()}; "
        f"cost {_cost(candidate)} against {_cost(other)}."
    )
    return _finding(rule, candidate, True, "ranking", message, other.name)


def _same_cost(
    candidate: Candidate, evidence: Evidence, outcome: Outcome
) -> list[tuple[Candidate, Verdict]]:
    """The other runs tied with ``candidate`` in cost that it compares with as ``outcome``."""
    return [
        (other, verdict)
        for other in evidence.candidates
        if other.name != candidate.name and evidence.cost_tied(candidate, other)
        for verdict in (evidence.compare(candidate, other),)
        if verdict.outcome == outcome
    ]


def worse_at_same_cost(candidate: Candidate, evidence: Evidence) -> Finding:
    """Of two runs that cost the same within timing noise, a significantly worse one loses to
    the better: it is no cheaper, so nothing pays for the quality it gives up."""
    rule = "worse_at_same_cost"
    rivals = _same_cost(candidate, evidence, "worse")
    if not rivals:
        message = f"no run that costs the same as {candidate.name} is {evidence.clearly} better."
        return _finding(rule, candidate, False, "none", message)
    other, verdict = max(rivals, key=lambda pair: pair[0].quality)
    message = (
        f"{candidate.name} loses to {other.name}: they cost the same within noise "
        f"({_cost(candidate)} against {_cost(other)}) and it is worse on {evidence.metric}, "
        f"{verdict.describe()}."
    )
    return _finding(rule, candidate, True, "ranking", message, other.name)


def tie_break(candidate: Candidate, evidence: Evidence) -> Finding:
    """Of two runs tied in cost (:meth:`Evidence.cost_tied`) and in quality (no difference
    beyond the quality margin), the one first in :func:`simplicity` is kept: fewer trainable
    parameters, then the smaller artifact, then the simpler strategy. Stated and deterministic,
    so the same pair gives the same pick whatever the timing noise did to their order."""
    rule = "tie_break"
    tied = _same_cost(candidate, evidence, "tie")
    winners = [(o, v) for o, v in tied if simplicity(o) < simplicity(candidate)]
    if not winners:
        names = ", ".join(o.name for o, _ in tied)
        message = (
            f"{candidate.name} is tied with {names} and first by the tie-break rule."
            if tied
            else f"{candidate.name} is tied with no run in both cost and quality."
        )
        return _finding(rule, candidate, False, "none", message)
    other, verdict = min(winners, key=lambda pair: simplicity(pair[0]))
    message = (
        f"{candidate.name} is tied with {other.name} in cost ({_cost(candidate)} against "
        f"{_cost(other)}) and in {evidence.metric} ({verdict.flipped().describe()} for "
        f"{other.name}); the tie goes to {other.name}: {tie_reason(other, candidate)}."
    )
    return _finding(rule, candidate, True, "ranking", message, other.name)


def tie_reason(winner: Candidate, loser: Candidate) -> str:
    """Which step of the tie-break rule decided between two tied runs, with both values."""
    steps = (
        ("fewer trainable parameters", winner.trainable_params, loser.trainable_params, _count),
        ("the smaller artifact", winner.size_on_disk_bytes, loser.size_on_disk_bytes, _bytes),
    )
    for reason, mine, theirs, shown in steps:
        if mine != theirs:
            return f"{reason} ({shown(mine)} against {shown(theirs)})"
    if simplicity(winner)[2:4] != simplicity(loser)[2:4]:
        return (
            f"the simpler strategy ({winner.kind_role}, {winner.method or 'unknown'} training "
            f"against {loser.kind_role}, {loser.method or 'unknown'})"
        )
    return "the name, in alphabetical order (nothing else tells them apart)"


def _count(value: int | None) -> str:
    return "unknown" if value is None else f"{value:,}"


def _bytes(value: int | None) -> str:
    return "unknown" if value is None else f"{value / 2**20:,.1f} MiB"


def _cost(candidate: Candidate) -> str:
    """``$0.62 [$0.58, $0.66]``: the projected total with its interval where it has one."""
    point = _money(candidate.total_cost)
    interval = candidate.total_cost_ci
    if candidate.total_cost is None or interval is None or interval[0] == interval[1]:
        return point
    return f"{point} [{_money(interval[0])}, {_money(interval[1])}]"


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


def contended_fit(candidate: Candidate, evidence: Evidence) -> Finding:
    """A fit that shared the machine with other work took longer than the run needs: its
    training cost is overstated, and a rerun on a quiet machine would price it lower."""
    rule = "contended_fit"
    share = candidate.fit_contention
    if (candidate.fit_seconds or 0.0) < SHORTEST_CONTENDED_FIT_S:
        message = f"{candidate.name}'s fit was too short for its CPU shares to mean anything."
        return _finding(rule, candidate, False, "none", message)
    if share is None or not contended(
        share, candidate.fit_seconds, evidence.settings.contention_share
    ):
        why = "not measured" if share is None else f"other processes used {share:.0%} of the CPUs"
        return _finding(rule, candidate, False, "none", f"{candidate.name}'s fit: {why}.")
    message = (
        f"{candidate.name} was fitted while other processes used {share:.0%} of the machine's "
        "CPU time: its fit time, so its training cost, is overstated; rerun it on a quiet "
        "machine before trusting a cost difference it decides."
    )
    return _finding(rule, candidate, True, "flag", message)


def seed_stability(candidate: Candidate, evidence: Evidence) -> Finding:
    """A run recommended under some training seeds and not under others is picked on
    seed-to-seed noise: it is reported, and trust in it is lowered."""
    rule = "seed_stability"
    stability = evidence.stability
    if stability is None or candidate.name not in stability.picks.values():
        why = "no rerun with another seed" if stability is None else "not picked under any seed"
        return _finding(rule, candidate, False, "none", f"{candidate.name}: {why}.")
    if stability.held:
        seeds = ", ".join(str(seed) for seed in stability.picks)
        message = f"{candidate.name} is recommended under every seed tried ({seeds})."
        return _finding(rule, candidate, False, "none", message)
    picks = "; ".join(f"seed {seed}: {name}" for seed, name in stability.picks.items())
    message = (
        f"the recommendation changes with the training seed ({picks}): {candidate.name} is "
        "picked under some seeds and not others."
    )
    return _finding(rule, candidate, True, "confidence", message)


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
    worse_at_same_cost,
    tie_break,
    tuned_vs_base,
    tuned_vs_prompted,
    process_problem,
    retrieval_vs_fine_tuning,
    too_little_data,
    calibration_regression,
    forgetting_regression,
    contended_fit,
    seed_stability,
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
    tie_reasons: Mapping[str, str] = field(default_factory=dict)
    """Each run tied with the recommendation in cost and quality that the tie-break rule gave
    it the tie over -> the step of the rule that decided (:func:`tie_reason`)."""

    @property
    def tied_with(self) -> tuple[str, ...]:
        """The runs in :attr:`tie_reasons`, in ranking order."""
        return tuple(name for name in self.ranking if name in self.tie_reasons)

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
    chosen = ranking[0]
    beaten = {
        f.subject for f in findings if f.fired and f.rule == "tie_break" and f.other == recommended
    }
    tied = {c.name: tie_reason(chosen, c) for c in ranking if c.name in beaten}
    # The run the recommendation won a tie against is the natural alternative to it.
    runner_up = next(
        (c.name for c in ranking if c.name in tied),
        ranking[1].name if len(ranking) > 1 else None,
    )
    return Decision(
        recommended,
        runner_up,
        confidence(findings, recommended),
        tuple(c.name for c in ranking),
        findings,
        tied,
    )


# --------------------------------------------------------------------------- building inputs


def candidates_from_comparison(
    comparison: Mapping[str, Any],
    total_costs: Mapping[str, float] | None = None,
    runs: Mapping[str, RunFacts] | None = None,
    cost_intervals: Mapping[str, tuple[float, float]] | None = None,
) -> list[Candidate]:
    """One candidate per ``comparison.json`` row, with its projected total cost (and that
    cost's interval) if given.

    Quality is the row's value of the comparison's ``metric`` (``accuracy`` when it names none,
    as comparisons made before generative tasks do) and its interval ``<metric>_ci``."""
    metric = str(comparison.get("metric", "accuracy"))
    costs = (total_costs or {}, cost_intervals or {})
    runs = runs or {}
    return [_candidate(row, metric, costs, runs) for row in comparison["rows"]]


def _candidate(
    row: Mapping[str, Any],
    metric: str,
    costs: tuple[Mapping[str, float], Mapping[str, tuple[float, float]]],
    runs: Mapping[str, RunFacts],
) -> Candidate:
    name = str(row["strategy"])
    low, high = row[f"{metric}_ci"]
    strategy, profile = runs.get(name, (name, None))
    total_costs, intervals = costs
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
        total_cost_ci=intervals.get(name),
        latency_ci=_interval(row.get("latency_batch1_p50_ci")),
        trainable_params=_whole(row.get("trainable_params")),
        size_on_disk_bytes=_whole(row.get("size_on_disk_bytes")),
        method=None if profile is None else profile.method,
        fit_contention=_optional(row.get("fit_contention")),
        fit_seconds=_optional(row.get("fit_wall_s")),
    )


def evidence_from_comparison(
    comparison: Mapping[str, Any],
    total_costs: Mapping[str, float] | None = None,
    runs: Mapping[str, RunFacts] | None = None,
    data_report: Mapping[str, Any] | None = None,
    settings: DecisionConfig | None = None,
    paired: Mapping[tuple[str, str], Difference] | None = None,
    cost_intervals: Mapping[str, tuple[float, float]] | None = None,
    stability: StabilityFacts | None = None,
) -> Evidence:
    """The rules' inputs from ``comparison.json``, projected costs (with their intervals) and
    ``data_report.json``, with ``paired`` differences between runs beyond those to the best,
    where known, and the recommendations of reruns with other seeds."""
    metric = str(comparison.get("metric", "accuracy"))
    return Evidence(
        tuple(candidates_from_comparison(comparison, total_costs, runs, cost_intervals)),
        best=comparison.get("best"),
        paired=dict(paired or {}),
        data=None if data_report is None else data_facts(data_report),
        settings=settings or DecisionConfig(),
        metric=METRIC_WORDS.get(metric, metric),
        stability=stability,
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


def _whole(value: Any) -> int | None:
    return None if value is None else int(value)


def _interval(value: Any) -> tuple[float, float] | None:
    if not isinstance(value, list | tuple) or len(value) != 2 or None in value:
        return None
    low, high = sorted(float(bound) for bound in value)
    return low, high
