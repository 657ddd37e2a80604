"""The ratings store and its statistics: balanced, repeatable assignments, resume, replace on
re-rate, stale ratings of redone runs, win rates with their bootstrap interval, Cohen's κ, the
default pair, and what is refused. Numbers are checked against hand computations and
scikit-learn, on a real tiny experiment folder (``conftest.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sklearn.metrics import cohen_kappa_score
from tests.unit.rate.conftest import EVAL_ITEMS, HTML_REQUEST

from adaptlab.evaluate.bootstrap import bootstrap_interval
from adaptlab.ratings import (
    BOTH_BAD,
    DATABASE,
    TIE,
    Assignment,
    PairAnswers,
    RatingError,
    RatingStore,
    assignments,
    checked_rater,
    default_pair,
    eval_requests,
    human_ratings_summary,
    read_pair,
)
from adaptlab.runs import RunFolder, read_run

PAIR = ("few_shot", "prompt")  # canonical order


def hand_made(n: int, runs: tuple[str, str] = ("a", "b")) -> PairAnswers:
    return PairAnswers(
        runs, "eval-sha", {i: (f"{runs[0]} {i}", f"{runs[1]} {i}") for i in range(n)}
    )


def rate(store: RatingStore, answers: PairAnswers, rater: str, choices: dict[int, str]) -> None:
    """``rater`` rates each item of ``choices`` (run terms) as assigned to them."""
    assigned = {a.item: a for a in assignments(rater, answers)}
    for item, choice in choices.items():
        store.record(assigned[item], choice)


@pytest.mark.parametrize("n", [1, 2, 7, 16, 17, 200])
def test_each_run_is_on_the_left_for_half_of_a_raters_items(n: int) -> None:
    answers = hand_made(n)
    for rater in ("ann", "bob", "Zoë 李", "r" * 64):
        assigned = assignments(rater, answers)
        assert sorted(a.item for a in assigned) == list(range(n))
        left_a = sum(a.left == "a" for a in assigned)
        assert left_a in (n // 2, (n + 1) // 2)
        assert all({a.left, a.right} == {"a", "b"} for a in assigned)
        assert assignments(rater, answers) == assigned  # the same every time


def test_assignments_are_pinned_per_rater_and_pair() -> None:
    answers = hand_made(8)
    ann = [(a.item, a.left) for a in assignments("ann", answers)]
    bob = [(a.item, a.left) for a in assignments("bob", answers)]
    # Golden: numpy's PCG64 from a sha256 of (rater, pair). A change here reshuffles every
    # rater's resumed session and must say why.
    assert ann == [(2, "b"), (0, "a"), (1, "b"), (6, "b"), (3, "a"), (5, "b"), (7, "a"), (4, "a")]
    assert bob == [(4, "b"), (1, "a"), (6, "a"), (5, "b"), (7, "b"), (2, "a"), (3, "a"), (0, "b")]


def test_a_resumed_session_continues_at_the_next_unrated_item(experiment: Path) -> None:
    answers = read_pair(experiment, ["prompt", "few_shot"])
    assert answers.runs == PAIR and len(answers.items) == EVAL_ITEMS
    order = assignments("ann", answers)
    store = RatingStore.open(experiment)
    assert store.next_item("ann", answers) == order[0]
    store.record(order[0], order[0].left)
    store.record(order[1], TIE)

    reopened = RatingStore.open(experiment)  # a reload, or a new server on the same folder
    assert reopened.next_item("ann", answers) == order[2]
    assert reopened.progress("ann", answers).to_dict() == {"done": 2, "total": EVAL_ITEMS}
    assert reopened.next_item("bob", answers) == assignments("bob", answers)[0]
    assert reopened.progress("bob", answers).done == 0

    for assignment in order[2:]:
        reopened.record(assignment, BOTH_BAD)
    assert reopened.next_item("ann", answers) is None
    assert reopened.progress("ann", answers).done == EVAL_ITEMS


def test_rating_an_item_again_replaces_the_rating(experiment: Path) -> None:
    answers = read_pair(experiment, PAIR)
    first = assignments("ann", answers)[0]
    store = RatingStore.open(experiment)
    store.record(first, first.left)
    store.record(first, BOTH_BAD)
    (only,) = store.ratings()
    assert (only.rater, only.item, only.runs, only.left, only.choice) == (
        "ann",
        first.item,
        PAIR,
        first.left,
        BOTH_BAD,
    )
    assert only.rated_at.endswith("+00:00")  # UTC, ISO 8601


def test_the_database_is_sqlite_in_wal_mode_with_one_table(experiment: Path) -> None:
    import sqlite3

    RatingStore.open(experiment)
    with sqlite3.connect(experiment / DATABASE) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        tables = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        assert tables.fetchall() == [("ratings",)]
        connection.execute("PRAGMA user_version = 99")
    with pytest.raises(RatingError, match="ratings schema 99 is newer"):
        RatingStore.open(experiment)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("r" * 65, "65 characters: at most 64"),
        ("tab\there", "control character"),
        ("two\nlines", "control character"),
        ("nul\x00", "control character"),
        ("bell\x07", "control character"),
        (5, "must be text"),
    ],
)
def test_bad_rater_names_are_refused(name: object, reason: str) -> None:
    with pytest.raises(RatingError, match=reason):
        checked_rater(name)
    if isinstance(name, str):
        with pytest.raises(RatingError):
            assignments(name, hand_made(2))


def test_rater_names_are_stripped_and_may_be_any_printable_text() -> None:
    assert checked_rater("  Ann Berg \n") == "Ann Berg"
    assert checked_rater("Zoë 李 <b>&") == "Zoë 李 <b>&"
    assert checked_rater("r" * 64) == "r" * 64
    with pytest.raises(RatingError, match="leading or trailing"):
        Assignment(" ann", 0, "a", "b", "fp")


def test_a_choice_is_stored_in_run_terms_whatever_the_side(experiment: Path) -> None:
    answers = read_pair(experiment, PAIR)
    assigned = assignments("ann", answers)
    left_few_shot = next(a for a in assigned if a.left == "few_shot")
    left_prompt = next(a for a in assigned if a.left == "prompt")
    assert left_few_shot.run_choice("A") == "few_shot" == left_prompt.run_choice("B")
    assert left_prompt.run_choice("A") == "prompt" == left_few_shot.run_choice("B")
    assert left_prompt.run_choice("tie") == TIE and left_prompt.run_choice("both_bad") == BOTH_BAD
    with pytest.raises(RatingError, match="'C' is not one of A, B, tie, both_bad"):
        left_prompt.run_choice("C")
    with pytest.raises(RatingError, match="'zero_shot' is not one of"):
        RatingStore.open(experiment).record(left_prompt, "zero_shot")


def test_win_rates_and_their_interval(experiment: Path) -> None:
    answers = read_pair(experiment, PAIR)
    items = answers.items
    # 17 items: prompt wins 8, few_shot 5, 2 ties, 2 both bad
    choices = ["prompt"] * 8 + ["few_shot"] * 5 + [TIE] * 2 + [BOTH_BAD] * 2
    store = RatingStore.open(experiment)
    rate(store, answers, "ann", dict(zip(items, choices, strict=True)))

    summary = human_ratings_summary(experiment)
    assert summary is not None
    (pair,) = summary["pairs"]
    assert pair["runs"] == list(PAIR) and pair["count"] == 17 and pair["items"] == 17
    assert pair["wins"] == {"few_shot": 5, "prompt": 8}
    assert (pair["ties"], pair["both_bad"], pair["stale"]) == (2, 2, 0)
    assert pair["win_rate"]["prompt"] == pytest.approx((8 + 0.5 * 2) / 17)
    assert pair["win_rate"]["few_shot"] == pytest.approx((5 + 0.5 * 2) / 17)
    prompt_scores = [1.0] * 8 + [0.0] * 5 + [0.5] * 2 + [0.0] * 2
    expected = bootstrap_interval(prompt_scores, resamples=2000, seed=0)
    assert pair["win_rate_ci"]["prompt"] == pytest.approx(list(expected))
    low, high = pair["win_rate_ci"]["prompt"]
    assert 0.2 < low < pair["win_rate"]["prompt"] < high < 0.8
    assert pair["raters"] == ["ann"] and pair["kappa"] == [] and pair["problem"] is None
    json.dumps(summary, allow_nan=False)  # JSON-ready: it goes into comparison.json


def test_two_raters_kappa_equals_sklearn_and_items_count_once(experiment: Path) -> None:
    answers = read_pair(experiment, PAIR)
    items = answers.items
    p, f = "prompt", "few_shot"
    ann = dict(zip(items[:5], [p, f, TIE, p, f], strict=True))
    bob = dict(zip(items[:5], [p, f, p, p, TIE], strict=True))
    bob[items[5]] = f  # rated by bob alone
    store = RatingStore.open(experiment)
    rate(store, answers, "ann", ann)
    rate(store, answers, "bob", bob)

    summary = human_ratings_summary(experiment, resamples=500)
    assert summary is not None and summary["resamples"] == 500
    (pair,) = summary["pairs"]
    (agreement,) = pair["kappa"]
    assert agreement["raters"] == ["ann", "bob"] and agreement["n"] == 5
    # By hand: observed agreement 3/5; marginals ann (p 2, f 2, tie 1), bob (p 3, f 1, tie 1)
    # give chance agreement (2*3 + 2*1 + 1*1) / 25 = 0.36, so κ = (0.6 - 0.36) / 0.64 = 0.375.
    assert agreement["agreement"] == pytest.approx(0.6)
    assert agreement["kappa"] == pytest.approx(0.375)
    expected = cohen_kappa_score(list(ann.values()), [bob[i] for i in ann])
    assert agreement["kappa"] == pytest.approx(expected)

    assert pair["count"] == 11 and pair["items"] == 6 and pair["raters"] == ["ann", "bob"]
    assert pair["wins"] == {"few_shot": 4, "prompt": 5} and pair["ties"] == 2
    # per item, the raters' mean: 1, 0, (0.5 + 1) / 2, 1, (0 + 0.5) / 2, 0 for prompt
    assert pair["win_rate"]["prompt"] == pytest.approx((1 + 0 + 0.75 + 1 + 0.25 + 0) / 6)
    assert pair["win_rate"]["few_shot"] == pytest.approx((0 + 1 + 0.25 + 0 + 0.75 + 1) / 6)


def test_kappa_is_none_where_it_is_undefined(experiment: Path) -> None:
    answers = read_pair(experiment, PAIR)
    store = RatingStore.open(experiment)
    for rater in ("ann", "bob"):
        rate(store, answers, rater, dict.fromkeys(answers.items[:4], TIE))
    summary = human_ratings_summary(experiment)
    assert summary is not None
    (agreement,) = summary["pairs"][0]["kappa"]
    assert agreement == {"raters": ["ann", "bob"], "n": 4, "kappa": None, "agreement": 1.0}
    json.dumps(summary, allow_nan=False)


def test_ratings_of_changed_answers_are_stale(experiment: Path) -> None:
    answers = read_pair(experiment, PAIR)
    order = assignments("ann", answers)
    store = RatingStore.open(experiment)
    for assignment in order[:3]:
        store.record(assignment, "prompt")
    changed = order[1].item
    run = RunFolder(experiment / "runs" / "prompt")
    rows = [
        {**vars(row), "text": row.text + " (redone)" if row.index == changed else row.text}
        for row in read_run(run.path, predictions=False).generations
    ]
    run.write_generations(rows)  # as a redone run would

    redone = read_pair(experiment, PAIR)
    assert store.next_item("ann", redone) == assignments("ann", redone)[1]  # asked again
    assert store.progress("ann", redone).done == 2
    summary = human_ratings_summary(experiment)
    assert summary is not None
    (pair,) = summary["pairs"]
    assert (pair["count"], pair["stale"], pair["wins"]["prompt"]) == (2, 1, 2)


def test_ratings_of_a_run_that_is_gone_are_stale_and_say_why(experiment: Path) -> None:
    answers = read_pair(experiment, PAIR)
    rate(RatingStore.open(experiment), answers, "ann", dict.fromkeys(answers.items[:2], TIE))
    (experiment / "runs" / "few_shot" / "manifest.json").unlink()
    summary = human_ratings_summary(experiment)
    assert summary is not None
    (pair,) = summary["pairs"]
    assert (pair["count"], pair["stale"]) == (0, 2)
    assert pair["win_rate"] == {"few_shot": None, "prompt": None}
    assert "no finished run 'few_shot'" in pair["problem"]


def test_no_database_no_summary(experiment: Path) -> None:
    assert human_ratings_summary(experiment) is None
    assert not (experiment / DATABASE).exists()


def test_eval_requests_are_the_messages_before_the_answer(experiment: Path) -> None:
    answers = read_pair(experiment, PAIR)
    requests = eval_requests(experiment, answers)
    assert sorted(requests) == list(range(EVAL_ITEMS))
    records = [json.loads(line) for line in (experiment / "data" / "eval.jsonl").open()]
    for item, messages in requests.items():
        assert messages == [
            {"role": m["role"], "content": m["content"]} for m in records[item]["messages"][:-1]
        ]
    assert any(m["content"] == HTML_REQUEST for ms in requests.values() for m in ms)


def test_the_default_pair_is_the_best_against_the_best_prompted(experiment: Path) -> None:
    path = experiment / "comparison.json"
    comparison = json.loads(path.read_text())

    def rank(best: str, names: list[str]) -> None:
        rows = {row["strategy"]: row for row in comparison["rows"]}
        path.write_text(json.dumps({**comparison, "best": best, "rows": [rows[n] for n in names]}))

    rank("prompt", ["prompt", "few_shot"])  # few_shot is the prompted run, prompt the base
    assert default_pair(experiment) == ("prompt", "few_shot")
    rank("few_shot", ["few_shot", "prompt"])  # the best is the prompted run: the top two
    assert default_pair(experiment) == ("few_shot", "prompt")
    rank("few_shot", ["few_shot"])
    with pytest.raises(RatingError, match="lists 1 run"):
        default_pair(experiment)
    path.unlink()
    with pytest.raises(RatingError, match="comparison.json: missing.*--runs"):
        default_pair(experiment)


def test_what_cannot_be_rated_is_refused_by_name(experiment: Path) -> None:
    with pytest.raises(RatingError, match=r"no finished run 'nope' in .*runs \(finished runs "):
        read_pair(experiment, ["prompt", "nope"])
    with pytest.raises(RatingError, match="two different runs"):
        read_pair(experiment, ["prompt", "prompt"])
    with pytest.raises(RatingError, match="is not a name"):
        read_pair(experiment, ["prompt", "../chat"])
    with pytest.raises(RatingError, match="stands for a choice"):
        read_pair(experiment, ["prompt", "tie"])

    few_shot = RunFolder(experiment / "runs" / "few_shot")
    rows = [vars(row) for row in read_run(few_shot.path, predictions=False).generations]
    few_shot.write_generations([row for row in rows if row["index"] >= 9])
    RunFolder(experiment / "runs" / "prompt").write_generations(
        [row for row in rows if row["index"] < 9]
    )
    with pytest.raises(RatingError, match="no eval item that both answered"):
        read_pair(experiment, PAIR)
    few_shot.write_generations([])
    with pytest.raises(RatingError, match=r"run 'few_shot' \(.*few_shot\) has no generations"):
        read_pair(experiment, PAIR)
    (few_shot.path / "generations.jsonl").unlink()
    with pytest.raises(RatingError, match="run 'few_shot': .*generations.jsonl: unreadable"):
        read_pair(experiment, PAIR)


def test_requests_of_a_changed_eval_set_are_refused(experiment: Path) -> None:
    answers = read_pair(experiment, PAIR)
    with (experiment / "data" / "eval.jsonl").open("a") as handle:
        handle.write("\n")
    with pytest.raises(RatingError, match="changed since it was locked"):
        eval_requests(experiment, answers)
    other = PairAnswers(PAIR, "another-sha", answers.answers)
    (experiment / "data" / "eval.jsonl").write_text(
        (experiment / "data" / "eval.jsonl").read_text()[:-1]
    )
    with pytest.raises(RatingError, match="answered another eval set"):
        eval_requests(experiment, other)


def test_fingerprints_follow_the_answers_and_the_eval_set() -> None:
    answers = hand_made(3)
    same = PairAnswers(("a", "b"), "eval-sha", dict(answers.answers))
    other_text = PairAnswers(("a", "b"), "eval-sha", {**answers.answers, 1: ("a 1", "changed")})
    other_eval = PairAnswers(("a", "b"), "other-sha", dict(answers.answers))
    assert same.fingerprint(1) == answers.fingerprint(1)
    assert other_text.fingerprint(1) != answers.fingerprint(1)
    assert other_text.fingerprint(0) == answers.fingerprint(0)
    assert other_eval.fingerprint(0) != answers.fingerprint(0)
