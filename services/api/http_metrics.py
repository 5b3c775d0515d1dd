"""Request counts, sizes and latencies per route, for /metrics.

The series are those of prometheus-fastapi-instrumentator's default instrumentation (same names,
labels and buckets), recorded for a fraction of its cost per request: it builds a Request and a
Response for each request and matches the routes a second time, where this reads the route the
router matched from the scope and keeps each label set's series at hand.
"""

from __future__ import annotations

from collections.abc import Collection
from time import perf_counter
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, Summary
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The instrumentator's defaults.
LATENCY_HIGHR_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 7.5, 10, 30, 60
)  # fmt: skip
LATENCY_LOWR_BUCKETS = (0.1, 0.5, 1)
SIZE_HELP = (
    "Content length of {} by handler. Only value of header is respected. Otherwise ignored. No percentile calculated."
)


class HttpMetrics:
    """The series, in `registry`; `middleware` records each request but those to `excluded` routes."""

    def __init__(self, registry: CollectorRegistry, excluded: Collection[str] = ()) -> None:
        self.excluded = frozenset(excluded)
        self.requests = Counter(
            "http_requests_total",
            "Total number of requests by method, status and handler.",
            ["method", "status", "handler"],
            registry=registry,
        )
        self.request_size = Summary(
            "http_request_size_bytes",
            SIZE_HELP.format("incoming requests"),
            ["handler"],
            registry=registry,
        )
        self.response_size = Summary(
            "http_response_size_bytes",
            SIZE_HELP.format("outgoing responses"),
            ["handler"],
            registry=registry,
        )
        self.latency_highr = Histogram(
            "http_request_duration_highr_seconds",
            "Latency with many buckets but no API specific labels. Made for more accurate percentile calculations.",
            buckets=LATENCY_HIGHR_BUCKETS,
            registry=registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Latency with only few buckets by handler. Made to be only used if aggregation by handler is important.",
            ["method", "handler"],
            buckets=LATENCY_LOWR_BUCKETS,
            registry=registry,
        )
        self._series: dict[tuple[str, str, str], tuple[Any, Any, Any, Any]] = {}

    def middleware(self, app: ASGIApp) -> ASGIApp:
        async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                return await app(scope, receive, send)
            started = perf_counter()
            status, response_size = 500, 0  # what an exception out of the app becomes

            async def send_recording(message: Message) -> None:
                nonlocal status, response_size
                if message["type"] == "http.response.start":
                    status, response_size = message["status"], _content_length(message.get("headers", ()))
                await send(message)

            try:
                await app(scope, receive, send_recording)
            finally:
                handler = _handler(scope)
                if handler not in self.excluded:
                    self._record(scope, handler, f"{str(status)[0]}xx", response_size, perf_counter() - started)

        return recorded

    def _record(self, scope: Scope, handler: str, status: str, response_size: int, duration: float) -> None:
        method = scope["method"]
        series = self._series.get((method, status, handler))
        if series is None:
            series = self._series[method, status, handler] = (
                self.requests.labels(method, status, handler),
                self.request_size.labels(handler),
                self.response_size.labels(handler),
                self.latency.labels(method, handler),
            )
        requests, request_size, response_size_series, latency = series
        requests.inc()
        request_size.observe(_content_length(scope["headers"]))
        response_size_series.observe(response_size)
        self.latency_highr.observe(duration)
        latency.observe(duration)


def _handler(scope: Scope) -> str:
    """The path template of the route that answered; "none" when no route has the path."""
    # FastAPI's routes leave themselves in the scope when they match (fully, or all but the
    # method); the documentation's plain routes leave only their endpoint.
    route = scope.get("route")
    if route is None and "endpoint" in scope:
        route = next((r for r in scope["app"].routes if getattr(r, "endpoint", None) is scope["endpoint"]), None)
    return getattr(route, "path", None) or "none"


def _content_length(headers: Any) -> int:
    for name, value in headers:
        if name.lower() == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0
