"""Seed stability: does the recommendation hold when the runs that train are redone with
another training seed?

``adaptlab compare --repeat N`` reruns every run that trains (a strategy whose role is
``tuned``) with N - 1 other seeds, each into ``<experiment>/repeats/seed_<s>/`` beside a copy
of the untrained runs (their results do not depend on the seed), compares and decides there
the same way, and writes ``stability.json`` into the experiment folder: the recommendation
under each seed, whether it held, and each run's quality under each seed with the paired
difference between them (bootstrap over the same locked eval items). The report reads it
(:func:`read_stability`) while the runs it was made from are unchanged, and lowers its
confidence in a pick that changed with the seed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from adaptlab.comparison import Difference, paired_difference, per_item, ranking_metric
from adaptlab.config import CompareConfig
from adaptlab.evaluate.bootstrap import two_level_interval
from adaptlab.paths import write_text_atomic
from adaptlab.runs import RunError, RunRecord, read_experiment_record

STABILITY = "stability.json"
REPEATS = "repeats"
"""The folder, inside the experiment's, that holds one experiment folder per other seed."""

REPEAT_SEEDS = (42, 7, 1234, 2024, 31337, 65537, 99991, 424242, 8675309)
"""The seeds reruns use after the experiment's own, in order, skipping the experiment's own:
fixed, so a repeat is reproducible, and a compare with seed 42 and one with seed 7, each
repeated once, run the same two seeds and so decide on the same evidence."""


def repeat_seeds(own: int, repeat: int) -> list[int]:
    """The experiment's own seed, then ``repeat - 1`` others from :data:`REPEAT_SEEDS`."""
    if not 1 <= repeat <= len(REPEAT_SEEDS):
        raise ValueError(f"repeat = {repeat}: must be between 1 and {len(REPEAT_SEEDS)}")
    others = [seed for seed in REPEAT_SEEDS if seed != own]
    return [own, *others[: repeat - 1]]


@dataclass(frozen=True)
class SeedChange:
    """One run's quality under the experiment's own seed and under another."""

    run: str
    seed: int
    """The other seed."""
    score: float
    """Under the experiment's own seed."""
    other_score: float
    """Under :attr:`seed`."""
    difference: Difference | None
    """Other seed minus own seed on the eval items both scored (paired bootstrap)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "seed": self.seed,
            "score": self.score,
            "other_score": self.other_score,
            "difference": None if self.difference is None else self.difference.to_dict(),
        }


@dataclass(frozen=True)
class PickGap:
    """Two runs that were each recommended under some seed, compared under one seed: why the
    pick moved (a quality difference one seed's eval finds significant and another's not)."""

    seed: int
    first: str
    """The experiment's own pick."""
    second: str
    """A pick under another seed."""
    difference: Difference | None
    """``first`` minus ``second`` under :attr:`seed` (paired bootstrap over the eval items)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "first": self.first,
            "second": self.second,
            "difference": None if self.difference is None else self.difference.to_dict(),
        }


@dataclass(frozen=True)
class Stability:
    """``stability.json``: the recommendation under each seed and how each run moved."""

    metric: str
    picks: dict[int, str]
    """Seed -> the recommended run, the experiment's own seed first."""
    tied: dict[int, list[str]]
    """Seed -> the runs the recommendation was tied with there (cost and quality)."""
    changes: list[SeedChange]
    stamps: dict[str, str | None]
    """Each run of the experiment's own comparison -> its manifest's ``created_at``: the
    record describes those runs only while they are unchanged."""
    folders: dict[int, str]
    """Other seed -> its experiment folder, relative to the experiment's."""
    failures: dict[int, dict[str, str]]
    """Other seed -> runs that failed there, with why."""
    gaps: list[PickGap] = field(default_factory=list)
    """Where the pick changed: the own pick against each other pick, under every seed."""

    @property
    def seeds(self) -> list[int]:
        return list(self.picks)

    @property
    def held(self) -> bool:
        return len(set(self.picks.values())) <= 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "seeds": self.seeds,
            "held": self.held,
            "picks": {str(seed): name for seed, name in self.picks.items()},
            "tied": {str(seed): names for seed, names in self.tied.items()},
            "changes": [change.to_dict() for change in self.changes],
            "stamps": self.stamps,
            "folders": {str(seed): folder for seed, folder in self.folders.items()},
            "failures": {str(seed): runs for seed, runs in self.failures.items()},
            "gaps": [gap.to_dict() for gap in self.gaps],
        }

    def current(self, records: Mapping[str, RunRecord]) -> bool:
        """It was made from exactly these runs, none redone since."""
        now = {name: record.manifest.created_at for name, record in records.items()}
        return now == self.stamps


def seed_changes(
    own: Sequence[RunRecord], other: Sequence[RunRecord], seed: int, settings: CompareConfig
) -> list[SeedChange]:
    """Each run present under both seeds: its score under each and the paired difference."""
    others = {record.name: record for record in other}
    changes = []
    for record in own:
        again = others.get(record.name)
        if again is None:
            continue
        metric = ranking_metric(record.kind, settings, (record, again))
        changes.append(
            SeedChange(
                record.name,
                seed,
                record.eval.score,
                again.eval.score,
                paired_difference(again, record, settings, metric),
            )
        )
    return changes


def pick_gaps(
    picks: Mapping[int, str], records: Mapping[int, Sequence[RunRecord]], settings: CompareConfig
) -> list[PickGap]:
    """The experiment's own pick against every other seed's pick, under each seed."""
    own = next(iter(picks.values()))
    gaps = []
    for other in dict.fromkeys(name for name in picks.values() if name != own):
        for seed, runs in records.items():
            by_name = {record.name: record for record in runs}
            if own not in by_name or other not in by_name:
                continue
            a, b = by_name[own], by_name[other]
            metric = ranking_metric(a.kind, settings, (a, b))
            gaps.append(PickGap(seed, own, other, paired_difference(a, b, settings, metric)))
    return gaps


@dataclass(frozen=True)
class SeedPooled:
    """Each run's quality over every seed, and every difference between runs, with intervals
    that resample the seeds as well as the eval items: the evidence a decision that sees
    training-seed noise rests on."""

    seeds: list[int]
    metric: str
    quality: dict[str, float]
    """Run -> its mean per-item score over the seeds."""
    intervals: dict[str, tuple[float, float]]
    differences: dict[tuple[str, str], Difference]
    """(a, b) -> a minus b, for every two runs present under every seed."""


def seed_pooled(
    by_seed: Mapping[int, Mapping[str, RunRecord]], metric: str, settings: CompareConfig
) -> SeedPooled | None:
    """The runs present under every seed, pooled over the seeds
    (:func:`~adaptlab.evaluate.bootstrap.two_level_interval`); two runs are compared on the
    eval items both scored (a run scored on a sample, on the sample). ``None`` when there is
    a single seed, or ``metric`` is not a mean of per-item scores (micro-F1 and slot F1 pool
    counts, BLEU and chrF++ corpus statistics: not pooled here)."""
    if len(by_seed) < 2:
        return None
    # in seed order, not the experiment's: the same seeds give the same evidence, whichever
    # of them the experiment started from
    by_seed = dict(sorted(by_seed.items()))
    names = [n for n in next(iter(by_seed.values())) if all(n in runs for runs in by_seed.values())]
    scored: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in names:
        found = _across_seeds([runs[name] for runs in by_seed.values()], metric)
        if found is None:
            return None
        scored[name] = found

    def interval(values: np.ndarray) -> tuple[float, float]:
        return two_level_interval(
            values, resamples=settings.bootstrap_resamples, confidence=settings.confidence
        )

    differences = {}
    for a, b in combinations(names, 2):
        (items_a, a_scores), (items_b, b_scores) = scored[a], scored[b]
        _, in_a, in_b = np.intersect1d(items_a, items_b, return_indices=True)
        if len(in_a):
            gap = a_scores[:, in_a] - b_scores[:, in_b]
            low, high = interval(gap)
            differences[(a, b)] = Difference(float(np.nanmean(gap)), low, high, len(in_a))
    return SeedPooled(
        seeds=list(by_seed),
        metric=metric,
        quality={name: float(np.nanmean(values)) for name, (_, values) in scored.items()},
        intervals={name: interval(values) for name, (_, values) in scored.items()},
        differences=differences,
    )


def _across_seeds(
    records: Sequence[RunRecord], metric: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """One run's eval items and its per-item scores under each seed (seeds x items); ``None``
    when a seed lacks them, they are not per-item means, or the seeds scored other items."""
    items, rows = None, []
    for record in records:
        values = per_item(record, metric)
        if values is None or values.ndim != 1:
            return None
        if items is None:
            items = record.indices
        elif not np.array_equal(items, record.indices):
            return None
        rows.append(values.astype(np.float64))
    return None if items is None else (items, np.stack(rows))


def write_stability(experiment_folder: Path, stability: Stability) -> Path:
    path = experiment_folder / STABILITY
    write_text_atomic(path, json.dumps(stability.to_dict(), indent=2) + "\n")
    return path


def read_stability(experiment_folder: Path) -> Stability | None:
    """The folder's ``stability.json`` (``None`` when there is none); :class:`RunError`
    naming the file and field when it cannot be read."""
    path = experiment_folder / STABILITY
    raw = read_experiment_record(path)
    if raw is None:
        return None
    try:
        return _parse(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{path}: field {exc.args[0] if exc.args else exc!r}") from None


def _parse(raw: Mapping[str, Any]) -> Stability:
    def seeds(key: str) -> dict[int, Any]:
        value = raw.get(key) or {}
        if not isinstance(value, Mapping):
            raise TypeError(f"'{key}' should be an object")
        try:
            return {int(seed): item for seed, item in value.items()}
        except ValueError:
            raise ValueError(f"'{key}': keys should be seeds (integers)") from None

    picks = {seed: str(name) for seed, name in seeds("picks").items()}
    if not picks:
        raise ValueError("'picks' should name a recommendation per seed")
    changes = [
        SeedChange(
            str(item["run"]),
            int(item["seed"]),
            float(item["score"]),
            float(item["other_score"]),
            Difference.from_dict(item.get("difference")),
        )
        for item in raw.get("changes") or []
    ]
    stamps = raw.get("stamps")
    if not isinstance(stamps, Mapping):
        raise TypeError("'stamps' should be an object")
    return Stability(
        metric=str(raw.get("metric", "accuracy")),
        picks=picks,
        tied={seed: [str(n) for n in names] for seed, names in seeds("tied").items()},
        changes=changes,
        stamps={str(k): None if v is None else str(v) for k, v in stamps.items()},
        folders={seed: str(folder) for seed, folder in seeds("folders").items()},
        failures={seed: dict(runs) for seed, runs in seeds("failures").items()},
        gaps=[
            PickGap(
                int(item["seed"]),
                str(item["first"]),
                str(item["second"]),
                Difference.from_dict(item.get("difference")),
            )
            for item in raw.get("gaps") or []
        ],
    )
