"""A real experiment folder to rate, and a real rating server.

``rating_template`` runs a tiny ``compare`` (``prompt`` and ``few_shot`` on the random 2-layer
Llama, about 2 s) on the strategy tests' restaurant chat records plus nine eval requests of its
own, one of them HTML, so the page's escaping is tested: 17 eval items, an odd number, so the
left/right balance is ±1. ``experiment`` is a fresh copy of it per test (each test writes its own
``ratings.sqlite``). :func:`serving` runs uvicorn on a free loopback port in a thread.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
import uvicorn
from fastapi import FastAPI
from tests.unit.models.test_causal_lm import build_tiny_llm
from tests.unit.strategies.conftest import chat_record, chat_records

from adaptlab.compare import compare
from adaptlab.config import ExperimentConfig
from adaptlab.serve.rating import listening_socket

HTML_REQUEST = "<b>table</b> for 2 & <script>window.pwned = 1</script> tonight"
EXTRA_EVAL = [
    ("could we sit outside at 6pm", {"time": "6pm"}),
    ("a booking for nine on tuesday", {"people": "nine", "date": "tuesday"}),
    ("my surname is Okafor", {"last_name": "Okafor"}),
    ("how spicy is the curry", {}),
    ("table for 7 this saturday", {"people": "7", "date": "this saturday"}),
    ("Jonas Weber, party of two", {"people": "two", "first_name": "Jonas", "last_name": "Weber"}),
    ("do you serve breakfast", {}),
    ("brunch at 11am for 3", {"people": "3", "time": "11am"}),
    (HTML_REQUEST, {"people": "2", "date": "tonight"}),
]
EVAL_ITEMS = 17
DECODING = {"max_new_tokens": 6}


def _jsonl(path: Path, records: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path)


@pytest.fixture(scope="session")
def rating_template(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> Path:
    """The experiment folder of a finished tiny generative ``compare``, not to be written to."""
    root = tmp_path_factory.mktemp("rate-experiment")
    train, evaluation = chat_records()
    evaluation += [chat_record(text, slots) for text, slots in EXTRA_EVAL]
    experiment = ExperimentConfig.model_validate(
        {
            "name": "chat",
            "output_dir": str(root / "runs"),
            "data": {
                "train": _jsonl(root / "train.jsonl", train),
                "eval": _jsonl(root / "eval.jsonl", evaluation),
                "format": "chat",
            },
            "model": {"base_model": str(build_tiny_llm(root / "llm")), "sequence_len": 512},
            "strategies": {
                "prompt": {"decoding": DECODING},
                "few_shot": {"k": 2, "retriever": str(tiny_encoder), "decoding": DECODING},
            },
            "compare": {
                "latency_budget_s": 0.05,  # latency is not what these tests are about
                "bootstrap_resamples": 200,
                "retention": {"enabled": False},
            },
        }
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on two contended cores run faster single-threaded
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("ADAPTLAB_CACHE", str(root / "cache"))
            result = compare(experiment, ["prompt", "few_shot"], log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    assert result.failures == {}
    return result.folder


@pytest.fixture
def experiment(rating_template: Path, tmp_path: Path) -> Path:
    """A copy of the rated experiment folder of this test's own."""
    return Path(shutil.copytree(rating_template, tmp_path / "chat"))


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port until the block ends; its base URL."""
    listener = listening_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the rating server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()
