"""The scorer: consumes activity, applies it with exactly-once effect, publishes level changes.

Exactly-once comes from PostgreSQL, not Kafka: one transaction per batch stores the applied
records (a repeated member/event id is skipped), the members' new states, their level
changes (the outbox) and the partitions' next offsets, guarded by the epoch this consumer
claimed on assignment. On assignment the consumer seeks to the stored offsets, so a crash,
restart or rebalance replays exactly what was not committed.

After the commit, Redis gets the members' absolute values (never increments, so a replay
cannot double them) and the relay publishes the outbox. Both are repaired from PostgreSQL
if they fail: the relay resends unsent rows, the repair loop rewrites unsynced members.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import db
from services.common.kafka import client_options
from services.common.kafka import producer as make_producer
from services.common.members import MemberCache, view_of
from services.scorer import http as scorer_http
from services.scorer import repository as repo
from services.scorer.failpoints import Failpoints
from services.scorer.settings import ScorerSettings
from shared.events import ActivityRecord, RecordError, decode_record
from shared.scoring import MemberState, apply_batch, reevaluate_tenure

log = logging.getLogger("scorer")

RECORDS = Counter("scorer_records_total", "Activity records consumed", ["outcome"])
LEVEL_CHANGES = Counter("scorer_level_changes_total", "Level changes recorded", ["cause"])
FENCED = Counter("scorer_fenced_batches_total", "Batches whose offset write was refused")
PUBLISHED = Counter("scorer_level_changes_published_total", "Level changes published to Kafka")

# Failures worth waiting out: the database, Redis or Kafka is away for a while.
TRANSIENT = (OSError, OperationalError, InterfaceError, DBAPIError, KafkaError, RedisError, asyncio.TimeoutError)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Fenced(Exception):
    """The stored offsets of these partitions refused this consumer's write."""

    def __init__(self, partitions: set[int]) -> None:
        super().__init__(f"offset write refused for partitions {sorted(partitions)}")
        self.partitions = partitions


class Scorer:
    def __init__(self, settings: ScorerSettings) -> None:
        self.settings = settings
        self.rules = settings.rules
        self.engine: AsyncEngine = db.engine(
            settings.database_url,
            f"scorer:{settings.instance}",
            idle_in_transaction_ms=int(settings.idle_in_transaction_timeout.total_seconds() * 1000),
        )
        self.failpoints = Failpoints(settings.failpoints)
        self.redis = Redis.from_url(settings.redis_url, client_name=f"scorer:{settings.instance}")
        self.cache = MemberCache(self.redis, settings.redis_prefix)
        self.producer = make_producer(settings, f"scorer-{settings.instance}")
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            **client_options(settings),
            group_id=settings.group_id,
            client_id=f"scorer-{settings.instance}",
            enable_auto_commit=False,  # offsets live in PostgreSQL, with the totals
            auto_offset_reset="earliest",
            session_timeout_ms=int(settings.session_timeout.total_seconds() * 1000),
            heartbeat_interval_ms=int(settings.session_timeout.total_seconds() * 1000) // 3,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self.epochs: dict[int, int] = {}  # partition -> epoch claimed on assignment
        self.stopping = asyncio.Event()
        self.relay_wake = asyncio.Event()

    # -- running ----------------------------------------------------------------------

    async def run(self) -> None:
        await self._retry("start the producer", self.producer.start)
        self.consumer.subscribe([self.settings.topic_activity], listener=_Rebalance(self))
        await self._retry("start the consumer", self.consumer.start)
        log.info("scorer %s consuming %s", self.settings.instance, self.settings.topic_activity)
        http = scorer_http.server(self, self.settings.host, self.settings.port)
        loops = [
            asyncio.create_task(http.serve()),
            asyncio.create_task(self._every(self.settings.relay_interval, self.relay_once, self.relay_wake)),
            asyncio.create_task(self._every(self.settings.tenure_interval, self.tenure_once)),
            asyncio.create_task(self._every(self.settings.repair_interval, self.repair_once)),
        ]
        try:
            while not self.stopping.is_set():
                batch = await self.consumer.getmany(
                    timeout_ms=int(self.settings.fetch_wait.total_seconds() * 1000),
                    max_records=self.settings.batch_max_records,
                )
                if batch:
                    await self.handle(batch)
        except TRANSIENT:
            if not self.stopping.is_set():
                raise
            # stopping while a dependency is away: what was not committed is read again later
        finally:
            http.should_exit = True
            for task in loops[1:]:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await self.consumer.stop()
            with contextlib.suppress(*TRANSIENT):
                await self.relay_once()
            await self.producer.stop()
            await self.redis.aclose()
            await self.engine.dispose()
            log.info("scorer %s stopped", self.settings.instance)

    def stop(self) -> None:
        self.stopping.set()

    async def _every(
        self, interval: Any, work: Callable[[], Awaitable[int]], wake: asyncio.Event | None = None
    ) -> None:
        while not self.stopping.is_set():
            try:
                more = await work()
            except TRANSIENT as exc:
                log.warning("%s failed, will retry: %r", work.__name__, exc)
                more = 0
            if more:
                continue
            if wake is None:
                await asyncio.sleep(interval.total_seconds())
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), interval.total_seconds())
                wake.clear()

    async def _retry(self, what: str, step: Callable[[], Awaitable[Any]]) -> Any:
        delay = 0.2
        while True:
            try:
                return await step()
            except TRANSIENT as exc:
                if self.stopping.is_set():
                    raise
                log.warning("could not %s, retrying in %.1fs: %r", what, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max.total_seconds())

    # -- a batch of activity -----------------------------------------------------------

    async def handle(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        now = utcnow()
        batch = {tp: msgs for tp, msgs in batch.items() if tp.partition in self.epochs and msgs}
        decoded: list[tuple[ConsumerRecord[bytes, bytes], ActivityRecord]] = []
        poison: list[tuple[ConsumerRecord[bytes, bytes], str]] = []
        for msgs in batch.values():
            for msg in msgs:
                try:
                    decoded.append((msg, decode_record(msg.key, msg.value)))
                except RecordError as exc:
                    poison.append((msg, str(exc)))
        if poison:
            await self._retry("write to the dead-letter topic", lambda: self._dead_letter(poison))
        self.failpoints.hit("before_commit")
        while True:
            if not batch:
                return
            try:
                versions, states, changes = await self._commit(batch, decoded, now)
                break
            except Fenced as fenced:
                FENCED.inc()
                log.warning("%s; this batch's records of them are dropped", fenced)
                await self._retry("read stored offsets", lambda f=fenced: self._after_fence(f.partitions))  # type: ignore[misc]
                batch = {tp: msgs for tp, msgs in batch.items() if tp.partition not in fenced.partitions}
                decoded = [(m, r) for m, r in decoded if m.partition not in fenced.partitions]
            except TRANSIENT as exc:
                if self.stopping.is_set():
                    return  # not committed: it is read again after the restart
                log.warning("batch not committed, retrying: %r", exc)
                await asyncio.sleep(1)
                batch = {tp: msgs for tp, msgs in batch.items() if tp.partition in self.epochs}
                decoded = [(m, r) for m, r in decoded if m.partition in self.epochs]
        RECORDS.labels("dead_lettered").inc(len(poison))
        self.failpoints.hit("after_commit")
        await self._publish_views(states, versions, now)
        if changes:
            self.relay_wake.set()

    async def _commit(
        self,
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
        decoded: list[tuple[ConsumerRecord[bytes, bytes], ActivityRecord]],
        now: datetime,
    ) -> tuple[dict[str, int], dict[str, MemberState], int]:
        moves = [
            repo.OffsetMove(tp.partition, self.epochs[tp.partition], msgs[0].offset, msgs[-1].offset + 1)
            for tp, msgs in batch.items()
        ]
        first: dict[tuple[str, str], tuple[ConsumerRecord[bytes, bytes], ActivityRecord]] = {}
        for msg, record in decoded:  # a repeated member/event id counts once, first one wins
            first.setdefault((record.subject, record.event.event_id), (msg, record))
        unique = [record for _, record in first.values()]
        rows = [
            (subject, event_id, (msg.value or b"").decode(), msg.partition, msg.offset)
            for (subject, event_id), (msg, _) in first.items()
        ]
        async with self.engine.begin() as conn:
            refused = await repo.advance_offsets(conn, self.settings.group_id, self.settings.topic_activity, moves)
            if refused:
                raise Fenced(refused)
            new = await repo.record_activity(conn, rows, now)
            fresh = [r for r in unique if (r.subject, r.event.event_id) in new]
            members = sorted({r.subject for r in fresh})
            states = await repo.lock_states(conn, members)
            changes = apply_batch(states, fresh, now, self.rules)
            versions = await repo.save_states(conn, [states[m] for m in members], self.rules, now)
            await repo.record_level_changes(conn, changes, self.rules, now)
        RECORDS.labels("applied").inc(len(fresh))
        RECORDS.labels("repeated").inc(len(decoded) - len(fresh))
        LEVEL_CHANGES.labels("activity").inc(len(changes))
        return versions, states, len(changes)

    async def _after_fence(self, partitions: set[int]) -> None:
        """Resume a partition from its stored offset if it is still ours; otherwise stop reading it."""
        async with self.engine.connect() as conn:
            stored = await repo.stored_offsets(
                conn, self.settings.group_id, self.settings.topic_activity, sorted(partitions)
            )
        for claim in stored:
            tp = TopicPartition(self.settings.topic_activity, claim.partition)
            if self.epochs.get(claim.partition) == claim.epoch and claim.next_offset is not None:
                log.warning("partition %d resumes at its stored offset %d", claim.partition, claim.next_offset)
                self.consumer.seek(tp, claim.next_offset)
            else:
                log.warning("partition %d belongs to another consumer now; not reading it", claim.partition)
                self.epochs.pop(claim.partition, None)
                self.consumer.pause(tp)

    async def _dead_letter(self, poison: list[tuple[ConsumerRecord[bytes, bytes], str]]) -> None:
        sent = []
        for msg, reason in poison:
            log.error("dead-lettering %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, reason)
            headers = [
                ("source_topic", msg.topic.encode()),
                ("source_partition", str(msg.partition).encode()),
                ("source_offset", str(msg.offset).encode()),
                ("reason", reason[:1000].encode()),
            ]
            sent.append(await self.producer.send(self.settings.topic_dlq, msg.value, key=msg.key, headers=headers))
        await asyncio.gather(*sent)

    async def _publish_views(self, states: dict[str, MemberState], versions: dict[str, int], now: datetime) -> None:
        try:
            await self.cache.put([view_of(states[m], self.rules, v, now) for m, v in versions.items()])
            async with self.engine.begin() as conn:
                await repo.mark_synced(conn, versions)
        except TRANSIENT as exc:
            log.warning("member views not written to Redis, the repair loop will: %r", exc)

    # -- background work ----------------------------------------------------------------

    async def relay_once(self) -> int:
        """Publish the oldest unsent level changes; returns how many (0 when idle or locked out)."""
        async with self.engine.begin() as conn:
            if not await repo.try_lock_relay(conn):
                return 0
            rows = await repo.unsent_level_changes(conn, 500)
            if not rows:
                return 0
            topic = self.settings.topic_level_changes
            sent = [
                await self.producer.send(topic, payload.encode(), key=member.encode()) for _, member, payload in rows
            ]
            await asyncio.gather(*sent)
            self.failpoints.hit("relay_after_send")
            await repo.mark_sent(conn, [row_id for row_id, _, _ in rows], utcnow())
        PUBLISHED.inc(len(rows))
        return len(rows)

    async def tenure_once(self) -> int:
        """Promote members whose tenure alone now meets a higher passive level."""
        now = utcnow()
        async with self.engine.begin() as conn:
            states = await repo.lock_tenure_due(conn, now, 500)
            changes = [c for s in states.values() if (c := reevaluate_tenure(s, now, self.rules))]
            versions = await repo.save_states(conn, list(states.values()), self.rules, now)
            await repo.record_level_changes(conn, changes, self.rules, now)
        LEVEL_CHANGES.labels("tenure").inc(len(changes))
        if changes:
            self.relay_wake.set()
        await self._publish_views(states, versions, now)
        return len(states) if len(states) == 500 else 0

    async def repair_once(self) -> int:
        """Write to Redis every member it may lack; after a flush, every member."""
        if not await self.redis.exists(self.cache.built_key):
            async with self.engine.begin() as conn:
                await repo.mark_all_unsynced(conn)
            await self.redis.set(self.cache.built_key, utcnow().isoformat())
        async with self.engine.connect() as conn:
            rows = await repo.unsynced_views(conn, 1000)
        await self.cache.put([view_of(state, self.rules, version, at) for state, version, at in rows])
        async with self.engine.begin() as conn:
            await repo.mark_synced(conn, {state.member_id: version for state, version, _ in rows})
        return len(rows) if len(rows) == 1000 else 0


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        for tp in revoked:
            self.scorer.epochs.pop(tp.partition, None)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if not assigned:
            return
        s = self.scorer

        async def claim() -> list[repo.Claim]:
            async with s.engine.begin() as conn:
                return await repo.claim_partitions(
                    conn,
                    s.settings.group_id,
                    s.settings.topic_activity,
                    sorted(tp.partition for tp in assigned),
                    s.settings.instance,
                )

        s.consumer.resume(*assigned)  # a partition paused after a refused write is ours again
        for c in await s._retry("claim partitions", claim):
            tp = TopicPartition(s.settings.topic_activity, c.partition)
            s.epochs[c.partition] = c.epoch
            if c.next_offset is None:
                await s.consumer.seek_to_beginning(tp)
            else:
                s.consumer.seek(tp, c.next_offset)
        log.info("assigned partitions %s", sorted(tp.partition for tp in assigned))


async def main(settings: ScorerSettings | None = None) -> None:
    settings = settings or ScorerSettings()
    scorer = Scorer(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, scorer.stop)
    await scorer.run()
