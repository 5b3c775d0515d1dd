"""The dispatcher's small HTTP surface: /healthz, /readyz and /metrics."""

from __future__ import annotations

from typing import Protocol

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from services.common import http


class Health(Protocol):
    async def ping_postgres(self) -> None: ...

    async def ping_kafka(self) -> None: ...

    def parts(self) -> list[str]:
        """The parts reported on besides the stores (the consumer, each worker)."""

    def problems(self) -> dict[str, str]:
        """What keeps the dispatcher from its work, by part (empty: all is well)."""


def create_app(dispatcher: Health) -> FastAPI:
    app = FastAPI(title="Community Levels webhook dispatcher", version="1")
    http.add_error_handlers(app)
    http.add_healthz(app)

    @app.get(
        "/readyz",
        summary="Whether the dispatcher makes progress: PostgreSQL and Kafka answer, no dead or stuck worker "
        "(an endpoint that fails is the endpoint's problem: see `cl webhook list`)",
    )
    async def readyz() -> JSONResponse:
        checks = {
            "postgres": await http.check(dispatcher.ping_postgres()),
            "kafka": await http.check(dispatcher.ping_kafka()),
        }
        problems = dispatcher.problems()
        ready = checks["postgres"] == checks["kafka"] == "ok" and not problems
        checks |= {name: "ok" for name in dispatcher.parts()} | problems
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    http.add_metrics(app)
    return app


def server(dispatcher: Health, host: str, port: int) -> http.Server:
    return http.Server(
        uvicorn.Config(create_app(dispatcher), host=host, port=port, log_level="warning", lifespan="off")
    )
