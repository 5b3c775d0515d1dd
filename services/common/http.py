"""What the HTTP surfaces of the three services share: one error document, the handlers that
answer in it, `/healthz`, `/metrics` and the request metrics behind it.

Every error answer is `{"error": <stable code>, "message": <text>}` (SPEC §7), whether a route
refuses, FastAPI does (an unknown path, a parameter out of its schema) or a bug does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from time import perf_counter
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_fastapi_instrumentator.routing import get_route_name
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """Every error answer of the API."""

    error: str
    message: str


def error_doc(description: str, model: type[BaseModel] = ErrorBody, /, **headers: str) -> dict[str, Any]:
    """An error answer as a route's `responses` declare it in the OpenAPI document."""
    doc: dict[str, Any] = {"model": model, "description": description}
    if headers:
        doc["headers"] = {name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()}
    return doc


def error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers or None)


# Says one validation error in words, or None for pydantic's own message.
Explain = Callable[[dict[str, Any]], str | None]


def add_error_handlers(
    app: FastAPI, explain: Explain | None = None, on_unexpected: Callable[[Request], None] | None = None
) -> None:
    """FastAPI's and Starlette's refusals, and a bug's 500, answered in the error document."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        # Unknown paths and methods (say a member id with an encoded slash) in the same shape.
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error(exc.status_code, code, str(exc.detail), **(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        # In the one error shape, as the document declares, rather than FastAPI's own.

        def problem(e: dict[str, Any]) -> str:
            where = ".".join(str(p) for p in e["loc"][1:]) or e["loc"][0]
            return f"{where}: {(explain and explain(e)) or e['msg']}"

        problems = "; ".join(map(problem, exc.errors()))
        return error(422, "invalid_request", problems or "the request is not valid")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        # A bug, never a client's doing: log it, answer in the usual shape.
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        if on_unexpected is not None:
            on_unexpected(request)
        return error(500, "internal", "an unexpected error; it has been logged")


def add_healthz(app: FastAPI, summary: str = "Alive") -> None:
    """`GET /healthz`: the process answers."""

    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_api_route("/healthz", healthz, methods=["GET"], summary=summary)


def add_metrics(app: FastAPI, *registries: CollectorRegistry, operation_id: str | None = None) -> None:
    """`GET /metrics`: the registries given (the process's own if none), in Prometheus's text format."""
    sources = registries or (REGISTRY,)

    async def metrics() -> Response:
        return Response(b"".join(generate_latest(r) for r in sources), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route(
        "/metrics",
        metrics,
        methods=["GET"],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        operation_id=operation_id,
    )


async def check(probe: object) -> str:
    """ok, or `down: <why>` if the probe fails or takes over 2 s."""
    try:
        async with asyncio.timeout(2):
            await probe  # type: ignore[misc]
    except Exception as exc:  # noqa: BLE001 - any failure means the dependency is down
        return f"down: {exc.__class__.__name__}"
    return "ok"


class Server(uvicorn.Server):
    """Uvicorn inside a service's own event loop (the scorer's, the dispatcher's); the service,
    not uvicorn, handles SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


# Seconds; fine where the API's answers fall (p99 under 10 ms is its target).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class RequestMetrics:
    """Request counts (`http_requests_total{handler,method,status}`, the status as its class:
    "2xx") and latencies (`http_request_duration_seconds{handler,method}`) per route, as
    prometheus-fastapi-instrumentator's `requests` and `latency` metrics count them (the
    handler is the route's path template, "none" for a path no route has; `/metrics` is not
    counted), in a pure ASGI middleware.

    The instrumentator matches every request against every route again and builds a Request
    and a Response for its metrics: a fifth of the API's CPU per member read. Here the route is
    the one the router put in the scope; only a request no route took (a 404, a 405) is
    matched again, by the instrumentator's own `get_route_name`, so the labels stay the same.
    """

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "http_requests_total",
            "Total number of requests by method, status and handler.",
            ["handler", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Duration of HTTP requests in seconds",
            ["handler", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        # Labelled children by (handler, method, status): `labels()` costs more than the count.
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        status = 500  # what a request that raises counts as

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            self._count(scope, status, perf_counter() - started)

    def _count(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        handler = getattr(route, "path", None) or get_route_name(HTTPConnection(scope), should_include_root_path=False)
        if "/metrics" in (handler or scope["path"]):
            return
        key = (handler or "none", scope["method"], f"{str(status)[0]}xx")
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.requests.labels(*key), self.latency.labels(*key[:2]))
        children[0].inc()
        children[1].observe(max(seconds, 0.0))


def add_request_metrics(app: FastAPI, registry: CollectorRegistry) -> None:
    """Count `app`'s requests and their latencies in `registry` (`RequestMetrics`)."""
    app.add_middleware(RequestMetrics, registry=registry)
