"""``adaptlab serve --ray``: the model server's app on Ray Serve, replicated and autoscaled,
with the served models multiplexed over the replicas (extra ``adaptlab[ray]``).

Each replica runs the app :func:`adaptlab.serve.app.create_app` builds, unchanged, once per
model it holds: a replica opens a model the first time a request names it (through
:func:`adaptlab.predict.open_model`, as the plain server does) and keeps at most
``models_per_replica`` of them, the least recently used closed first. That is Ray Serve's
model multiplexing (``@serve.multiplexed``): a request that carries the
``serve_multiplexed_model_id`` header is routed by Ray to a replica that already holds that
model. A request without the header is still answered, by the model its body's ``model``
field names, on whichever replica Ray picks (which opens the model if it does not hold it).

Shared with the plain server (``adaptlab serve``), being the same app per model:

- the routes and their shapes, the prediction path (``adaptlab predict``'s), the 413 / 422 /
  429 with ``Retry-After`` / 504 refusals, the Host check, the warm-up before ``/ready``;
- the Prometheus metrics of each model (``/metrics`` merges the apps the replica holds).

Not shared, or different:

- admission bounds each model on each replica: ``max_concurrency`` predictions and
  ``max_queue`` waiting *per model per replica*, not over all models of one process. Ray's
  ``max_ongoing_requests`` is set just above what the apps it holds admit, so the apps, not
  Ray, answer overload (429, never Ray's 503);
- ``/health`` and ``/ready`` are the answering replica's: ``/ready`` is 200 once every model
  it holds has warmed up (it opens none); with the ``serve_multiplexed_model_id`` header it is
  that model's ``/ready``, on a replica holding it (opened if none does);
- ``/v1/models`` lists every model the deployment serves, with the plain server's full card
  for the models the answering replica holds and ``id``, ``object``, ``owned_by`` and ``root``
  for the others;
- ``/metrics`` is the answering replica's only, and loses a model's counts when the replica
  closes that model (Prometheus reads it as a counter reset): for a fleet view, scrape Ray's
  own metrics;
- a model answers only to the name it is served by (the run's name, or the registered
  reference as given): the version a reference resolved to (``intent:3``) gets a 404;
- the canary router and the drift monitor live in one process; they are not deployed here;
- opening a model blocks the replica's other requests until it is open (``create_app`` opens
  its models in its startup), so the first request for a model on a replica waits for it.

Every answer carries ``x-adaptlab-replica``, the replica that answered. Ray is imported only
inside functions: adaptlab works without the extra.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, suppress
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Ge, Gt
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from pydantic import Field, model_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adaptlab.config import Section
from adaptlab.registry import Registry
from adaptlab.registry.catalog import registry_root
from adaptlab.registry.names import parse_reference
from adaptlab.runs import RunError, read_run
from adaptlab.serve.app import HostCheck, create_app
from adaptlab.serve.network import allowed_hosts, is_loopback, listening_socket
from adaptlab.serve.protocol import ApiError, unknown_model
from adaptlab.serve.settings import ServeSettings

INSTALL = "pip install 'adaptlab[ray]'"
APPLICATION = "adaptlab"
"""The Ray Serve application's name (``serve status`` shows it)."""
DEPLOYMENT = "AdaptlabServer"
MODEL_HEADER = "serve_multiplexed_model_id"
"""The header Ray Serve routes a request by to a replica holding the model it names."""
REPLICA_HEADER = "x-adaptlab-replica"
FORWARDED_ENVIRONMENT = (
    "ADAPTLAB_CACHE",
    "ADAPTLAB_REGISTRY",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_OFFLINE",
)
"""Where the replicas find the cache, the registry and the bundled models, as the command
found them (a remote node does not share the driver's environment). Never a token."""
Log = Callable[[str], None]


class RayServeError(RuntimeError):
    """Ray is not installed, or cannot run the deployment as asked."""


class RaySettings(Section):
    """How many replicas run the server on Ray Serve, and what each holds. ``replicas`` fixes
    the count; ``min_replicas`` / ``max_replicas`` / ``target_ongoing_requests`` autoscale it."""

    replicas: Annotated[int, Ge(1)] | None = Field(
        None, description="A fixed number of replicas (not with the autoscaling settings)."
    )
    min_replicas: Annotated[int, Ge(0)] | None = Field(
        None, description="Autoscaling: the fewest replicas (default 1; 0 scales to zero)."
    )
    max_replicas: Annotated[int, Ge(1)] | None = Field(
        None, description="Autoscaling: the most replicas (default: min_replicas, at least 1)."
    )
    target_ongoing_requests: Annotated[float, Gt(0)] | None = Field(
        None,
        description="Autoscaling: the requests in flight per replica Ray scales towards "
        "(Ray's default, 2, when left out).",
    )
    replica_cpus: Annotated[float, Gt(0)] = Field(
        1.0, description="CPUs Ray reserves for each replica (ray_actor_options num_cpus)."
    )
    models_per_replica: Annotated[int, Ge(1)] = Field(
        3,
        description="Models one replica holds at once; the least recently used is closed to "
        "open another (Ray Serve's max_num_models_per_replica).",
    )

    @model_validator(mode="after")
    def _one_way_to_count(self) -> RaySettings:
        if self.replicas is not None and self.autoscales:
            raise ValueError(
                "replicas: a fixed count cannot be combined with min_replicas, max_replicas or "
                "target_ongoing_requests (autoscaling); give one or the other"
            )
        if self.autoscales:
            low, high = self.autoscaling_bounds
            if low > high:
                raise ValueError(f"min_replicas: {low} is more than max_replicas ({high})")
        return self

    @property
    def autoscales(self) -> bool:
        bounds = (self.min_replicas, self.max_replicas, self.target_ongoing_requests)
        return any(value is not None for value in bounds)

    @property
    def autoscaling_bounds(self) -> tuple[int, int]:
        low = 1 if self.min_replicas is None else self.min_replicas
        high = max(low, 1) if self.max_replicas is None else self.max_replicas
        return low, high

    @property
    def initial_replicas(self) -> int:
        """The replicas Ray starts with."""
        if self.autoscales:
            return self.autoscaling_bounds[0]
        return 1 if self.replicas is None else self.replicas


def deployment_options(ray_settings: RaySettings, settings: ServeSettings) -> dict[str, Any]:
    """The Ray Serve deployment options (``Deployment.options``) for these settings."""
    options: dict[str, Any] = {
        "ray_actor_options": {
            "num_cpus": ray_settings.replica_cpus,
            "runtime_env": {"env_vars": forwarded_environment()},
        },
        # One more than the apps a replica holds admit: the apps answer overload with 429, and
        # Ray never queues a request in front of them (its own overload answer is a 503).
        "max_ongoing_requests": (settings.max_concurrency + settings.max_queue)
        * ray_settings.models_per_replica
        + 1,
        "graceful_shutdown_timeout_s": settings.shutdown_timeout_s,
    }
    if ray_settings.autoscales:
        low, high = ray_settings.autoscaling_bounds
        scaling: dict[str, Any] = {"min_replicas": low, "max_replicas": high}
        if ray_settings.target_ongoing_requests is not None:
            scaling["target_ongoing_requests"] = ray_settings.target_ongoing_requests
        options["autoscaling_config"] = scaling
    else:
        options["num_replicas"] = ray_settings.initial_replicas
    return options


def forwarded_environment() -> dict[str, str]:
    return {name: os.environ[name] for name in FORWARDED_ENVIRONMENT if name in os.environ}


def model_catalog(targets: Sequence[str | Path], registry: Path | None) -> dict[str, str]:
    """What each model is served as (the name a client sends) and what a replica opens for
    it: a run folder (as an absolute path) by its run's name, a registered reference as given.
    Checked here, before any replica starts: a missing folder or version is a clear error."""
    if not targets:
        raise RayServeError("nothing to serve: give at least one run folder or registered version")
    catalog: dict[str, str] = {}
    for target in targets:
        folder = Path(target)
        if folder.is_dir():
            name, opened = read_run(folder, predictions=False).name, str(folder.resolve())
        elif "/" in str(target) or "\\" in str(target) or folder.exists():
            raise RunError(f"{target}: no such run folder")
        else:
            Registry(registry_root(registry)).version(parse_reference(str(target)))
            name = opened = str(target)
        if name in catalog:
            raise RayServeError(
                f"two models are named '{name}' ({catalog[name]} and {opened}): serve them by "
                "registered names instead"
            )
        catalog[name] = opened
    return catalog


# --------------------------------------------------------------------------- the driver


def serve_on_ray(
    targets: Sequence[str],
    registry: Path | None,
    settings: ServeSettings,
    ray_settings: RaySettings,
    *,
    log: Log = print,
) -> None:
    """Deploy ``targets`` on Ray Serve and serve until interrupted (Ctrl+C, SIGTERM), then
    take the deployment down (and the local Ray instance, when it was started here).

    Connects to the cluster ``RAY_ADDRESS`` names, else starts a local Ray instance
    (:func:`start_ray`). Raises :class:`RayServeError` (no Ray, too few CPUs, port 0), what
    checking a target raised (:class:`adaptlab.runs.RunError`, a registry error) or
    :class:`adaptlab.serve.network.ListenError` (the port is taken)."""
    if settings.port == 0:
        raise RayServeError("--port 0 (any free port) does not work with --ray: give a port")
    ray, serve = import_ray()
    catalog = model_catalog(targets, registry)
    listening_socket(settings.host, settings.port).close()  # a taken port: refused now
    if settings.drift is not None:
        log("note: drift monitoring runs in the single-process server only; off on Ray Serve")
        settings = settings.model_copy(update={"drift": None})
    if not is_loopback(settings.host):
        log(f"warning: listening on {settings.host}: anyone who can reach it can call the models")
    started = start_ray()
    try:
        if started:  # a cluster's autoscaler may add the nodes it lacks now
            check_resources(ray, ray_settings)
        deploy(catalog, registry_root(registry), settings, ray_settings)
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        log(f"Serving {', '.join(catalog)} on Ray Serve at http://{host}:{settings.port}/v1 "
            f"({describe(serve.status())}; Ctrl+C stops it)")  # fmt: skip
        received = _wait_for_signal()
    finally:
        stop(started_here=started)
    signal.raise_signal(received)  # as uvicorn does: the shell sees the signal's exit code


def import_ray() -> tuple[Any, Any]:
    """``ray`` and ``ray.serve``, or :class:`RayServeError` saying how to install them."""
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise RayServeError(
            f"--ray needs Ray Serve, which is not installed ({exc}): {INSTALL}"
        ) from None
    return ray, serve


def start_ray(*, num_cpus: int | None = None, log_to_driver: bool = True) -> bool:
    """Connect to the Ray cluster ``RAY_ADDRESS`` names, else start a local instance (no
    dashboard); True when it was started here (and :func:`stop` ends it).

    A local instance's processes talk to each other at this machine's own address, not
    loopback: Ray replaces a loopback node address with that one. Only its HTTP proxy listens
    where ``--host`` says."""
    ray, _ = import_ray()
    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=log_to_driver)
        return False
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=log_to_driver)
    return True


def check_resources(ray: Any, ray_settings: RaySettings) -> None:
    """Refuse replicas the cluster has no CPUs for: Ray would wait for them forever."""
    needed = ray_settings.initial_replicas * ray_settings.replica_cpus
    available = float(ray.cluster_resources().get("CPU", 0))
    if needed > available:
        raise RayServeError(
            f"{ray_settings.initial_replicas} replicas of {ray_settings.replica_cpus:g} CPUs "
            f"need {needed:g} CPUs; this Ray cluster has {available:g}: lower --ray-replica-cpus "
            "or the replica count"
        )


def deploy(
    catalog: Mapping[str, str],
    registry: Path,
    settings: ServeSettings,
    ray_settings: RaySettings,
) -> None:
    """Run the deployment on the Ray cluster this process is connected to, and return once
    every replica started (each has opened and begun warming up the first model)."""
    _, serve = import_ray()
    serve.start(http_options={"host": settings.host, "port": settings.port})
    server = server_deployment(ray_settings.models_per_replica)
    options = deployment_options(ray_settings, settings)
    bound = server.options(**options).bind(
        dict(catalog), settings.model_dump_json(), str(registry.resolve())
    )
    serve.run(bound, name=APPLICATION, route_prefix="/")


def stop(*, started_here: bool) -> None:
    """Take the deployment down; end the local Ray instance too when it was started here (a
    cluster's Serve, which may run other applications, is left running)."""
    ray, serve = import_ray()
    if not ray.is_initialized():
        return
    if started_here:
        serve.shutdown()
        ray.shutdown()
    else:
        serve.delete(APPLICATION)


def describe(status: Any) -> str:
    """The replicas of the deployment, as Ray Serve's status reports them."""
    deployment = status.applications[APPLICATION].deployments[DEPLOYMENT]
    states = ", ".join(
        f"{count} {_plain(state)}" for state, count in deployment.replica_states.items()
    )
    return f"{DEPLOYMENT} {_plain(deployment.status)}: replicas {states or 'none'}"


def _plain(state: Any) -> str:
    """An enum member of Ray's by its value (``HEALTHY``), anything else as it prints."""
    return str(getattr(state, "value", state))


def _wait_for_signal() -> int:
    """Block until SIGINT or SIGTERM; the signal's number (its handlers are restored)."""
    received: list[int] = []
    done = threading.Event()

    def note(number: int, _: Any) -> None:
        received.append(number)
        done.set()

    wanted = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.signal(number, note) for number in wanted}
    try:
        while not done.wait(0.5):  # a timed wait lets the handlers run
            pass
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return received[0]


# --------------------------------------------------------------------------- the replicas


def server_deployment(models_per_replica: int) -> Any:
    """The Ray Serve deployment (not yet bound) of the server; defined when Ray is imported,
    its multiplexing limit being a decorator's argument."""
    _, serve = import_ray()

    @serve.ingress()  # the ASGI app is ReplicaApp, built once the replica exists
    class AdaptlabServer:
        # Ray Serve awaits an async constructor (the first model opens in it).
        async def __init__(  # type: ignore[misc]
            self, catalog: dict[str, str], settings: str, registry: str
        ) -> None:
            context = serve.get_replica_context()
            self.replica_app = ReplicaApp(
                catalog,
                ServeSettings.model_validate_json(settings),
                Path(registry),
                open_model=self.model,
                requested_model=serve.get_multiplexed_model_id,
                replica=context.replica_tag,
            )
            # The first model is opened (and warms up) before the replica takes traffic: a
            # target that cannot be opened fails the deployment, not a later request.
            await self.model(next(iter(catalog)))

        @serve.multiplexed(max_num_models_per_replica=models_per_replica)  # type: ignore[untyped-decorator]
        async def model(self, name: str) -> ModelApp:
            return await self.replica_app.open(name)

        def __serve_build_asgi_app__(self) -> ASGIApp:
            return self.replica_app

    return serve.deployment(name=DEPLOYMENT)(AdaptlabServer)


class ModelApp:
    """One model's server app (``create_app`` of that one model), started: its model open,
    its warm-up begun, its admission taking requests; :meth:`close` stops it."""

    __del__: Callable[[], Awaitable[None]]
    """Ray Serve's multiplexer closes a model by calling its ``__del__`` (awaited, being a
    coroutine function): set on the instance, not the class, so that garbage collection never
    calls it (it would only make a coroutine and drop it)."""

    def __init__(
        self, app: FastAPI, running: AsyncExitStack, on_close: Callable[[], object]
    ) -> None:
        self.app = app
        self._running = running
        self._on_close = on_close
        self.__del__ = self.close
        self.closing = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @classmethod
    async def open(
        cls, target: str, settings: ServeSettings, registry: Path, on_close: Callable[[], object]
    ) -> ModelApp:
        app = create_app([target], settings, registry=registry)
        running = AsyncExitStack()
        await running.enter_async_context(app.router.lifespan_context(app))
        return cls(app, running, on_close)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer a request; False, having done nothing, once it is closing (the replica asks
        the multiplexer for the model again, which opens it anew)."""
        if self.closing:
            return False
        self.in_flight += 1
        self._idle.clear()
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()
        return True

    async def close(self) -> None:
        """Take no more requests, let those in flight finish (queued ones included: closing
        admission first would fail them), then close the model."""
        self.closing = True
        self._on_close()
        settings: ServeSettings = self.app.state.server.settings
        with suppress(TimeoutError):
            async with asyncio.timeout(settings.shutdown_timeout_s):
                await self._idle.wait()
        await self._running.aclose()

    @property
    def metrics(self) -> CollectorRegistry:
        registry: CollectorRegistry = self.app.state.server.metrics.registry
        return registry

    async def cards(self) -> list[dict[str, Any]]:
        """Its ``/v1/models`` entries, from its own route's function (not through the app: the
        replica's listing is not a request to count in its metrics)."""
        (listing,) = [
            route
            for route in self.app.routes
            if isinstance(route, APIRoute) and route.path == "/v1/models"
        ]
        answer: Response = await listing.endpoint()
        cards: list[dict[str, Any]] = json.loads(bytes(answer.body))["data"]
        return cards


class ReplicaApp:
    """The ASGI app of one replica: each request goes to the app of the model it names (the
    ``serve_multiplexed_model_id`` header, else the body's ``model``, else the first model);
    ``/health``, ``/ready`` (no model named), ``/v1/models`` and ``/metrics`` are answered for
    the replica as a whole."""

    def __init__(
        self,
        catalog: Mapping[str, str],
        settings: ServeSettings,
        registry: Path,
        *,
        open_model: Callable[[str], Any],
        requested_model: Callable[[], str],
        replica: str,
    ) -> None:
        self.catalog = dict(catalog)
        self.settings = settings
        self.registry = registry
        self.default = next(iter(self.catalog))
        self.open_model = open_model
        """The multiplexed opener: the held model, else opens it (closing the least used)."""
        self.requested_model = requested_model
        self.replica = replica
        self.held: dict[str, ModelApp] = {}
        self._own = HostCheck(self._answer_for_replica, allowed_hosts(settings.host))

    async def open(self, name: str) -> ModelApp:
        """Called by the multiplexer only, for a model it does not hold."""
        model = await ModelApp.open(
            self.catalog[name], self.settings, self.registry, lambda: self.held.pop(name, None)
        )
        self.held[name] = model
        return model

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)  # each model app has its own, run by open()
            return
        send = self._signed(send)
        if scope["type"] == "http" and self._for_replica(scope["path"]):
            await self._own(scope, receive, send)
            return
        try:
            name, receive = await self._requested(scope, receive)
            for _ in range(2):  # a model closed meanwhile is opened again, once
                if await (await self._model(name)).serve(scope, receive, send):
                    return
            raise ApiError(
                503,
                f"model '{name}' was closed on this replica as it was asked for; retry",
                kind="service_unavailable",
                code="model_unavailable",
                headers={"Retry-After": str(self.settings.retry_after_s)},
            )
        except ApiError as error:
            await error.response()(scope, receive, send)

    def _for_replica(self, path: str) -> bool:
        """Whether the replica answers ``path`` itself (``/ready`` only when no model is
        named: a readiness probe never opens a model)."""
        return path in ("/health", "/v1/models", "/metrics") or (
            path == "/ready" and not self.requested_model()
        )

    async def _requested(self, scope: Scope, receive: Receive) -> tuple[str, Receive]:
        """The model a request is for, and a ``receive`` that still hands over its body."""
        header = self.requested_model()
        named, receive = await self._body_model(scope, receive)
        if header and named and named != header:
            raise ApiError(
                422,
                f"model: the body names '{named}' but the {MODEL_HEADER} header names "
                f"'{header}'; they must agree",
                param="model",
            )
        name = header or named or self.default
        if name not in self.catalog:
            raise unknown_model(name, list(self.catalog))
        return name, receive

    async def _body_model(self, scope: Scope, receive: Receive) -> tuple[str | None, Receive]:
        """The ``model`` field of a JSON body; None for any other body, or one over the size
        limit, which is handed on unread past what was read for the app's own refusal."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None, receive
        limit = self.settings.max_body_bytes
        chunks: list[bytes] = []
        size, more = 0, True
        while more and size <= limit:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None, _replay(chunks, receive, message)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = bool(message.get("more_body", False))
        replayed = _replay(chunks, receive, None if more else b"")
        if more or size > limit:
            return None, replayed
        try:
            body = json.loads(b"".join(chunks))
        except ValueError:
            return None, replayed
        named = body.get("model") if isinstance(body, dict) else None
        return (named if isinstance(named, str) and named else None), replayed

    async def _model(self, name: str) -> ModelApp:
        try:
            model: ModelApp = await self.open_model(name)
        except Exception as exc:  # the multiplexer retries on the model's next request
            raise ApiError(
                503,
                f"model '{name}' could not be opened on this replica: {type(exc).__name__}: {exc}",
                kind="service_unavailable",
                code="model_unavailable",
                headers={"Retry-After": str(self.settings.retry_after_s)},
            ) from exc
        return model

    async def _answer_for_replica(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        response: Response
        if path == "/health":
            response = JSONResponse({"status": "ok"})
        elif path == "/ready":
            response = self._readiness()
        elif path == "/v1/models":
            response = JSONResponse({"object": "list", "data": await self._cards()})
        else:
            registry = CollectorRegistry(auto_describe=True)
            registry.register(_MergedMetrics([m.metrics for m in self.held.values()]))
            response = Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
        await response(scope, receive, send)

    def _readiness(self) -> Response:
        """200 once every model the replica holds has warmed up (as the plain server's
        ``/ready``), 503 while one has not, or while it holds none (scaled up, not yet used)."""
        waiting = [
            (name, model.app.state.server.not_ready)
            for name, model in self.held.items()
            if not model.app.state.server.ready
        ]
        if self.held and not waiting:
            return JSONResponse({"status": "ready", "models": list(self.held)})
        reason = f"{waiting[0][0]}: {waiting[0][1]}" if waiting else "no model opened yet"
        error = ApiError(
            503, reason, kind="service_unavailable", code="not_ready", headers={"Retry-After": "1"}
        )
        return error.response()

    async def _cards(self) -> list[dict[str, Any]]:
        cards: list[dict[str, Any]] = []
        for name, target in self.catalog.items():
            model = self.held.get(name)
            if model is not None:
                cards.extend(await model.cards())
            else:
                cards.append(
                    {"id": name, "object": "model", "owned_by": "adaptlab", "root": target}
                )
        return cards

    def _signed(self, send: Send) -> Send:
        """``send`` adding the replica's name to the answer's headers."""
        mark = (REPLICA_HEADER.encode(), self.replica.encode())

        async def signed(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), mark]}
            await send(message)

        return signed


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _replay(chunks: list[bytes], receive: Receive, last: bytes | Message | None) -> Receive:
    """A ``receive`` handing over what was read (``chunks``), then the rest from ``receive``.

    ``last``: ``b""`` when the body was read whole, None when more of it is still to come, a
    message (the client's disconnect) to hand over after the chunks."""
    pending: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks
    ]
    if isinstance(last, bytes):
        pending.append({"type": "http.request", "body": last, "more_body": False})
    elif last is not None:
        pending.append(last)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


class _MergedMetrics:
    """The metric families of several registries as one: samples with the same labels (an
    unlabelled gauge, a refusal before any model was known) are added up; a ``_created``
    time keeps the earliest."""

    def __init__(self, registries: Sequence[CollectorRegistry]) -> None:
        self.registries = registries

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for registry in self.registries:
            for family in registry.collect():
                if family.name not in families:
                    families[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                    values[family.name] = {}
                found = values[family.name]
                for sample in family.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    if key not in found:
                        found[key] = sample.value
                    elif sample.name.endswith("_created"):
                        found[key] = min(found[key], sample.value)
                    else:
                        found[key] += sample.value
        for name, family in families.items():
            for (sample_name, labels), value in values[name].items():
                family.add_sample(sample_name, dict(labels), value)
            yield family
