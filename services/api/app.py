"""The read API (SPEC §7): levels, scores, progress, history and the ladder.

Member reads come from Redis and fall back to PostgreSQL for members Redis lacks or when it
is down; PostgreSQL being down leaves the members Redis holds readable.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException

from services.api import contract, pages, schemas
from services.api import repository as repo
from services.api.reads import (
    DB_ERRORS,
    CoalescedViews,
    Unavailable,
    leaderboard_page,
    level_changes,
    member_place,
    member_views,
)
from services.api.rules import RulesInForce
from services.api.schemas import DIGITS, ID_PATTERN, MEMBER_ID, ONCE
from services.api.settings import ApiSettings
from services.common import db
from services.common.members import MemberCache, render
from services.common.runtime import instrument_http
from shared.rules import Rules

log = logging.getLogger("api")

MANY_MAX = 100
# The document says all of what ids may be, so a request valid by the schema is one we answer.
IDS = f"^{ID_PATTERN}(,{ID_PATTERN}){{0,{MANY_MAX - 1}}}$"
IDS_RULE = f"1 to {MANY_MAX} member ids, comma-separated, each 1 to 128 of A-Z a-z 0-9 . _ : @ -"


class ErrorBody(BaseModel):
    """Every error answer of the API."""

    error: str
    message: str


def _error_doc(description: str, **headers: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"model": ErrorBody, "description": description}
    if headers:
        doc["headers"] = {name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()}
    return doc


# What the member reads answer besides 200, for the OpenAPI document.
INVALID = _error_doc("a member id, or a query parameter, is not valid")
NOT_FOUND = _error_doc("no event has named this member")
DOWN = _error_doc("the store the answer needs is down; retry shortly", **{"Retry-After": "seconds to wait"})
NOT_MODIFIED: dict[str, Any] = {
    "description": "the member's view still matches If-None-Match",
    "headers": {"ETag": {"description": "the view's entity tag", "schema": {"type": "string"}}},
}


def _ok(model: type[BaseModel]) -> dict[str, Any]:
    # The routes answer rendered bytes (for the ETag); the model only documents them.
    return {"model": model, "description": "the answer"}


def _error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers or None)


def _ids_problem(ids: str) -> str:
    wanted = ids.split(",")
    bad = [i for i in wanted if not re.fullmatch(MEMBER_ID, i)]
    if bad:
        return f"not member ids: {json.dumps(bad[:5])}; ids must be {IDS_RULE}"
    return f"names {len(wanted)} members; ids must be {IDS_RULE}"


def ladder_body(rules: Rules) -> bytes:
    """`GET /v1/levels`: checked against its document, and made once per rules version."""
    ladder = {
        "rules_version": rules.version,
        "levels": [{**level.ref(), "requires": level.requirements()} for level in rules.levels],
        "scores": {
            tier: [m for m, metric in rules.metrics.items() if metric.tier == tier] for tier in ("active", "passive")
        },
        "points": [
            {"metric": name, "tier": m.tier, "earned_by": m.earned_by, "how": m.how, "daily_cap": m.daily_cap}
            for name, m in rules.metrics.items()
        ],
    }
    schemas.Ladder.model_validate(ladder)
    return orjson.dumps(ladder)


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings()
    in_force = RulesInForce(settings.rules)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.engine = db.engine(settings.database_url, "api", pool_size=10)
        following = asyncio.create_task(in_force.follow(app.state.engine))
        app.state.redis = Redis.from_url(
            settings.redis_url, client_name="api", socket_timeout=1, socket_connect_timeout=1
        )
        app.state.cache = MemberCache(app.state.redis, settings.redis_prefix)
        app.state.views = CoalescedViews(app.state.cache)
        yield
        following.cancel()
        await app.state.redis.aclose()
        await app.state.engine.dispose()

    app = FastAPI(title="Community Levels API", version="1", lifespan=lifespan)
    # Request counts and latencies per route, in a registry of this app's own (several apps in
    # one process, as in the tests, would otherwise share one).
    http_metrics = CollectorRegistry()
    instrument_http(app, http_metrics)
    if settings.api_cors_origins:
        # Browser frontends on other origins read members (SPEC §7): GET only, and the ETag
        # readable so they can poll with If-None-Match.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api_cors_origins,
            allow_methods=["GET"],
            allow_headers=["If-None-Match"],
            expose_headers=["ETag"],
        )

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        return _error(503, "unavailable", str(exc), **{"Retry-After": "1"})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # Unknown paths and methods (say a member id with an encoded slash) in the same shape.
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), **(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # In the API's one error shape, as the document declares, rather than FastAPI's own.
        def problem(e: dict[str, Any]) -> str:
            where = ".".join(str(p) for p in e["loc"][1:]) or e["loc"][0]
            if e["loc"] == ("query", "ids") and e["type"] == "string_pattern_mismatch":
                return f"{where}: {_ids_problem(e['input'])}"  # rather than the pattern, which is long
            return f"{where}: {e['msg']}"

        problems = "; ".join(map(problem, exc.errors()))
        return _error(422, "invalid_request", problems or "the request is not valid")

    @app.get(
        "/v1/members/{member_id}",
        summary="One member's level, scores and progress to the next level",
        responses={200: _ok(schemas.Member), 304: NOT_MODIFIED, 404: NOT_FOUND, 422: INVALID, 503: DOWN},
    )
    async def member(request: Request, member_id: Annotated[str, Path(pattern=MEMBER_ID)]) -> Response:
        found = (await member_views(request.app.state, [member_id])).get(member_id)
        if found is None:
            return _error(404, "not_found", f"no member {member_id!r} has been seen")
        body = orjson.dumps(render(found, in_force.current, datetime.now(UTC), in_force.known))
        etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if etag in (t.strip() for t in request.headers.get("if-none-match", "").split(",")):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)

    @app.get(
        "/v1/members",
        dependencies=[ONCE],
        summary="Many members at once (a thread page)",
        responses={
            200: _ok(schemas.Members),
            422: _error_doc(f"ids is missing, or not {IDS_RULE}"),
            503: DOWN,
        },
    )
    async def members(
        request: Request,
        ids: Annotated[str, Query(description=IDS_RULE, pattern=IDS)],
    ) -> Response:
        wanted = list(dict.fromkeys(ids.split(",")))  # a repeated id is answered once
        found = await member_views(request.app.state, wanted)
        now, rules = datetime.now(UTC), in_force.current
        body = {
            "members": [render(found[m], rules, now, in_force.known) for m in wanted if m in found],
            "missing": [m for m in wanted if m not in found],
        }
        return Response(orjson.dumps(body), media_type="application/json")

    @app.get(
        "/v1/members/{member_id}/level-changes",
        dependencies=[ONCE],
        summary="A member's level history, newest first",
        responses={200: _ok(schemas.History), 404: NOT_FOUND, 422: INVALID, 503: DOWN},
    )
    async def history(
        request: Request,
        member_id: Annotated[str, Path(pattern=MEMBER_ID)],
        limit: Annotated[int, Query(ge=1, le=100), DIGITS] = 20,
        before: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="seq to page below"), DIGITS] = None,
    ) -> Response:
        changes = await level_changes(request.app.state, member_id, before, limit)
        if not changes and before is None:
            return _error(404, "not_found", f"no member {member_id!r} has been seen")
        more = len(changes) == limit and changes[-1]["seq"] > 1
        body = {"member_id": member_id, "level_changes": changes, "next_before": changes[-1]["seq"] if more else None}
        return Response(orjson.dumps(body), media_type="application/json")

    @app.get(
        "/v1/leaderboard",
        dependencies=[ONCE],
        summary="Members ranked by score, all time or this month or week",
        responses={200: _ok(schemas.Leaderboard), 422: INVALID, 503: DOWN},
    )
    async def leaderboard(
        request: Request,
        tier: Annotated[Literal["active", "passive"], Query()] = "active",
        period: Annotated[Literal["all", "month", "week"], Query()] = "all",
        limit: Annotated[int, Query(ge=1, le=100), DIGITS] = 25,
        offset: Annotated[int, Query(ge=0, le=1_000_000), DIGITS] = 0,
    ) -> Response:
        body = await leaderboard_page(request.app.state, in_force, tier, period, offset, limit)
        return Response(orjson.dumps(body), media_type="application/json")

    @app.get(
        "/v1/members/{member_id}/rank",
        dependencies=[ONCE],
        summary="One member's rank and score on a leaderboard",
        responses={200: _ok(schemas.Rank), 404: NOT_FOUND, 422: INVALID, 503: DOWN},
    )
    async def rank(
        request: Request,
        member_id: Annotated[str, Path(pattern=MEMBER_ID)],
        tier: Annotated[Literal["active", "passive"], Query()] = "active",
        period: Annotated[Literal["all", "month", "week"], Query()] = "all",
    ) -> Response:
        if member_id not in await member_views(request.app.state, [member_id]):
            return _error(404, "not_found", f"no member {member_id!r} has been seen")
        name, place, points = await member_place(request.app.state, tier, period, member_id)
        body = {"member_id": member_id, "tier": tier, "period": period, "period_name": name, "rank": place}
        return Response(orjson.dumps(body | {"score": points}), media_type="application/json")

    @app.get(
        "/v1/stats",
        summary="Members per level and tier, recent level changes, records applied",
        responses={200: _ok(schemas.Stats), 503: DOWN},
    )
    async def stats(request: Request) -> Response:
        try:
            async with request.app.state.engine.connect() as conn:
                levels, hours = await repo.stats(conn)
        except DB_ERRORS as exc:
            raise Unavailable("the stats are unavailable; retry shortly") from exc
        rules = in_force.current
        by_level = [{**level.ref(), "members": levels.get(level.id, 0)} for level in rules.levels]
        by_tier = {
            tier: sum(levels.get(level.id, 0) for level in rules.levels if level.tier == tier)
            for tier in ("passive", "active")
        }

        def changes(window: int) -> dict[str, int]:
            return {what: hours.get(what, (0, 0))[window] for what in ("promoted", "demoted")}

        body = {
            "members": sum(by_tier.values()),
            "by_level": by_level,
            "by_tier": by_tier,
            "level_changes": {"last_24h": changes(0), "last_7d": changes(1)},
            "records_applied_last_24h": hours.get("applied", (0, 0))[0],
        }
        return Response(orjson.dumps(body), media_type="application/json")

    @app.get(
        "/v1/levels",
        summary="The ladder: each level's requirements and how points are earned",
        response_model=schemas.Ladder,
    )
    async def levels() -> Response:
        return Response(in_force.once("ladder", ladder_body), media_type="application/json")

    app.include_router(pages.router(in_force))

    @app.get("/healthz", summary="Alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
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

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(generate_latest() + generate_latest(http_metrics), media_type=CONTENT_TYPE_LATEST)

    app.include_router(contract.router)
    return app
