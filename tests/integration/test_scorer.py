"""The scorer against real Kafka, PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from services.common import db
from services.common.kafka import client_options
from services.common.kafka import producer as make_producer
from services.common.members import MemberCache
from services.scorer.partitions import Partitions
from services.scorer.service import Scorer
from services.scorer.settings import ScorerSettings
from services.write.offsets import Offsets
from services.write.sql import members, offsets
from shared.events import ActivityEvent, ActivityRecord
from shared.rules import default_rules
from shared.scoring import MemberState, apply_batch, facts_needed
from tests.asyncapi import validator
from tests.conftest import unique
from tests.support import RANK, ce_type, eventually, free_port, level_changes, of_type, read_topic

NOW = datetime.now(UTC)


def event(kind: str, member: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": unique("e"),
        "type": kind,
        "member_id": member,
        "occurred_at": fields.pop("at", NOW - timedelta(hours=1)).isoformat(),
        **fields,
    }


@pytest.fixture
def settings(settings_kwargs: dict[str, Any]) -> ScorerSettings:
    return ScorerSettings(
        **settings_kwargs,
        port=0,
        tenure_interval=timedelta(milliseconds=300),
        repair_interval=timedelta(milliseconds=300),
        relay_interval=timedelta(milliseconds=200),
    )


@asynccontextmanager
async def running(settings: ScorerSettings) -> AsyncIterator[Scorer]:
    scorer = Scorer(settings)
    task = asyncio.create_task(scorer.run())
    try:
        yield scorer
    finally:
        scorer.stop()
        await asyncio.wait_for(task, 30)


async def publish(
    settings: ScorerSettings,
    events: list[dict[str, Any]],
    raw: tuple[tuple[bytes, bytes], ...] = (),
    partition: int | None = None,
) -> None:
    """Publish as ingest does: one record per member the event changes, keyed by that member
    (on the partition the key picks, or on `partition`)."""
    producer = make_producer(settings, "test")
    await producer.start()
    try:
        futures = []
        for raw_event in events:
            parsed = ActivityEvent.model_validate(raw_event)
            for subject in parsed.subjects():
                futures.append(
                    await producer.send(
                        settings.topic_activity, parsed.to_json(), key=subject.encode(), partition=partition
                    )
                )
        for key, value in raw:
            futures.append(await producer.send(settings.topic_activity, value, key=key))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def member_row(pg: asyncpg.Connection, member: str) -> asyncpg.Record | None:
    return await pg.fetchrow("SELECT * FROM members WHERE member_id = $1", member)


async def scores(pg: asyncpg.Connection, member: str) -> tuple[int, int, int] | None:
    row = await member_row(pg, member)
    return (row["active_score"], row["passive_score"], RANK[row["level_id"]]) if row else None


async def test_records_are_applied_once_and_level_changes_are_published(
    settings: ScorerSettings, pg: asyncpg.Connection
) -> None:
    ann, bob = unique("ann"), unique("bob")
    reply = event("reply", ann, content_id="r1")
    events = [
        reply,
        reply,  # a client retry: the same event id
        event("post", bob, content_id="p1"),
        event("like", ann, content_id="p1", target_member_id=bob),
    ]
    await publish(settings, events)
    async with running(settings):
        await eventually(lambda: _equals(scores(pg, ann), (6, 0, 5)))
        await eventually(lambda: _equals(scores(pg, bob), (13, 0, 5)))
        await eventually(lambda: _unsent_is_zero(pg))

    cache = MemberCache(Redis.from_url(settings.redis_url), settings.redis_prefix)
    try:
        views = await cache.get_many([ann, bob])
    finally:
        await cache.redis.aclose()
    assert (views[ann]["active_score"], views[bob]["active_score"]) == (6, 13)

    records = await read_topic(settings.kafka_bootstrap, settings.topic_level_changes, {ann, bob})
    published = level_changes(records)
    got = sorted((p["member_id"], p["seq"], p["from_level"], p["to_level"]["id"]) for p in published)
    assert got == sorted([(ann, 1, None, "new_contributor"), (bob, 1, None, "new_contributor")])
    assert {p["cause"]["type"] for p in published if p["member_id"] == ann} == {"reply"}
    badges = sorted((b["member_id"], b["badge"]["id"]) for b in of_type(records, "community.badge.granted"))
    assert badges == sorted([(ann, "first_reply"), (bob, "first_post")])  # the retry grants nothing again


async def test_published_level_changes_hold_to_the_asyncapi_contract_with_cloudevents_headers(
    settings: ScorerSettings, pg: asyncpg.Connection
) -> None:
    settings = settings.model_copy(update={"event_source": "https://forum.example/levels"})
    cid = unique("cid")
    events = [event("article", cid, content_id="a1"), event("content_removed", cid, content_id="a1")]
    await publish(settings, events[:1])
    async with running(settings):
        await eventually(lambda: _equals(scores(pg, cid), (25, 0, 6)))
        await publish(settings, events[1:])
        await eventually(lambda: _equals(scores(pg, cid), (0, 0, 1)))
        await eventually(lambda: _unsent_is_zero(pg))
    stored = [
        row["payload"].encode()
        for row in await pg.fetch("SELECT payload FROM level_changes WHERE member_id = $1 ORDER BY id", cid)
    ]
    records = await read_topic(settings.kafka_bootstrap, settings.topic_level_changes, {cid})
    assert [m.value for m in records] == stored  # the stored bytes, unchanged, in the outbox's order
    # The article promotes and earns the First Article badge (SPEC §10.2); its removal demotes,
    # and the badge stays.
    assert [ce_type(m) for m in records] == [
        "community.badge.granted",
        "community.level.promoted",
        "community.level.demoted",
    ]
    for msg in records:
        body = json.loads(msg.value)
        headers = {name: value.decode() for name, value in msg.headers}
        badge = ce_type(msg).startswith("community.badge.")
        validator("BadgeEvent" if badge else "LevelChange").validate(body)
        validator("BadgeEventHeaders" if badge else "CloudEventHeaders").validate(headers)
        assert len(msg.headers) == len(headers) and headers == {
            "ce_specversion": "1.0",
            "ce_id": body["event_id"],
            "ce_source": settings.event_source,
            "ce_type": "community.badge.granted" if badge else f"community.level.{body['direction']}",
            "ce_time": body["emitted_at"],
            "ce_subject": cid,
            "content-type": "application/json",
        }
    assert json.loads(records[0].value)["badge"] == {"id": "first_article", "name": "First Article"}


async def _equals(value: Awaitable[Any], expected: Any) -> bool:
    return await value == expected


async def _unsent_is_zero(pg: asyncpg.Connection) -> bool:
    return await pg.fetchval("SELECT count(*) FROM level_changes WHERE sent_at IS NULL") == 0


async def test_poison_records_go_to_the_dead_letter_topic_and_later_records_apply(
    settings: ScorerSettings, pg: asyncpg.Connection
) -> None:
    cat = unique("cat")
    await publish(
        settings,
        [],
        raw=((cat.encode(), b"{not json"), (cat.encode(), b'{"event_id": "x", "type": "teleport"}')),
    )
    await publish(settings, [event("article", cat, content_id="a1")])
    async with running(settings):
        await eventually(lambda: _equals(scores(pg, cat), (25, 0, 6)))
    dead = await read_topic(settings.kafka_bootstrap, settings.topic_dlq, {cat})
    assert [m.value for m in dead] == [b"{not json", b'{"event_id": "x", "type": "teleport"}']
    headers = dict(dead[0].headers)
    assert headers["source_topic"].decode() == settings.topic_activity
    assert int(headers["source_offset"]) >= 0 and b"not JSON" in headers["reason"]


async def test_a_restarted_scorer_resumes_without_counting_anything_twice(
    settings: ScorerSettings, pg: asyncpg.Connection
) -> None:
    dan = unique("dan")
    first = [event("comment", dan, content_id=f"c{i}") for i in range(5)]
    await publish(settings, first)
    async with running(settings):
        await eventually(lambda: _equals(scores(pg, dan), (10, 0, 5)))
    # Redelivered and new records, consumed by a fresh instance of the group.
    await publish(settings, first + [event("post", dan, content_id="p1")])
    async with running(settings):
        await eventually(lambda: _equals(scores(pg, dan), (20, 0, 5)))
    count = await pg.fetchval("SELECT count(*) FROM activity WHERE member_id = $1", dan)
    assert count == 6


async def test_a_consumer_that_lost_its_partition_cannot_store_offsets(
    settings: ScorerSettings, run_env: dict[str, str]
) -> None:
    from services.common import db

    engine = db.engine(settings.database_url, "test")
    group, topic = unique("group"), settings.topic_activity
    try:
        async with engine.begin() as conn:
            (old,) = await offsets.claim_partitions(conn, group, topic, [0], "old-owner")
        async with engine.begin() as conn:
            (new,) = await offsets.claim_partitions(conn, group, topic, [0], "new-owner")
        async with engine.begin() as conn:
            refused = await offsets.advance_offsets(conn, group, topic, [offsets.OffsetMove(0, old.epoch, 0, 10)])
            accepted = await offsets.advance_offsets(conn, group, topic, [offsets.OffsetMove(0, new.epoch, 0, 10)])
            gap = await offsets.advance_offsets(conn, group, topic, [offsets.OffsetMove(0, new.epoch, 20, 30)])
        assert (refused, accepted, gap) == ({0}, set(), {0})
    finally:
        await engine.dispose()


async def test_a_commit_landing_after_its_partition_was_revoked_leaves_no_lag_to_read(
    settings: ScorerSettings,
) -> None:
    """Two lanes: a commit of a partition may finish after a rebalance took it away. Its offset
    is not kept, so the lag (read on every empty fetch and by /metrics) asks aiokafka only about
    partitions it holds (aiokafka asserts otherwise, which stopped a scorer)."""
    engine = db.engine(settings.database_url, "test")
    group, topic = unique("group"), settings.topic_activity
    # In a group, as the scorer's: a group-less consumer's stop() can hang (aio-libs/aiokafka#647).
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False, **client_options(settings)
    )
    tps = [TopicPartition(topic, p) for p in (0, 1)]

    async def once(what: str, step: Callable[[], Awaitable[Any]]) -> Any:
        return await step()

    await consumer.start()
    try:
        consumer.assign(tps)
        partitions = Partitions(consumer, Offsets(engine, group, topic), topic, "me", once)
        await partitions.assigned(set(tps))
        await consumer.getmany(timeout_ms=500)  # highwater marks come with fetches
        partitions.revoked({tps[1]})
        consumer.assign([tps[0]])
        partitions.committed_to(1, 5)  # the late commit of the revoked partition
        assert set(partitions.lag()) <= {0}
        assert 1 not in partitions.committed
    finally:
        await consumer.stop()
        await engine.dispose()


async def test_tenure_alone_promotes_a_member_without_new_activity(
    settings: ScorerSettings, pg: asyncpg.Connection
) -> None:
    eve = unique("eve")
    joined = datetime.now(UTC) - timedelta(days=7) + timedelta(seconds=10)  # due in 10 s
    await publish(
        settings,
        [
            event("member_joined", eve, at=joined),
            event("group_joined", eve, content_id="g1", at=joined),
            event("group_joined", eve, content_id="g2", at=joined),
        ],
    )
    async with running(settings):
        await eventually(lambda: _equals(scores(pg, eve), (0, 10, 2)), timeout=30)
    rows = await pg.fetch("SELECT payload FROM level_changes WHERE member_id = $1 AND seq > 0 ORDER BY seq", eve)
    first, second = (json.loads(row["payload"]) for row in rows)
    assert (first["to_level"]["id"], first["cause"]["kind"]) == ("new_member", "activity")
    assert second["cause"] == {"kind": "tenure"}
    assert (second["from_level"]["id"], second["to_level"]["id"]) == ("new_member", "community_member")


async def test_redis_is_rebuilt_from_postgres_after_a_flush(settings: ScorerSettings, pg: asyncpg.Connection) -> None:
    fay = unique("fay")
    await publish(settings, [event("post", fay, content_id="p1")])
    redis = Redis.from_url(settings.redis_url)
    cache = MemberCache(redis, settings.redis_prefix)
    try:
        async with running(settings):
            await eventually(lambda: _equals(scores(pg, fay), (10, 0, 5)))
            await eventually(lambda: _has_view(cache, fay))
            row_version = await pg.fetchval("SELECT xmin::text FROM members WHERE member_id = $1", fay)
            keys = [k async for k in redis.scan_iter(f"{settings.redis_prefix}*")]
            await redis.delete(*keys)
            await eventually(lambda: _has_view(cache, fay))
            await eventually(lambda: _equals(redis.exists(cache.built_key), 1), what="the rebuild finished")
        assert (await cache.get_many([fay]))[fay]["active_score"] == 10
        # The rebuild reads members page by page and writes none of their rows.
        assert await pg.fetchval("SELECT xmin::text FROM members WHERE member_id = $1", fay) == row_version
    finally:
        await redis.aclose()


async def _has_view(cache: MemberCache, member: str) -> bool:
    return member in await cache.get_many([member])


async def test_the_scorer_answers_health_readiness_and_metrics(settings: ScorerSettings) -> None:
    port = free_port()
    async with (
        running(settings.model_copy(update={"port": port})),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
    ):

        async def ready() -> bool:
            try:
                return (await client.get("/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(ready, what="the scorer ready")
        assert (await client.get("/readyz")).json()["checks"] == {
            **{dependency: "ok" for dependency in ("postgres", "kafka", "redis", "level-changes")},
            **{part: "ok" for part in ("consumer", "relay", "tenure", "repair", "health", "prune")},
        }
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert "scorer_records_total" in (await client.get("/metrics")).text


async def test_a_batch_reads_only_the_facts_its_records_name(settings: ScorerSettings, pg: asyncpg.Connection) -> None:
    """A member with a long history: applying an unlike reads the like and the cap of the
    like's day (the unlike's own day has none yet), not the history."""
    rules, ann = default_rules(), unique("ann")

    def record(kind: str, member: str, day: int, **fields: Any) -> ActivityRecord:
        at = (NOW - timedelta(days=day)).isoformat()
        raw = event(kind, member, at=datetime.fromisoformat(at), **fields)
        return ActivityRecord(ann, ActivityEvent.model_validate(raw))

    history = [record("view", ann, day % 300, content_id=f"t{day}") for day in range(3000)]
    history.append(record("like", ann, 10, content_id="p1", target_member_id="bob"))
    states: dict[str, MemberState] = {}
    apply_batch(states, history, NOW, rules)
    engine = db.engine(settings.database_url, "test")
    try:
        async with engine.begin() as conn:
            await members.save_states(conn, [states[ann]], rules, NOW)
            await members.save_facts(conn, [states[ann]], {})
        assert await pg.fetchval("SELECT count(*) FROM member_facts WHERE member_id = $1", ann) > 3000
        unlike = [record("unlike", ann, 0, content_id="p1", target_member_id="bob")]
        async with engine.begin() as conn:
            locked = await members.lock_states(conn, [ann])
            loaded = await members.load_facts(conn, locked, facts_needed(unlike))
            assert set(locked[ann].facts) == {"like_given|p1", f"cap|like_given|{history[-1].event.day}"}
            apply_batch(locked, unlike, NOW, rules)
            await members.save_facts(conn, [locked[ann]], loaded)
        assert (
            await pg.fetchval(
                "SELECT count(*) FROM member_facts WHERE member_id = $1 AND fact LIKE 'like_given|%'", ann
            )
            == 0
        )
    finally:
        await engine.dispose()
