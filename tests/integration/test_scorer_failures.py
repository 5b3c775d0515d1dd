"""The scorer is never wedged (docs/RELIABILITY.md): what a record or a store can do to it.

Each failure here is a real one: PostgreSQL refusing a row (a trigger raising the error the
store would), a record too large to copy whole, offsets the broker no longer holds, a Redis
server paused with SIGSTOP, a database copied back as if restored from a backup.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition
from alembic import command
from alembic.config import Config
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from sqlalchemy import make_url
from sqlalchemy.exc import DBAPIError

from services.common import db
from services.common.kafka import ensure_topics
from services.common.members import MemberCache
from services.scorer.batch import Item
from services.scorer.records import decode_record
from services.scorer.settings import ScorerSettings
from services.write.unit_of_work import UnitOfWork
from shared.events import ActivityRecord
from shared.rules import default_rules
from shared.scoring import apply_batch
from tests.conftest import ADMIN, ROLES, ROOT, _create_database, _drop_database, database_url, unique
from tests.integration.test_scorer import _equals, event, publish, running, scores
from tests.integration.test_stats import incoming
from tests.support import ce_type, eventually, free_port, own_topics, read_topic


def scorer_settings(kwargs: dict[str, Any], **overrides: Any) -> ScorerSettings:
    fast = {
        "tenure_interval": timedelta(milliseconds=300),
        "repair_interval": timedelta(milliseconds=300),
        "relay_interval": timedelta(milliseconds=200),
        "health_interval": timedelta(milliseconds=300),
    }
    return ScorerSettings(**{**kwargs, "port": 0, **fast, **overrides})


@pytest.fixture
def settings(settings_kwargs: dict[str, Any]) -> ScorerSettings:
    return scorer_settings(settings_kwargs)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def refuse(pg: asyncpg.Connection) -> AsyncIterator[None]:
    """PostgreSQL refuses activity whose event id starts with `refused-` (a data exception, as
    for a character jsonb cannot hold) or `stuck-` (an error no record causes)."""
    await pg.execute(
        """
        CREATE OR REPLACE FUNCTION refuse_activity() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.event_id LIKE 'refused-%' THEN
                RAISE EXCEPTION 'value refused for %', NEW.event_id USING ERRCODE = '22023';
            ELSIF NEW.event_id LIKE 'stuck-%' THEN
                RAISE EXCEPTION 'store not ready' USING ERRCODE = '55000';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_activity BEFORE INSERT ON activity FOR EACH ROW EXECUTE FUNCTION refuse_activity();
        """
    )
    try:
        yield
    finally:
        await pg.execute("DROP TRIGGER IF EXISTS refuse_activity ON activity")


async def test_a_record_the_store_refuses_is_dead_lettered_alone_and_the_rest_commits(
    settings: ScorerSettings, pg: asyncpg.Connection, refuse: None
) -> None:
    ann, bob = unique("ann"), unique("bob")
    refused = {**event("reply", bob, content_id="r0"), "event_id": unique("refused")}
    before = metric("scorer_dead_letters_total", reason="refused")
    await publish(
        settings,
        [event("post", ann, content_id="p1"), event("post", bob, content_id="p1"), refused]
        + [event("reply", m, content_id=f"r{i}") for i in range(1, 4) for m in (ann, bob)],
    )
    async with running(settings):
        # posts 10 + 3 replies of 5 each: everything but the refused reply counts
        await eventually(lambda: _equals(scores(pg, ann), (25, 0, 6)))
        await eventually(lambda: _equals(scores(pg, bob), (25, 0, 6)))
    dead = await read_topic(settings.kafka_bootstrap, settings.topic_dlq, {bob})
    assert [refused["event_id"].encode() in m.value for m in dead] == [True]
    reason = dict(dead[0].headers)["reason"].decode()
    assert "refused by the store" in reason and "value refused for" in reason, reason
    assert dict(dead[0].headers)["source_topic"].decode() == settings.topic_activity
    assert metric("scorer_dead_letters_total", reason="refused") == before + 1
    assert not await pg.fetchval("SELECT count(*) FROM activity WHERE event_id = $1", refused["event_id"])


async def test_a_store_failure_no_record_causes_is_retried_and_readiness_says_wedged(
    settings_kwargs: dict[str, Any], pg: asyncpg.Connection, refuse: None
) -> None:
    cat = unique("cat")
    port = free_port()
    settings = scorer_settings(settings_kwargs, port=port, stall_timeout=timedelta(seconds=1))
    await publish(settings, [{**event("post", cat, content_id="p1"), "event_id": unique("stuck")}])
    async with running(settings), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

        async def wedged() -> bool:
            answer = await _readyz(client)
            return (
                answer is not None
                and answer.status_code == 503
                and answer.json()["checks"]["consumer"].startswith("wedged")
            )

        await eventually(wedged, what="/readyz to say the consumer is wedged")
        assert await scores(pg, cat) is None, "nothing is dead-lettered for a failure the record did not cause"
        await pg.execute("DROP TRIGGER refuse_activity ON activity")
        await eventually(lambda: _equals(scores(pg, cat), (10, 0, 5)), what="the record applied once the store is back")

        async def ready() -> bool:
            answer = await _readyz(client)
            return answer is not None and answer.status_code == 200

        await eventually(ready, what="/readyz ready again")


async def _readyz(client: httpx.AsyncClient) -> httpx.Response | None:
    try:
        return await client.get("/readyz")
    except httpx.HTTPError:
        return None  # not serving yet


async def test_an_oversized_record_is_dead_lettered_truncated_with_a_header(settings: ScorerSettings) -> None:
    dan = unique("dan")
    value = b'{"event_id": "' + b"x" * 1_000_000 + b'"}'
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, max_request_size=2_000_000)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic_activity, value, key=dan.encode())
    finally:
        await producer.stop()
    await publish(settings, [event("post", dan, content_id="p1")])
    async with running(settings):
        dead = await _eventually_read(settings, settings.topic_dlq, dan)
    headers = dict(dead.headers)
    assert headers["truncated_value_from"] == str(len(value)).encode()
    assert value.startswith(dead.value) and 0 < len(dead.value) < len(value)
    assert headers["reason"], "the reason is kept"


async def _eventually_read(settings: ScorerSettings, topic: str, key: str) -> Any:
    found: list[Any] = []

    async def arrived() -> bool:
        found[:] = await read_topic(settings.kafka_bootstrap, topic, {key})
        return bool(found)

    await eventually(arrived, timeout=30, what=f"a record for {key} on {topic}")
    return found[0]


async def test_offsets_the_broker_no_longer_holds_resume_at_the_log_start(
    settings_kwargs: dict[str, Any], pg: asyncpg.Connection
) -> None:
    name = unique("range")
    settings = scorer_settings({**own_topics(settings_kwargs, name), "group_id": name})
    await ensure_topics(settings)
    eve, fox = unique("eve"), unique("fox")
    while _partition(fox, settings) == _partition(eve, settings):  # one stored offset each
        fox = unique("fox")
    await publish(settings, [event("post", eve, content_id=f"p{i}") for i in range(3)])
    await publish(settings, [event("post", fox, content_id="p0")])
    # Retention took eve's first two records before they were scored; fox's stored offset
    # points past the end of its partition (as after the topic was recreated).
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        tps = await _partitions_of(settings, {eve, fox})
        await admin.delete_records({tps[eve]: RecordsToDelete(before_offset=2)}, timeout_ms=10_000)
    finally:
        await admin.close()
    await pg.executemany(
        "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset, epoch, owner, updated_at)"
        " VALUES ($1, $2, $3, $4, 1, 'earlier', now())",
        [
            (name, settings.topic_activity, tps[eve].partition, 0),
            (name, settings.topic_activity, tps[fox].partition, 1000),
        ],
    )
    below = metric("scorer_offsets_out_of_range_total", partition=str(tps[eve].partition), where="below_log_start")
    async with running(settings):
        await eventually(lambda: _equals(scores(pg, eve), (10, 0, 5)), what="eve's remaining post applied")
        await eventually(lambda: _equals(scores(pg, fox), (10, 0, 5)), what="fox's post applied")
        await publish(settings, [event("reply", eve, content_id="r1")])
        await eventually(lambda: _equals(scores(pg, eve), (15, 0, 5)), what="the partition goes on")
    after = metric("scorer_offsets_out_of_range_total", partition=str(tps[eve].partition), where="below_log_start")
    assert after == below + 1
    assert metric("scorer_offsets_out_of_range_total", partition=str(tps[fox].partition), where="past_log_end") >= 1


def _partition(member: str, settings: ScorerSettings) -> int:
    partitions = list(range(settings.topic_partitions))
    return int(DefaultPartitioner()(member.encode(), partitions, partitions))


async def _partitions_of(settings: ScorerSettings, members: set[str]) -> dict[str, TopicPartition]:
    found = await read_topic(settings.kafka_bootstrap, settings.topic_activity, members)
    return {m.key.decode(): TopicPartition(m.topic, m.partition) for m in found}


async def test_readiness_fails_when_a_worker_has_ended(settings_kwargs: dict[str, Any]) -> None:
    port = free_port()
    async with (
        running(scorer_settings(settings_kwargs, port=port)) as scorer,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
    ):

        async def answer(status: int) -> bool:
            response = await _readyz(client)
            return response is not None and response.status_code == status

        await eventually(lambda: answer(200), what="the scorer ready")
        task = scorer.workers.workers["relay"].task
        assert task is not None
        task.cancel()
        await eventually(lambda: answer(503), what="/readyz to fail")
        assert (await client.get("/readyz")).json()["checks"]["relay"].startswith("dead")


@pytest.fixture
def own_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Redis server of the test's own, so it can be paused without pausing anyone else's."""
    port = free_port()
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    with tempfile.TemporaryDirectory() as data:
        proc = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", data],
            stdout=subprocess.DEVNULL,
        )
        try:
            yield f"redis://127.0.0.1:{port}/0", proc
        finally:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            proc.wait(10)


async def test_scoring_goes_on_while_redis_hangs(
    settings_kwargs: dict[str, Any], pg: asyncpg.Connection, own_redis: tuple[str, subprocess.Popen[bytes]]
) -> None:
    url, proc = own_redis
    redis = Redis.from_url(url)
    await eventually(lambda: _pings(redis), what="the test's Redis up")
    settings = scorer_settings(settings_kwargs, redis_url=url)
    cache = MemberCache(redis, settings.redis_prefix)
    gus = unique("gus")
    try:
        async with running(settings):
            await publish(settings, [event("post", gus, content_id="p0")])
            await eventually(lambda: _has_score(cache, gus, 10), what="the first view in Redis")
            proc.send_signal(signal.SIGSTOP)  # connections are accepted and never answered
            for i in range(1, 5):  # batch after batch: none may wait on Redis
                await publish(settings, [event("reply", gus, content_id=f"r{i}")])
                await eventually(
                    lambda i=i: _active_is(pg, gus, 10 + 5 * i),  # type: ignore[misc]
                    timeout=15,
                    what=f"reply {i} scored while Redis hangs",
                )
            proc.send_signal(signal.SIGCONT)
            await eventually(lambda: _has_score(cache, gus, 30), timeout=20, what="Redis repaired after it woke")
    finally:
        proc.send_signal(signal.SIGCONT)
        await redis.aclose()


async def _active_is(pg: asyncpg.Connection, member: str, active: int) -> bool:
    found = await scores(pg, member)
    return found is not None and found[0] == active


async def _pings(redis: Redis) -> bool:
    try:
        return bool(await redis.ping())
    except OSError:
        return False
    except Exception:  # noqa: BLE001 - redis-py's own connection errors while it starts
        return False


async def _has_score(cache: MemberCache, member: str, active: int) -> bool:
    view = (await cache.get_many([member])).get(member)
    return view is not None and view["active_score"] == active


async def test_views_follow_postgres_after_a_restore_from_a_backup(settings_kwargs: dict[str, Any]) -> None:
    """The database is copied (the backup), moves on, and the copy is then put in its place:
    Redis must show the copy's members, not the newer views it had been given."""
    name = unique("restore").replace("-", "_")
    live, backup = f"cl_{name}_live", f"cl_{name}_backup"
    admin = database_url(ADMIN, "postgres").replace("+asyncpg", "")
    await _create_database(admin, live)
    try:
        await asyncio.to_thread(_migrate, database_url(ROLES["owner"], live))
        base = {**own_topics(settings_kwargs, name), "group_id": name}
        await ensure_topics(scorer_settings(base))
        hal = unique("hal")
        redis = Redis.from_url(scorer_settings(base).redis_url)
        cache = MemberCache(redis, base["redis_prefix"])
        on_live = scorer_settings({**base, "database_url": database_url(ROLES["owner"], live)})
        await publish(on_live, [event("post", hal, content_id="p0")])
        async with running(on_live):
            await eventually(lambda: _has_score(cache, hal, 10), what="hal's first view")
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'CREATE DATABASE "{backup}" TEMPLATE "{live}" OWNER {ROLES["owner"]}')
        finally:
            await conn.close()
        await publish(on_live, [event("reply", hal, content_id="r1")])
        async with running(on_live):
            await eventually(lambda: _has_score(cache, hal, 15), what="hal's later view")
            await asyncio.sleep(1)  # a few repair rounds: the view epoch moves past the backup's
        # The backup replaces the database; the records after it are gone with it (another topic).
        restored = scorer_settings(
            {
                **own_topics(base, "after"),
                "redis_prefix": base["redis_prefix"],
                "database_url": database_url(ROLES["owner"], backup),
            }
        )
        await ensure_topics(restored)
        async with running(restored):
            await eventually(lambda: _has_score(cache, hal, 10), timeout=20, what="hal's view as the backup has it")
        await redis.aclose()
    finally:
        await _drop_database(admin, live)
        await _drop_database(admin, backup)


def _migrate(url: str) -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["url"] = url
    command.upgrade(config, "head")


async def test_inputs_written_straight_to_the_topic_never_stop_the_partition(
    settings: ScorerSettings, pg: asyncpg.Connection
) -> None:
    ivy = unique("ivy")
    base = event("reply", ivy, content_id="r0")
    bad = [
        {**base, "attributes": {"note": "a\u0000b"}},  # jsonb cannot hold NUL
        {**base, "attributes": {"a\u0000": 1}},
        {**base, "occurred_at": "9999-12-31T23:59:59-23:59"},  # past datetime's range in UTC
        {**base, "occurred_at": "0001-01-01T00:00:00+23:59"},
    ]
    raw = [json.dumps({**b, "event_id": unique("bad")}).encode() for b in bad]
    raw.append(b'{"attributes": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")  # deeper than any parser recurses
    raw.append(b'{"event_id": "\\ud800"}')  # a lone surrogate
    await publish(settings, [], raw=tuple((ivy.encode(), value) for value in raw))
    await publish(settings, [event("post", ivy, content_id="p1")])
    async with running(settings):
        await eventually(lambda: _equals(scores(pg, ivy), (10, 0, 5)), what="the record after them applied")
    dead = await read_topic(settings.kafka_bootstrap, settings.topic_dlq, {ivy})
    assert [m.value for m in dead] == raw
    assert all(dict(m.headers)["reason"] for m in dead)


async def test_only_the_relay_holding_the_lease_publishes(
    settings: ScorerSettings, pg: asyncpg.Connection, run_env: dict[str, str]
) -> None:
    jay, kay = unique("jay"), unique("kay")
    # Another scorer, alive (it has a session) and holding the lease.
    other = await asyncpg.connect(
        run_env["CL_DATABASE_URL"].replace("+asyncpg", ""), server_settings={"application_name": "scorer:another"}
    )
    await pg.execute("UPDATE relay_lease SET owner = 'another', expires_at = now() + interval '1 minute'")
    unsent = "SELECT count(*) FROM level_changes WHERE member_id = $1 AND sent_at IS NULL"
    try:
        await publish(settings, [event("reply", jay, content_id="r1")])
        async with running(settings):
            await eventually(lambda: _equals(scores(pg, jay), (5, 0, 5)), what="jay scored")
            await asyncio.sleep(1)  # several relay rounds
            # jay's level change and the First Reply badge it earned, both held back
            assert await pg.fetchval(unsent, jay) == 2, "a live relay's lease is respected"
            await other.close()  # it crashed: its sessions are gone, so its lease is void at once
            await eventually(lambda: _equals(pg.fetchval(unsent, jay), 0), timeout=5, what="the lease taken over")
            # A relay that stalls keeps its sessions; its lease passes on when it expires.
            await pg.execute("UPDATE relay_lease SET owner = 'stalled', expires_at = now() - interval '1 second'")
            await publish(settings, [event("reply", kay, content_id="r1")])
            await eventually(lambda: _equals(pg.fetchval(unsent, kay), 0), timeout=5, what="an expired lease taken")
        sent = await read_topic(settings.kafka_bootstrap, settings.topic_level_changes, {jay})
        assert sorted(ce_type(m) for m in sent) == ["community.badge.granted", "community.level.promoted"]
    finally:
        await other.close()
        await pg.execute("UPDATE relay_lease SET expires_at = now()")


async def test_metrics_show_lag_backlogs_dead_letters_and_batch_durations(
    settings_kwargs: dict[str, Any], pg: asyncpg.Connection
) -> None:
    port = free_port()
    settings = scorer_settings(settings_kwargs, port=port)
    kim = unique("kim")
    await publish(settings, [event("post", kim, content_id="p1")], raw=((kim.encode(), b"{not json"),))
    partition = (await _partitions_of(settings, {kim}))[kim].partition
    async with running(settings), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        await eventually(lambda: _equals(scores(pg, kim), (10, 0, 5)))

        async def measured() -> bool:
            try:
                text = (await client.get("/metrics")).text
            except httpx.HTTPError:
                return False
            return f'scorer_consumer_lag{{partition="{partition}"}} 0.0' in text

        await eventually(measured, what="the partition's lag measured as 0")
        text = (await client.get("/metrics")).text
    for name in (
        "scorer_outbox_backlog",
        "scorer_outbox_oldest_age_seconds",
        "scorer_redis_unsynced_members",
        "scorer_batch_duration_seconds_count",
        'scorer_dead_letters_total{reason="invalid"}',
        "scorer_offsets_out_of_range_total",
    ):
        assert name in text, name


async def test_a_database_error_names_no_member_in_logs_or_reasons(
    fresh_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL quotes the row at fault in an error's DETAIL ("Failing row contains (<member
    id>, …)"), and asyncpg puts it in the error's text: the services' engine drops it, so a
    logged traceback or a dead-letter reason made of the error shows the constraint, not the member."""
    member = unique("secret-member")
    pg = await asyncpg.connect(fresh_database.replace("+asyncpg", ""))
    engine = db.engine(fresh_database, "test")
    try:
        await pg.execute("ALTER TABLE members ADD CONSTRAINT small_scores CHECK (active_score < 5)")
        with pytest.raises(DBAPIError) as caught:
            await UnitOfWork(engine, default_rules(), "g", "t").commit(
                [], incoming([{"type": "post", "member_id": member, "content_id": "p1"}]), datetime.now(UTC), []
            )
        assert caught.value.orig.__cause__.sqlstate == "23514"  # type: ignore[union-attr]
        logging.getLogger("scorer").error("tenure failed, will retry", exc_info=caught.value)  # as a worker logs
        shown = caplog.text + repr(caught.value) + str(caught.value.orig.__cause__)  # type: ignore[union-attr]
        assert "small_scores" in shown and member not in shown, shown
    finally:
        await pg.close()
        await engine.dispose()


async def test_a_fence_that_lands_after_a_rebalance_does_not_wedge_the_commit_loop(
    settings_kwargs: dict[str, Any],
) -> None:
    """A batch fetched before a rebalance commits after it: the partition's new owner has claimed
    it, so the offset write is refused (a fence), and the partition is no longer assigned to this
    consumer, so there is nothing to pause. The batch must end, not retry forever."""
    name = unique("fence")
    base = {**own_topics(settings_kwargs, name), "group_id": name}
    first, second = (
        scorer_settings({**base, "instance": f"{name}-a"}),
        scorer_settings({**base, "instance": f"{name}-b"}),
    )
    await ensure_topics(first)
    everything = set(range(first.topic_partitions))
    async with running(first) as a:
        await eventually(
            lambda: _is(lambda: set(a.partitions.epochs) == everything), what="the first scorer owns every partition"
        )
        claimed = dict(a.partitions.epochs)
        async with running(second) as b:
            await eventually(
                lambda: _is(
                    lambda: (
                        bool(b.partitions.epochs) and set(a.partitions.epochs) | set(b.partitions.epochs) == everything
                    )
                ),
                what="the partitions shared out",
            )
            partition = min(b.partitions.epochs)
            assert TopicPartition(first.topic_activity, partition) not in a.consumer.assignment()
            lee = unique("lee")
            while _partition(lee, first) != partition:
                lee = unique("lee")
            await publish(first, [event("post", lee, content_id="p1")])
            msg = await _eventually_read(first, first.topic_activity, lee)
            # The first scorer fetched this record while it still held the partition.
            a.partitions.epochs[partition] = claimed[partition]
            fenced = metric("scorer_fenced_batches_total")
            items: list[Item] = [(msg, decode_record(msg.key, msg.value))]
            await asyncio.wait_for(a.batches.apply(items, datetime.now(UTC), time.monotonic()), 15)
            assert metric("scorer_fenced_batches_total") == fenced + 1
            assert partition not in a.partitions.epochs


async def _is(check: Callable[[], bool]) -> bool:
    return check()


@pytest.mark.parametrize(
    ("failure", "named"),
    [
        ("the topic deleted", "UnknownTopicOrPartitionError"),
        ("UPDATE revoked", "permission denied for table level_changes"),
    ],
)
async def test_readiness_fails_while_level_changes_wait_longer_than_the_bound(
    settings_kwargs: dict[str, Any], fresh_database: str, failure: str, named: str
) -> None:
    """Every relay round fails, with an error that looks transient: the level-changes topic was
    deleted, or the scorer's role may no longer mark level changes sent. Once the oldest unsent
    level change is older than CL_OUTBOX_MAX_AGE, /readyz fails and names the relay's error;
    once the failure is mended the change is sent, and the scorer is ready again."""
    name, port = unique("late"), free_port()
    database = str(make_url(fresh_database).database)
    settings = scorer_settings(
        {
            **own_topics(settings_kwargs, name),
            "group_id": name,
            "database_url": database_url(ROLES["scorer"], database),  # the role of production
        },
        port=port,
        outbox_max_age=timedelta(seconds=1),
    )
    await ensure_topics(settings)
    owner = await asyncpg.connect(fresh_database.replace("+asyncpg", ""))
    grant = f"UPDATE ON level_changes {{}} {ROLES['scorer']}"
    if failure == "the topic deleted":
        await _delete_topic(settings, settings.topic_level_changes)
    else:
        await owner.execute("REVOKE " + grant.format("FROM"))
    max = unique("max")
    await publish(settings, [event("post", max, content_id="p1")])  # a new member: a level change
    try:
        async with running(settings), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def says(*words: str) -> bool:
                answer = await _readyz(client)
                if answer is None or answer.status_code != 503:
                    return False
                return all(word in answer.json()["checks"]["level-changes"] for word in words)

            await eventually(lambda: says("oldest unsent level change is", "(bound 1 s)"), what="/readyz to fail")
            assert metric("scorer_outbox_oldest_age_seconds") > 1
            await eventually(lambda: says(named), what="/readyz to name the relay's error")
            if failure == "the topic deleted":
                await ensure_topics(settings)
            else:
                await owner.execute("GRANT " + grant.format("TO"))

            async def ready() -> bool:
                answer = await _readyz(client)
                return answer is not None and answer.status_code == 200

            await eventually(ready, what="/readyz ready once the level change is sent")
            assert (await client.get("/readyz")).json()["checks"]["level-changes"] == "ok"
            assert not await owner.fetchval("SELECT count(*) FROM level_changes WHERE sent_at IS NULL")
    finally:
        await owner.close()
    assert await read_topic(settings.kafka_bootstrap, settings.topic_level_changes, {max})


async def _delete_topic(settings: ScorerSettings, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])

        async def gone() -> bool:
            return topic not in await admin.list_topics()

        await eventually(gone, what=f"{topic} deleted")
    finally:
        await admin.close()


@pytest.mark.parametrize("where", ["scoring", "decoding"])
async def test_a_fault_of_our_scoring_code_stops_the_partition_loudly_and_dead_letters_nothing(
    settings_kwargs: dict[str, Any], pg: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Scoring, or decoding, raises for every record of one member (a bug, simulated by
    patching our own function): that record is not to blame. Its partition stops there, the later record
    of another member on it waits, other partitions go on, nothing is dead-lettered, /readyz
    names the partition and the error, and a counter says so. Once the code is fixed, the
    partition is read again and everything applies."""
    name, port = unique("fault"), free_port()
    settings = scorer_settings(
        {**own_topics(settings_kwargs, name), "group_id": name},
        port=port,
        code_fault_retry=timedelta(seconds=1),
    )
    await ensure_topics(settings)
    bug, after, elsewhere = unique("bug"), unique("after"), unique("elsewhere")
    partition = _partition(bug, settings)
    while _partition(after, settings) != partition:
        after = unique("after")
    while _partition(elsewhere, settings) == partition:
        elsewhere = unique("elsewhere")
    fixed = asyncio.Event()

    def faulty(states: Any, records: list[ActivityRecord], now: datetime, rules: Any) -> Any:
        if not fixed.is_set() and any(r.subject == bug for r in records):
            return [][0]  # IndexError: list index out of range
        return apply_batch(states, records, now, rules)

    def faulty_decode(key: bytes | None, value: bytes | None) -> ActivityRecord:
        if not fixed.is_set() and key == bug.encode():
            return [][0]  # type: ignore[no-any-return]
        return decode_record(key, value)

    if where == "scoring":
        monkeypatch.setattr("services.write.unit_of_work.apply_batch", faulty)
    else:
        monkeypatch.setattr("services.scorer.batch.decode_record", faulty_decode)
    faults = metric("scorer_code_faults_total", partition=str(partition))
    await publish(settings, [event("post", bug, content_id="p1")])
    await publish(settings, [event("post", after, content_id="p1"), event("post", elsewhere, content_id="p1")])
    async with running(settings), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        await eventually(lambda: _equals(scores(pg, elsewhere), (10, 0, 5)), what="another partition goes on")

        async def stopped() -> bool:
            answer = await _readyz(client)
            check = answer.json()["checks"].get(f"partition {partition}", "") if answer is not None else ""
            return answer is not None and answer.status_code == 503 and "IndexError" in check

        await eventually(stopped, what="/readyz to name the stopped partition")
        assert metric("scorer_code_faults_total", partition=str(partition)) > faults
        await asyncio.sleep(1.5)  # a retry: it fails again, and nothing moves
        assert await scores(pg, bug) is None and await scores(pg, after) is None, "the partition stops at the fault"
        assert not await read_topic(settings.kafka_bootstrap, settings.topic_dlq, {bug, after}), "nothing dead-lettered"
        fixed.set()
        await eventually(lambda: _equals(scores(pg, bug), (10, 0, 5)), what="the record applied once fixed")
        await eventually(lambda: _equals(scores(pg, after), (10, 0, 5)), what="the partition goes on")

        async def ready() -> bool:
            answer = await _readyz(client)
            return answer is not None and answer.status_code == 200

        await eventually(ready, what="/readyz ready again")
