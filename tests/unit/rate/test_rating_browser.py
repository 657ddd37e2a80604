"""The rating page as a rater uses it: headless Chromium (Debian's ``chromium``, driven by
Playwright's Python API, never a browser Playwright downloads) against a real uvicorn server.
A rater enters a name, rates ten items with buttons and keyboard shortcuts, reloads half-way,
and the database holds exactly those ten choices in run terms; the page asks nothing of any
host but the server, and shows an HTML request as text.

Skipped, saying why, without Chromium or Playwright; under CI (``CI`` set) with Chromium
present, a missing Playwright fails instead of skipping."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from tests.unit.rate.conftest import EVAL_ITEMS, HTML_REQUEST, serving

from adaptlab.ratings import Assignment, PairAnswers, RatingStore, assignments, read_pair
from adaptlab.serve.rating import rating_app

PAIR = ("few_shot", "prompt")
RATER = "Ann Berg"
# (how, what): a button's data-choice, or a key; both kinds for every choice
PLAN = [
    ("click", "A"),
    ("key", "2"),
    ("click", "tie"),
    ("key", "x"),
    ("key", "a"),
    ("click", "B"),
    ("key", "3"),
    ("click", "both_bad"),
    ("key", "b"),
    ("key", "1"),
]
SHOWN = {"1": "A", "a": "A", "2": "B", "b": "B", "3": "tie", "t": "tie", "4": "both_bad"}
SHOWN["x"] = "both_bad"


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.skip("no chromium on PATH: apt-get install chromium to run the rating page test")
    return found


@pytest.fixture(scope="module")
def sync_playwright(chromium: str) -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"chromium is installed but playwright cannot be imported: {exc}")
        pytest.skip(f"playwright is not installed ({exc}): pip install -e '.[dev]'")
    return sync_playwright


def test_a_rater_rates_ten_items_in_the_browser(
    experiment: Path, chromium: str, sync_playwright: Any
) -> None:
    from playwright.sync_api import expect

    answers = read_pair(experiment, PAIR)
    order = assignments(RATER, answers)
    requested: list[str] = []
    shown_html: list[bool] = []
    with (
        serving(rating_app(experiment, PAIR)) as base,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"], headless=True
        )
        try:
            page = browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.goto(f"{base}/")
            progress = page.locator("#progress")
            page.fill("#rater", f"  {RATER} ")
            page.click("#start")
            expect(progress).to_have_text(f"0 / {EVAL_ITEMS} rated")
            expect(page.locator("#rater-name")).to_have_text(RATER)
            for label in ("1", "a", "2", "b", "3", "t", "4", "x"):
                expect(page.locator("kbd", has_text=label)).to_have_count(1)

            for k, (how, what) in enumerate(PLAN):
                if k == 5:  # a reload half-way resumes at the next unrated item, same name
                    page.reload()
                    expect(progress).to_have_text(f"5 / {EVAL_ITEMS} rated")
                    expect(page.locator("#who")).to_be_hidden()
                shown_html.append(shows_assigned(page, expect, answers, order[k]))
                if how == "click":
                    page.click(f"button[data-choice='{what}']")
                else:
                    page.keyboard.press(what)
                expect(progress).to_have_text(f"{k + 1} / {EVAL_ITEMS} rated")

            ratings = RatingStore.open(experiment).ratings()
            assert len(ratings) == 10
            by_item = {r.item: r for r in ratings}
            assert set(by_item) == {a.item for a in order[:10]}
            for (how, what), assignment in zip(PLAN, order, strict=False):
                rating = by_item[assignment.item]
                shown = what if how == "click" else SHOWN[what]
                assert rating.rater == RATER and rating.runs == PAIR
                assert rating.left == assignment.left
                assert rating.choice == assignment.run_choice(shown)

            last = rate_all_but_one(experiment, order[10:])
            page.reload()
            shown_html.append(shows_assigned(page, expect, answers, last))
            page.keyboard.press("t")
            expect(progress).to_have_text(f"{EVAL_ITEMS} / {EVAL_ITEMS} rated")
            expect(page.locator("#finished-text")).to_contain_text(f"All {EVAL_ITEMS} items")
            expect(page.locator("#rating")).to_be_hidden()
            assert any(shown_html)  # and its markup was text, and its script never ran:
            assert page.evaluate("window.pwned") is None
        finally:
            browser.close()
    hosts = {urlsplit(url).hostname for url in requested if not url.startswith("data:")}
    assert hosts == {"127.0.0.1"}, requested


def shows_assigned(page: Any, expect: Any, answers: PairAnswers, assignment: Assignment) -> bool:
    """Check that the page shows ``assignment``: its item, its request as text, its answers on
    its sides. Whether the request was the HTML one."""
    expect(page.locator("#item")).to_have_text(str(assignment.item))
    texts = dict(zip(PAIR, answers.answers[assignment.item], strict=True))
    assert page.locator("#answer-a").text_content() == texts[assignment.left]
    assert page.locator("#answer-b").text_content() == texts[assignment.right]
    request = page.locator("#request pre").all_text_contents()
    assert len(request) == 2 and request[0].startswith("Extract the restaurant-booking")
    assert page.locator("#request script, #request b").count() == 0
    return request[1] == HTML_REQUEST


def rate_all_but_one(experiment: Path, unrated: Sequence[Assignment]) -> Assignment:
    """Rate every item in ``unrated`` (as the page would) but one, the HTML request where it is
    among them; the one left."""
    html_item = next(i for i, text in _user_texts(experiment).items() if text == HTML_REQUEST)
    left = next((a for a in unrated if a.item == html_item), unrated[-1])
    store = RatingStore.open(experiment)
    for assignment in unrated:
        if assignment != left:
            store.record(assignment, "tie")
    return left


def _user_texts(experiment: Path) -> dict[int, str]:
    lines = (experiment / "data" / "eval.jsonl").read_text().splitlines()
    return {i: json.loads(line)["messages"][1]["content"] for i, line in enumerate(lines)}
