"""Admission: what the server takes on, so that overload is answered, never a 5xx.

- A body over ``max_body_bytes`` is refused with 413 before any route reads it, whether its
  ``Content-Length`` says so or it streams past the limit (:class:`BodyLimit`).
- At most ``max_concurrency`` predictions are computed at once, in worker threads, so the event
  loop keeps answering (health checks, refusals) while models compute; up to ``max_queue``
  requests wait for a slot, and one more gets 429 with ``Retry-After`` (:class:`Admission`).
- A request past its ``request_timeout_s`` (its wait for a slot included) gets 504. Python
  cannot stop a thread, so a prediction whose request timed out goes on to its end and keeps
  its slot until then: the bound on concurrent predictions always holds, and a server full of
  timed-out work answers 429 rather than piling up threads.
- Shutdown: uvicorn stops accepting and lets the requests in flight finish (up to
  ``shutdown_timeout_s``); :meth:`Admission.close` then waits for the predictions still running
  before the models are closed.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import anyio.to_thread
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adaptlab.serve.protocol import ApiError

T = TypeVar("T")


class Admission:
    """Bounded concurrency with a short bounded queue, and a time limit per request.

    Call from the event loop only (the counts are changed there and nowhere else)."""

    def __init__(self, max_concurrency: int, max_queue: int, retry_after_s: int) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.retry_after_s = retry_after_s
        self.running = 0
        """Predictions holding a slot, timed-out ones included until they end."""
        self.queued = 0
        self._slots = asyncio.Semaphore(max_concurrency)
        self._executor = ThreadPoolExecutor(max_concurrency, thread_name_prefix="adaptlab-predict")

    async def run(self, job: Callable[[], T], deadline: float | None) -> T:
        """``job()``'s result, computed in a worker thread once a slot is free; 429 when the
        slots and the queue are full, 504 past ``deadline`` (the loop's clock; None: none)."""
        future = await self.start(job, deadline)
        try:
            async with asyncio.timeout_at(deadline):
                # shield: a timeout ends the wait, not the prediction, which keeps its slot
                return await asyncio.shield(future)
        except TimeoutError:
            raise timed_out() from None

    async def start(self, job: Callable[[], T], deadline: float | None) -> asyncio.Future[T]:
        """``job()`` started in a worker thread once a slot is free (429, 504 as :meth:`run`);
        its slot is given back when it ends, whatever the request does meanwhile."""
        await self._acquire(deadline)
        loop = asyncio.get_running_loop()
        try:
            context = contextvars.copy_context()
            future = loop.run_in_executor(self._executor, context.run, job)
        except BaseException:
            self._release(None)
            raise
        future.add_done_callback(self._release)
        return future

    async def _acquire(self, deadline: float | None) -> None:
        if self.running + self.queued >= self.max_concurrency + self.max_queue:
            raise ApiError(
                429,
                f"the server is busy: {self.running} predictions running and {self.queued} "
                f"requests waiting, the most it takes; retry in {self.retry_after_s} s",
                kind="rate_limit_error",
                code="overloaded",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        self.queued += 1
        try:
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        except TimeoutError:
            raise timed_out() from None
        finally:
            self.queued -= 1
        self.running += 1

    def _release(self, future: asyncio.Future[Any] | None) -> None:
        self.running -= 1
        self._slots.release()
        if future is not None and not future.cancelled():
            future.exception()  # retrieved: a timed-out request's failure is not re-reported

    async def close(self) -> None:
        """Wait for the predictions still running (timed-out ones), off the event loop."""
        await anyio.to_thread.run_sync(lambda: self._executor.shutdown(wait=True))


def timed_out() -> ApiError:
    return ApiError(
        504,
        "the request took longer than the server's time limit (request_timeout_s)",
        kind="timeout_error",
        code="timeout",
    )


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"the request body is larger than the server's limit of {limit} bytes",
        code="request_too_large",
    )


class BodyLimit:
    """Refuses (413) a request body over ``max_bytes`` before the app sees it.

    The body is read here, up to the limit, and handed to the app whole: bodies are small JSON
    (the limit is one), and a refusal is only possible before the app has started answering.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await too_large(self.max_bytes).response()(scope, receive, send)
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before sending its body: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await too_large(self.max_bytes).response()(scope, receive, send)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        await self.app(scope, _replay(b"".join(chunks), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands over ``body`` first, then what the client sends next (its
    disconnect, which a stream listens for)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
