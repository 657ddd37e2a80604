"""Every route of the model server over real HTTP (uvicorn on a loopback port), answered from
the tiny runs through the prediction path ``adaptlab predict`` takes: what each answers, in
which shape, and the errors, each in OpenAI's error shape. No answer here is a 5xx
(:meth:`Server.client` fails the test on one)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.unit.serve.conftest import MAX_NEW_TOKENS, Server, serving

from adaptlab import predict
from adaptlab.registry import Registry
from adaptlab.serve.app import create_app
from adaptlab.serve.settings import ServeSettings

SETTINGS = ServeSettings(max_body_bytes=4096, max_inputs=4)
ASKED = [{"role": "user", "content": "a table for 2 at 7pm please"}]


@pytest.fixture(scope="module")
def server(classifier_run: Path, generator_run: Path) -> Iterator[Server]:
    with serving(create_app([classifier_run, generator_run], SETTINGS), SETTINGS) as running:
        running.wait_ready()
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as opened:
        yield opened


@pytest.fixture(scope="module")
def expected(generator_run: Path) -> dict[str, predict.Answer]:
    """What ``adaptlab predict``'s path answers to the requests the tests send."""
    with predict.open_model(generator_run) as loaded:
        full, short = predict.answer(loaded, [ASKED, ASKED[:1]]), None
        short = predict.answer(loaded, [ASKED], max_new_tokens=2)
    return {"full": full[0], "short": short[0]}


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


def events(response: httpx.Response) -> list[Any]:
    """The ``data:`` payloads of a server-sent event stream, ``[DONE]`` as a string."""
    assert response.status_code == 200, response.read()
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            payloads.append(data if data == "[DONE]" else json.loads(data))
    return payloads


def test_health_ready_and_models(client: httpx.Client, classifier_run: Path) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready", "models": ["frozen", "prompt"]}
    listed = client.get("/v1/models").json()
    assert listed["object"] == "list"
    cards = {card["id"]: card for card in listed["data"]}
    assert set(cards) == {"frozen", "prompt"}
    for card in cards.values():
        assert card["object"] == "model" and card["owned_by"] == "adaptlab"
        assert isinstance(card["created"], int) and card["parent"] and card["root"]
    assert cards["frozen"]["root"] == str(classifier_run)
    assert cards["frozen"]["task"] == "classification" and len(cards["frozen"]["labels"]) == 3
    assert cards["prompt"]["task"] == "generation"
    assert cards["prompt"]["max_tokens"] == MAX_NEW_TOKENS


def test_classify_one_text_and_a_list(client: httpx.Client, classifier_run: Path) -> None:
    texts = ["my card pin does not work", "send a sepa transfer to my payee"]
    with predict.open_model(classifier_run) as loaded:
        wanted = predict.classify(loaded, texts, top_k=3)
        labels = list(loaded.label_names)
    one = client.post("/v1/classify", json={"model": "frozen", "input": texts[0]}).json()
    assert set(one) == {"id", "object", "created", "model", "data", "usage"}
    assert (
        one["object"] == "list" and one["model"] == "frozen" and one["id"].startswith("classify-")
    )
    assert len(one["data"]) == 1
    many = client.post("/v1/classify", json={"model": "frozen", "input": texts}).json()
    assert [item["index"] for item in many["data"]] == [0, 1]
    # padded in a batch of two, the numbers move in the last digits
    assert many["data"][0]["probs"] == pytest.approx(one["data"][0]["probs"], abs=1e-4)
    for item, prediction in zip(many["data"], wanted, strict=True):
        assert item["num_classes"] == 3 and item["labels"] == labels
        assert item["label"] == prediction.label
        probabilities = [prediction.probabilities[n] for n in labels]
        assert item["probs"] == pytest.approx(probabilities, abs=1e-6)
        assert sum(item["probs"]) == pytest.approx(1.0)


def test_chat_completion_is_what_predict_answers(
    client: httpx.Client, expected: dict[str, predict.Answer]
) -> None:
    body = client.post("/v1/chat/completions", json={"model": "prompt", "messages": ASKED}).json()
    answer = expected["full"]
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "prompt" and isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0
    assert choice["message"] == {"role": "assistant", "content": answer.text}
    assert choice["finish_reason"] == ("stop" if answer.finished else "length")
    assert body["usage"] == {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    }
    greedy = {"temperature": 0, "top_p": 1, "n": 1, "seed": 7, "user": "u1", "stop": None}
    again = client.post(
        "/v1/chat/completions", json={"model": "prompt", "messages": ASKED, **greedy}
    ).json()
    assert again["choices"][0]["message"]["content"] == answer.text


def test_max_tokens_lowers_the_runs_limit(
    client: httpx.Client, expected: dict[str, predict.Answer]
) -> None:
    for field in ("max_tokens", "max_completion_tokens"):
        body = {"model": "prompt", "messages": ASKED, field: 2}
        answered = client.post("/v1/chat/completions", json=body).json()
        short = expected["short"]
        assert answered["choices"][0]["message"]["content"] == short.text
        assert answered["usage"]["completion_tokens"] == short.completion_tokens <= 2


def test_a_streamed_chat_completion_adds_up_to_the_answer(
    client: httpx.Client, expected: dict[str, predict.Answer]
) -> None:
    body = {
        "model": "prompt",
        "messages": ASKED,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        payloads = events(response)
    answer = expected["full"]
    assert payloads[-1] == "[DONE]"
    chunks = payloads[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    *pieces, closing, usage = chunks[1:]
    text = "".join(c["choices"][0]["delta"]["content"] for c in pieces)
    assert text == answer.text and len(pieces) >= 1
    assert closing["choices"][0]["delta"] == {}
    assert closing["choices"][0]["finish_reason"] == ("stop" if answer.finished else "length")
    assert usage["choices"] == []
    assert usage["usage"] == {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    }
    without = {key: value for key, value in body.items() if key != "stream_options"}
    with client.stream("POST", "/v1/chat/completions", json=without) as response:
        plain = events(response)
    assert "usage" not in plain[-2] and plain[-2]["choices"][0]["finish_reason"] is not None


def test_completions_ask_each_prompt_as_a_user_turn(
    client: httpx.Client, expected: dict[str, predict.Answer]
) -> None:
    prompt = ASKED[0]["content"]
    answer = expected["full"]
    one = client.post("/v1/completions", json={"model": "prompt", "prompt": prompt}).json()
    assert one["object"] == "text_completion" and one["id"].startswith("cmpl-")
    assert one["choices"][0]["text"] == answer.text
    assert one["usage"]["completion_tokens"] == answer.completion_tokens
    both = client.post("/v1/completions", json={"model": "prompt", "prompt": [prompt] * 2}).json()
    assert [c["index"] for c in both["choices"]] == [0, 1]
    assert [c["text"] for c in both["choices"]] == [answer.text] * 2
    assert both["usage"]["prompt_tokens"] == 2 * answer.prompt_tokens
    streamed = {"model": "prompt", "prompt": prompt, "stream": True}
    with client.stream("POST", "/v1/completions", json=streamed) as response:
        payloads = events(response)
    assert payloads[-1] == "[DONE]"
    assert all(p["object"] == "text_completion" for p in payloads[:-1])
    assert "".join(p["choices"][0]["text"] for p in payloads[:-1]) == answer.text


def test_unknown_models_and_wrong_kinds(client: httpx.Client) -> None:
    error = error_of(client.post("/v1/classify", json={"model": "nope", "input": "x"}), 404)
    assert error["param"] == "model" and error["code"] == "model_not_found"
    assert "'nope'" in error["message"] and "frozen, prompt" in error["message"]
    chat = {"model": "frozen", "messages": ASKED}
    error = error_of(client.post("/v1/chat/completions", json=chat), 422)
    assert error["param"] == "model" and "/v1/classify" in error["message"]
    error = error_of(client.post("/v1/classify", json={"model": "prompt", "input": "x"}), 422)
    assert error["param"] == "model" and "/v1/chat/completions" in error["message"]
    error = error_of(client.get("/v1/nothing"), 404)
    assert error["type"] == "not_found_error"
    error_of(client.get("/v1/classify"), 405)


@pytest.mark.parametrize(
    ("route", "body", "param", "words"),
    [
        ("/v1/chat/completions", {"temperature": 0.7}, "temperature", "greedily"),
        ("/v1/chat/completions", {"n": 2}, "n", "one answer"),
        ("/v1/chat/completions", {"stop": ["\n"]}, "stop", "stop sequences"),
        ("/v1/chat/completions", {"logprobs": True}, "logprobs", "log-probabilities"),
        ("/v1/chat/completions", {"tools": []}, "tools", "not a field"),
        ("/v1/chat/completions", {"max_tokens": 0}, "max_tokens", "greater than or equal"),
        ("/v1/chat/completions", {"max_tokens": 99}, "max_tokens", "max_new_tokens"),
        ("/v1/chat/completions", {"messages": []}, "messages", "at least 1"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "bot", "content": "x"}]},
            "messages.0.role",
            "'system', 'user' or 'assistant'",
        ),
        (
            "/v1/chat/completions",
            {"messages": [*ASKED, {"role": "assistant", "content": "x"}]},
            "messages",
            "end with a user",
        ),
        ("/v1/chat/completions", {"model": None}, "model", "valid string"),
        ("/v1/completions", {"echo": True}, "echo", "echoed"),
        ("/v1/completions", {"prompt": [1, 2]}, "prompt.0", "valid string"),
        ("/v1/completions", {"prompt": ["a"] * 5}, "prompt", "limit of 4"),
        ("/v1/completions", {"prompt": ["a", "b"], "stream": True}, "prompt", "one prompt"),
        ("/v1/classify", {"input": []}, "input", "at least 1"),
        ("/v1/classify", {"input": ["a"] * 5}, "input", "limit of 4"),
        ("/v1/classify", {"truncate_prompt_tokens": 3}, "truncate_prompt_tokens", "not a field"),
    ],
)
def test_invalid_fields_get_422_naming_the_field(
    client: httpx.Client, route: str, body: dict[str, Any], param: str, words: str
) -> None:
    base: dict[str, Any] = {
        "/v1/chat/completions": {"model": "prompt", "messages": ASKED},
        "/v1/completions": {"model": "prompt", "prompt": "hi"},
        "/v1/classify": {"model": "frozen", "input": "hi"},
    }[route]
    error = error_of(client.post(route, json={**base, **body}), 422)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"{param}: ") and words in error["message"], error


def test_bodies_that_are_not_json_objects(client: httpx.Client) -> None:
    broken = client.post(
        "/v1/classify", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert "not valid JSON" in error_of(broken, 422)["message"]
    error_of(client.post("/v1/classify", json=["frozen"]), 422)


def test_large_bodies_get_413_declared_or_streamed(client: httpx.Client) -> None:
    big = {"model": "frozen", "input": "card " * 1000}  # over SETTINGS' 4096 bytes
    error = error_of(client.post("/v1/classify", json=big), 413)
    assert error["code"] == "request_too_large" and "4096 bytes" in error["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the size shows only as it streams
        yield b'{"model": "frozen", "input": "'
        for _ in range(10):
            yield b"card " * 100
        yield b'"}'

    error_of(client.post("/v1/classify", content=chunks()), 413)
    small = client.post("/v1/classify", json={"model": "frozen", "input": "card " * 100})
    assert small.status_code == 200


def test_a_foreign_host_header_is_refused(client: httpx.Client) -> None:
    error = error_of(client.get("/health", headers={"Host": "rebound.example"}), 400)
    assert "rebound.example" in error["message"]
    assert client.get("/health", headers={"Host": "localhost:1"}).status_code == 200


def test_metrics_count_requests_latency_and_rejections(client: httpx.Client) -> None:
    client.post("/v1/classify", json={"model": "frozen", "input": "my card"})
    client.post("/v1/classify", json={"model": "frozen", "input": []})
    client.post("/v1/classify", json={"model": "frozen", "input": "card " * 1000})
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'adaptlab_requests_total{model="frozen",route="/v1/classify",status="200"}' in text
    assert 'adaptlab_requests_total{model="frozen",route="/v1/classify",status="422"}' in text
    assert 'adaptlab_rejections_total{model="frozen",reason="invalid",route="/v1/classify"}' in text
    assert 'adaptlab_rejections_total{model="",reason="too_large",route="/v1/classify"}' in text
    assert (
        'adaptlab_request_duration_seconds_bucket{le="0.005",model="frozen",route="/v1/classify"}'
        in text
    )
    assert 'adaptlab_requests_in_flight{model="frozen",route="/v1/classify"} 0.0' in text
    assert "adaptlab_predictions_running 0.0" in text and "adaptlab_requests_queued 0.0" in text


def test_a_registered_version_is_served_by_its_reference(
    classifier_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))  # where checkouts go
    root = tmp_path / "registry"
    Registry(root, create=True).promote(
        classifier_run, "intent", approver="ana@bank", reason="best", alias="champion"
    )
    settings = ServeSettings()
    with serving(create_app(["intent@champion"], settings, registry=root), settings) as server:
        server.wait_ready()
        with server.client() as client:
            (card,) = client.get("/v1/models").json()["data"]
            assert card["id"] == "intent@champion" and card["aliases"] == ["intent:1"]
            assert card["root"] == "intent:1" and card["parent"]
            for name in ("intent@champion", "intent:1"):
                answered = client.post("/v1/classify", json={"model": name, "input": "my card"})
                assert answered.json()["model"] == "intent@champion"
        assert len(list((tmp_path / "cache" / "checkouts").iterdir())) == 1
    assert list((tmp_path / "cache" / "checkouts").iterdir()) == []  # removed at shutdown
