"""The canary (:mod:`adaptlab.serve.canary`): the gate on the eval set, the sticky split, the
guards, and, over real HTTP (uvicorn on 127.0.0.1) with a real registry, a broken candidate
rolled back with no failed request and a healthy one promoted.

The runs are three tiny classifiers made by one ``compare`` on the tiny BERT: ``zero_shot``
scores 60% on the 15 eval items, ``frozen`` and ``knn`` 46.7% (and agree on all but one). The
candidate ``frozen`` against the champion ``zero_shot`` is -13.3 points, 95% interval
[-46.7, +20.0] (paired bootstrap, seed 0): refused at a 10-point margin, passed at 50.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from safetensors.numpy import load_file, save_file
from tests.unit.serve.conftest import Server, _compare, serving
from tests.unit.strategies.test_compare import TOPICS, tiny_runs_config
from typer.testing import CliRunner

from adaptlab import predict
from adaptlab.cli import app as cli
from adaptlab.predict import Answer, LoadedModel
from adaptlab.registry import Registry, parse_reference
from adaptlab.runs import PREDICTIONS, read_run
from adaptlab.serve.app import create_app
from adaptlab.serve.canary import (
    APPROVER,
    Canary,
    CanaryRefused,
    CanarySettings,
    Outcome,
    Side,
    Window,
    breaches,
    gate,
    record_rollback,
    takes_candidate,
)
from adaptlab.serve.routing import ServedModel
from adaptlab.serve.settings import ServeSettings

NAMES = ("champion", "candidate")
SETTINGS = ServeSettings()
DEADLINE_S = 30.0
"""How long a test waits for the canary to decide: far more than it needs (well under 1 s)."""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> Path:
    """The runs folder holding ``frozen``, ``knn`` and ``zero_shot``."""
    root = tmp_path_factory.mktemp("canary-runs")
    strategies = ["frozen", "knn", "zero_shot"]
    raw = tiny_runs_config(root, tiny_encoder, strategies, {"frozen": {}}, name="intent")
    return _compare(root, raw) / "runs"


def registry_with(
    root: Path, runs: Path, champion: str, candidate: str, *, earlier: bool = False
) -> Path:
    """A registry: ``champion`` as intent:1 (``@champion``), ``candidate`` as intent:2
    (``@candidate``); ``earlier``: ``@candidate`` pointed at version 1 before."""
    registry = Registry(root, create=True)
    registry.promote(
        runs / champion, "intent", approver="ana@bank", reason="best", alias="champion"
    )
    if earlier:
        registry.set_alias("intent", "candidate", 1, approver="ana@bank", reason="staging")
    registry.promote(
        runs / candidate, "intent", approver="ana@bank", reason="retuned", alias="candidate"
    )
    return root


def texts(count: int, start: int = 20) -> list[str]:
    """Requests like the eval set's (the training data's template, numbers it never saw)."""
    words = list(TOPICS.values())
    return [
        f"question {n} about my {words[n % 3][n % 6]} and {words[n % 3][(n * 5 + 1) % 6]} "
        f"number {n * 7919}"
        for n in range(start, start + count)
    ]


# --------------------------------------------------------------------------- the gate


def test_the_gate_refuses_a_candidate_worse_beyond_the_margin_and_passes_one_within(
    runs: Path,
) -> None:
    champion, candidate = read_run(runs / "zero_shot"), read_run(runs / "frozen")
    with pytest.raises(CanaryRefused) as refused:
        gate(champion, candidate, CanarySettings(candidate="intent@candidate", margin=10), NAMES)
    message = str(refused.value)
    assert "accuracy Δ -13.3 points" in message and "[-46.7, +20.0] on 15 eval items" in message
    assert "lower bound is above -10.0 (--canary-margin)" in message

    passed = gate(
        champion, candidate, CanarySettings(candidate="intent@candidate", margin=50), NAMES
    )
    assert passed.passed and passed.items == 15 and passed.margin == 0.5
    assert passed.difference == pytest.approx(-2 / 15) and passed.low == pytest.approx(-7 / 15)
    assert passed.eval_disagreement == pytest.approx(0.4)


def test_the_gate_refuses_other_eval_sets_and_items_without_overlap(
    runs: Path, tmp_path: Path
) -> None:
    settings = CanarySettings(candidate="intent@candidate", margin=100)
    champion = read_run(runs / "frozen")

    other_set = shutil.copytree(runs / "knn", tmp_path / "other-set")
    manifest = json.loads((other_set / "manifest.json").read_text())
    manifest["eval_sha256"] = "0" * 64
    (other_set / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CanaryRefused, match="scored on another eval set"):
        gate(champion, read_run(other_set), settings, NAMES)

    other_items = shutil.copytree(runs / "knn", tmp_path / "other-items")
    arrays = load_file(other_items / PREDICTIONS)
    arrays["indices"] = arrays["indices"] + 1000
    save_file(arrays, other_items / PREDICTIONS)
    with pytest.raises(CanaryRefused, match="scored no eval item in common"):
        gate(champion, read_run(other_items), settings, NAMES)


def test_a_refused_candidate_keeps_the_server_from_starting(
    runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))
    registry = registry_with(tmp_path / "registry", runs, "zero_shot", "frozen")
    arguments = ["serve", "intent@champion", "--canary", "intent@candidate", "--port", "0"]
    arguments += ["--canary-margin", "10", "--registry", str(registry)]
    result = CliRunner().invoke(cli, arguments)
    assert result.exit_code == 2, result.output
    assert "canary refused" in result.output and "-13.3 points" in result.output
    assert "--canary-weight" in CliRunner().invoke(cli, ["serve", "--help"]).output
    assert CliRunner().invoke(cli, ["serve", "x", "--canary-weight", "101"]).exit_code == 2


# --------------------------------------------------------------------------- the split


def test_the_split_is_sticky_and_weighted() -> None:
    keys = [f"user-{n}".encode() for n in range(400)]
    for weight in (0, 10, 50, 100):
        sides = [takes_candidate(key, weight) for key in keys]
        assert sides == [takes_candidate(key, weight) for key in keys]  # the same, every time
        assert abs(sum(sides) / len(keys) - weight / 100) <= 0.05, weight


# --------------------------------------------------------------------------- the guards


def test_each_guard_breaches_on_its_own_figure() -> None:
    settings = CanarySettings(candidate="intent@candidate", window=10)
    label = Outcome(0.01, error=False, confidences=(0.9,), labels=("cards",))

    def window(candidate: Outcome, champion: Outcome = label, different: int = 0) -> Window:
        opened = Window(compared=10, different=different)
        for _ in range(10):
            opened.candidate.add(candidate)
            opened.champion.add(champion)
        return opened

    assert breaches(window(label), settings, 0.1) == []
    hiccup = window(label)
    hiccup.candidate.seconds[3] = 5.0  # one slow request is a hiccup, not a slow candidate
    assert breaches(hiccup, settings, 0.1) == []
    slow = Outcome(0.5, error=False, confidences=(0.9,))
    unsure = Outcome(0.01, error=False, confidences=(0.5,))
    failing = Outcome(0.01, error=True)
    found = {
        "p99_latency": breaches(window(slow), settings, 0.1),
        "confidence": breaches(window(unsure), settings, 0.1),
        "disagreement": breaches(window(label, different=5), settings, 0.1),
        "error_rate": breaches(window(failing), settings, 0.1),
    }
    for guard, breached in found.items():
        assert [b.guard for b in breached] == [guard], breached

    # A generator's confidence is its finished rate; past the time limit is an error.
    answers = [Answer("hi", 3, 1, finished=True), Answer("hi th", 3, 8, finished=False)]
    assert Outcome.of(answers, 0.1, timeout_s=60).confidences == (1.0, 0.0)
    assert Outcome.of(answers, 61, timeout_s=60).error


def test_a_rollback_with_no_earlier_version_points_the_alias_at_the_champion(
    runs: Path, tmp_path: Path
) -> None:
    registry = Registry(registry_with(tmp_path / "registry", runs, "frozen", "knn"))
    record = read_run(runs / "knn", predictions=False)
    loaded = LoadedModel(record, None, "intent:2")  # type: ignore[arg-type]  # never predicts
    candidate = Side(ServedModel("intent@champion", loaded), parse_reference("intent@candidate"), 2)
    event = record_rollback(registry, candidate, 1, "canary rollback: error_rate breached")
    assert (event.kind, event.alias, event.from_version, event.to_version) == (
        "alias",
        "candidate",
        2,
        1,
    )
    assert event.who == APPROVER and "error_rate breached" in event.why
    assert "no earlier version" in event.why and "champion's version 1" in event.why
    assert registry.version("intent@candidate").version == 1


# --------------------------------------------------------------------------- over HTTP


class CandidateCalls:
    """Wraps :func:`adaptlab.predict.classify`: records the routed predictions of each version
    (not the canary's shadow predictions), and makes version ``intent:2`` fail once broken."""

    def __init__(self, classify: Callable[..., Any]) -> None:
        self.classify = classify
        self.broken = threading.Event()
        self.first_failure: float | None = None
        self.routed: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, loaded: LoadedModel, texts: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name.startswith("adaptlab-predict"):
            with self.lock:
                self.routed.append((loaded.source, texts[0]))
        if loaded.source == "intent:2" and self.broken.is_set():
            with self.lock:
                self.first_failure = self.first_failure or time.monotonic()
            time.sleep(0.02)  # a moment in flight, so the switch finds some under way
            raise RuntimeError("the candidate is broken")
        return self.classify(loaded, texts, *args, **kwargs)

    def sources(self, text: str) -> set[str]:
        with self.lock:
            return {source for source, asked in self.routed if asked == text}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> CandidateCalls:
    wrapper = CandidateCalls(predict.classify)
    monkeypatch.setattr(predict, "classify", wrapper)
    return wrapper


def classify(client: httpx.Client, text: str, key: str | None = None) -> httpx.Response:
    headers = {} if key is None else {"x-adaptlab-route-key": key}
    body = {"model": "intent@champion", "input": text}
    response = client.post("/v1/classify", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response


def canary_card(client: httpx.Client) -> dict[str, Any]:
    (card,) = client.get("/v1/models").json()["data"]
    canary: dict[str, Any] = card["canary"]
    return canary


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Where checkouts go; and torch single-threaded meanwhile: the candidate, the champion
    and its shadow predictions compute at once, and on two shared cores each with a thread pool
    of two, a 3 ms prediction took up to 600 ms (measured), which a latency guard rightly sees."""
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path / "cache"
    torch.set_num_threads(threads)


@pytest.fixture
def broken_server(
    runs: Path, tmp_path: Path, cache: Path, calls: CandidateCalls
) -> Iterator[tuple[Server, Canary, Path]]:
    """A server whose candidate (``@candidate`` was at version 1 before) fails once
    ``calls.broken`` is set; the gate passes it (``frozen`` and ``knn`` score alike)."""
    registry = registry_with(tmp_path / "registry", runs, "frozen", "knn", earlier=True)
    canary = CanarySettings(candidate="intent@candidate", weight=50, window=20)
    application = create_app(["intent@champion"], SETTINGS, registry=registry, canary=canary)
    with serving(application, SETTINGS) as server:
        server.wait_ready()
        yield server, application.state.server.canary, registry


def test_a_broken_candidate_is_rolled_back_within_60_s_with_no_failed_request(
    broken_server: tuple[Server, Canary, Path], calls: CandidateCalls
) -> None:
    server, canary, registry = broken_server
    asked = texts(160)

    def client_work(start: int) -> list[int]:
        with server.client() as client:  # fails on any 5xx
            return [classify(client, text, key=text).status_code for text in asked[start::4]]

    calls.broken.set()
    with ThreadPoolExecutor(4) as clients:  # requests in flight while the guard trips
        statuses = [s for answered in clients.map(client_work, range(4)) for s in answered]
    assert statuses == [200] * len(asked)

    assert canary.state == "rolled_back" and calls.first_failure is not None
    seconds = canary.ended_at - calls.first_failure
    print(f"first bad answer to rollback: {seconds * 1000:.1f} ms")
    assert seconds < 60
    wait_for(lambda: canary.recorded is not None, "the registry's rollback event")
    event = Registry(registry).history("intent")[-1]
    assert (event.kind, event.alias, event.from_version, event.to_version) == (
        "rollback",
        "candidate",
        2,
        1,
    )
    assert event.who == APPROVER and "error_rate" in event.why and "intent:2" in event.why

    # Every request is on the champion now, keys the split gave the candidate included.
    with server.client() as client:
        state = canary_card(client)
        assert state["state"] == "rolled_back" and "error_rate" in state["reason"]
        for text in texts(20, start=500):
            classify(client, text, key=text)
            assert calls.sources(text) == {"intent:1"}
        metrics = client.get("/metrics").text
    assert 'adaptlab_canary_state{adaptlab_canary_state="rolled_back"} 1.0' in metrics
    assert 'adaptlab_canary_rollbacks_total{guard="error_rate"} 1.0' in metrics
    failed = 'adaptlab_canary_requests_total{outcome="error",side="candidate"} '
    assert float(metrics.split(failed)[1].split()[0]) >= 2  # each one answered by the champion
    assert "adaptlab_canary_weight_percent 0.0" in metrics


def test_a_healthy_candidate_is_promoted_after_n_requests(
    runs: Path, tmp_path: Path, cache: Path, calls: CandidateCalls
) -> None:
    registry = registry_with(tmp_path / "registry", runs, "frozen", "knn")
    # The test is about the promotion: generous latency and disagreement limits keep a loaded
    # CI machine's jitter (and the two tiny models' 14% disagreement) from tripping a guard.
    canary = CanarySettings(
        candidate="intent@candidate", weight=50, window=10, promote_after=20,
        latency_slack_s=1.0, max_disagreement_increase=0.5,
    )  # fmt: skip
    application = create_app(["intent@champion"], SETTINGS, registry=registry, canary=canary)
    with serving(application, SETTINGS) as server, server.client() as client:
        server.wait_ready()
        refused = client.post("/v1/classify", json={"model": "intent@candidate", "input": "hi"})
        assert refused.status_code == 404 and "canary candidate" in refused.text
        asked = texts(200)
        for text in asked[:5]:  # sticky: a key's every request on the same side
            for _ in range(3):
                classify(client, f"{text} again", key=text)
            assert len(calls.sources(f"{text} again")) == 1
        for text in asked:
            if canary_card(client)["state"] != "active":
                break
            classify(client, text, key=text)
        wait_for(lambda: canary_card(client)["state"] == "promoted", "the promotion")
        state = canary_card(client)
        for text in texts(10, start=500):  # every key on the new champion
            classify(client, text, key=text)
            assert calls.sources(text) == {"intent:2"}
        metrics = client.get("/metrics").text

    assert state["healthy_requests"] >= 20 and state["gate"]["items"] == 15
    version = Registry(registry).version("intent@champion")
    assert version.version == 2
    event = Registry(registry).history("intent")[-1]
    assert (event.kind, event.alias, event.from_version, event.to_version) == (
        "alias",
        "champion",
        1,
        2,
    )
    assert event.who == APPROVER and "canary promotion of intent:2" in event.why
    assert "adaptlab_canary_promotions_total 1.0" in metrics
    assert 'adaptlab_canary_windows_total{verdict="healthy"} 2.0' in metrics
    assert 'adaptlab_canary_gate{figure="items"} 15.0' in metrics


def test_a_failing_generator_candidate_is_answered_by_the_champion_streamed_or_not(
    generator_run: Path, tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The generator path: the candidate (the same run promoted again, so the gate passes)
    fails before its first piece, the champion answers (a stream too), and the guard counts
    the failures."""
    registry = Registry(tmp_path / "registry", create=True)
    for alias in ("champion", "candidate"):
        registry.promote(generator_run, "slots", approver="ana@bank", reason="r", alias=alias)
    for name in ("answer", "answer_streaming"):
        monkeypatch.setattr(predict, name, _failing_on_version_2(getattr(predict, name)))
    canary = CanarySettings(candidate="slots@candidate", weight=100, window=100)
    application = create_app(
        ["slots@champion"], SETTINGS, registry=tmp_path / "registry", canary=canary
    )
    asked = {"model": "slots@champion", "messages": [{"role": "user", "content": "a table"}]}
    with serving(application, SETTINGS) as server, server.client() as client:
        server.wait_ready()
        answered = client.post("/v1/chat/completions", json=asked)
        assert answered.json()["choices"][0]["message"]["content"] is not None
        with client.stream("POST", "/v1/chat/completions", json={**asked, "stream": True}) as sse:
            lines = [line for line in sse.iter_lines() if line.startswith("data: ")]
        assert sse.status_code == 200 and lines[-1] == "data: [DONE]"
        assert not any('"error"' in line for line in lines), lines
        metrics = client.get("/metrics").text
    assert 'adaptlab_canary_requests_total{outcome="error",side="candidate"} 2.0' in metrics
    assert application.state.server.canary.state == "active"  # 2 errors of 100 allow 5


def _failing_on_version_2(function: Callable[..., Any]) -> Callable[..., Any]:
    def failing(loaded: LoadedModel, *args: Any, **kwargs: Any) -> Any:
        if (
            loaded.source == "slots:2"
            and threading.current_thread().name.startswith("adaptlab-predict")
            and kwargs.get("max_new_tokens") != 1
        ):  # the warm-up passes
            raise RuntimeError("the candidate is broken")
        return function(loaded, *args, **kwargs)

    return failing
