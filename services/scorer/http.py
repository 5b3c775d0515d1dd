"""The scorer's own small HTTP surface: /healthz, /readyz and /metrics (SPEC §7)."""

from __future__ import annotations

import asyncio
from typing import Protocol

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from services.common import http


class Health(Protocol):
    """What the scorer's health answers are made of."""

    async def ping_postgres(self) -> None: ...

    async def ping_kafka(self) -> None: ...

    async def ping_redis(self) -> None: ...

    async def level_changes_late(self) -> str | None:
        """Why level changes are late, or None."""

    def parts(self) -> list[str]:
        """The parts reported on besides the stores (the consumer, each worker)."""

    def problems(self) -> dict[str, str]:
        """What keeps the scorer from its work, by part (empty: all is well)."""


def create_app(scorer: Health) -> FastAPI:
    app = FastAPI(title="Community Levels scorer", version="1")
    http.add_error_handlers(app)
    http.add_healthz(app)

    @app.get(
        "/readyz",
        summary="Whether the scorer makes progress: PostgreSQL and Kafka answer, no wedged consumer, no dead "
        "or stuck worker, no level change waiting longer than CL_OUTBOX_MAX_AGE (Redis down only degrades)",
    )
    async def readyz() -> JSONResponse:
        checks = {
            "postgres": await http.check(scorer.ping_postgres()),
            "kafka": await http.check(scorer.ping_kafka()),
            "redis": await http.check(scorer.ping_redis()),
        }
        # Read from PostgreSQL: not waited for again when it is down.
        checks["level-changes"] = await _level_changes(scorer) if checks["postgres"] == "ok" else "unknown"
        problems = scorer.problems()
        ready = checks["postgres"] == checks["kafka"] == checks["level-changes"] == "ok" and not problems
        checks |= {name: "ok" for name in scorer.parts()} | problems
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    http.add_metrics(app)

    return app


async def _level_changes(scorer: Health) -> str:
    """ok, or why level changes are late; an outbox that cannot be read is no better."""
    try:
        async with asyncio.timeout(2):
            late = await scorer.level_changes_late()
    except Exception as exc:  # noqa: BLE001 - the relay reads the same rows: it fails too
        return f"unknown: the outbox cannot be read: {exc.__class__.__name__}"
    return late or "ok"


def server(scorer: Health, host: str, port: int) -> http.Server:
    return http.Server(uvicorn.Config(create_app(scorer), host=host, port=port, log_level="warning", lifespan="off"))
