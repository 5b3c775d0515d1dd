"""The scorer's own small HTTP surface: /healthz, /readyz and /metrics (SPEC §7)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text

from services.common import http

if TYPE_CHECKING:
    from services.scorer.service import Scorer


def create_app(scorer: Scorer) -> FastAPI:
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
            "postgres": await _check(_ping_postgres(scorer)),
            "kafka": await _check(scorer.consumer.topics()),
            "redis": await _check(scorer.redis.ping()),
        }
        # Read from PostgreSQL: not waited for again when it is down.
        checks["level-changes"] = await _level_changes(scorer) if checks["postgres"] == "ok" else "unknown"
        problems = scorer.problems()
        ready = checks["postgres"] == checks["kafka"] == checks["level-changes"] == "ok" and not problems
        checks |= {"consumer": "ok", **{name: "ok" for name in scorer.workers.workers}} | problems
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    http.add_metrics(app)

    return app


async def _ping_postgres(scorer: Scorer) -> None:
    async with scorer.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def _level_changes(scorer: Scorer) -> str:
    """ok, or why level changes are late; an outbox that cannot be read is no better."""
    try:
        async with asyncio.timeout(2):
            late = await scorer.level_changes_late()
    except Exception as exc:  # noqa: BLE001 - the relay reads the same rows: it fails too
        return f"unknown: the outbox cannot be read: {exc.__class__.__name__}"
    return late or "ok"


async def _check(probe: object) -> str:
    try:
        async with asyncio.timeout(2):
            await probe  # type: ignore[misc]
    except Exception as exc:  # noqa: BLE001 - any failure means the dependency is down
        return f"down: {exc.__class__.__name__}"
    return "ok"


class Server(uvicorn.Server):
    """Uvicorn inside the scorer's event loop; the scorer, not uvicorn, handles SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def server(scorer: Scorer, host: str, port: int) -> Server:
    return Server(uvicorn.Config(create_app(scorer), host=host, port=port, log_level="warning", lifespan="off"))
