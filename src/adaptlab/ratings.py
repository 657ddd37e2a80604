"""Blind pairwise human preference between two runs' answers: the store and its statistics.

``adaptlab rate`` (:mod:`adaptlab.serve.rating`) shows a rater one eval request and two runs'
answers, labelled A and B and never by run name; the rater picks the better one, a tie, or
"both bad". Ratings live in ``ratings.sqlite`` in the experiment folder (SQLite in WAL mode, so
the page can write while ``adaptlab report`` reads), one row per (rater, pair of runs, eval
item): rating an item again replaces the earlier rating. The choice is stored in run terms (the
winning run's name, ``tie`` or ``both_bad``), so a rating means the same whatever side its
answers were shown on.

Each rater gets the shared items in an order of their own and each run on the left for half of
them (±1), both drawn from a seed derived from (rater, pair): a reload or a resumed session shows
the same assignment, and a rater's preference for one side cancels out over their items.

Each rating also keeps a fingerprint of what was shown (the eval set's hash and both answers).
When a run is redone and its answers change, the ratings of the old answers are stale: the
rater is asked again, and :func:`human_ratings_summary` counts them apart instead of mixing
them into the new run's win rate.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import cohen_kappa_score

from adaptlab.data.formats import Layout, load, record_input
from adaptlab.data.issues import DataError
from adaptlab.data.lock import EVAL_NAME, verify_lock
from adaptlab.evaluate.bootstrap import DEFAULT_RESAMPLES, bootstrap_interval
from adaptlab.paths import inside
from adaptlab.runs import MANIFEST, RunError, RunRecord, read_manifest, read_run

DATABASE = "ratings.sqlite"
SCHEMA_VERSION = 1
"""Version of the ratings table (SQLite's ``user_version``); a newer one is refused by name."""
TIE = "tie"
BOTH_BAD = "both_bad"
SHOWN_CHOICES = ("A", "B", TIE, BOTH_BAD)
"""A choice as the page makes it: A (the left answer) or B (the right one) is better, ..."""
MAX_RATER_LENGTH = 64
RUNS = "runs"
COMPARISON = "comparison.json"

_TABLE = """
CREATE TABLE IF NOT EXISTS ratings (
    rater TEXT NOT NULL,
    rated_at TEXT NOT NULL,
    item INTEGER NOT NULL CHECK (item >= 0),
    run_a TEXT NOT NULL,
    run_b TEXT NOT NULL,
    left_run TEXT NOT NULL CHECK (left_run IN (run_a, run_b)),
    choice TEXT NOT NULL CHECK (choice IN (run_a, run_b, 'tie', 'both_bad')),
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (rater, run_a, run_b, item),
    CHECK (run_a < run_b)
)
"""
_COLUMNS = "rater, rated_at, item, run_a, run_b, left_run, choice, fingerprint"


class RatingError(ValueError):
    """Ratings cannot be made or read as asked; the message names the folder, run or field."""


def checked_rater(name: object) -> str:
    """A rater's name as stored: stripped, 1 to 64 printable characters. A name is data typed
    by a person; anything else is refused with the reason."""
    if not isinstance(name, str):
        raise RatingError(f"rater name must be text, not {type(name).__name__}")
    stripped = name.strip()
    if not stripped:
        raise RatingError("rater name is empty: give a name of 1 to 64 printable characters")
    if len(stripped) > MAX_RATER_LENGTH:
        raise RatingError(
            f"rater name has {len(stripped)} characters: at most {MAX_RATER_LENGTH} are allowed"
        )
    if not stripped.isprintable():
        raise RatingError(
            "rater name contains a control character (a tab, a line break, ...): only "
            "printable characters are allowed"
        )
    return stripped


def canonical_pair(runs: Sequence[str]) -> tuple[str, str]:
    """Two different run names in sorted order: how a pair is stored and looked up."""
    if len(runs) != 2 or runs[0] == runs[1]:
        raise RatingError(f"a rating compares two different runs, not {list(runs)}")
    for name in runs:
        if name in (TIE, BOTH_BAD):
            raise RatingError(
                f"run '{name}': a run of that name cannot be rated, the name stands for a "
                "choice in the ratings; rename the run"
            )
    first, second = sorted(runs)
    return first, second


def _sha256(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class PairAnswers:
    """Two runs' answers on the eval items both answered: what raters compare."""

    runs: tuple[str, str]
    """The run names in canonical (sorted) order."""
    eval_sha256: str
    """The locked eval set both runs answered."""
    answers: Mapping[int, tuple[str, str]]
    """Eval index -> (the answer of ``runs[0]``, the answer of ``runs[1]``)."""

    @property
    def items(self) -> tuple[int, ...]:
        return tuple(sorted(self.answers))

    def fingerprint(self, item: int) -> str:
        """What a rater saw for ``item``: a rating of other answers is stale."""
        return _sha256(self.eval_sha256, item, *self.answers[item])


def read_pair(experiment_folder: Path, runs: Sequence[str]) -> PairAnswers:
    """The answers of two generative runs of ``experiment_folder`` on the items both answered,
    read through the run-folder reader; :class:`RatingError` names the run at fault."""
    pair = canonical_pair(runs)
    records = [_generative_run(experiment_folder, name) for name in pair]
    hashes = {record.manifest.eval_sha256 for record in records}
    if len(hashes) != 1:
        raise RatingError(
            f"runs '{pair[0]}' and '{pair[1]}' in {experiment_folder} answered different eval "
            "sets: rerun `adaptlab compare` so both answer the locked one"
        )
    first, second = ({row.index: row.text for row in r.generations} for r in records)
    shared = sorted(first.keys() & second.keys())
    if not shared:
        raise RatingError(
            f"runs '{pair[0]}' and '{pair[1]}' in {experiment_folder} have no eval item that "
            "both answered: nothing to rate"
        )
    answers = {item: (first[item], second[item]) for item in shared}
    return PairAnswers(pair, hashes.pop(), answers)


def _generative_run(experiment_folder: Path, name: str) -> RunRecord:
    root = experiment_folder / RUNS
    try:
        folder = inside(root, name)
    except ValueError as exc:
        raise RatingError(str(exc)) from None
    if not (folder / MANIFEST).is_file():
        known = ", ".join(run_names(experiment_folder)) or "none"
        raise RatingError(f"no finished run '{name}' in {root} (finished runs there: {known})")
    try:
        record = read_run(folder, predictions=False)
        rows = record.generations
    except RunError as exc:
        raise RatingError(f"run '{name}': {exc}") from None
    if not rows:
        raise RatingError(
            f"run '{name}' ({folder}) has no generations: only a generative run's answers "
            "can be rated"
        )
    return record


def run_names(experiment_folder: Path) -> list[str]:
    """The finished runs of an experiment (folders with a manifest), sorted."""
    root = experiment_folder / RUNS
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST).is_file())


def default_pair(experiment_folder: Path) -> tuple[str, str]:
    """The pair ``adaptlab rate`` asks about unless told: the best run (``comparison.json``'s
    ``best``) against the best-scoring prompted run (the well-prompted base); when that is the
    best run itself or there is none, the two best rows."""
    best, ranked = _read_comparison(experiment_folder)
    prompted = next((n for n in ranked if _role(experiment_folder, n) == "prompted"), None)
    if prompted is not None and prompted != best:
        return best, prompted
    if len(ranked) < 2:
        raise RatingError(
            f"{experiment_folder / COMPARISON} lists {len(ranked)} run(s): rating needs two"
        )
    return ranked[0], ranked[1]


def _read_comparison(experiment_folder: Path) -> tuple[str, list[str]]:
    """``best`` and the run names of ``comparison.json``'s rows, best-scoring first."""
    path = experiment_folder / COMPARISON
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RatingError(
            f"{path}: missing: run `adaptlab compare` first, or name the runs (--runs a,b)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RatingError(f"{path}: unreadable: {exc}") from None
    rows = payload.get("rows") if isinstance(payload, dict) else None
    best = payload.get("best") if isinstance(payload, dict) else None
    if not isinstance(best, str) or not isinstance(rows, list):
        raise RatingError(f"{path}: expected fields 'best' (a run name) and 'rows' (a list)")
    names = [row.get("strategy") for row in rows if isinstance(row, dict)]
    if not all(isinstance(name, str) for name in names):
        raise RatingError(f"{path}: a row's 'strategy' (its run name) is not a string")
    return best, [str(name) for name in names]


def _role(experiment_folder: Path, name: str) -> str | None:
    try:
        profile = read_manifest(inside(experiment_folder / RUNS, name)).profile
    except (RunError, ValueError):
        return None
    return None if profile is None else profile.role


def eval_requests(experiment_folder: Path, answers: PairAnswers) -> dict[int, list[dict[str, str]]]:
    """For each item of ``answers``, the request its runs answered, from the experiment's
    locked ``data/eval.jsonl``: a chat record's messages before its last assistant turn (the
    reference answer), or another generative record's input side."""
    data = experiment_folder / "data"
    try:
        lock = verify_lock(data)
        layout = Layout(lock.format, lock.text_field, lock.label_field)
        records = load(data / EVAL_NAME, layout=layout).records
    except (DataError, OSError) as exc:
        raise RatingError(str(exc)) from None
    if lock.eval_sha256 != answers.eval_sha256:
        raise RatingError(
            f"runs '{answers.runs[0]}' and '{answers.runs[1]}' answered another eval set than "
            f"the one locked in {data}: rerun `adaptlab compare`"
        )
    if len(records) != lock.size or max(answers.items) >= len(records):
        raise RatingError(
            f"{data / EVAL_NAME}: {len(records)} readable records of {lock.size} locked, and "
            f"the runs answered eval item {max(answers.items)}: rerun `adaptlab data prepare`"
        )
    if layout.format == "chat":
        return {item: request_messages(records[item].data) for item in answers.items}
    # completion and alpaca records: the input side as one message
    return {
        item: [{"role": "input", "content": record_input(layout, records[item].data)}]
        for item in answers.items
    }


def request_messages(record: Mapping[str, Any]) -> list[dict[str, str]]:
    """A chat record's role and content of each message before its last assistant turn."""
    messages = record.get("messages")
    if not isinstance(messages, list):
        raise RatingError("an eval record has no 'messages' list: only chat data can be rated")
    roles = [m.get("role") if isinstance(m, Mapping) else None for m in messages]
    last = max((i for i, role in enumerate(roles) if role == "assistant"), default=len(messages))
    return [
        {"role": str(m.get("role")), "content": _text(m.get("content"))} for m in messages[:last]
    ]


def _text(content: Any) -> str:
    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)


@dataclass(frozen=True)
class Assignment:
    """One item as one rater is shown it: which run's answer is on the left (A)."""

    rater: str
    item: int
    left: str
    right: str
    fingerprint: str

    def __post_init__(self) -> None:
        if checked_rater(self.rater) != self.rater:
            raise RatingError("rater name has leading or trailing spaces")
        if isinstance(self.item, bool) or not isinstance(self.item, int) or self.item < 0:
            raise RatingError(f"item {self.item!r} is not an eval index (an integer >= 0)")
        canonical_pair((self.left, self.right))

    @property
    def runs(self) -> tuple[str, str]:
        return canonical_pair((self.left, self.right))

    @property
    def token(self) -> str:
        """Names this assignment without naming the runs: the page sends it back with the
        choice, and a choice made on another assignment (positions, answers) is refused."""
        return _sha256(self.rater, self.item, self.left, self.right, self.fingerprint)[:24]

    def run_choice(self, shown: str) -> str:
        """A choice as the page makes it (:data:`SHOWN_CHOICES`) in run terms."""
        choices = {"A": self.left, "B": self.right, TIE: TIE, BOTH_BAD: BOTH_BAD}
        if shown not in choices:
            raise RatingError(f"choice {shown!r} is not one of {', '.join(SHOWN_CHOICES)}")
        return choices[shown]


def assignments(rater: str, answers: PairAnswers) -> tuple[Assignment, ...]:
    """The items of ``answers`` in ``rater``'s order, each with its sides: ``runs[0]`` on the
    left for exactly half of them (the odd one out drawn too), all drawn from a seed of
    (rater, pair), so the same rater always gets the same assignment."""
    name = checked_rater(rater)
    first, second = answers.runs
    items = answers.items
    seed = int(_sha256("adaptlab.ratings", name, first, second)[:16], 16)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items))
    on_left = len(items) // 2 + (int(rng.integers(2)) if len(items) % 2 else 0)
    first_left = set(rng.permutation(len(items))[:on_left].tolist())
    return tuple(
        Assignment(
            name,
            items[k],
            *((first, second) if k in first_left else (second, first)),
            answers.fingerprint(items[k]),
        )
        for k in order.tolist()
    )


@dataclass(frozen=True)
class Rating:
    """One row of the ratings table."""

    rater: str
    rated_at: str
    """UTC, ISO 8601."""
    item: int
    runs: tuple[str, str]
    """Canonical (sorted) order."""
    left: str
    choice: str
    """The winning run's name, ``tie`` or ``both_bad``."""
    fingerprint: str


@dataclass(frozen=True)
class Progress:
    done: int
    """Items the rater has rated (their current answers)."""
    total: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class RatingStore:
    """``ratings.sqlite`` of one experiment. Each call opens its own connection, so one store
    serves the web server's worker threads."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def open(cls, experiment_folder: Path) -> RatingStore:
        """The experiment's store, the database and its table created when missing."""
        if not experiment_folder.is_dir():
            raise RatingError(f"{experiment_folder}: not an experiment folder (no such folder)")
        store = cls(experiment_folder / DATABASE)
        with store._connection() as connection:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RatingError(
                    f"{store.path}: ratings schema {version} is newer than this adaptlab reads "
                    f"({SCHEMA_VERSION}): upgrade adaptlab"
                )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(_TABLE)
            if version != SCHEMA_VERSION:
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return store

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A connection in a transaction (committed when the block ends, rolled back on an
        error); SQLite's errors become :class:`RatingError` naming the file."""
        try:
            connection = sqlite3.connect(self.path, timeout=30)
        except sqlite3.Error as exc:
            raise RatingError(f"{self.path}: cannot open the ratings database: {exc}") from None
        try:
            with connection:
                yield connection
        except sqlite3.Error as exc:
            raise RatingError(f"{self.path}: {exc}") from None
        finally:
            connection.close()

    def record(self, assignment: Assignment, choice: str) -> Rating:
        """Store ``assignment``'s rating, ``choice`` in run terms, replacing the rater's
        earlier rating of the same item and pair."""
        if choice not in (assignment.left, assignment.right, TIE, BOTH_BAD):
            allowed = f"'{assignment.left}', '{assignment.right}', '{TIE}' or '{BOTH_BAD}'"
            raise RatingError(f"choice {choice!r} is not one of {allowed}")
        rating = Rating(
            rater=assignment.rater,
            rated_at=datetime.now(UTC).isoformat(timespec="seconds"),
            item=assignment.item,
            runs=assignment.runs,
            left=assignment.left,
            choice=choice,
            fingerprint=assignment.fingerprint,
        )
        first, second = rating.runs
        values = (rating.rater, rating.rated_at, rating.item, first, second, rating.left)
        with self._connection() as connection:
            connection.execute(
                f"INSERT OR REPLACE INTO ratings ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*values, rating.choice, rating.fingerprint),
            )
        return rating

    def ratings(self, rater: str | None = None, runs: Sequence[str] | None = None) -> list[Rating]:
        """Every rating, or a rater's, or a pair's, by item."""
        query, values = f"SELECT {_COLUMNS} FROM ratings WHERE 1 = 1", list[str]()
        if rater is not None:
            query, values = query + " AND rater = ?", [*values, rater]
        if runs is not None:
            query, values = query + " AND run_a = ? AND run_b = ?", [*values, *canonical_pair(runs)]
        with self._connection() as connection:
            rows = connection.execute(query + " ORDER BY run_a, run_b, item, rater", values)
            return [
                Rating(rater, rated_at, item, (a, b), left, choice, fingerprint)
                for rater, rated_at, item, a, b, left, choice, fingerprint in rows.fetchall()
            ]

    def rated_items(self, rater: str, answers: PairAnswers) -> set[int]:
        """The items ``rater`` has rated for the answers shown now (stale ratings not)."""
        name = checked_rater(rater)
        return {
            r.item
            for r in self.ratings(name, answers.runs)
            if r.item in answers.answers and r.fingerprint == answers.fingerprint(r.item)
        }

    def next_item(self, rater: str, answers: PairAnswers) -> Assignment | None:
        """The first item in ``rater``'s order that they have not rated; ``None`` when all are."""
        done = self.rated_items(rater, answers)
        return next((a for a in assignments(rater, answers) if a.item not in done), None)

    def progress(self, rater: str, answers: PairAnswers) -> Progress:
        return Progress(len(self.rated_items(rater, answers)), len(answers.answers))


def human_ratings_summary(
    experiment_folder: Path,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any] | None:
    """The ratings of ``experiment_folder`` per pair of runs, JSON-ready; ``None`` when nobody
    has rated (no ``ratings.sqlite``).

    A run's win rate is (wins + 0.5 ties) / rated items, with both-bad items counted as no win
    for either; where several raters rated an item, the item counts once with their mean. Its
    interval is the percentile bootstrap over items. Agreement is Cohen's κ (Cohen, 1960) over
    the four choices for every two raters on the items both rated. Ratings of answers that have
    changed since (a redone run) are left out and counted as ``stale``.
    """
    if not (experiment_folder / DATABASE).is_file():
        return None
    by_pair: dict[tuple[str, str], list[Rating]] = defaultdict(list)
    for rating in RatingStore.open(experiment_folder).ratings():
        by_pair[rating.runs].append(rating)
    settings = (resamples, confidence, seed)
    return {
        "database": DATABASE,
        "confidence": confidence,
        "resamples": resamples,
        "pairs": [
            _pair_summary(experiment_folder, runs, by_pair[runs], settings)
            for runs in sorted(by_pair)
        ],
    }


def _pair_summary(
    experiment_folder: Path,
    runs: tuple[str, str],
    rows: list[Rating],
    settings: tuple[int, float, int],
) -> dict[str, Any]:
    try:
        answers: PairAnswers | None = read_pair(experiment_folder, runs)
        problem = None
    except RatingError as exc:
        answers, problem = None, str(exc)
    current = [r for r in rows if answers is not None and _is_current(r, answers)]
    counts = Counter(r.choice for r in current)
    return {
        "runs": list(runs),
        "count": len(current),
        "items": len({r.item for r in current}),
        "raters": sorted({r.rater for r in current}),
        "wins": {name: counts[name] for name in runs},
        "ties": counts[TIE],
        "both_bad": counts[BOTH_BAD],
        **_win_rates(current, runs, settings),
        "kappa": _agreements(current, runs),
        "stale": len(rows) - len(current),
        "problem": problem,
    }


def _is_current(rating: Rating, answers: PairAnswers) -> bool:
    return rating.item in answers.answers and rating.fingerprint == answers.fingerprint(rating.item)


def _win_rates(
    ratings: list[Rating], runs: tuple[str, str], settings: tuple[int, float, int]
) -> dict[str, Any]:
    """Each run's win rate over items and its bootstrap interval (``None`` without ratings)."""
    if not ratings:
        return {"win_rate": dict.fromkeys(runs), "win_rate_ci": dict.fromkeys(runs)}
    resamples, confidence, seed = settings
    rates, intervals = {}, {}
    for name in runs:
        scores = _item_scores(ratings, name)
        rates[name] = float(scores.mean())
        low, high = bootstrap_interval(
            scores, resamples=resamples, confidence=confidence, seed=seed
        )
        intervals[name] = [low, high]
    return {"win_rate": rates, "win_rate_ci": intervals}


def _item_scores(ratings: list[Rating], run: str) -> np.ndarray:
    """Per item, by item: the mean over its raters of 1 (``run`` won), 0.5 (tie) or 0."""
    per_item: dict[int, list[float]] = defaultdict(list)
    for rating in ratings:
        per_item[rating.item].append(1.0 if rating.choice == run else 0.5 * (rating.choice == TIE))
    return np.array([np.mean(per_item[item]) for item in sorted(per_item)], dtype=np.float64)


def _agreements(ratings: list[Rating], runs: tuple[str, str]) -> list[dict[str, Any]]:
    """Cohen's κ and the raw agreement for every two raters with items in common."""
    by_rater: dict[str, dict[int, str]] = defaultdict(dict)
    for rating in ratings:
        by_rater[rating.rater][rating.item] = rating.choice
    labels = [*runs, TIE, BOTH_BAD]
    result = []
    for first, second in combinations(sorted(by_rater), 2):
        shared = sorted(by_rater[first].keys() & by_rater[second].keys())
        if not shared:
            continue
        a = [by_rater[first][item] for item in shared]
        b = [by_rater[second][item] for item in shared]
        result.append(
            {
                "raters": [first, second],
                "n": len(shared),
                "kappa": _kappa(a, b, labels),
                "agreement": sum(x == y for x, y in zip(a, b, strict=True)) / len(shared),
            }
        )
    return result


def _kappa(a: list[str], b: list[str], labels: list[str]) -> float | None:
    """Cohen's κ; ``None`` where it is undefined (chance agreement 1: both raters gave one and
    the same choice throughout)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns where kappa is 0/0; None says so
        value = float(cohen_kappa_score(a, b, labels=labels, replace_undefined_by=np.nan))
    return value if math.isfinite(value) else None
