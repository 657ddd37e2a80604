"""Drift between a served model's live inputs and its training data: the tests of one window.

A :class:`Reference` is what a model's live traffic is compared with (built by
:mod:`adaptlab.serve.reference`):

- the embeddings of a seeded sample of its training texts (user turns for a generator);
- a classifier's predicted labels and confidences (the top probability) on the locked eval set,
  read from the run's ``predictions.safetensors``; a generator's answer lengths in tokens on the
  eval set, from ``generations.jsonl``. Predictions on the eval set, not the training labels:
  a live window holds the model's *predictions* on texts it never saw, and so does the eval
  set; the training labels would count the model's own errors as drift, and its predictions on
  its training texts are over-confident (it was fit on them).

A full window of live traffic is compared with it by up to three tests:

- **MMD** on the embeddings: the unbiased MMD² statistic with a Gaussian kernel whose width is
  the median distance between the pooled points, and a permutation test (Gretton et al., "A
  Kernel Two-Sample Test", JMLR 13, 2012: eq. 3 for MMD²_u, section 8 for the median heuristic);
- **KS** (two-sample Kolmogorov-Smirnov, scipy) on the confidences or answer lengths;
- **labels** (classifiers): the population stability index of the predicted labels, and a
  chi-square test of homogeneity on the same counts.

A window *drifts* when one test rejects at ``alpha / t`` (Bonferroni over the ``t`` tests that
ran: the three for a classifier), the label test only when the PSI is also at least its
threshold: with a window of a hundred, a PSI of 0.1 is sampling noise as often as not, and a
significant but tiny PSI is no reason to re-tune. Under no drift a window then raises a false
alarm with probability at most ``alpha``, up to the large-sample approximations of the
chi-square and KS p-values (the permutation p-value is exact).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
from annotated_types import Ge, Gt, Le, Lt
from pydantic import Field, model_validator
from scipy import stats

from adaptlab.config import Section
from adaptlab.models.bundled import MINILM

PSEUDO_COUNT = 0.5
"""Added to every label's count on both sides before the PSI's proportions are taken (the
Jeffreys / Krichevsky-Trofimov prior): a label absent from a window of 100 then counts as about
0.5%, not as a floor of 1e-4 whose logarithm alone would put the PSI over 0.25."""
PSI_MODERATE = 0.1
"""The conventional PSI bands: below 0.1 no shift, 0.1-0.25 moderate, above 0.25 major."""
PSI_MAJOR = 0.25
TESTS = ("mmd", "ks", "labels")
DEFAULT_PERMUTATIONS = 500


class DriftConfig(Section):
    """How the server watches its models' inputs for drift (``adaptlab serve --drift-*``)."""

    window: Annotated[int, Ge(10), Le(2000)] = Field(
        100,
        description="Requests per window: each model's inputs are compared with its training "
        "data every this many inputs (a classify request of 4 texts counts 4).",
    )
    alpha: Annotated[float, Ge(0.0001), Lt(0.5)] = Field(
        0.01,
        description="False-alarm rate per window when nothing drifted: each of the t tests "
        "rejects at alpha / t (Bonferroni).",
    )
    persist: Annotated[int, Ge(1), Le(1000)] = Field(
        3,
        description="Consecutive drifted windows that make an episode: a re-tune proposal is "
        "written once per episode.",
    )
    psi_threshold: Annotated[float, Gt(0), Le(10)] = Field(
        PSI_MAJOR,
        description="PSI of the predicted labels at or above which a significant label test "
        "counts as drift (0.1 moderate, 0.25 major by convention).",
    )
    permutations: Annotated[int, Ge(20), Le(100_000)] = Field(
        DEFAULT_PERMUTATIONS,
        description="Permutations of the MMD test (its p-value is at least 1/(this+1)). Not "
        "given: 500 or 6 / alpha, whichever is more (p-values reach half of alpha / 3): 600 at "
        "the default alpha.",
    )
    encoder: str = Field(
        MINILM,
        description="Sentence encoder of the embeddings: a bundled name, hub name or local folder.",
    )
    max_length: Annotated[int, Ge(8), Le(4096)] = Field(
        128, description="Tokens of each text the encoder reads."
    )
    reference_size: Annotated[int, Ge(10), Le(2000)] = Field(
        1000, description="Training texts sampled (seeded) and embedded for the reference."
    )
    seed: int = Field(0, description="Seed of the reference sample and the permutations.")
    monitor_dir: str | None = Field(
        None,
        description="Folder of the monitor's windows.jsonl and re-tune proposals (default: "
        "monitor/ in adaptlab's cache).",
    )

    @model_validator(mode="before")
    @classmethod
    def _enough_permutations(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("permutations") is None:
            alpha = data.get("alpha", 0.01)
            if isinstance(alpha, int | float) and 0 < alpha < 1:
                least = math.ceil(2 * len(TESTS) / alpha)
                data = {**data, "permutations": max(DEFAULT_PERMUTATIONS, least)}
        return data

    @model_validator(mode="after")
    def _permutations_resolve_alpha(self) -> DriftConfig:
        needed = alpha_per_test(self.alpha, len(TESTS))
        if 1 / (self.permutations + 1) >= needed:
            least = int(np.ceil(1 / needed))
            raise ValueError(
                f"permutations: {self.permutations} permutations give p-values of at least "
                f"1/{self.permutations + 1}, which can never reject at alpha/{len(TESTS)} = "
                f"{needed:.4g}; use at least {least}"
            )
        return self


def alpha_per_test(alpha: float, tests: int) -> float:
    """Bonferroni: each of ``tests`` tests rejects at ``alpha / tests``."""
    return alpha / max(1, tests)


# --------------------------------------------------------------------------- the reference


@dataclass(frozen=True)
class Reference:
    """What one model's live windows are compared with."""

    embeddings: np.ndarray
    """(n, d) float32, L2-normalised: a seeded sample of the training texts."""
    scores: np.ndarray | None
    """Confidences (classifier) or answer lengths in tokens (generator) on the eval set."""
    score_name: str
    """``confidence`` or ``answer_tokens``."""
    label_names: tuple[str, ...] = ()
    label_counts: np.ndarray | None = None
    """A classifier's predicted labels on the eval set, counted per label (``label_names``)."""
    facts: dict[str, Any] = field(default_factory=dict)
    """Where it came from (JSON-ready): the training file's sha256, the encoder, sizes."""


# --------------------------------------------------------------------------- the tests


@dataclass(frozen=True)
class MmdTest:
    mmd2: float
    """The unbiased estimate MMD²_u (may be slightly negative when nothing differs)."""
    p_value: float
    bandwidth: float
    """The Gaussian kernel's width sigma: k(x, y) = exp(-|x - y|² / (2 sigma²))."""


def mmd_test(x: np.ndarray, y: np.ndarray, permutations: int, seed: int) -> MmdTest:
    """The MMD permutation test of samples ``x`` (m, d) and ``y`` (n, d) (Gretton et al., JMLR
    2012): MMD²_u (their eq. 3) with a Gaussian kernel of median-heuristic width, and its
    p-value against ``permutations`` random relabellings of the pooled sample, seeded.

    The kernel matrix of the pooled sample is computed once; a relabelling only changes which
    rows count as ``x``, so every permutation's statistic is read from one matrix product."""
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError(f"the MMD test needs at least 2 points a side, got {m} and {n}")
    pooled = np.vstack([x, y]).astype(np.float64)
    squared = _squared_distances(pooled)
    bandwidth = _median_distance(squared)
    if bandwidth == 0.0:  # every point identical: nothing can differ
        return MmdTest(0.0, 1.0, 0.0)
    kernel = np.exp(-squared / (2 * bandwidth**2))
    rng = np.random.default_rng(seed)
    shuffled = np.argsort(rng.random((permutations, m + n)), axis=1)[:, :m]
    members = np.zeros((m + n, permutations + 1))
    members[:m, 0] = 1.0  # column 0: the observed split
    members[shuffled, np.arange(1, permutations + 1)[:, None]] = 1.0
    statistics = _mmd2_unbiased(kernel, members, m, n)
    observed = float(statistics[0])
    # The observed split counts as one of the relabellings, so p is never 0 (Phipson & Smyth).
    exceeded = int(np.sum(statistics[1:] >= observed))
    return MmdTest(observed, (1 + exceeded) / (1 + permutations), bandwidth)


def _squared_distances(points: np.ndarray) -> np.ndarray:
    norms = np.einsum("ij,ij->i", points, points)
    squared = norms[:, None] + norms[None, :] - 2 * points @ points.T
    np.maximum(squared, 0.0, out=squared)
    np.fill_diagonal(squared, 0.0)  # k(x, x) = 1 exactly: MMD²_u leaves the diagonal out
    return np.asarray(squared)


def _median_distance(squared: np.ndarray) -> float:
    upper = squared[np.triu_indices_from(squared, k=1)]
    positive = upper[upper > 0]
    return float(np.sqrt(np.median(positive))) if len(positive) else 0.0


def _mmd2_unbiased(kernel: np.ndarray, members: np.ndarray, m: int, n: int) -> np.ndarray:
    """MMD²_u for each column of ``members`` (1 = the row is in the first sample): the mean
    kernel within each sample without its diagonal, minus twice the mean across them."""
    row_sums = kernel.sum(axis=1)
    total = row_sums.sum()
    within_x = np.einsum("ip,ip->p", members, kernel @ members)  # a' K a
    across = members.T @ row_sums - within_x  # a' K b with b = 1 - a
    within_y = total - 2 * across - within_x  # b' K b
    mmd2 = (within_x - m) / (m * (m - 1)) + (within_y - n) / (n * (n - 1)) - 2 * across / (m * n)
    return np.asarray(mmd2)


def psi(
    reference_counts: Sequence[float] | np.ndarray, window_counts: Sequence[float] | np.ndarray
) -> float:
    """Population stability index of two histograms over the same bins: the sum over bins of
    (q - p) ln(q / p), p the reference's proportions and q the window's, each count raised by
    :data:`PSEUDO_COUNT` first so an empty bin has a finite logarithm."""
    p = _proportions(reference_counts)
    q = _proportions(window_counts)
    return float(np.sum((q - p) * np.log(q / p)))


def _proportions(counts: Sequence[float] | np.ndarray) -> np.ndarray:
    raised = np.asarray(counts, dtype=np.float64) + PSEUDO_COUNT
    return np.asarray(raised / raised.sum())


def labels_p_value(reference_counts: np.ndarray, window_counts: np.ndarray) -> float:
    """The chi-square test of homogeneity of two label histograms (labels neither side
    predicted are left out; with fewer than two left nothing can differ)."""
    table = np.vstack([reference_counts, window_counts]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 1.0
    return float(stats.chi2_contingency(table, correction=False).pvalue)


def ks_test(reference: np.ndarray, window: np.ndarray) -> tuple[float, float]:
    """The two-sample Kolmogorov-Smirnov statistic and p-value (scipy's ``ks_2samp``)."""
    result = stats.ks_2samp(reference, window)
    return float(result.statistic), float(result.pvalue)


# --------------------------------------------------------------------------- one window


@dataclass(frozen=True)
class WindowResult:
    """The tests of one window, and whether it drifted."""

    size: int
    alpha: float
    alpha_per_test: float
    tests: tuple[str, ...]
    mmd: MmdTest
    ks_statistic: float | None = None
    ks_p_value: float | None = None
    psi: float | None = None
    labels_p_value: float | None = None
    label_counts: dict[str, int] | None = None
    psi_threshold: float = PSI_MAJOR
    reasons: tuple[str, ...] = ()
    """Why the window drifted, one phrase per test that rejected (empty: it did not)."""

    @property
    def drifted(self) -> bool:
        return bool(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "drifted": self.drifted,
            "reasons": list(self.reasons),
            "tests": list(self.tests),
            "alpha": self.alpha,
            "alpha_per_test": self.alpha_per_test,
            "mmd2": self.mmd.mmd2,
            "mmd_p_value": self.mmd.p_value,
            "mmd_bandwidth": self.mmd.bandwidth,
            "ks_statistic": self.ks_statistic,
            "ks_p_value": self.ks_p_value,
            "psi": self.psi,
            "psi_threshold": self.psi_threshold,
            "labels_p_value": self.labels_p_value,
            "label_counts": self.label_counts,
        }


def evaluate_window(
    reference: Reference,
    embeddings: np.ndarray,
    config: DriftConfig,
    *,
    labels: Sequence[str] | None = None,
    scores: Sequence[float] | None = None,
    seed: int = 0,
) -> WindowResult:
    """Compare one window (its inputs' ``embeddings``, a classifier's predicted ``labels`` and
    confidences or a generator's answer lengths as ``scores``) with ``reference``."""
    use_scores = scores is not None and len(scores) > 0 and reference.scores is not None
    use_labels = labels is not None and reference.label_counts is not None
    ran = (True, use_scores, use_labels)
    tests = tuple(name for name, used in zip(TESTS, ran, strict=True) if used)
    level = alpha_per_test(config.alpha, len(tests))
    mmd = mmd_test(reference.embeddings, embeddings, config.permutations, seed)
    reasons = []
    if mmd.p_value < level:
        reasons.append(f"MMD p = {mmd.p_value:.3g} < {level:.3g}")
    found: dict[str, Any] = {}
    if use_scores:
        assert reference.scores is not None and scores is not None
        statistic, p_value = ks_test(reference.scores, np.asarray(scores, dtype=np.float64))
        found.update(ks_statistic=statistic, ks_p_value=p_value)
        if p_value < level:
            reasons.append(f"KS on {reference.score_name} p = {p_value:.3g} < {level:.3g}")
    if use_labels:
        assert reference.label_counts is not None and labels is not None
        counts = label_counts(labels, reference.label_names)
        index = psi(reference.label_counts, counts)
        p_value = labels_p_value(reference.label_counts, counts)
        found.update(
            psi=index,
            labels_p_value=p_value,
            label_counts=dict(zip(reference.label_names, counts.tolist(), strict=True)),
        )
        if p_value < level and index >= config.psi_threshold:
            reasons.append(
                f"labels: PSI {index:.3f} >= {config.psi_threshold:g} and chi-square "
                f"p = {p_value:.3g} < {level:.3g}"
            )
    return WindowResult(
        len(embeddings),
        config.alpha,
        level,
        tests,
        mmd,
        psi_threshold=config.psi_threshold,
        reasons=tuple(reasons),
        **found,
    )


def label_counts(labels: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """How often each of ``names`` occurs in ``labels`` (a name outside them is not counted)."""
    position = {name: i for i, name in enumerate(names)}
    counts = np.zeros(len(names), dtype=np.int64)
    for label in labels:
        if label in position:
            counts[position[label]] += 1
    return counts
