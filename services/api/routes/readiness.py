"""`GET /readyz`: whether the API can answer, from PostgreSQL or Redis."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from services.api import repository as repo
from services.api.reads import DB_ERRORS

router = APIRouter()


@router.get(
    "/readyz",
    summary="Whether PostgreSQL and Redis answer: ready while either does; `checks` says which is down",
    responses={503: {"description": "neither PostgreSQL nor Redis answers"}},
)
async def readyz(request: Request) -> JSONResponse:
    checks = {}
    try:
        async with request.app.state.engine.connect() as conn:
            await repo.ping(conn)
        checks["postgres"] = "ok"
    except DB_ERRORS as exc:
        checks["postgres"] = f"down: {exc.__class__.__name__}"
    try:
        await request.app.state.redis.ping()
        checks["redis"] = "ok"
    except RedisError as exc:
        checks["redis"] = f"down: {exc.__class__.__name__}"
    # Either store can answer member reads (Redis for the members it holds, PostgreSQL for
    # all), so one of them down degrades the API without taking it out of service.
    ready = "ok" in checks.values()
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)
