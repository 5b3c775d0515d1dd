"""Erasing a member (SPEC §9.4) with `cl member erase`, against a scorer of its own database,
topics and Redis prefix: nothing anywhere keeps the id, the others keep what they earned."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from redis.asyncio import Redis
from sqlalchemy import text

from services.api.app import create_app
from services.api.settings import ApiSettings
from services.common import db
from services.common.kafka import ensure_topics
from services.common.members import MemberCache
from services.common.settings import Settings
from services.write.erasure import Ends, erase_stored, erase_views
from services.write.rules import RulesBook
from services.write.sql import members
from services.write.unit_of_work import Incoming, UnitOfWork
from services.write.views import Views
from shared.events import ActivityEvent, ActivityRecord
from shared.rules import default_rules
from shared.scoring import MemberState, apply
from tests.conftest import env_with, unique
from tests.integration.test_cli import cl
from tests.integration.test_scorer import event, publish, running
from tests.integration.test_scorer_failures import scorer_settings
from tests.integration.test_stats import incoming
from tests.support import eventually, free_port, in_process, own_topics, read_topic

RULES = default_rules()
NOW = datetime.now(UTC)
NO_ENDS = Ends("t", [])  # no record of the topic waits


async def holding(pg: asyncpg.Connection, text: str) -> dict[str, int]:
    """Per table of the schema, the rows whose any column holds `text`."""
    tables = await pg.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    found = {}
    for (table,) in tables:
        n = await pg.fetchval(f'SELECT count(*) FROM "{table}" AS t WHERE strpos(row_to_json(t)::text, $1) > 0', text)
        if n:
            found[table] = n
    return found


async def redis_holding(redis: Any, prefix: str, text: str) -> list[str]:
    """The keys under the prefix that name `text`, or whose sorted set or hash holds it."""
    found = []
    async for raw in redis.scan_iter(match=f"{prefix}*", count=1000):
        key = raw.decode()
        kind = (await redis.type(key)).decode()
        held = [key]
        if kind == "zset":
            held += [m.decode() for m in await redis.zrange(key, 0, -1)]
        elif kind == "hash":
            held += [v.decode() for v in (await redis.hgetall(key)).values()]
        elif kind == "string":
            held.append((await redis.get(key) or b"").decode())
        if any(text in h for h in held):
            found.append(key)
    return found


async def boards(redis: Any, prefix: str) -> dict[str, list[tuple[str, float]]]:
    return {
        key.decode(): [(m.decode(), s) for m, s in await redis.zrange(key, 0, -1, withscores=True)]
        async for key in redis.scan_iter(match=f"{prefix}board:*")
    }


async def test_erasing_a_member_leaves_no_trace_and_the_others_keep_their_points(
    settings_kwargs: dict[str, Any], run_env: dict[str, str], fresh_database: str
) -> None:
    kwargs = {**own_topics(settings_kwargs, unique("erase")), "database_url": fresh_database}
    settings = scorer_settings(kwargs)
    await ensure_topics(settings)
    prefix = settings.redis_prefix
    ann, bob, cat = (unique(n) for n in ("ann", "bob", "cat"))
    at = NOW - timedelta(minutes=1)
    await publish(
        settings,
        [
            event("post", ann, content_id="p1", at=at),
            event("article", ann, content_id="a1", at=at),
            event("post", bob, content_id="p2", at=at),
            event("reply", bob, content_id="r1", at=at),
            event("visit", bob, duration_s=700, at=at),
            event("like", bob, content_id="p1", target_member_id=ann, at=at, attributes={"by": bob}),
            event("like", bob, content_id="a1", target_member_id=ann, at=at),
            event("like", ann, content_id="p2", target_member_id=bob, at=at),
            event("solution_accepted", cat, content_id="r1", target_member_id=bob, at=at),
            event("comment", cat, content_id="c1", at=at),
        ],
    )
    env = env_with(
        run_env,
        CL_DATABASE_URL=fresh_database,
        CL_REDIS_PREFIX=prefix,
        CL_TOPIC_LEVEL_CHANGES=settings.topic_level_changes,
        CL_TOPIC_ACTIVITY=settings.topic_activity,
    )
    redis = Redis.from_url(settings.redis_url)
    cache = MemberCache(redis, prefix)
    pg = await asyncpg.connect(fresh_database.replace("+asyncpg", ""))

    async def scores() -> dict[str, tuple[int, int, str]]:
        rows = await pg.fetch("SELECT member_id, active_score, passive_score, level_id FROM members")
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    async def settled() -> bool:
        """Every record applied, every view in Redis, every level change published."""
        applied = await pg.fetchval("SELECT count(*) FROM activity")
        views = await cache.get_many([ann, bob, cat])
        unsent = await pg.fetchval("SELECT count(*) FROM level_changes WHERE sent_at IS NULL")
        return bool(applied == 14 and len(views) == 3 and not unsent)

    try:
        async with running(settings):
            await eventually(settled, what="the history applied, in Redis and published")
            before = await scores()
            # ann: post 10 + article 25 + like given 1 + likes received 6; bob: post 10 + reply 5
            # + solution 15 + like given 2 + like received 3, visit 2 + browse 1; cat: comment 2.
            assert {m: s[:2] for m, s in before.items()} == {ann: (42, 0), bob: (35, 3), cat: (2, 0)}
            boards_before = await boards(redis, prefix)
            # Both tiers' and accepted solutions' boards (bob has one), all time, year, month, week.
            assert len(boards_before) == 12 and all(any(m == bob for m, _ in b) for b in boards_before.values())
            assert await pg.fetchval("SELECT count(*) FROM member_periods WHERE member_id = $1", bob) > 0

            code, out = await cl(env, "member", "erase", bob, "--operator", "moderator-1")
            assert code == 0, out
            assert f"Erased {bob} (by moderator-1)" in out
            lines = [" ".join(line.replace("│", " ").split()) for line in out.splitlines()]
            assert "applied records (activity) 7" in lines  # post, reply, visit, 2 likes given, 1 received, solution
            assert "other members' facts now holding a digest 2" in lines  # ann's two likes received
            assert "other members' records now holding a digest 4" in lines  # ann's 3 likes, cat's solution

            async def tombstone_sent() -> bool:
                return not await pg.fetchval("SELECT count(*) FROM level_changes WHERE member_id = $1", bob)

            await eventually(tombstone_sent, what="the tombstone published and its row deleted")
            assert await holding(pg, bob) == {}
            assert await redis_holding(redis, prefix, bob) == []
            records = await read_topic(settings.kafka_bootstrap, settings.topic_level_changes, keys={bob})
            assert records[-1].value is None and not records[-1].headers
            assert all(r.value is not None for r in records[:-1])

            # The others keep their points, and their places: the boards less bob.
            after = await scores()
            assert after == {m: s for m, s in before.items() if m != bob}
            expected = {k: [(m, s) for m, s in b if m != bob] for k, b in boards_before.items()}
            assert await boards(redis, prefix) == {k: b for k, b in expected.items() if b}
            counts = dict(await pg.fetch("SELECT level_id, members FROM level_counts WHERE members <> 0"))
            assert counts == dict(await pg.fetch("SELECT level_id, count(*) FROM members GROUP BY level_id"))

            # ann's facts name a digest instead, one for both likes; replaying her records (as a
            # rescore does) gives back exactly her stored facts.
            received = await pg.fetch(
                "SELECT fact FROM member_facts WHERE member_id = $1 AND fact LIKE 'like_received|%'", ann
            )
            digests = {r["fact"].split("|")[1] for r in received}
            assert len(received) == 2 and len(digests) == 1 and next(iter(digests)).startswith("erased:")
            replayed = MemberState(ann)
            for (raw,) in await pg.fetch(
                "SELECT event::text FROM activity WHERE member_id = $1 ORDER BY position", ann
            ):
                apply(replayed, ActivityRecord(ann, ActivityEvent.model_validate_json(raw)), NOW, RULES)
            stored_facts = await pg.fetch("SELECT fact FROM member_facts WHERE member_id = $1", ann)
            assert set(replayed.facts) == {r["fact"] for r in stored_facts}
            assert replayed.scores(RULES) == before[ann][:2]

            # Later events for the id start a new member; bob's old unlike takes nothing back.
            await publish(
                settings,
                [
                    event("unlike", bob, content_id="p1", target_member_id=ann, at=NOW),
                    event("comment", bob, content_id="c9", at=NOW),
                ],
            )

            async def new_bob() -> bool:
                applied = await pg.fetchval("SELECT count(*) FROM activity")
                published = await read_topic(settings.kafka_bootstrap, settings.topic_level_changes, keys={bob})
                return bool(applied == 10 and len(published) == len(records) + 2)

            await eventually(new_bob, what="the new member's events applied and its level change published")
            assert (await scores())[ann] == before[ann]
            assert (await scores())[bob] == (2, 0, "new_contributor")  # the comment's 2: New Contributor
            published = await read_topic(settings.kafka_bootstrap, settings.topic_level_changes, keys={bob})
            assert [json.loads(r.value)["seq"] for r in published[len(records) :]] == [1, 2]

            # Again, and for an id never seen: safe, Redis cleaned, a tombstone each time.
            code, out = await cl(env, "member", "erase", bob, "--operator", "moderator-1")
            assert code == 0 and f"Erased {bob}" in out, out
            nobody = unique("nobody")
            code, out = await cl(env, "member", "erase", nobody, "--operator", "moderator-1")
            assert code == 0 and f"Nothing was stored in PostgreSQL for {nobody}." in out, out

            async def tombstones() -> bool:
                mine = await read_topic(settings.kafka_bootstrap, settings.topic_level_changes, keys={bob, nobody})
                return sorted(m.key.decode() for m in mine if m.value is None) == sorted([bob, bob, nobody])

            await eventually(tombstones, what="three tombstones published")
            await eventually(tombstone_sent, what="the second tombstone's row deleted")
            assert await holding(pg, bob) == {} and await holding(pg, nobody) == {}
            assert await redis_holding(redis, prefix, bob) == []
    finally:
        await pg.close()
        await redis.aclose()


async def test_no_view_or_board_place_made_before_the_erasure_comes_back(
    fresh_database: str, settings_kwargs: dict[str, Any]
) -> None:
    """A scorer that committed the member just before the erasure writes its view late, and a
    rebuild page read before the erasure is written after it: Redis refuses both. A later
    member of the same id is written."""
    engine = db.engine(fresh_database, "test")
    redis = Redis.from_url(Settings().redis_url)
    cache = MemberCache(redis, f"{settings_kwargs['redis_prefix']}{unique('erase-race')}:")
    views = Views(engine, redis, cache, RulesBook(RULES), pause=timedelta(seconds=1), grace=timedelta(seconds=1))
    work = UnitOfWork(engine, RULES, "g", "t")
    member = unique("eve")
    try:
        committed = await work.commit(
            [], incoming([{"type": "post", "member_id": member, "content_id": "p1"}]), NOW, []
        )
        async with engine.connect() as conn:
            page = await members.views_after(conn, "", 1000)  # a rebuild page in flight
        erased = await erase_stored(engine, member, NOW, NO_ENDS)
        await erase_views(cache, member, erased)
        assert erased.redis_removed == 0  # nothing was in Redis yet

        await views.publish(committed)  # the late writer
        async with engine.connect() as conn:
            await views._put(conn, page)  # the rebuild page
        assert await cache.get_many([member]) == {}
        assert await redis_holding(redis, cache.prefix, member) == []

        # A later member of the same id: its versions are above the erasure's stamp.
        later = await work.commit([], incoming([{"type": "comment", "member_id": member, "content_id": "c1"}]), NOW, [])
        await views.publish(later)
        assert (await cache.get_many([member]))[member]["active_score"] == 2
        assert [m for m, _ in (await boards(redis, cache.prefix))[cache.board_key("active", "all")]] == [member]
    finally:
        await redis.aclose()
        await engine.dispose()


async def test_with_redis_down_postgres_is_erased_and_the_command_says_to_run_again(
    fresh_database: str, run_env: dict[str, str], settings_kwargs: dict[str, Any]
) -> None:
    engine = db.engine(fresh_database, "test")
    member = unique("gus")
    try:
        await UnitOfWork(engine, RULES, "g", "t").commit(
            [], incoming([{"type": "post", "member_id": member, "content_id": "p1"}]), NOW, []
        )
    finally:
        await engine.dispose()
    env = env_with(run_env, CL_DATABASE_URL=fresh_database, CL_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    code, out = await cl(env, "member", "erase", member, "--operator", "moderator-1")
    assert code == 1 and "Redis could not be cleaned" in out and "run this command again" in out, out
    assert f"Erased {member}" in out
    pg = await asyncpg.connect(fresh_database.replace("+asyncpg", ""))
    try:
        assert await holding(pg, member) == {"level_changes": 1}  # the tombstone, until a relay sends it
    finally:
        await pg.close()
    async with in_process(create_app(ApiSettings(**{**settings_kwargs, "database_url": fresh_database}))) as client:
        for path in (f"/v1/members/{member}", f"/v1/members/{member}/level-changes"):
            assert (await client.get(path)).status_code == 404, path  # the tombstone is no level change


async def test_a_like_the_member_gives_while_the_erasure_waits_for_its_lock_is_digested_too(
    fresh_database: str,
) -> None:
    """The erasure waits for the batches scoring when it starts (it holds the scoring lock
    alone): one that makes the member name someone new (here waiting for the member's row)
    commits first, and that member's fact gets the digest too."""
    ann, bob, dan = "ann-" + unique("x"), "bob-" + unique("x"), "dan-" + unique("x")  # locked in this order
    engine, scorer, eraser = (db.engine(fresh_database, name) for name in ("test", "test-scorer", "test-erase"))
    work = UnitOfWork(scorer, RULES, "g", "t")
    pg = await asyncpg.connect(fresh_database.replace("+asyncpg", ""))

    async def waiting_for_locks(n: int) -> bool:
        sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        return bool(await pg.fetchval(sql) == n)

    def like(event_id: str, author: str, content: str) -> dict[str, Any]:
        return {
            "event_id": event_id,
            "type": "like",
            "member_id": bob,
            "content_id": content,
            "target_member_id": author,
        }

    try:
        await work.commit([], incoming([{"type": "post", "member_id": bob, "content_id": "p0"}]), NOW, [])
        await work.commit([], incoming([like("l1", ann, "p1")]), NOW, [])
        async with engine.connect() as holder:
            transaction = await holder.begin()
            await holder.execute(text("SELECT 1 FROM members WHERE member_id = :id FOR UPDATE"), {"id": bob})
            liking = asyncio.create_task(work.commit([], incoming([like("l2", dan, "p2")]), NOW, []))
            await eventually(lambda: waiting_for_locks(1), what="the batch waiting for bob's row")
            erasing = asyncio.create_task(erase_stored(eraser, bob, NOW, NO_ENDS))
            await eventually(lambda: waiting_for_locks(2), what="the erasure waiting for bob's row too")
            await transaction.rollback()
        await liking
        erased = await erasing

        assert erased.others == 2 and erased.digested_facts == 2  # ann's like received, and dan's
        # Only the tombstone, until a relay publishes it.
        assert await holding(pg, bob) == {"level_changes": 1}
        tombstone = "SELECT seq, payload FROM level_changes WHERE member_id = $1"
        assert tuple(await pg.fetchrow(tombstone, bob)) == (0, None)
        digested = await pg.fetch("SELECT member_id, fact FROM member_facts WHERE fact LIKE '%erased:%'")
        assert sorted(member for member, _ in digested) == [ann, dan]
        points = await pg.fetch("SELECT member_id, active_score FROM members ORDER BY member_id")
        assert [tuple(row) for row in points] == [(ann, 3), (dan, 3)]  # a like received: 3 points
    finally:
        await pg.close()
        for each in (engine, scorer, eraser):
            await each.dispose()


def arriving(partition: int, offset: int, subject: str, event_id: str, **fields: str) -> Incoming:
    """A record of topic `t` as the scorer reads it, at this partition and offset."""
    event = ActivityEvent.model_validate({"event_id": event_id, "occurred_at": NOW.isoformat(), **fields})
    return Incoming(ActivityRecord(subject, event), event.to_json().decode(), partition, offset)


async def test_records_sent_before_the_erasure_and_applied_after_it_are_erased_whatever_their_partition(
    fresh_database: str,
) -> None:
    """Each like is two records, one on each member's partition. ann's partition (0) is ahead
    of bob's (1), and behind dan's (2): when ann is erased, bob's records of her likes and
    ann's own record of her like of dan's are still to be applied. Applied afterwards, they
    are erased as the erasure erased what was applied before it; records sent after the
    erasure are a later member's."""
    ann, bob, dan = unique("ann"), unique("bob"), unique("dan")
    engine = db.engine(fresh_database, "test")
    work = UnitOfWork(engine, RULES, "g", "t")
    pg = await asyncpg.connect(fresh_database.replace("+asyncpg", ""))

    def like(kind: str, content: str, author: str) -> dict[str, str]:
        return {"type": kind, "member_id": ann, "content_id": content, "target_member_id": author}

    try:
        # Applied before the erasure: ann's records of her likes of b1, b2 and unlike of b2,
        # bob's post and dan's record of ann's like of d1.
        await work.commit(
            [],
            [
                arriving(0, 0, ann, "l1", **like("like", "b1", bob)),
                arriving(0, 1, ann, "l2", **like("like", "b2", bob)),
                arriving(0, 2, ann, "u2", **like("unlike", "b2", bob)),
                arriving(1, 0, bob, "b1", type="post", member_id=bob, content_id="b1"),
                arriving(2, 0, dan, "l3", **like("like", "d1", dan)),
            ],
            NOW,
            [],
        )
        erased = await erase_stored(engine, ann, NOW, Ends("t", [5, 4, 1]))
        assert erased.others == 1 and erased.deleted["activity"] == 3  # dan is not found: ann's record of l3 waits

        # Then the records sent before the erasure: bob's of l1, l2 and u2, ann's own of l3 and a post.
        later = await work.commit(
            [],
            [
                arriving(1, 1, bob, "l1", **like("like", "b1", bob)),
                arriving(1, 2, bob, "l2", **like("like", "b2", bob)),
                arriving(1, 3, bob, "u2", **like("unlike", "b2", bob)),
                arriving(0, 3, ann, "l3", **like("like", "d1", dan)),
                arriving(0, 4, ann, "a1", type="post", member_id=ann, content_id="a1"),
            ],
            NOW,
            [],
        )
        assert later.applied == 3 and later.erased == 2
        assert await holding(pg, ann) == {"level_changes": 1}  # the tombstone, until a relay sends it
        facts = await pg.fetch("SELECT member_id, fact FROM member_facts WHERE fact LIKE 'like_received|%'")
        stand_ins = {fact.split("|")[1] for _, fact in facts}
        assert len(stand_ins) == 1 and next(iter(stand_ins)).startswith("erased:")  # the erasure's own digest
        assert sorted((m, f.split("|")[2]) for m, f in facts) == sorted([(bob, "b1"), (dan, "d1")])  # u2 took b2 back
        points = await pg.fetch("SELECT member_id, active_score FROM members ORDER BY member_id")
        assert dict(points) == {bob: 13, dan: 3}  # a post 10, a like received 3; ann is not made again
        for member in (bob, dan):  # replaying their records (as a rescore does) gives the same facts
            replayed = MemberState(member)
            rows = await pg.fetch("SELECT event::text FROM activity WHERE member_id = $1 ORDER BY position", member)
            for (raw,) in rows:
                apply(replayed, ActivityRecord(member, ActivityEvent.model_validate_json(raw)), NOW, RULES)
            stored = await pg.fetch("SELECT fact FROM member_facts WHERE member_id = $1", member)
            assert set(replayed.facts) == {r["fact"] for r in stored}
        assert not (await erase_stored(engine, ann, NOW, NO_ENDS)).stored  # nothing is left to find

        # Sent after the erasure: a later member of the id, and its like is its own.
        await work.commit(
            [],
            [
                arriving(0, 5, ann, "l4", **like("like", "b3", bob)),
                arriving(1, 4, bob, "l4", **like("like", "b3", bob)),
            ],
            NOW,
            [],
        )
        assert await pg.fetchval("SELECT active_score FROM members WHERE member_id = $1", ann) == 1  # a like given
        assert await pg.fetchval("SELECT count(*) FROM member_facts WHERE fact = $1", f"like_received|{ann}|b3") == 1

        # The erasure is forgotten once the scorer has passed every partition's end.
        async def passed(*offsets: int) -> int:
            async with engine.begin() as conn:
                await conn.execute(text("DELETE FROM consumer_offsets"))
                for partition, offset in enumerate(offsets):
                    await conn.execute(
                        text(
                            "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset, epoch, owner,"
                            " updated_at) VALUES ('g', 't', :p, :o, 1, 'test', now())"
                        ),
                        {"p": partition, "o": offset},
                    )
            await work.sweep_tenure(NOW, 10, [])
            return int(await pg.fetchval("SELECT count(*) FROM erased_members"))

        assert await passed(6, 5, 0) == 1  # dan's partition still holds records from before
        assert await passed(6, 5, 1) == 0
    finally:
        await pg.close()
        await engine.dispose()
