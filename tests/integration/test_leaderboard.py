"""Leaderboards (SPEC §7) against a scorer and an API of their own database, topics and Redis
prefix: every board the API serves must equal the ranking PostgreSQL's figures give, also
after Redis is flushed and rebuilt."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

from services.api.app import create_app
from services.api.settings import ApiSettings
from services.common.kafka import ensure_topics
from services.common.members import MemberCache
from services.scorer.settings import ScorerSettings
from shared.scoring import periods
from tests.conftest import ADMIN, ROLES, _create_database, _drop_database, database_url, migrate, unique
from tests.integration.test_scorer import event, publish, running
from tests.integration.test_scorer_failures import scorer_settings
from tests.support import eventually, in_process, own_topics

NOW = datetime.now(UTC)


async def expected(pg: asyncpg.Connection, tier: str, period: str) -> list[dict[str, Any]]:
    """The board as PostgreSQL's figures rank it: points down, then member id; ties share a rank."""
    if period == "all":
        rows = await pg.fetch(f"SELECT member_id, {tier}_score AS points FROM members WHERE {tier}_score > 0")
    else:
        name = dict(zip(("month", "week", "year"), periods(datetime.now(UTC).date().isoformat()), strict=True))[period]
        rows = await pg.fetch(
            "SELECT member_id, points FROM member_periods WHERE tier = $1 AND period = $2 AND points > 0", tier, name
        )
    ranked = sorted((-r["points"], r["member_id"]) for r in rows)
    return [
        {"rank": 1 + sum(1 for p, _ in ranked if p < points), "member_id": member, "score": -points}
        for points, member in ranked
    ]


async def boards_match(client: httpx.AsyncClient, pg: asyncpg.Connection) -> bool:
    """Every board (both tiers; all time, the month, the week) lists exactly PostgreSQL's
    members, points and ranks, and counts exactly them."""
    for tier in ("active", "passive"):
        for period in ("all", "month", "week"):
            response = await client.get("/v1/leaderboard", params={"tier": tier, "period": period, "limit": 100})
            if response.status_code != 200:
                return False
            got = [{k: e[k] for k in ("rank", "member_id", "score")} for e in response.json()["entries"]]
            want = await expected(pg, tier, period)
            if got != want or not got or response.json()["total"] != len(want):
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


async def test_members_scoring_while_redis_is_flushed_keep_their_places_on_every_board(
    settings_kwargs: dict[str, Any], fresh_database: str
) -> None:
    """Members with points in both tiers score in one tier while Redis is flushed: the commits
    that land before the rebuild reaches them must not leave them off the other tier's month
    and week boards, which those commits did not touch."""
    kwargs = {**own_topics(settings_kwargs, unique("lbf")), "database_url": fresh_database}
    # A slow repair loop: commits land in the window between the flush and the rebuild.
    settings = scorer_settings(kwargs, repair_interval=timedelta(seconds=1.5))
    await ensure_topics(settings)
    members = [unique(f"m{i}") for i in range(30)]
    await publish(
        settings,
        [event("view", m, content_id=f"t{i}", at=NOW - timedelta(minutes=5)) for i, m in enumerate(members)]
        + [event("post", m, content_id=f"p{m}", at=NOW - timedelta(minutes=5)) for m in members],
    )
    redis = Redis.from_url(settings.redis_url)
    pg = await asyncpg.connect(fresh_database.replace("+asyncpg", ""))
    try:
        async with running(settings), in_process(create_app(ApiSettings(**kwargs))) as client:
            await eventually(lambda: boards_match(client, pg), timeout=30, what="every board as PostgreSQL has it")
            for round_ in range(3):
                await redis.delete(*[k async for k in redis.scan_iter(f"{settings.redis_prefix}*")])
                for start in range(0, len(members), 5):  # active points only, a few members a commit
                    await publish(
                        settings,
                        [event("reply", m, content_id=f"r{round_}{m}", at=NOW) for m in members[start : start + 5]],
                    )
                    await asyncio.sleep(0.05)
                await eventually(lambda: boards_match(client, pg), timeout=30, what="every board after the flush")
    finally:
        await pg.close()
        await redis.aclose()


async def test_boards_hold_only_the_members_of_a_database_restored_from_a_backup(
    settings_kwargs: dict[str, Any],
) -> None:
    """The database is copied (the backup), members are created and score after it, then the
    copy is put in its place: every board lists and counts the copy's members only."""
    name = unique("lbr").replace("-", "_")
    live, backup = f"cl_{name}_live", f"cl_{name}_backup"
    admin = database_url(ADMIN, "postgres").replace("+asyncpg", "")
    await _create_database(admin, live)
    try:
        await asyncio.to_thread(migrate, database_url(ROLES["owner"], live))
        base = {**own_topics(settings_kwargs, name), "group_id": name}
        on_live = scorer_settings({**base, "database_url": database_url(ROLES["owner"], live)})
        await ensure_topics(on_live)
        ann, bob, cat, dan = (unique(n) for n in ("ann", "bob", "cat", "dan"))
        await publish(
            on_live,
            [event("post", ann, content_id="p1", at=NOW), event("view", bob, content_id="t1", at=NOW)]
            + [event("comment", bob, content_id="c1", at=NOW)],
        )
        async with running(on_live):
            await eventually(lambda: _scored(on_live, [ann, bob]), what="ann and bob scored")
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'CREATE DATABASE "{backup}" TEMPLATE "{live}" OWNER {ROLES["owner"]}')
        finally:
            await conn.close()
        # After the backup: two new members, at the top of every board, and more points for ann.
        await publish(
            on_live,
            [event("article", cat, content_id="a1", at=NOW), event("event_attended", dan, content_id="g1", at=NOW)]
            + [event("reply", ann, content_id="r1", at=NOW), event("view", cat, content_id="t2", at=NOW)],
        )
        async with running(on_live):
            await eventually(lambda: _scored(on_live, [ann, bob, cat, dan], boards=True), what="all four on the boards")
            await asyncio.sleep(1)  # a few repair rounds: the view epoch moves past the backup's
        # The backup replaces the database; the records after it are gone with it (another topic).
        restored_url = database_url(ROLES["owner"], backup)
        restored = scorer_settings(
            {**own_topics(base, "after"), "redis_prefix": base["redis_prefix"], "database_url": restored_url}
        )
        await ensure_topics(restored)
        pg = await asyncpg.connect(restored_url.replace("+asyncpg", ""))
        try:
            api = {**base, "database_url": restored_url}
            async with running(restored), in_process(create_app(ApiSettings(**api))) as client:
                await eventually(lambda: boards_match(client, pg), timeout=30, what="the backup's boards")
                board = (await client.get("/v1/leaderboard", params={"period": "all"})).json()
                assert [(e["member_id"], e["score"]) for e in board["entries"]] == [(ann, 10), (bob, 2)]
                assert board["total"] == 2
        finally:
            await pg.close()
    finally:
        await _drop_database(admin, live)
        await _drop_database(admin, backup)


async def _scored(settings: ScorerSettings, members: list[str], boards: bool = False) -> bool:
    """Whether Redis holds these members' views (and, with `boards`, each on the all-time boards)."""
    redis = Redis.from_url(settings.redis_url)
    try:
        cache = MemberCache(redis, settings.redis_prefix)
        if len(await cache.get_many(members)) < len(members):
            return False
        if boards:
            on: set[str] = set()
            for tier in ("active", "passive"):
                on |= {m.decode() for m in await redis.zrange(cache.board_key(tier, "all"), 0, -1)}  # type: ignore[union-attr]
            return on >= set(members)
        return True
    finally:
        await redis.aclose()


async def test_a_board_names_its_tier_and_period_and_a_page_size(settings_kwargs: dict[str, Any]) -> None:
    async with in_process(create_app(ApiSettings(**settings_kwargs))) as client:
        bad = await client.get("/v1/leaderboard", params={"tier": "both"})
        assert bad.status_code == 422 and "tier" in bad.json()["message"]
        assert (await client.get("/v1/leaderboard", params={"limit": 0})).status_code == 422
        for period, problem in (
            ("decade", "String should match pattern"),
            ("week:2026-W54", "names no week"),
            ("month:2026-13", "names no month"),
            (f"year:{NOW.year + 1}", "has not begun"),
        ):
            bad = await client.get("/v1/leaderboard", params={"period": period})
            assert bad.status_code == 422 and "period" in bad.json()["message"] and problem in bad.json()["message"]
        gone = await client.get("/v1/leaderboard", params={"period": f"year:{NOW.year - 6}"})
        assert gone.status_code == 410 and "CL_PERIODS_YEARS_KEPT" in gone.json()["message"]
        kept = await client.get("/v1/leaderboard", params={"period": f"year:{NOW.year - 5}"})
        assert kept.status_code == 200 and kept.json()["period_name"] == f"year:{NOW.year - 5}"
