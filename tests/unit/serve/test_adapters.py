"""Several LoRA adapters of one base behind one server: the base's weights are loaded once,
each adapter is chosen by the request's ``model``, ``/v1/models`` names each with its parent,
and each answers what ``adaptlab predict`` answers with that run alone — also when requests
for both arrive at once."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from tests.unit.models.test_causal_lm import build_tiny_llm
from tests.unit.serve.conftest import MAX_NEW_TOKENS, Server, _compare, serving
from tests.unit.strategies.conftest import chat_records
from tests.unit.strategies.test_generative import write_jsonl

from adaptlab import predict
from adaptlab.models.shared_base import AdapterView
from adaptlab.serve.app import create_app
from adaptlab.serve.settings import ServeSettings

SETTINGS = ServeSettings(max_concurrency=2, max_queue=8)
RUNS = ("sft_lora", "sft_lora_r4")
REQUESTS = [
    [{"role": "user", "content": "a table for 2 at 7pm please"}],
    [{"role": "user", "content": "book me for 4 people tomorrow"}],
]


@pytest.fixture(scope="module")
def adapter_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two sft_lora runs of one random 2-layer Llama, with different ranks and learning rates
    (so their adapters differ)."""
    root = tmp_path_factory.mktemp("serve-adapters")
    train, evaluation = chat_records()
    decoding = {"decoding": {"max_new_tokens": MAX_NEW_TOKENS}}
    raw = {
        "name": "slots",
        "output_dir": str(root / "runs"),
        "data": {
            "train": write_jsonl(root / "train.jsonl", train),
            "eval": write_jsonl(root / "eval.jsonl", evaluation),
            "format": "chat",
        },
        "model": {"base_model": str(build_tiny_llm(root / "llm")), "sequence_len": 512},
        "train": {"max_steps": 3, "micro_batch_size": 4, "learning_rate": 0.05},
        "strategies": {
            "sft_lora": decoding,
            "sft_lora_r4": {
                "strategy": "sft_lora",
                "lora": {"lora_r": 4},
                "train": {"learning_rate": 0.2},
                **decoding,
            },
        },
        "compare": {
            "strategies": list(RUNS),
            "latency_budget_s": 0.05,
            "bootstrap_resamples": 100,
            "retention": {"enabled": False},
        },
    }
    return _compare(root, raw) / "runs"


@pytest.fixture(scope="module")
def alone(adapter_runs: Path) -> dict[str, list[predict.Answer]]:
    """Each run's answers, loaded alone (its adapter merged into its own copy of the base)."""
    answers = {}
    for name in RUNS:
        with predict.open_model(adapter_runs / name) as loaded:
            answers[name] = predict.answer(loaded, REQUESTS)
    return answers


@pytest.fixture(scope="module")
def server(adapter_runs: Path) -> Iterator[Server]:
    app = create_app([adapter_runs / name for name in RUNS], SETTINGS)
    with serving(app, SETTINGS) as running:
        running.wait_ready()
        yield running


def test_the_adapters_differ_so_the_test_can_tell_them_apart(
    alone: dict[str, list[predict.Answer]],
) -> None:
    assert alone[RUNS[0]] != alone[RUNS[1]]


def test_one_base_serves_both_adapters_each_chosen_by_model(
    server: Server, alone: dict[str, list[predict.Answer]], adapter_runs: Path
) -> None:
    state = server.server.config.app.state.server
    served = {model.name: model.loaded for model in state.table}
    assert set(served) == set(RUNS)
    views = [loaded.model.lm.model for loaded in served.values()]
    assert all(isinstance(view, AdapterView) for view in views)
    assert views[0].shared is views[1].shared  # one PEFT model over one copy of the base
    assert served[RUNS[0]].lock is served[RUNS[1]].lock
    with server.client() as client:
        cards = {card["id"]: card for card in client.get("/v1/models").json()["data"]}
        for name in RUNS:
            assert cards[name]["parent"] == str(adapter_runs.parents[2] / "llm")
        for index, request in enumerate(REQUESTS):
            for name in RUNS:  # interleaved: the active adapter changes on every request
                body = {"model": name, "messages": request}
                answered = client.post("/v1/chat/completions", json=body).json()
                wanted = alone[name][index]
                assert answered["choices"][0]["message"]["content"] == wanted.text, name
                assert answered["usage"]["completion_tokens"] == wanted.completion_tokens


def test_concurrent_requests_for_both_adapters_each_get_their_own(
    server: Server, alone: dict[str, list[predict.Answer]]
) -> None:
    asked = [(name, index) for _ in range(4) for name in RUNS for index in range(len(REQUESTS))]

    def ask(job: tuple[str, int]) -> str:
        name, index = job
        with server.client() as client:
            body = {"model": name, "messages": REQUESTS[index], "stream": index == 1}
            if index == 1:  # streamed: the pieces add up to the answer
                with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    text = "".join(_stream_pieces(response))
                return text
            response = client.post("/v1/chat/completions", json=body)
            return str(response.json()["choices"][0]["message"]["content"])

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(ask, asked))
    for (name, index), text in zip(asked, answers, strict=True):
        assert text == alone[name][index].text, (name, index)


def _stream_pieces(response: httpx.Response) -> Iterator[str]:
    import json

    assert response.status_code == 200, response.read()
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            for choice in json.loads(line[len("data: ") :])["choices"]:
                yield choice["delta"].get("content", "")
