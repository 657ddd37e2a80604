"""Admission over real HTTP: a full server answers 429 with Retry-After, a slow request 504,
a timed-out prediction keeps its slot until it ends, /ready waits for the warm-up, and a
shutdown lets the request in flight finish. Slowness comes from a :class:`Gate` in front of the
real prediction functions; no answer here is a 5xx."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.unit.serve.conftest import MAX_NEW_TOKENS, SLOW, TIMEOUT, Gate, Server, serving

from adaptlab import predict
from adaptlab.runs import RunError
from adaptlab.serve.app import create_app, run_server
from adaptlab.serve.network import ListenError, listening_socket
from adaptlab.serve.settings import ServeSettings

SLOW_TEXT = {"model": "frozen", "input": f"{SLOW} my card"}
QUICK_TEXT = {"model": "frozen", "input": "my card"}


def in_background(call: Callable[[], httpx.Response]) -> Future[httpx.Response]:
    pool = ThreadPoolExecutor(1)
    future = pool.submit(call)
    pool.shutdown(wait=False)
    return future


def wait_for(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def metric(server: Server, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=TIMEOUT).text
    line = next(line for line in text.splitlines() if line.startswith(f"{name} "))
    return float(line.split()[-1])


def test_a_full_server_answers_429_with_retry_after(gate: Gate, classifier_run: Path) -> None:
    settings = ServeSettings(max_concurrency=1, max_queue=1, retry_after_s=3)
    with serving(create_app([classifier_run], settings), settings) as server:
        server.wait_ready()
        with server.client() as client:
            held = in_background(lambda: client.post("/v1/classify", json=SLOW_TEXT))
            assert gate.entered.wait(10)
            queued = in_background(lambda: client.post("/v1/classify", json=QUICK_TEXT))
            wait_for(lambda: metric(server, "adaptlab_requests_queued") == 1)
            refused = client.post("/v1/classify", json=QUICK_TEXT)
            assert refused.status_code == 429 and refused.headers["Retry-After"] == "3"
            error = refused.json()["error"]
            assert error["type"] == "rate_limit_error" and error["code"] == "overloaded"
            assert client.get("/health").status_code == 200  # the loop is free meanwhile
            gate.open()
            assert held.result(10).status_code == 200 and queued.result(10).status_code == 200
            assert client.post("/v1/classify", json=QUICK_TEXT).status_code == 200
            text = client.get("/metrics").text
    assert 'adaptlab_rejections_total{model="frozen",reason="overloaded"' in text


def test_a_slow_request_gets_504_and_keeps_its_slot_until_it_ends(
    gate: Gate, classifier_run: Path
) -> None:
    settings = ServeSettings(max_concurrency=1, max_queue=0, request_timeout_s=1)
    with serving(create_app([classifier_run], settings), settings) as server:
        server.wait_ready()
        with server.client(allowed=(504,)) as client:
            started = time.monotonic()
            slow = client.post("/v1/classify", json=SLOW_TEXT)
            assert slow.status_code == 504 and time.monotonic() - started < 5
            assert slow.json()["error"]["code"] == "timeout"
            # Its prediction still runs (held at the gate): the one slot is still taken.
            assert metric(server, "adaptlab_predictions_running") == 1
            assert client.post("/v1/classify", json=QUICK_TEXT).status_code == 429
            gate.open()
            wait_for(lambda: metric(server, "adaptlab_predictions_running") == 0)
            assert client.post("/v1/classify", json=QUICK_TEXT).status_code == 200
            text = client.get("/metrics").text
    assert 'adaptlab_rejections_total{model="frozen",reason="timeout"' in text


def test_a_wait_in_the_queue_counts_toward_the_time_limit(gate: Gate, classifier_run: Path) -> None:
    settings = ServeSettings(max_concurrency=1, max_queue=1, request_timeout_s=0.3)
    with serving(create_app([classifier_run], settings), settings) as server:
        server.wait_ready()
        with server.client(allowed=(504,)) as client:
            held = in_background(lambda: client.post("/v1/classify", json=SLOW_TEXT))
            assert gate.entered.wait(10)
            queued = client.post("/v1/classify", json=QUICK_TEXT)  # waits for the held slot
            assert queued.status_code == 504
            gate.open()
            assert held.result(10).status_code == 504


def test_streams_time_out_with_504_before_their_first_piece(
    gate: Gate, generator_run: Path
) -> None:
    settings = ServeSettings(request_timeout_s=1)
    body = {"model": "prompt", "messages": [{"role": "user", "content": SLOW}], "stream": True}
    with serving(create_app([generator_run], settings), settings) as server:
        server.wait_ready()
        with server.client(allowed=(504,)) as client:
            refused = client.post("/v1/chat/completions", json=body)
            assert refused.status_code == 504
            assert refused.json()["error"]["code"] == "timeout"
            gate.open()
            quick = {**body, "messages": [{"role": "user", "content": "hi"}]}
            with client.stream("POST", "/v1/chat/completions", json=quick) as response:
                assert response.status_code == 200
                assert list(response.iter_lines())[-2:] == ["data: [DONE]", ""]


def test_ready_answers_503_until_a_real_prediction_succeeded(
    gate: Gate, classifier_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("adaptlab.serve.app.WARM_UP_TEXT", f"{SLOW} warm-up")
    settings = ServeSettings()
    with serving(create_app([classifier_run], settings), settings) as server:
        assert gate.entered.wait(10)
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
            assert client.get("/health").status_code == 200
            waiting = client.get("/ready")
            assert waiting.status_code == 503 and waiting.json()["error"]["code"] == "not_ready"
            gate.open()
            server.wait_ready()
            assert client.get("/ready").status_code == 200


def test_shutdown_finishes_the_requests_in_flight(gate: Gate, generator_run: Path) -> None:
    settings = ServeSettings(shutdown_timeout_s=20)
    plain = {"model": "prompt", "messages": [{"role": "user", "content": SLOW}]}
    streamed = {**plain, "messages": [{"role": "user", "content": f"{SLOW} too"}], "stream": True}
    with serving(create_app([generator_run], settings), settings) as server:
        server.wait_ready()
        client = server.client()
        answer = in_background(lambda: client.post("/v1/chat/completions", json=plain))
        stream = in_background(lambda: _streamed(client, streamed))
        wait_for(lambda: metric(server, "adaptlab_predictions_running") == 2)
        server.server.should_exit = True  # what Ctrl+C or SIGTERM does
        wait_for(lambda: _refused(server.url))  # it takes no new connection now
        assert server.thread.is_alive()  # but waits for the two requests in flight
        gate.open()
        finished = answer.result(20)
        assert finished.status_code == 200
        assert finished.json()["choices"][0]["message"]["role"] == "assistant"
        lines = stream.result(20)
        assert lines[-1] == "data: [DONE]"
        assert json.loads(lines[-2][len("data: ") :])["choices"][0]["finish_reason"]
        server.thread.join(20)
        assert not server.thread.is_alive()
        client.close()


def _refused(url: str) -> bool:
    try:
        httpx.get(f"{url}/health", timeout=TIMEOUT)
    except httpx.ConnectError:
        return True
    return False


def test_a_stream_past_its_time_ends_with_an_error_event(
    generator_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = predict.answer_streaming
    stalled, released = threading.Event(), threading.Event()
    answers: list[predict.Answer] = []

    def stalling(loaded: Any, request: Any, on_text: Any, **options: Any) -> Any:
        def stall_after_first(piece: str) -> None:
            on_text(piece)
            stalled.set()
            released.wait(10)  # past the time limit, once the first piece is out

        answers.append(real(loaded, request, stall_after_first, **options))
        return answers[-1]

    monkeypatch.setattr(predict, "answer_streaming", stalling)
    settings = ServeSettings(request_timeout_s=1)
    body = {"model": "prompt", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with serving(create_app([generator_run], settings), settings) as server:
        server.wait_ready()
        with server.client() as client:
            lines = _streamed(client, body)
            assert stalled.is_set() and lines[-1] == "data: [DONE]"
            error = json.loads(lines[-2][len("data: ") :])["error"]
            assert error["code"] == "timeout" and error["type"] == "timeout_error"
            assert metric(server, "adaptlab_predictions_running") == 1  # still stalled
            released.set()  # decoding was told to stop: the slot comes back
            wait_for(lambda: metric(server, "adaptlab_predictions_running") == 0, 5)
            text = client.get("/metrics").text
    assert 'adaptlab_rejections_total{model="prompt",reason="timeout"' in text
    assert answers[0].completion_tokens < MAX_NEW_TOKENS and not answers[0].finished


def _streamed(client: httpx.Client, body: dict[str, Any]) -> list[str]:
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        return [line for line in response.iter_lines() if line]


def test_run_server_names_a_taken_port_and_a_bad_target(tmp_path: Path) -> None:
    taken = listening_socket("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        with pytest.raises(ListenError, match=f"cannot listen on 127.0.0.1:{port}"):
            run_server([str(tmp_path)], None, ServeSettings(port=port), log=lambda _: None)
    finally:
        taken.close()
    with pytest.raises(RunError, match="no manifest.json"):
        run_server([str(tmp_path)], None, ServeSettings(port=0), log=lambda _: None)
