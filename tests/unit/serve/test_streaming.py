""":func:`adaptlab.predict.answer_streaming`, the server's streamed path: its pieces add up to
the :class:`~adaptlab.predict.Answer` that :func:`~adaptlab.predict.answer` gives for the same
request, with the same token counts, and a set ``stop`` ends decoding early."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.unit.serve.conftest import MAX_NEW_TOKENS

from adaptlab import predict

REQUESTS = [
    [{"role": "user", "content": "a table for 2 at 7pm please"}],
    [
        {"role": "system", "content": "Answer in JSON."},
        {"role": "user", "content": "my name is Anna Berg"},
    ],
    [{"role": "user", "content": "é ü 東京 — emoji 🍜?"}],
]


def test_streamed_pieces_add_up_to_the_answer(generator_run: Path) -> None:
    with predict.open_model(generator_run) as loaded:
        for request in REQUESTS:
            for limit in (None, 3):
                (whole,) = predict.answer(loaded, [request], max_new_tokens=limit)
                pieces: list[str] = []
                streamed = predict.answer_streaming(
                    loaded, request, pieces.append, max_new_tokens=limit
                )
                assert streamed == whole
                assert "".join(pieces) == whole.text
                assert all(pieces)


def test_a_set_stop_ends_decoding_after_one_token(generator_run: Path) -> None:
    stop = threading.Event()
    stop.set()
    with predict.open_model(generator_run) as loaded:
        answer = predict.answer_streaming(loaded, REQUESTS[0], lambda _: None, stop=stop)
        assert loaded.max_new_tokens == MAX_NEW_TOKENS
    assert answer.completion_tokens == 1 and not answer.finished
