"""``adaptlab serve``: finished runs or registered versions behind an OpenAI-compatible API.

The models are opened once, when the server starts, through :func:`adaptlab.predict.open_model`
(a registered version is checked out through its sha256s), and held open until it stops;
LoRA adapter runs of one base share one loaded copy of it
(:class:`~adaptlab.models.shared_base.SharedBases`), one prediction at a time on it. Every
answer comes from :func:`adaptlab.predict.classify`, :func:`~adaptlab.predict.answer` or
:func:`~adaptlab.predict.answer_streaming`, the path ``adaptlab predict`` takes, so the server
answers what the command line prints. Routes:

- ``POST /v1/classify`` (classifiers), ``POST /v1/chat/completions`` and ``/v1/completions``
  (generators; ``stream: true`` answers server-sent events): shapes in
  :mod:`adaptlab.serve.protocol`;
- ``GET /v1/models``: each model's name (what a client sends as ``model``), its ``parent``
  (the base model it adapts) and ``root`` (the run folder or registered version opened);
- ``GET /health``: the process answers; ``GET /ready``: 200 once a real prediction of every
  model succeeded after loading (a warm-up run at start), 503 before;
- ``GET /metrics``: Prometheus (:mod:`adaptlab.serve.metrics`).

What the server takes on is :mod:`adaptlab.serve.admission`'s business; which model answers a
request is a :class:`~adaptlab.serve.routing.Router`'s: with ``canary``, the
:class:`~adaptlab.serve.canary.CanaryRouter` splits the champion's requests with a gated
candidate, and :meth:`ServerState.call` lets the :class:`~adaptlab.serve.canary.Canary` watch
every prediction (:mod:`adaptlab.serve.canary`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import ExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sse_starlette import EventSourceResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from adaptlab import predict
from adaptlab.models.shared_base import SharedBases
from adaptlab.predict import Answer, LoadedModel
from adaptlab.serve.admission import Admission, BodyLimit, timed_out
from adaptlab.serve.canary import Canary, CanaryRouter, CanarySettings, open_canary
from adaptlab.serve.metrics import (
    MetricsMiddleware,
    RequestSpan,
    ServeMetrics,
    route_paths,
    span_of,
)
from adaptlab.serve.monitor import DriftMonitor, start_monitor
from adaptlab.serve.network import allowed_hosts, is_loopback, listening_socket
from adaptlab.serve.protocol import (
    ApiError,
    ChatCompletionRequest,
    Chunks,
    ClassifyRequest,
    CompletionRequest,
    GenerationRequest,
    chat_completion,
    classification,
    completion,
)
from adaptlab.serve.routing import (
    KEY_HEADER,
    DirectRouter,
    ModelTable,
    Router,
    ServedModel,
    require_kind,
    served_model,
)
from adaptlab.serve.settings import ServeSettings

logger = logging.getLogger("adaptlab.serve")
Log = Callable[[str], None]
WARM_UP_TEXT = "Hello"
_END = object()
"""Put on a stream's queue when its prediction has ended."""


class ServerState:
    """What the routes share: the settings, the metrics, and, once started, the models, the
    router and admission."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.metrics = ServeMetrics()
        self.table = ModelTable([])
        self.router: Router = DirectRouter(self.table)
        self.admission: Admission | None = None
        self.ready = False
        self.not_ready = "the models are warming up"
        self.startup_error: BaseException | None = None
        self.drift: DriftMonitor | None = None
        self.canary: Canary | None = None

    def start(self, models: Sequence[ServedModel], canary: Canary | None = None) -> None:
        self.table = ModelTable(models)
        self.canary = canary
        self.router = DirectRouter(self.table)
        if canary is not None:
            self.router = CanaryRouter(self.table, canary)
        settings = self.settings
        admission = Admission(settings.max_concurrency, settings.max_queue, settings.retry_after_s)
        self.admission = admission
        self.metrics.watch(lambda: admission.running, lambda: admission.queued)

    def deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.settings.request_timeout_s

    async def pick(self, request: Request, requested: str, *, classifier: bool) -> ServedModel:
        """The model that answers ``request`` (404 unknown, 422 of the wrong kind)."""
        key = request.headers.get(KEY_HEADER, "").encode() or await request.body()
        model = self.router.pick(requested, key)
        span_of(request).set_model(model.name)
        return require_kind(model, classifier=classifier, route=request.url.path)

    async def predict(self, model: ServedModel, job: Callable[[LoadedModel], Any]) -> Any:
        assert self.admission is not None, "the server has not started"
        return await self.admission.run(lambda: self.call(model, job), self.deadline())

    def call(
        self,
        model: ServedModel,
        job: Callable[[LoadedModel], Any],
        may_retry: Callable[[], bool] = lambda: True,
    ) -> Any:
        """``job`` on ``model``, in a worker thread; through the canary when there is one (it
        watches the prediction, and answers a failed candidate's with the champion while
        ``may_retry()``)."""
        if self.canary is None:
            return model.call(job)
        return self.canary.call(model, job, may_retry)

    async def warm_up(self) -> None:
        """One real prediction per model (a canary's candidate too); /ready answers 200 only
        once all succeeded."""
        assert self.admission is not None
        candidate = [] if self.canary is None else [self.canary.candidate.model]
        for model in [*self.table, *candidate]:
            try:
                await self.admission.run(partial(model.call, _warm_up), None)
            except Exception as exc:
                self.not_ready = f"the warm-up prediction of '{model.name}' failed: {exc}"
                logger.exception("warm-up prediction of %s failed", model.name)
                return
        self.ready = True


def _warm_up(loaded: LoadedModel) -> None:
    if loaded.is_classifier:
        predict.classify(loaded, [WARM_UP_TEXT])
    else:
        predict.answer(loaded, [[{"role": "user", "content": WARM_UP_TEXT}]], max_new_tokens=1)


def create_app(
    targets: Sequence[str | Path],
    settings: ServeSettings,
    *,
    registry: Path | None = None,
    canary: CanarySettings | None = None,
    log: Log | None = None,
) -> FastAPI:
    """The server of ``targets`` (run folders, or registered references ``NAME@ALIAS``,
    ``NAME:VERSION`` in ``registry``), opened when the app starts and closed when it stops.

    ``canary``: a candidate split with the champion of its name, gated first: a refused one
    fails the start (:class:`~adaptlab.serve.canary.CanaryRefused`); ``log`` hears what the
    canary decides."""
    if not targets:
        raise ValueError("nothing to serve: give at least one run folder or registered version")
    state = ServerState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with ExitStack() as stack:
            try:
                bases = SharedBases()  # adapters of one base share one loaded copy of it
                opened = _open_models(stack, targets, registry, bases)
                served = list(zip(map(str, targets), opened, strict=True))
                candidate = _open_canary(stack, state, served, canary, registry, bases, log)
                state.start(opened, candidate)
            except Exception as exc:
                state.startup_error = exc
                raise
            models = state.table.models
            drift = start_monitor(models, settings.drift, state.metrics.registry, registry)
            state.drift = drift
            warming = asyncio.create_task(state.warm_up())
            try:
                yield
            finally:
                warming.cancel()
                assert state.admission is not None
                await state.admission.close()
                if state.canary is not None:
                    await asyncio.to_thread(state.canary.close)
                if drift is not None:
                    await asyncio.to_thread(drift.close)

    # The docs pages load their scripts from a CDN; the schema itself is served.
    app = FastAPI(title="adaptlab serve", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.server = state
    _add_error_handlers(app, state)
    _add_model_routes(app, state)
    _add_service_routes(app, state)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(HostCheck, allowed=allowed_hosts(settings.host))
    app.add_middleware(MetricsMiddleware, metrics=state.metrics, routes=route_paths(app))
    return app


def _open_models(
    stack: ExitStack, targets: Sequence[str | Path], registry: Path | None, bases: SharedBases
) -> list[ServedModel]:
    models = []
    for target in targets:
        loaded = stack.enter_context(predict.open_model(target, registry, bases))
        models.append(served_model(str(target), loaded))
    return models


def _open_canary(
    stack: ExitStack,
    state: ServerState,
    served: Sequence[tuple[str, ServedModel]],
    canary: CanarySettings | None,
    registry: Path | None,
    bases: SharedBases,
    log: Log | None,
) -> Canary | None:
    if canary is None:
        return None
    return open_canary(
        stack,
        served,
        canary,
        registry=registry,
        bases=bases,
        timeout_s=state.settings.request_timeout_s,
        metrics=state.metrics.registry,
        log=log,
    )


# --------------------------------------------------------------------------- routes


def _add_model_routes(app: FastAPI, state: ServerState) -> None:
    @app.post("/v1/classify")
    async def classify(body: ClassifyRequest, request: Request) -> JSONResponse:
        model = await state.pick(request, body.model, classifier=True)
        _check_count(body.input, "input", state.settings.max_inputs)
        labels = model.loaded.label_names
        texts = body.input
        predictions = await state.predict(
            model, lambda loaded: predict.classify(loaded, texts, top_k=len(labels))
        )
        if state.drift is not None:
            state.drift.observe_classified(model, texts, predictions)
        created = int(time.time())
        ident = f"classify-{uuid.uuid4().hex}"
        return JSONResponse(classification(ident, model.name, created, predictions, labels))

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(
        body: ChatCompletionRequest, request: Request
    ) -> JSONResponse | EventSourceResponse:
        model = await state.pick(request, body.model, classifier=False)
        limit = _token_limit(body, model)
        conversation = body.conversation()
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            chunks = Chunks(ident, model.name, created, chat=True)
            return await _stream(state, request, model, conversation, limit, chunks, body)
        (answer,) = await state.predict(
            model, lambda loaded: predict.answer(loaded, [conversation], max_new_tokens=limit)
        )
        if state.drift is not None:
            state.drift.observe_answered(model, conversation, answer)
        return JSONResponse(chat_completion(ident, model.name, created, answer))

    @app.post("/v1/completions", response_model=None)
    async def completions(
        body: CompletionRequest, request: Request
    ) -> JSONResponse | EventSourceResponse:
        model = await state.pick(request, body.model, classifier=False)
        _check_count(body.prompt, "prompt", state.settings.max_inputs)
        limit = _token_limit(body, model)
        conversations = body.conversations()
        ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            if len(conversations) > 1:
                raise ApiError(422, "prompt: a stream answers one prompt", param="prompt")
            chunks = Chunks(ident, model.name, created, chat=False)
            return await _stream(state, request, model, conversations[0], limit, chunks, body)
        answers = await state.predict(
            model, lambda loaded: predict.answer(loaded, conversations, max_new_tokens=limit)
        )
        if state.drift is not None:
            for asked, answered in zip(conversations, answers, strict=True):
                state.drift.observe_answered(model, asked, answered)
        return JSONResponse(completion(ident, model.name, created, answers))


def _add_service_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/v1/models")
    async def models() -> JSONResponse:
        cards = [_model_card(m, state.canary) for m in state.table]
        return JSONResponse({"object": "list", "data": cards})

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/ready")
    async def ready() -> JSONResponse:
        if not state.ready:
            raise ApiError(
                503,
                state.not_ready,
                kind="service_unavailable",
                code="not_ready",
                headers={"Retry-After": "1"},
            )
        return JSONResponse({"status": "ready", "models": [m.name for m in state.table]})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def _model_card(model: ServedModel, canary: Canary | None = None) -> dict[str, Any]:
    loaded = model.loaded
    card: dict[str, Any] = {
        "id": model.name,
        "object": "model",
        "created": model.created,
        "owned_by": "adaptlab",
        "root": loaded.source,
        "parent": model.parent,
        "task": "classification" if model.is_classifier else "generation",
        "strategy": loaded.record.strategy,
    }
    if model.aliases:
        card["aliases"] = list(model.aliases)
    if model.is_classifier:
        card["labels"] = list(loaded.label_names)
    else:
        card["max_tokens"] = loaded.max_new_tokens
    if canary is not None and model is canary.champion.model:
        card["canary"] = canary.describe()
    return card


def _check_count(values: Sequence[str], field: str, limit: int) -> None:
    if len(values) > limit:
        raise ApiError(
            422,
            f"{field}: {len(values)} items, more than the server's limit of {limit} per request",
            param=field,
        )


def _token_limit(body: GenerationRequest, model: ServedModel) -> int | None:
    """The answer's token limit the request asks for: at most the run's ``max_new_tokens``."""
    asked = body.token_limit()
    if asked is None:
        return None
    field, value = asked
    most = model.loaded.max_new_tokens
    if most is not None and value > most:
        raise ApiError(
            422,
            f"{field}: {value} is more than model '{model.name}' answers with ({most}, the "
            "run's max_new_tokens); it may only lower it",
            param=field,
        )
    return value


# --------------------------------------------------------------------------- streaming


async def _stream(
    state: ServerState,
    request: Request,
    model: ServedModel,
    conversation: list[dict[str, Any]],
    limit: int | None,
    chunks: Chunks,
    body: GenerationRequest,
) -> EventSourceResponse:
    """Server-sent events of one answer as it is decoded, then ``[DONE]``.

    The answer's first piece is awaited before the response starts, so a request that times
    out in the queue or before its first token still gets a 504; past that the status is sent,
    and a stream that runs out of time ends with an error event (and decoding stops).
    """
    assert state.admission is not None
    deadline = state.deadline()
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    stop = threading.Event()
    sent = threading.Event()  # a canary's failed candidate is retried only before this

    def push(piece: str) -> None:
        sent.set()
        loop.call_soon_threadsafe(queue.put_nowait, piece)

    def job(loaded: LoadedModel) -> Answer:
        return predict.answer_streaming(loaded, conversation, push, max_new_tokens=limit, stop=stop)

    future = await state.admission.start(
        lambda: state.call(model, job, lambda: not sent.is_set()), deadline
    )
    if state.drift is not None:
        state.drift.observe_stream(model, conversation, future)
    # Runs after every piece the thread pushed: both go through the loop's queue of callbacks.
    future.add_done_callback(lambda _: queue.put_nowait(_END))
    try:
        async with asyncio.timeout_at(deadline):
            first = await queue.get()
    except TimeoutError:
        stop.set()
        raise timed_out() from None
    stream = _Stream(queue, future, stop, deadline, chunks, span_of(request))
    return EventSourceResponse(
        stream.events(first, include_usage=body.include_usage),
        sep="\n",
        # Shutdown lets a stream finish, as uvicorn lets any request in flight finish.
        shutdown_event=anyio.Event(),
        shutdown_grace_period=state.settings.shutdown_timeout_s,
    )


class _Stream:
    """The events of one streamed answer, read from the queue its prediction fills."""

    def __init__(
        self,
        queue: asyncio.Queue[Any],
        future: asyncio.Future[Answer],
        stop: threading.Event,
        deadline: float,
        chunks: Chunks,
        span: RequestSpan,
    ) -> None:
        self.queue = queue
        self.future = future
        self.stop = stop
        self.deadline = deadline
        self.chunks = chunks
        self.span = span

    async def events(self, first: Any, *, include_usage: bool) -> AsyncIterator[dict[str, str]]:
        chunks = self.chunks
        try:
            opening = chunks.opening()
            if opening is not None:
                yield _data(opening)
            item = first
            while item is not _END:
                yield _data(chunks.text(item))
                try:
                    async with asyncio.timeout_at(self.deadline):
                        item = await self.queue.get()
                except TimeoutError:
                    self.span.rejection = "timeout"
                    yield _data(timed_out().body())
                    yield DONE
                    return
            try:
                answer = self.future.result()
            except Exception as exc:
                logger.error("a streamed prediction failed", exc_info=exc)
                yield _data(_internal(exc).body())
                yield DONE
                return
            yield _data(chunks.closing(answer))
            if include_usage:
                yield _data(chunks.usage(answer))
            yield DONE
        finally:
            self.stop.set()  # ended, timed out, or the client left: decoding stops


DONE = {"data": "[DONE]"}


def _data(payload: dict[str, Any]) -> dict[str, str]:
    return {"data": json.dumps(payload, ensure_ascii=False, separators=(",", ":"))}


def _internal(exc: BaseException) -> ApiError:
    return ApiError(500, f"the prediction failed: {type(exc).__name__}: {exc}", kind="server_error")


# --------------------------------------------------------------------------- errors


def _add_error_handlers(app: FastAPI, state: ServerState) -> None:
    @app.exception_handler(ApiError)
    async def refused(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        body = exc.body
        named = body.get("model") if isinstance(body, dict) else None
        if isinstance(named, str) and named in state.table:
            span_of(request).set_model(state.table.get(named).name)
        return _validation_error(exc.errors()).response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        error = ApiError(exc.status_code, str(exc.detail), kind=kind, headers=exc.headers)
        return error.response()

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _internal(exc).response()


def _validation_error(errors: Sequence[Any]) -> ApiError:
    """A 422 naming the first invalid field (``messages.0.role``), as OpenAI's ``param``."""
    first = errors[0] if errors else {}
    location = [str(part) for part in first.get("loc", ())]
    param = ".".join(location[1:] if location[:1] == ["body"] else location) or None
    message = str(first.get("msg", "invalid request"))
    if first.get("type") == "extra_forbidden":
        message = "not a field adaptlab accepts (it honours every field it accepts)"
    elif first.get("type") == "json_invalid":
        param, message = None, f"the body is not valid JSON: {first.get('ctx', {}).get('error')}"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    shown = f"{param}: {message}" if param else message
    return ApiError(422, f"{shown}{more}", param=param, code=str(first.get("type", "invalid")))


class HostCheck:
    """Answers only the Host headers in ``allowed`` (``*``: any), in OpenAI's error shape:
    a server on loopback is not reachable through a DNS name that points at it."""

    def __init__(self, app: ASGIApp, allowed: Sequence[str]) -> None:
        self.app = app
        self.allowed = frozenset(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "*" not in self.allowed:
            host = Headers(scope=scope).get("host", "").rsplit(":", 1)[0]
            if host not in self.allowed:
                error = ApiError(400, f"Host header '{host}' is not one this server answers")
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


# --------------------------------------------------------------------------- running


def run_server(
    targets: list[str],
    registry: Path | None,
    settings: ServeSettings,
    *,
    canary: CanarySettings | None = None,
    log: Log = print,
) -> None:
    """Serve ``targets`` until interrupted (Ctrl+C, SIGTERM), then let the requests in flight
    finish (``settings.shutdown_timeout_s``). Raises what opening a model raised
    (:class:`adaptlab.runs.RunError`, a registry error) or
    :class:`adaptlab.serve.network.ListenError` (the port is taken), or
    :class:`adaptlab.serve.canary.CanaryRefused` (the gate refused ``canary``)."""
    app = create_app(targets, settings, registry=registry, canary=canary, log=log)
    listener = listening_socket(settings.host, settings.port)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    if not is_loopback(settings.host):
        log(f"warning: listening on {settings.host}: anyone who can reach it can call the models")
    log(f"Serving {', '.join(targets)} at http://{host}:{listener.getsockname()[1]}/v1 "
        "(Ctrl+C stops it)")  # fmt: skip
    server = uvicorn.Server(server_config(app, settings))
    state: ServerState = app.state.server
    try:
        server.run(sockets=[listener])
    except SystemExit:  # uvicorn's answer to a failed startup, after logging it
        if state.startup_error is None:
            raise
    finally:
        listener.close()
    if state.startup_error is not None:
        raise state.startup_error


def server_config(app: FastAPI, settings: ServeSettings) -> uvicorn.Config:
    """uvicorn's settings for ``app``: the asyncio loop, quiet logs, and a graceful shutdown
    that gives the requests in flight ``shutdown_timeout_s``."""
    return uvicorn.Config(
        app,
        loop="asyncio",
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
    )
