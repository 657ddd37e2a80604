"""The rating server over real HTTP (uvicorn on a loopback port): what the page is sent, the
choices it may post, what it refuses, the page itself (nothing from elsewhere, no run names),
``adaptlab rate``'s errors, and that the ratings module does not need the web stack."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from tests.unit.rate.conftest import EVAL_ITEMS, HTML_REQUEST, serving
from typer.testing import CliRunner

from adaptlab.cli import app as cli
from adaptlab.ratings import RatingError, RatingStore, assignments, read_pair
from adaptlab.serve.rating import PAGE, rating_app

PAIR = ("few_shot", "prompt")


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    return _send(urllib.request.Request(url, headers=headers or {}))


def post(url: str, body: object) -> tuple[int, Any]:
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    return _send(urllib.request.Request(url, data=data, headers=headers, method="POST"))


def _send(request: urllib.request.Request) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as error:
        body, status = error.read().decode(), error.code
    try:
        return status, json.loads(body)
    except json.JSONDecodeError:
        return status, body


def test_a_rater_rates_every_item_through_the_api(experiment: Path) -> None:
    answers = read_pair(experiment, PAIR)
    order = assignments("ann", answers)
    choices = ["A", "B", "tie", "both_bad"]
    with serving(rating_app(experiment, ("prompt", "few_shot"))) as base:
        for k, assignment in enumerate(order):
            status, state = get(f"{base}/api/next?rater=ann")
            assert status == 200 and state["done"] is False
            assert state["item"] == assignment.item and state["token"] == assignment.token
            assert state["progress"] == {"done": k, "total": EVAL_ITEMS}
            texts = dict(zip(PAIR, answers.answers[assignment.item], strict=True))
            assert state["answers"] == {"A": texts[assignment.left], "B": texts[assignment.right]}
            assert set(state) == {"done", "item", "token", "request", "answers", "progress"}
            assert "few_shot" not in json.dumps(state)  # blind: no run name is sent
            body = {"rater": " ann ", "item": state["item"], "token": state["token"]}
            status, after = post(f"{base}/api/ratings", {**body, "choice": choices[k % 4]})
            assert status == 200 and after["progress"]["done"] == k + 1
        assert get(f"{base}/api/next?rater=ann")[1] == {
            "done": True,
            "progress": {"done": EVAL_ITEMS, "total": EVAL_ITEMS},
        }
        assert get(f"{base}/api/progress?rater=ann")[1] == {"done": EVAL_ITEMS, "total": 17}
        status, summary = get(f"{base}/api/summary")
    assert status == 200
    (pair,) = summary["pairs"]
    assert pair["count"] == EVAL_ITEMS and pair["ties"] == 4 and pair["both_bad"] == 4
    ratings = RatingStore.open(experiment).ratings()
    by_item = {r.item: r for r in ratings}
    for k, assignment in enumerate(order):
        expected = assignment.run_choice(choices[k % 4])
        assert by_item[assignment.item].choice == expected
        assert by_item[assignment.item].left == assignment.left


def test_the_request_is_sent_as_text_for_the_page_to_show(experiment: Path) -> None:
    answers = read_pair(experiment, PAIR)
    html_item = next(
        item for item, request in _requests(experiment).items() if HTML_REQUEST in request
    )
    store = RatingStore.open(experiment)
    for assignment in assignments("bob", answers):  # everything but the HTML request
        if assignment.item != html_item:
            store.record(assignment, "tie")
    with serving(rating_app(experiment, PAIR)) as base:
        state = get(f"{base}/api/next?rater=bob")[1]
    assert state["item"] == html_item
    assert state["request"][-1] == {"role": "user", "content": HTML_REQUEST}
    assert state["request"][0]["role"] == "system"


def _requests(experiment: Path) -> dict[int, str]:
    lines = (experiment / "data" / "eval.jsonl").read_text().splitlines()
    return {i: json.loads(line)["messages"][1]["content"] for i, line in enumerate(lines)}


def test_choices_the_server_did_not_assign_are_refused(experiment: Path) -> None:
    with serving(rating_app(experiment, PAIR)) as base:
        state = get(f"{base}/api/next?rater=ann")[1]
        good = {"rater": "ann", "item": state["item"], "token": state["token"], "choice": "A"}
        cases = [
            ({**good, "token": "0" * 24}, 409, "other answers or sides"),
            ({**good, "rater": "bob"}, 409, "other answers or sides"),  # ann's token
            ({**good, "choice": "C"}, 400, "'C' is not one of A, B, tie, both_bad"),
            ({**good, "choice": "prompt"}, 400, "is not one of A, B"),  # run names are not choices
            ({**good, "item": 999}, 404, "eval item 999 is not one of the items"),
            ({**good, "item": "3"}, 422, "item: Input should be a valid integer"),
            ({**good, "rater": "  "}, 400, "rater name is empty"),
            ({**good, "rater": "a\tb"}, 400, "control character"),
            ({**good, "extra": 1}, 422, "extra"),
        ]
        for body, status, message in cases:
            answer = post(f"{base}/api/ratings", body)
            assert answer[0] == status and message in answer[1]["detail"], (body, answer)
        assert get(f"{base}/api/next?rater=" + "r" * 65)[0] == 400
        assert get(f"{base}/api/next")[0] == 422
        assert RatingStore.open(experiment).ratings() == []
        assert post(f"{base}/api/ratings", good)[0] == 200


def test_the_page_loads_nothing_from_elsewhere_and_names_no_run(experiment: Path) -> None:
    with serving(rating_app(experiment, PAIR)) as base:
        with urllib.request.urlopen(f"{base}/", timeout=30) as response:
            page = response.read().decode()
            policy = response.headers["Content-Security-Policy"]
        assert get(f"{base}/docs")[0] == 404  # FastAPI's docs page loads a CDN's scripts
        assert get(f"{base}/api/summary", {"Host": "rebound.example"})[0] == 400
    assert page == PAGE
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert not re.search(r"https?:|//[a-z]|\bsrc=|@import|url\(", page, re.IGNORECASE)
    for label in ("A is better", "B is better", "Tie", "Both bad"):
        assert label in page
    for key in "1234abtx":
        assert f"<kbd>{key}</kbd>" in page


def test_the_app_refuses_what_it_cannot_rate(experiment: Path) -> None:
    with pytest.raises(RatingError, match="no finished run 'nope'"):
        rating_app(experiment, ("prompt", "nope"))
    with pytest.raises(RatingError, match="not an experiment folder"):
        rating_app(experiment / "missing", None)
    (experiment / "comparison.json").unlink()
    with pytest.raises(RatingError, match="comparison.json: missing"):
        rating_app(experiment, None)


def test_the_rate_command_prints_errors(experiment: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["rate", str(experiment), "--runs", "prompt"])
    assert result.exit_code == 2 and "error:" in result.output and "two run names" in result.output
    result = runner.invoke(cli, ["rate", str(experiment), "--runs", "prompt,nope"])
    assert result.exit_code == 2 and "no finished run 'nope'" in result.output
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = runner.invoke(cli, ["rate", str(experiment), "--port", port])
    assert result.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in result.output
    result = runner.invoke(cli, ["rate", str(experiment), "--port", "70000"])
    assert result.exit_code == 2


def test_the_ratings_module_does_not_import_the_web_stack() -> None:
    code = (
        "import sys, adaptlab.ratings\n"
        "web = sorted({m.split('.')[0] for m in sys.modules} & {'fastapi', 'starlette', "
        "'uvicorn'})\n"
        "assert not web, web\n"
        "assert not [m for m in sys.modules if m.startswith(('adaptlab.strategies', "
        "'adaptlab.train', 'adaptlab.compare', 'adaptlab.serve'))]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
