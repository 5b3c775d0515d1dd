"""The read API (SPEC §7): levels, scores, progress, history and the ladder.

Member reads come from Redis and fall back to PostgreSQL for members Redis lacks or when it
is down; PostgreSQL being down leaves the members Redis holds readable. The routes live in
`services.api.routes`, one module a family; this module wires them to the clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import REGISTRY, CollectorRegistry
from redis.asyncio import Redis

from services.api import contract
from services.api.answers import period_refused, unavailable
from services.api.reads import CoalescedViews, PeriodRefused, Unavailable
from services.api.routes import badges, holders, ladder, leaderboard, members, pages, programs, readiness, stats
from services.api.rules import RulesInForce
from services.api.settings import ApiSettings
from services.common import db, http
from services.common.members import MemberCache


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
    http.add_request_metrics(app, http_metrics)
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
    http.add_error_handlers(app, explain=members.explain)
    app.add_exception_handler(Unavailable, unavailable)
    app.add_exception_handler(PeriodRefused, period_refused)
    app.state.settings = settings  # the periods kept (`reads.board_of`)
    app.state.board_sizes = {}  # past periods' board sizes (`reads.board_size`)

    # In the order the OpenAPI document lists them.
    for family in (members, leaderboard, stats, ladder, holders, pages):
        app.include_router(family.router(in_force))
    app.include_router(programs.router(in_force))
    app.include_router(programs.pages(in_force))
    app.include_router(badges.router(in_force))
    app.include_router(badges.pages(in_force))
    http.add_healthz(app)
    app.include_router(readiness.router)
    http.add_metrics(app, REGISTRY, http_metrics)
    app.include_router(contract.router)
    return app
