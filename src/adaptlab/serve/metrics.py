"""The server's Prometheus metrics (``GET /metrics``), in a registry of each app's own.

Every request is counted once, by :class:`MetricsMiddleware`, the outermost layer, so refusals
made before a route runs (413 for a large body, 400 for a foreign Host) are counted too:

- ``adaptlab_requests_total{model, route, status}`` and
  ``adaptlab_request_duration_seconds{model, route}`` (a stream: until its last byte);
- ``adaptlab_requests_in_flight{model, route}``: requests whose model is known and whose
  answer is not yet sent;
- ``adaptlab_rejections_total{reason, model, route}``, ``reason`` one of :data:`REASONS`;
- ``adaptlab_predictions_running`` and ``adaptlab_requests_queued``: what admission holds
  (a timed-out request's prediction runs, and counts, until it ends).

``model`` is the name the client sent once a route has resolved it, empty before (a body too
large to read, an unknown model: arbitrary names would make a label without bound); ``route``
is the path of one of the server's routes, ``other`` for any other path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REASONS = ("too_large", "invalid", "overloaded", "timeout")
"""Why a request was refused: its body is over the limit (413), a field is invalid (422), the
slots and the queue are full (429), it ran past its time limit (504)."""
REASON_OF_STATUS = {413: "too_large", 422: "invalid", 429: "overloaded", 504: "timeout"}
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
SPAN = "adaptlab.span"
"""The scope key of a request's :class:`RequestSpan`."""


class ServeMetrics:
    """The metrics of one app, in a registry of its own (not prometheus-client's global one:
    two apps in one process, as in tests, do not mix their counts)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("model", "route")
        self.requests = Counter(
            "adaptlab_requests",
            "Requests answered, by model, route and HTTP status.",
            (*labels, "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "adaptlab_request_duration_seconds",
            "Seconds from a request's arrival to its answer's last byte.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "adaptlab_requests_in_flight",
            "Requests being answered.",
            labels,
            registry=self.registry,
        )
        self.rejections = Counter(
            "adaptlab_rejections",
            "Requests refused, by reason: too_large (413), invalid (422), overloaded (429), "
            "timeout (504).",
            ("reason", *labels),
            registry=self.registry,
        )
        self.running = Gauge(
            "adaptlab_predictions_running",
            "Predictions being computed, a timed-out request's included until it ends.",
            registry=self.registry,
        )
        self.queued = Gauge(
            "adaptlab_requests_queued",
            "Requests waiting for a prediction slot.",
            registry=self.registry,
        )

    def watch(self, running: Callable[[], float], queued: Callable[[], float]) -> None:
        """Read the running and queued counts from admission when scraped."""
        self.running.set_function(running)
        self.queued.set_function(queued)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class RequestSpan:
    """One request as the metrics see it: its route, and its model once a route knows it."""

    def __init__(self, metrics: ServeMetrics, route: str) -> None:
        self.metrics = metrics
        self.route = route
        self.model = ""
        self.rejection: str | None = None
        """Set by a route that refuses after its status was sent (a stream past its time)."""

    def set_model(self, name: str) -> None:
        if self.model:
            return
        self.model = name
        self.metrics.in_flight.labels(name, self.route).inc()

    def close(self, status: int, seconds: float) -> None:
        metrics = self.metrics
        metrics.requests.labels(self.model, self.route, str(status)).inc()
        metrics.latency.labels(self.model, self.route).observe(seconds)
        reason = self.rejection or REASON_OF_STATUS.get(status)
        if reason is not None:
            metrics.rejections.labels(reason, self.model, self.route).inc()
        if self.model:
            metrics.in_flight.labels(self.model, self.route).dec()


def span_of(request: Request) -> RequestSpan:
    """The span :class:`MetricsMiddleware` opened for ``request``."""
    span: RequestSpan = request.scope[SPAN]
    return span


class MetricsMiddleware:
    """Counts and times every HTTP request (pure ASGI: a stream is timed to its end)."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics, routes: Collection[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = frozenset(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        span = RequestSpan(self.metrics, path if path in self.routes else "other")
        scope[SPAN] = span
        status = 500  # what the server answers when the app raises before sending anything

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, sending)
        finally:
            span.close(status, time.perf_counter() - start)


def route_paths(app: Any) -> list[str]:
    """The paths of ``app``'s routes."""
    return [str(path) for route in app.routes if (path := getattr(route, "path", None))]
