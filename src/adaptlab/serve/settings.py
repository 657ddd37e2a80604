"""The model server's settings: where it listens and what it admits (:mod:`adaptlab.serve.app`).

They are not part of an experiment's config (``config.py`` describes how a model is made, not
how it is served), so they live with the server; the field descriptions are the ``--help``
text of ``adaptlab serve``.
"""

from __future__ import annotations

from typing import Annotated

from annotated_types import Ge, Gt, Le
from pydantic import Field

from adaptlab.config import Section
from adaptlab.serve.drift import DriftConfig


class ServeSettings(Section):
    """Where the server listens and how much work it takes on at once."""

    host: str = Field(
        "127.0.0.1",
        description="Address to listen on. Loopback by default: the server has no login, and "
        "on loopback it answers only Host headers naming loopback (no DNS rebinding).",
    )
    port: Annotated[int, Ge(0), Le(65535)] = Field(
        8000, description="Port to listen on (0: any free port)."
    )
    max_concurrency: Annotated[int, Ge(1), Le(1024)] = Field(
        4,
        description="Predictions computed at once, over all models. A prediction whose request "
        "timed out still counts until its computation ends, so the bound always holds.",
    )
    max_queue: Annotated[int, Ge(0), Le(100_000)] = Field(
        16,
        description="Requests waiting for a free slot; one more is answered 429 with "
        "Retry-After. Keep it short: a long queue only turns overload into timeouts.",
    )
    max_body_bytes: Annotated[int, Ge(1024), Le(1 << 30)] = Field(
        1_000_000,
        description="Largest request body in bytes (declared or streamed); larger ones get 413.",
    )
    max_inputs: Annotated[int, Ge(1), Le(100_000)] = Field(
        64,
        description="Texts in one classify request, prompts in one completions request; more "
        "get 422.",
    )
    request_timeout_s: Annotated[float, Gt(0), Le(86_400)] = Field(
        60.0,
        description="Seconds a request may take, its wait in the queue included; past it the "
        "answer is 504 (a stream that already started ends with an error event).",
    )
    shutdown_timeout_s: Annotated[int, Ge(0), Le(86_400)] = Field(
        30,
        description="Seconds the requests in flight at shutdown get to finish before they are "
        "cut off.",
    )
    retry_after_s: Annotated[int, Ge(1), Le(3600)] = Field(
        1, description="The Retry-After (seconds) sent with a 429."
    )
    drift: DriftConfig | None = Field(
        None,
        description="Drift monitoring of every model's inputs against its training data "
        "(adaptlab.serve.monitor); None: off. `adaptlab serve` turns it on.",
    )
