"""Leaderboards (SPEC §7) against a scorer and an API of their own database, topics and Redis
prefix: every board the API serves must equal the ranking PostgreSQL's figures give, also
after Redis is flushed and rebuilt."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

from services.api.app import create_app
from services.api.settings import ApiSettings
from services.common.kafka import ensure_topics
from shared.scoring import periods
from tests.conftest import unique
from tests.integration.test_scorer import event, publish, running
from tests.integration.test_scorer_failures import scorer_settings
from tests.support import eventually, in_process, own_topics

NOW = datetime.now(UTC)


async def expected(pg: asyncpg.Connection, tier: str, period: str) -> list[dict[str, Any]]:
    """The board as PostgreSQL's figures rank it: points down, then member id; ties share a rank."""
    if period == "all":
        rows = await pg.fetch(f"SELECT member_id, {tier}_score AS points FROM members WHERE {tier}_score > 0")
    else:
        name = dict(zip(("month", "week"), periods(datetime.now(UTC).date().isoformat()), strict=True))[period]
        rows = await pg.fetch(
            "SELECT member_id, points FROM member_periods WHERE tier = $1 AND period = $2 AND points > 0", tier, name
        )
    ranked = sorted((-r["points"], r["member_id"]) for r in rows)
    return [
        {"rank": 1 + sum(1 for p, _ in ranked if p < points), "member_id": member, "score": -points}
        for points, member in ranked
    ]


async def boards_match(client: httpx.AsyncClient, pg: asyncpg.Connection) -> bool:
    for tier in ("active", "passive"):
        for period in ("all", "month", "week"):
            response = await client.get("/v1/leaderboard", params={"tier": tier, "period": period, "limit": 100})
            if response.status_code != 200:
                return False
            got = [{k: e[k] for k in ("rank", "member_id", "score")} for e in response.json()["entries"]]
            if got != await expected(pg, tier, period) or not got:
                return False
    return True


async def test_leaderboards_rank_as_postgres_does_and_survive_a_flush(
    settings_kwargs: dict[str, Any], fresh_database: str
) -> None:
    kwargs = {**own_topics(settings_kwargs, unique("lb")), "database_url": fresh_database}
    settings = scorer_settings(kwargs)
    await ensure_topics(settings)
    ann, bob, cat, dan = (unique(n) for n in ("ann", "bob", "cat", "dan"))
    recent, last_month = NOW - timedelta(minutes=1), NOW - timedelta(days=40)
    await publish(
        settings,
        [
            event("post", ann, content_id="p1", at=recent),  # ann and bob tie on 10 active points
            event("post", bob, content_id="p2", at=recent),
            event("article", cat, content_id="a1", at=last_month),  # all time only
            event("comment", cat, content_id="c1", at=recent),
            event("view", dan, content_id="t1", at=recent),
            event("visit", dan, duration_s=60, at=recent),
            event("like", dan, content_id="p1", target_member_id=ann, at=recent),
            event("unlike", dan, content_id="p1", target_member_id=ann, at=recent),  # takes it back out
        ],
    )
    redis = Redis.from_url(settings.redis_url)
    pg = await asyncpg.connect(fresh_database.replace("+asyncpg", ""))
    try:
        async with running(settings), in_process(create_app(ApiSettings(**kwargs))) as client:
            await eventually(lambda: boards_match(client, pg), timeout=30, what="every board as PostgreSQL has it")
            board = (await client.get("/v1/leaderboard", params={"period": "all"})).json()
            assert [(e["rank"], e["member_id"], e["score"]) for e in board["entries"]] == [
                (1, cat, 27),
                (2, ann, 10),
                (2, bob, 10),
            ]
            assert board["total"] == 3 and board["entries"][0]["level"]["id"] == "general_contributor"
            week = (await client.get("/v1/leaderboard", params={"period": "week"})).json()
            assert [(e["member_id"], e["score"]) for e in week["entries"]] == [(ann, 10), (bob, 10), (cat, 2)]
            rank = (await client.get(f"/v1/members/{bob}/rank", params={"period": "week"})).json()
            assert (rank["rank"], rank["score"]) == (1, 10)
            passive = (await client.get(f"/v1/members/{ann}/rank", params={"tier": "passive"})).json()
            assert (passive["rank"], passive["score"]) == (None, 0)
            assert (await client.get(f"/v1/members/{unique('nobody')}/rank")).status_code == 404

            await redis.delete(*[k async for k in redis.scan_iter(f"{settings.redis_prefix}*")])
            await eventually(lambda: boards_match(client, pg), timeout=30, what="the boards rebuilt from PostgreSQL")
    finally:
        await pg.close()
        await redis.aclose()


async def test_a_board_names_its_tier_and_period_and_a_page_size(settings_kwargs: dict[str, Any]) -> None:
    async with in_process(create_app(ApiSettings(**settings_kwargs))) as client:
        bad = await client.get("/v1/leaderboard", params={"tier": "both"})
        assert bad.status_code == 422 and "tier" in bad.json()["message"]
        assert (await client.get("/v1/leaderboard", params={"limit": 0})).status_code == 422
        assert (await client.get("/v1/leaderboard", params={"period": "year"})).status_code == 422
