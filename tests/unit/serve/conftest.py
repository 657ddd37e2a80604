"""Two finished tiny runs to serve, a real uvicorn to serve them, and a gate to slow them.

``classifier_run`` is ``frozen`` on the tiny BERT (``tiny_encoder``, tests/unit/conftest.py)
and ``generator_run`` is ``prompt`` on a random 2-layer Llama, each made by a tiny ``compare``
(seconds). :func:`serving` runs an app on a free loopback port in a thread, as the rating
tests do. :class:`Gate` holds every prediction whose input contains :data:`SLOW` until it is
opened: the slow request that fills a slot or runs out of time, with the real model otherwise.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import uvicorn
from fastapi import FastAPI
from tests.unit.models.test_causal_lm import build_tiny_llm
from tests.unit.strategies.conftest import chat_records
from tests.unit.strategies.test_compare import tiny_runs_config
from tests.unit.strategies.test_generative import write_jsonl

from adaptlab import predict
from adaptlab.compare import compare
from adaptlab.config import ExperimentConfig
from adaptlab.serve.app import server_config
from adaptlab.serve.network import listening_socket
from adaptlab.serve.settings import ServeSettings

SLOW = "SLOW"
"""Inputs holding this word wait at the :class:`Gate`."""
MAX_NEW_TOKENS = 8
TIMEOUT = httpx.Timeout(30.0)


def _compare(root: Path, raw: dict[str, Any]) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on two contended cores run faster single-threaded
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("ADAPTLAB_CACHE", str(root / "cache"))
            result = compare(ExperimentConfig.model_validate(raw), log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    assert result.failures == {}
    return result.folder


@pytest.fixture(scope="session")
def classifier_run(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> Path:
    """The folder of a finished ``frozen`` run on the tiny BERT (3 labels)."""
    root = tmp_path_factory.mktemp("serve-classifier")
    raw = tiny_runs_config(root, tiny_encoder, ["frozen"], {"frozen": {}}, name="intent")
    return _compare(root, raw) / "runs" / "frozen"


@pytest.fixture(scope="session")
def generator_run(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> Path:
    """The folder of a finished ``prompt`` run on a random 2-layer Llama (answers of at most
    :data:`MAX_NEW_TOKENS` tokens)."""
    root = tmp_path_factory.mktemp("serve-generator")
    train, evaluation = chat_records()
    raw = {
        "name": "slots",
        "output_dir": str(root / "runs"),
        "data": {
            "train": write_jsonl(root / "train.jsonl", train),
            "eval": write_jsonl(root / "eval.jsonl", evaluation),
            "format": "chat",
        },
        "model": {"base_model": str(build_tiny_llm(root / "llm")), "sequence_len": 512},
        "strategies": {"prompt": {"decoding": {"max_new_tokens": MAX_NEW_TOKENS}}},
        "compare": {
            "strategies": ["prompt"],
            "latency_budget_s": 0.05,
            "bootstrap_resamples": 100,
            "retention": {"enabled": False},
        },
    }
    return _compare(root, raw) / "runs" / "prompt"


@dataclass
class Server:
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def client(self, *, allowed: tuple[int, ...] = ()) -> httpx.Client:
        """A client that fails the test on any 5xx answer but the ``allowed`` ones: overload
        is never one (a time limit's 504 is allowed where a test asks for it)."""

        def no_server_error(response: httpx.Response) -> None:
            status = response.status_code
            assert status < 500 or status in allowed, (
                response.request.url,
                status,
                response.read(),
            )

        hooks = {"response": [no_server_error]}
        return httpx.Client(base_url=self.url, timeout=TIMEOUT, event_hooks=hooks)

    def wait_ready(self, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        with httpx.Client(base_url=self.url, timeout=TIMEOUT) as client:
            while client.get("/ready").status_code != 200:
                assert time.monotonic() < deadline, "the server did not become ready"
                time.sleep(0.02)


@contextmanager
def serving(app: FastAPI, settings: ServeSettings | None = None) -> Iterator[Server]:
    """``app`` served by uvicorn on a free loopback port until the block ends."""
    listener = listening_socket("127.0.0.1", 0)
    server = uvicorn.Server(server_config(app, settings or ServeSettings()))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the model server did not start")
        time.sleep(0.02)
    try:
        yield Server(f"http://127.0.0.1:{listener.getsockname()[1]}", server, thread)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        listener.close()
        assert not thread.is_alive(), "the model server did not stop"


class Gate:
    """Holds predictions of inputs containing :data:`SLOW` until :meth:`open`; ``entered``
    is set when one of them waits."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.entered = threading.Event()

    def hold(self, texts: Any) -> None:
        if SLOW in repr(texts):
            self.entered.set()
            assert self.opened.wait(10), "the gate was never opened"

    def open(self) -> None:
        self.opened.set()

    def wrap(self, function: Callable[..., Any], position: int = 1) -> Callable[..., Any]:
        def held(*args: Any, **kwargs: Any) -> Any:
            self.hold(args[position])
            return function(*args, **kwargs)

        return held


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    """A :class:`Gate` in front of :func:`adaptlab.predict.classify`, ``answer`` and
    ``answer_streaming``; opened at the end of the test whatever happened."""
    held = Gate()
    for name in ("classify", "answer", "answer_streaming"):
        monkeypatch.setattr(predict, name, held.wrap(getattr(predict, name)))
    yield held
    held.open()
