"""Pinned levels (SPEC §9.3): `cl member pin` and `unpin` run as processes against the real
servers, with a real scorer applying activity meanwhile and ending pins in its tenure sweep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis

from services.api import repository as api_repo
from services.api.app import create_app
from services.api.settings import ApiSettings
from services.common import db
from services.common.kafka import ensure_topics
from services.common.members import MemberCache
from services.write.unit_of_work import UnitOfWork
from shared.rules import default_rules
from shared.scoring import LevelChange
from tests.asyncapi import validator
from tests.conftest import env_with, unique
from tests.integration.test_cli import cl
from tests.integration.test_scorer import event, publish, running
from tests.integration.test_scorer_failures import scorer_settings
from tests.integration.test_stats import incoming
from tests.support import RANK, eventually, in_process, level_changes, own_topics, read_topic

RULES = default_rules()


def cl_env(run_env: dict[str, str], kwargs: dict[str, Any], **extra: str) -> dict[str, str]:
    """The CLI's environment for these settings (its own database, topics and Redis prefix)."""
    names = ("database_url", "topic_activity", "topic_level_changes", "topic_dlq", "redis_prefix")
    env = env_with(run_env, **{f"CL_{name.upper()}": kwargs[name] for name in names}, **extra)
    env.pop("CL_OPERATOR", None)
    return {**env, **extra}


async def seed(database: str, *events: dict[str, Any]) -> None:
    """Apply activity with the scorer's unit of work, no scorer running."""
    engine = db.engine(database, "test")
    try:
        await UnitOfWork(engine, RULES, "seed", "seed").commit([], incoming(list(events)), datetime.now(UTC), [])
    finally:
        await engine.dispose()


async def history(pg: asyncpg.Connection, member: str) -> list[dict[str, Any]]:
    rows = await pg.fetch(
        "SELECT seq, payload FROM level_changes WHERE member_id = $1 AND seq IS NOT NULL ORDER BY seq", member
    )
    return [{"seq_column": row["seq"], **orjson.loads(row["payload"])} for row in rows]


async def audit(pg: asyncpg.Connection, member: str) -> list[tuple[Any, ...]]:
    rows = await pg.fetch(
        "SELECT action, level_id, reason, until, operator, at FROM pin_audit WHERE member_id = $1 ORDER BY id",
        member,
    )
    return [tuple(row) for row in rows]


async def figures(pg: asyncpg.Connection, member: str) -> tuple[int, int, int | None]:
    row = await pg.fetchrow("SELECT active_score, level_id, pinned_level FROM members WHERE member_id = $1", member)
    assert row is not None
    return row["active_score"], RANK[row["level_id"]], row["pinned_level"] and RANK[row["pinned_level"]]


async def test_a_pin_holds_the_level_while_scores_move_and_unpin_returns_to_the_scored_level(
    run_env: dict[str, str], settings_kwargs: dict[str, Any], fresh_database: str
) -> None:
    kwargs = {**own_topics(settings_kwargs, unique("pins")), "database_url": fresh_database}
    settings = scorer_settings(kwargs)
    await ensure_topics(settings)
    ann = unique("ann")
    await seed(fresh_database, {"type": "reply", "member_id": ann, "content_id": "r0"})  # New Contributor
    env = cl_env(run_env, kwargs)
    pg = await asyncpg.connect(fresh_database.replace("+asyncpg", ""))
    redis = Redis.from_url(settings.redis_url)
    try:
        pending = "SELECT count(*) FROM pending_views WHERE $1 = ANY(member_ids)"
        seeded = await pg.fetchval(pending, ann)  # the seed's commit, which wrote no view
        before = datetime.now(UTC)
        code, out = await cl(env, "member", "pin", ann, "new_member", "--reason", "spam run", "--operator", "mod-a")
        assert code == 0, out
        assert "pinned at New Member" in out and "mod-a" in out
        assert await figures(pg, ann) == (5, 1, 1)

        # The CLI wrote the view itself: no scorer runs, and it left no pending row behind.
        view = (await MemberCache(redis, settings.redis_prefix).get_many([ann]))[ann]
        assert (view["level_id"], view["pinned"]) == ("new_member", {"reason": "spam run", "until": None})
        assert await pg.fetchval(pending, ann) == seeded
        async with in_process(create_app(ApiSettings(**kwargs))) as client:
            answer = (await client.get(f"/v1/members/{ann}")).json()
            page = (await client.get(f"/members/{ann}")).text
        assert answer["level"]["id"] == "new_member" and answer["active_score"] == 5
        assert answer["pinned"] == {"reason": "spam run", "until": None}
        assert "pinned by the moderators" in page and "spam run" in page
        engine = db.engine(fresh_database, "test")  # the read path when Redis lacks the member
        try:
            async with engine.connect() as conn:
                stored = (await api_repo.member_views(conn, [ann]))[ann]
        finally:
            await engine.dispose()
        assert (stored["level_id"], stored["pinned"]) == ("new_member", {"reason": "spam run", "until": None})

        async with running(settings):
            # 6 replies more: 35 active points, General Contributor were it not pinned.
            await publish(settings, [event("reply", ann, content_id=f"r{i}") for i in range(1, 7)])
            await eventually(lambda: _is(figures(pg, ann), (35, 1, 1)), what="the scores moved, the level held")

            code, out = await cl({**env, "CL_OPERATOR": "mod-b"}, "member", "unpin", ann, "--reason", "appeal upheld")
            assert code == 0, out
            assert await figures(pg, ann) == (35, 6, None)
            code, out = await cl({**env, "CL_OPERATOR": "mod-b"}, "member", "unpin", ann)  # again: nothing to do
            assert code == 0 and "not pinned" in out

            changes = await history(pg, ann)
            await eventually(
                lambda: _published(settings.kafka_bootstrap, settings.topic_level_changes, ann, len(changes)),
                what="the level changes published",
            )
            published = level_changes(await read_topic(settings.kafka_bootstrap, settings.topic_level_changes, {ann}))
        after = datetime.now(UTC)

        assert [(c["seq_column"], c["seq"]) for c in changes] == [(1, 1), (2, 2), (3, 3)]
        assert [
            (c["from_level"] and c["from_level"]["rank"], c["to_level"]["rank"], c["direction"], c["cause"])
            for c in changes
        ] == [
            (None, 5, "promoted", {"kind": "activity", "event_id": "e0", "type": "reply"}),
            (5, 1, "demoted", {"kind": "override", "reason": "spam run"}),
            (1, 6, "promoted", {"kind": "override", "reason": "appeal upheld"}),
        ]
        assert [c["event_id"] for c in changes] == [
            LevelChange(ann, seq, None, default_rules().levels[0], 0, 0, "override", None, None, before).event_id
            for seq in (1, 2, 3)
        ]
        assert (changes[1]["active_score"], changes[2]["active_score"]) == (5, 35)
        for change in changes:
            validator("LevelChange").validate({k: v for k, v in change.items() if k != "seq_column"})
        assert [(p["seq"], p["cause"]) for p in published] == [(c["seq"], c["cause"]) for c in changes]

        lines = await audit(pg, ann)
        assert [line[:5] for line in lines] == [
            ("pin", "new_member", "spam run", None, "mod-a"),
            ("unpin", "new_member", "appeal upheld", None, "mod-b"),
        ]
        assert all(before <= line[5] <= after for line in lines)
        view = (await MemberCache(redis, settings.redis_prefix).get_many([ann]))[ann]
        assert (view["level_id"], view["pinned"]) == ("general_contributor", None)
    finally:
        await pg.close()
        await redis.aclose()


async def test_a_pin_until_a_time_ends_by_itself_in_the_scorers_tenure_sweep(
    run_env: dict[str, str], settings_kwargs: dict[str, Any], fresh_database: str
) -> None:
    kwargs = {**own_topics(settings_kwargs, unique("pin-until")), "database_url": fresh_database}
    settings = scorer_settings(kwargs)
    await ensure_topics(settings)
    bob = unique("bob")
    await seed(fresh_database, {"type": "post", "member_id": bob, "content_id": "p0"})  # New Contributor
    env = cl_env(run_env, kwargs, CL_OPERATOR="staff-desk")
    pg = await asyncpg.connect(fresh_database.replace("+asyncpg", ""))
    try:
        until = (datetime.now(UTC) + timedelta(seconds=6)).replace(microsecond=0)
        code, out = await cl(env, "member", "pin", bob, "10", "--reason", "staff", "--until", until.isoformat())
        assert code == 0, out
        assert await figures(pg, bob) == (10, 10, 10)
        async with in_process(create_app(ApiSettings(**kwargs))) as client:
            answer = (await client.get(f"/v1/members/{bob}")).json()
        assert answer["level"]["id"] == "community_boss"
        assert answer["pinned"] == {"reason": "staff", "until": until.isoformat().replace("+00:00", "Z")}

        async with running(settings):
            await eventually(lambda: _is(figures(pg, bob), (10, 5, None)), timeout=30, what="the pin expired")
            assert datetime.now(UTC) >= until
            async with in_process(create_app(ApiSettings(**kwargs))) as client:
                await eventually(lambda: _unpinned(client, bob), what="the API shows the pin gone")

        changes = await history(pg, bob)
        assert [(c["seq"], c["to_level"]["rank"], c["cause"]) for c in changes] == [
            (1, 5, {"kind": "activity", "event_id": "e0", "type": "post"}),
            (2, 10, {"kind": "override", "reason": "staff"}),
            (3, 5, {"kind": "override", "reason": "pin expired"}),
        ]
        assert datetime.fromisoformat(changes[2]["occurred_at"]) == until
        lines = await audit(pg, bob)
        assert [line[:5] for line in lines] == [
            ("pin", "community_boss", "staff", until, "staff-desk"),
            ("expire", "community_boss", "pin expired", until, "scorer"),
        ]
        assert lines[1][5] >= until
        assert await pg.fetchval("SELECT tenure_due_at FROM members WHERE member_id = $1", bob) is None
    finally:
        await pg.close()


async def test_pinning_is_refused_without_an_operator_a_known_member_or_a_level_of_the_ladder(
    run_env: dict[str, str], settings_kwargs: dict[str, Any], fresh_database: str
) -> None:
    kwargs = {**own_topics(settings_kwargs, unique("pin-refused")), "database_url": fresh_database}
    cat = unique("cat")
    await seed(fresh_database, {"type": "reply", "member_id": cat, "content_id": "r0"})
    env = cl_env(run_env, kwargs)

    code, out = await cl(env, "member", "pin", cat, "1", "--reason", "spam")
    assert code == 2 and "--operator" in out and "CL_OPERATOR" in out
    code, out = await cl(env, "member", "unpin", cat)
    assert code == 2 and "--operator" in out and "CL_OPERATOR" in out
    code, out = await cl(env, "member", "pin", unique("nobody"), "1", "--reason", "spam", "--operator", "mod")
    assert code == 1 and "has been seen" in out and "nothing changed" in out
    code, out = await cl(env, "member", "pin", cat, "grand_wizard", "--reason", "spam", "--operator", "mod")
    assert code == 2 and "no level 'grand_wizard'" in out
    code, out = await cl(env, "member", "pin", cat, "1", "--reason", "x", "--until", "2020-01-01", "--operator", "m")
    assert code == 1 and "before it begins" in out
    code, out = await cl(env, "member", "pin", cat, "1", "--reason", "x", "--until", "soon", "--operator", "m")
    assert code == 2 and "not a date" in out

    pg = await asyncpg.connect(fresh_database.replace("+asyncpg", ""))
    try:
        assert await pg.fetchval("SELECT count(*) FROM pin_audit") == 0
        assert await figures(pg, cat) == (5, 5, None)
        assert (
            await pg.fetchval("SELECT count(*) FROM level_changes WHERE member_id = $1 AND seq IS NOT NULL", cat) == 1
        )
    finally:
        await pg.close()


async def test_a_pin_until_a_date_ends_at_midnight_utc_of_that_date(
    run_env: dict[str, str], settings_kwargs: dict[str, Any], fresh_database: str
) -> None:
    kwargs = {**own_topics(settings_kwargs, unique("pin-date")), "database_url": fresh_database}
    dan = unique("dan")
    await seed(fresh_database, {"type": "reply", "member_id": dan, "content_id": "r0"})
    env = cl_env(run_env, kwargs, CL_OPERATOR="mod")

    code, out = await cl(env, "member", "pin", dan, "1", "--reason", "cooling off", "--until", "2099-12-31")
    assert code == 0 and "until 2099-12-31T00:00:00+00:00" in out, out
    pg = await asyncpg.connect(fresh_database.replace("+asyncpg", ""))
    try:
        [(action, level, _, until, operator, _)] = await audit(pg, dan)
        assert (action, level, until, operator) == ("pin", "new_member", datetime(2099, 12, 31, tzinfo=UTC), "mod")
        assert await pg.fetchval("SELECT pinned_until FROM members WHERE member_id = $1", dan) == until
    finally:
        await pg.close()


async def _is(value: Any, expected: Any) -> bool:
    return await value == expected


async def _published(bootstrap: str, topic: str, member: str, n: int) -> bool:
    return len(level_changes(await read_topic(bootstrap, topic, {member}))) == n


async def _unpinned(client: Any, member: str) -> bool:
    answer = (await client.get(f"/v1/members/{member}")).json()
    return bool(answer["pinned"] is None and answer["level"]["rank"] == 5)
