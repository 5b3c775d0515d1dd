"""What the HTTP surfaces of the three services share: one error document, the handlers that
answer in it, `/healthz` and `/metrics`.

Every error answer is `{"error": <stable code>, "message": <text>}` (SPEC §7), whether a route
refuses, FastAPI does (an unknown path, a parameter out of its schema) or a bug does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException

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
