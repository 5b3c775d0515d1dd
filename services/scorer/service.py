"""The scorer: consumes activity, applies it with exactly-once effect, publishes level changes.

Exactly-once comes from PostgreSQL, not Kafka: one transaction per batch stores the applied
records (a repeated member/event id is skipped), the members' new states, their level
changes (the outbox) and the partitions' next offsets, guarded by the epoch this consumer
claimed on assignment. On assignment the consumer seeks to the stored offsets, so a crash,
restart or rebalance replays exactly what was not committed.

Nothing a record carries can stop a partition. A failure is either transient (a store or the
broker is away or busy: retried with backoff, and /readyz says so when progress stops) or
the record's own doing (it cannot be decoded, or the store refuses it): that record is
isolated by halving the batch, dead-lettered with its reason, and the rest commits.

After the commit, Redis gets the members' absolute values (never increments, so a replay
cannot double them) and the relay publishes the outbox. Both are repaired from PostgreSQL
if they fail: the relay resends unsent rows, the repair loop rewrites unsynced members.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError, NoOffsetForPartitionError, OffsetOutOfRangeError
from prometheus_client import Counter, Gauge, Histogram
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine
from tenacity import AsyncRetrying, retry_if_exception, wait_exponential_jitter

from services.common import db
from services.common.kafka import client_options
from services.common.kafka import producer as make_producer
from services.common.members import MemberCache, view_of
from services.scorer import http as scorer_http
from services.scorer import repository as repo
from services.scorer.failpoints import Failpoints
from services.scorer.records import decode_record
from services.scorer.settings import ScorerSettings
from shared.events import ActivityRecord
from shared.scoring import MemberState, apply_batch, facts_needed, reevaluate_tenure

log = logging.getLogger("scorer")

RECORDS = Counter("scorer_records_total", "Activity records consumed", ["outcome"])
DEAD_LETTERS = Counter(
    "scorer_dead_letters_total", "Records sent to the dead-letter topic", ["reason"]
)  # invalid: not a valid event; refused: the store refused it
LEVEL_CHANGES = Counter("scorer_level_changes_total", "Level changes recorded", ["cause"])
FENCED = Counter("scorer_fenced_batches_total", "Batches whose offset write was refused")
PUBLISHED = Counter("scorer_level_changes_published_total", "Level changes published to Kafka")
OUT_OF_RANGE = Counter(
    "scorer_offsets_out_of_range_total",
    "Stored offsets the broker no longer holds (retention, a recreated topic); the partition resumed at its log start",
    ["partition", "where"],
)
WORKER_FAILURES = Counter("scorer_worker_failures_total", "Failed rounds of a background worker", ["worker"])
BATCH_SECONDS = Histogram("scorer_batch_duration_seconds", "From a fetched batch to its commit")
LAG = Gauge("scorer_consumer_lag", "Records of the partition not yet committed", ["partition"])
OUTBOX = Gauge("scorer_outbox_backlog", "Level changes not yet published to Kafka")
OUTBOX_AGE = Gauge("scorer_outbox_oldest_age_seconds", "Age of the oldest level change not yet published")
UNSYNCED = Gauge("scorer_redis_unsynced_members", "Members whose latest view Redis may lack")

# SQLSTATE classes a record itself causes: data exceptions (a character or number the store
# cannot hold), integrity violations, program limits (a value too large to index). Any other
# database failure (connection, serialization, deadlock, permissions) is the system's, and is
# retried rather than blamed on a record.
RECORD_SQLSTATES = {"22", "23", "54"}
# The dead-letter copy of a record stays under the producer's 1 MiB request limit.
DLQ_MAX_VALUE = 900 * 1024
DLQ_MAX_KEY = 1024
RELAY_LEASE_S = 30.0
REBUILD_PAGE = 1000

Item = tuple[ConsumerRecord[bytes, bytes], ActivityRecord | None]  # None: dead-lettered, only its offset moves


def transient(exc: BaseException) -> bool:
    """Worth waiting out: a store or the broker is away, busy or misconfigured, not a record at fault."""
    if isinstance(exc, DBAPIError):
        state = str(getattr(exc.orig, "sqlstate", None) or "")
        return exc.connection_invalidated or state[:2] not in RECORD_SQLSTATES
    return isinstance(exc, OSError | TimeoutError | PoolTimeout | KafkaError | RedisError)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Fenced(Exception):
    """The stored offsets of these partitions refused this consumer's write."""

    def __init__(self, partitions: set[int]) -> None:
        super().__init__(f"offset write refused for partitions {sorted(partitions)}")
        self.partitions = partitions


@dataclass
class Worker:
    """A background loop and how its last rounds went, for /readyz."""

    task: asyncio.Task[None] | None = None
    failing_since: float | None = None  # a permanent failure, and every round since failed
    last_error: str = ""


class Scorer:
    def __init__(self, settings: ScorerSettings) -> None:
        self.settings = settings
        self.rules = settings.rules
        self.engine: AsyncEngine = db.engine(
            settings.database_url,
            repo.SESSION_PREFIX + settings.instance,
            idle_in_transaction_ms=int(settings.idle_in_transaction_timeout.total_seconds() * 1000),
        )
        self.failpoints = Failpoints(settings.failpoints)
        redis_timeout = settings.redis_timeout.total_seconds()
        self.redis = Redis.from_url(
            settings.redis_url,
            client_name=f"scorer:{settings.instance}",
            # A paused Redis accepts connections and never answers: every call gives up in time,
            # and once (redis-py would otherwise retry a timed-out command three times).
            socket_timeout=redis_timeout,
            socket_connect_timeout=redis_timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self.cache = MemberCache(self.redis, settings.redis_prefix)
        self.producer = make_producer(settings, f"scorer-{settings.instance}")
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            **client_options(settings),
            group_id=settings.group_id,
            client_id=f"scorer-{settings.instance}",
            enable_auto_commit=False,  # offsets live in PostgreSQL, with the totals
            # An offset the broker no longer holds is ours to handle (see _out_of_range), not
            # silently reset: a silent reset fences every batch against the stored offset.
            auto_offset_reset="none",
            session_timeout_ms=int(settings.session_timeout.total_seconds() * 1000),
            heartbeat_interval_ms=int(settings.session_timeout.total_seconds() * 1000) // 3,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self.epochs: dict[int, int] = {}  # partition -> epoch claimed on assignment
        self.committed: dict[int, int] = {}  # partition -> next offset stored in PostgreSQL
        self.progress_at = time.monotonic()  # the last commit, or the last time nothing waited
        self.redis_paused_until = 0.0
        self.workers: dict[str, Worker] = {}
        self.stopping = asyncio.Event()
        self.relay_wake = asyncio.Event()

    # -- running ----------------------------------------------------------------------

    async def run(self) -> None:
        await self._retry("start the producer", self.producer.start)
        self.consumer.subscribe([self.settings.topic_activity], listener=_Rebalance(self))
        await self._retry("start the consumer", self.consumer.start)
        log.info("scorer %s consuming %s", self.settings.instance, self.settings.topic_activity)
        http = scorer_http.server(self, self.settings.host, self.settings.port)
        serving = asyncio.create_task(http.serve())
        s = self.settings
        self._start_worker("relay", s.relay_interval, self.relay_once, self.relay_wake)
        self._start_worker("tenure", s.tenure_interval, self.tenure_once)
        self._start_worker("repair", s.repair_interval, self.repair_once)
        self._start_worker("health", s.health_interval, self.measure)
        try:
            while not self.stopping.is_set():
                try:
                    batch = await self.consumer.getmany(
                        timeout_ms=int(s.fetch_wait.total_seconds() * 1000), max_records=s.batch_max_records
                    )
                except NoOffsetForPartitionError:
                    # The fetcher asked Kafka for a committed offset (there never is one) before the
                    # rebalance listener's seek to the offset stored in PostgreSQL; the seek follows.
                    await asyncio.sleep(0.1)
                    continue
                except OffsetOutOfRangeError as exc:
                    await self._retry("resume partitions out of range", partial(self._out_of_range, exc.args[0]))
                    continue
                if batch:
                    await self.handle(batch)
                elif not self.lag():
                    self.progress_at = time.monotonic()
        except Exception as exc:
            if not (self.stopping.is_set() and transient(exc)):
                raise
            # stopping while a dependency is away: what was not committed is read again later
        finally:
            http.should_exit = True
            tasks = [w.task for w in self.workers.values() if w.task]
            for task in tasks:
                task.cancel()
            await asyncio.gather(serving, *tasks, return_exceptions=True)
            await self.consumer.stop()
            with contextlib.suppress(Exception):
                await self.relay_once()
                async with self.engine.begin() as conn:
                    await repo.release_relay_lease(conn, s.instance)
            await self.producer.stop()
            await self.redis.aclose()
            await self.engine.dispose()
            log.info("scorer %s stopped", s.instance)

    def stop(self) -> None:
        self.stopping.set()

    def _start_worker(
        self, name: str, interval: Any, work: Callable[[], Awaitable[int]], wake: asyncio.Event | None = None
    ) -> None:
        worker = self.workers[name] = Worker()
        worker.task = asyncio.create_task(self._every(worker, name, interval, work, wake), name=name)

    async def _every(
        self, worker: Worker, name: str, interval: Any, work: Callable[[], Awaitable[int]], wake: asyncio.Event | None
    ) -> None:
        """Run `work` again and again; an error never ends the loop (/readyz tells when it keeps failing)."""
        while not self.stopping.is_set():
            try:
                more = await work()
                worker.failing_since, worker.last_error = None, ""
            except Exception as exc:
                WORKER_FAILURES.labels(name).inc()
                worker.last_error = repr(exc)[:300]
                if transient(exc):
                    log.warning("%s failed, will retry: %r", name, exc)
                else:
                    log.exception("%s failed, will retry", name)
                    worker.failing_since = worker.failing_since or time.monotonic()
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
        """`step` until it succeeds; transient failures wait with backoff and jitter, others raise."""

        def warn(state: Any) -> None:
            log.warning("could not %s, retrying in %.1fs: %r", what, state.upcoming_sleep, state.outcome.exception())

        retrying = AsyncRetrying(
            retry=retry_if_exception(transient),
            wait=wait_exponential_jitter(multiplier=0.2, max=self.settings.retry_max.total_seconds()),
            stop=lambda _: self.stopping.is_set(),
            before_sleep=warn,
            reraise=True,
        )

        async def attempt() -> Any:  # tenacity takes a lambda for a plain function: await it here
            return await step()

        return await retrying(attempt)

    # -- health -------------------------------------------------------------------------

    def lag(self) -> dict[int, int]:
        """Records each owned partition holds beyond its stored offset (as of the last fetch)."""
        out = {}
        for partition, committed in self.committed.items():
            high = self.consumer.highwater(TopicPartition(self.settings.topic_activity, partition))
            if partition in self.epochs and high is not None:
                out[partition] = max(0, high - committed)
        return out

    def problems(self) -> dict[str, str]:
        """What keeps this scorer from doing its work, by part (empty: all is well)."""
        now = time.monotonic()
        stall = self.settings.stall_timeout.total_seconds()
        waiting = sum(self.lag().values())
        out = {}
        if waiting and now - self.progress_at > stall:
            out["consumer"] = (
                f"wedged: {waiting} records wait and none was committed for {now - self.progress_at:.0f} s"
            )
        for name, worker in self.workers.items():
            if worker.task is not None and worker.task.done() and not self.stopping.is_set():
                out[name] = "dead: the worker has ended"
            elif worker.failing_since is not None and now - worker.failing_since > stall:
                out[name] = f"failing for {now - worker.failing_since:.0f} s: {worker.last_error}"
        return out

    async def measure(self) -> int:
        """Refresh the lag, outbox and Redis backlog gauges."""
        LAG.clear()  # partitions this scorer no longer owns are not its to report
        for partition, waiting in self.lag().items():
            LAG.labels(str(partition)).set(waiting)
        async with self.engine.connect() as conn:
            backlog = await repo.backlog(conn)
        OUTBOX.set(backlog.unsent_level_changes)
        oldest = backlog.oldest_unsent_at
        OUTBOX_AGE.set((utcnow() - oldest).total_seconds() if oldest else 0)
        UNSYNCED.set(backlog.unsynced_members)
        return 0

    # -- a batch of activity -----------------------------------------------------------

    async def handle(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        started = time.monotonic()
        now = utcnow()
        items: list[Item] = []
        invalid: list[tuple[ConsumerRecord[bytes, bytes], str]] = []
        for tp, msgs in batch.items():
            if tp.partition not in self.epochs:
                continue
            for msg in msgs:
                try:
                    items.append((msg, decode_record(msg.key, msg.value)))
                except Exception as exc:  # RecordError, or a validation bug: either way not this partition's end
                    items.append((msg, None))
                    invalid.append((msg, str(exc) or repr(exc)))
        if not items:
            return  # partitions not (or no longer) ours: read again by their owner
        if invalid:
            await self._retry("write to the dead-letter topic", lambda: self._dead_letter(invalid, "invalid"))
        self.failpoints.hit("before_commit")  # only with a batch in hand
        await self._apply(items, now)
        BATCH_SECONDS.observe(time.monotonic() - started)

    async def _apply(self, items: list[Item], now: datetime) -> None:
        """Commit the items in order. When the store refuses a part, it is halved until the one
        record at fault is found; that record is dead-lettered and its offset moves on."""
        stack = [items]
        while stack:
            part = stack.pop()  # _commit leaves out partitions revoked meanwhile, on every try
            if not part:
                continue
            try:
                states, versions, changes = await self._retry(
                    f"commit {_extent(part)}", partial(self._commit, part, now)
                )
            except Fenced as fenced:
                FENCED.inc()
                log.warning("%s; this batch's records of them are dropped", fenced)
                await self._retry("read stored offsets", partial(self._after_fence, fenced.partitions))
                stack.append([item for item in part if item[0].partition not in fenced.partitions])
                continue
            except Exception as exc:
                if transient(exc):
                    raise  # stopping: not committed, read again after the restart
                records = [i for i, (_, record) in enumerate(part) if record is not None]
                if not records:
                    raise  # only offsets to move, and they fail: a bug, not a record
                if len(records) > 1:
                    middle = records[len(records) // 2]
                    stack += [part[middle:], part[:middle]]  # the earlier half commits first
                    continue
                msg = part[records[0]][0]
                reason = f"refused by the store: {exc.__class__.__name__}: {getattr(exc, 'orig', None) or exc}"
                await self._retry(
                    "write to the dead-letter topic", partial(self._dead_letter, [(msg, reason)], "refused")
                )
                stack.append([(m, None if m is msg else record) for m, record in part])
                continue
            self.failpoints.hit("after_commit")
            await self._publish_views(states, versions, now)
            if changes:
                self.relay_wake.set()

    async def _commit(self, part: list[Item], now: datetime) -> tuple[dict[str, MemberState], dict[str, int], int]:
        """One transaction: offsets, new records, states and level changes; returns the states,
        their new versions and how many level changes there were."""
        part = [item for item in part if item[0].partition in self.epochs]  # a revoke may land between tries
        if not part:
            return {}, {}, 0
        moves = [repo.OffsetMove(p, self.epochs[p], first, last + 1) for (_, p), (first, last) in _ranges(part).items()]
        first_seen: dict[tuple[str, str], tuple[ConsumerRecord[bytes, bytes], ActivityRecord]] = {}
        for msg, record in part:  # a repeated member/event id counts once, first one wins
            if record is not None:
                first_seen.setdefault((record.subject, record.event.event_id), (msg, record))
        rows = [
            (subject, event_id, (msg.value or b"").decode(), msg.partition, msg.offset)
            for (subject, event_id), (msg, _) in first_seen.items()
        ]
        async with self.engine.begin() as conn:
            refused = await repo.advance_offsets(conn, self.settings.group_id, self.settings.topic_activity, moves)
            if refused:
                raise Fenced(refused)
            new = await repo.record_activity(conn, rows, now)
            fresh = [record for key, (_, record) in first_seen.items() if key in new]
            members = sorted({r.subject for r in fresh})
            states = await repo.lock_states(conn, members)
            loaded = await repo.load_facts(conn, states, facts_needed(fresh))
            changes = apply_batch(states, fresh, now, self.rules)
            versions = await repo.save_states(conn, [states[m] for m in members], self.rules, now)
            await repo.save_facts(conn, [states[m] for m in members], loaded)
            await repo.record_level_changes(conn, changes, self.rules, now)
        for move in moves:
            self.committed[move.partition] = move.next_offset
        self.progress_at = time.monotonic()
        RECORDS.labels("applied").inc(len(fresh))
        RECORDS.labels("repeated").inc(sum(1 for _, r in part if r is not None) - len(fresh))
        LEVEL_CHANGES.labels("activity").inc(len(changes))
        return states, versions, len(changes)

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
                self.committed[claim.partition] = claim.next_offset
            else:
                log.warning("partition %d belongs to another consumer now; not reading it", claim.partition)
                self.epochs.pop(claim.partition, None)
                self.consumer.pause(tp)

    async def _out_of_range(self, positions: dict[TopicPartition, int]) -> None:
        """A stored offset the broker no longer holds: below the log start (retention deleted
        records before they were scored) or past its end (the topic was recreated or truncated).
        Either way the partition resumes at its log start, which is counted and logged as an
        error; records already applied are skipped there by their event ids."""
        starts = await self.consumer.beginning_offsets(list(positions))
        for tp, offset in positions.items():
            epoch = self.epochs.get(tp.partition)
            if epoch is None:
                continue
            resume = starts[tp]
            where = "below_log_start" if offset < resume else "past_log_end"
            async with self.engine.begin() as conn:
                ours = await repo.reset_offset(conn, self.settings.group_id, tp.topic, tp.partition, epoch, resume)
            if not ours:
                self.epochs.pop(tp.partition, None)
                self.consumer.pause(tp)
                continue
            OUT_OF_RANGE.labels(str(tp.partition), where).inc()
            log.error(
                "%s[%d]: stored offset %d is %s (the broker holds from %d); resuming at %d",
                tp.topic,
                tp.partition,
                offset,
                where.replace("_", " "),
                resume,
                resume,
            )
            self.consumer.seek(tp, resume)
            self.committed[tp.partition] = resume

    async def _dead_letter(self, records: list[tuple[ConsumerRecord[bytes, bytes], str]], kind: str) -> None:
        sent = []
        for msg, reason in records:
            log.error("dead-lettering %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, reason[:300])
            headers = [
                ("source_topic", msg.topic.encode()),
                ("source_partition", str(msg.partition).encode()),
                ("source_offset", str(msg.offset).encode()),
                ("reason", reason[:1000].encode(errors="replace")),
            ]
            key, value = msg.key, msg.value
            # Too large to copy whole: the head goes, and a header keeps the original size.
            if key is not None and len(key) > DLQ_MAX_KEY:
                headers.append(("truncated_key_from", str(len(key)).encode()))
                key = key[:DLQ_MAX_KEY]
            if value is not None and len(value) > DLQ_MAX_VALUE:
                headers.append(("truncated_value_from", str(len(value)).encode()))
                value = value[:DLQ_MAX_VALUE]
            sent.append(await self.producer.send(self.settings.topic_dlq, value, key=key, headers=headers))
        await asyncio.gather(*sent)
        DEAD_LETTERS.labels(kind).inc(len(records))
        RECORDS.labels("dead_lettered").inc(len(records))

    async def _publish_views(self, states: dict[str, MemberState], versions: dict[str, int], now: datetime) -> None:
        """Write the members' views to Redis; after a Redis failure, leave them to the repair
        loop for a while, so a hung Redis costs one timeout now and then, not one per batch."""
        if not versions or time.monotonic() < self.redis_paused_until:
            return
        try:
            await self.cache.put([view_of(states[m], self.rules, v, now) for m, v in versions.items()])
            async with self.engine.begin() as conn:
                await repo.mark_synced(conn, versions)
        except Exception as exc:
            if not transient(exc):
                raise
            if isinstance(exc, RedisError):
                self.redis_paused_until = time.monotonic() + self.settings.redis_pause.total_seconds()
            log.warning("member views not written to Redis, the repair loop will: %r", exc)

    # -- background work ----------------------------------------------------------------

    async def relay_once(self) -> int:
        """Publish the oldest unsent level changes; returns how many (0 when idle or another relay has the lease).

        No transaction is open while sending: the lease says who may send, and a send is
        bounded well within it."""
        async with self.engine.begin() as conn:
            if not await repo.take_relay_lease(conn, self.settings.instance, RELAY_LEASE_S):
                return 0
            rows = await repo.unsent_level_changes(conn, 500)
        if not rows:
            return 0
        topic = self.settings.topic_level_changes
        async with asyncio.timeout(RELAY_LEASE_S / 2):
            sent = [
                await self.producer.send(topic, payload.encode(), key=member.encode()) for _, member, payload in rows
            ]
            await asyncio.gather(*sent)
        self.failpoints.hit("relay_after_send")
        async with self.engine.begin() as conn:
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
        """Bring Redis up to PostgreSQL: after a restore of PostgreSQL, forget every view; after
        a flush (or that), rebuild them all page by page; then write the members it may lack."""
        async with self.engine.begin() as conn:
            # The epoch row stays locked while Redis is asked, so scorers compare in turn.
            if await self.cache.advance_epoch(await repo.next_view_epoch(conn)):
                log.warning("Redis holds views newer than PostgreSQL (was it restored?): rebuilding them all")
                await self.cache.forget_views()
        if not await self.redis.exists(self.cache.built_key):
            return await self._rebuild_page()
        async with self.engine.connect() as conn:
            rows = await repo.unsynced_views(conn, REBUILD_PAGE)
        await self.cache.put([view_of(state, self.rules, version, at) for state, version, at in rows])
        async with self.engine.begin() as conn:
            await repo.mark_synced(conn, {state.member_id: version for state, version, _ in rows})
        return len(rows) if len(rows) == REBUILD_PAGE else 0

    async def _rebuild_page(self) -> int:
        """Write the next page of members (in id order) to Redis; mark Redis built after the last.

        No row is updated: the views carry their versions, so a newer one written meanwhile wins."""
        after = (await self.redis.get(self.cache.rebuild_key) or b"").decode()  # type: ignore[union-attr]
        async with self.engine.connect() as conn:
            rows = await repo.views_after(conn, after, REBUILD_PAGE)
        await self.cache.put([view_of(state, self.rules, version, at) for state, version, at in rows])
        if len(rows) == REBUILD_PAGE:
            await self.redis.set(self.cache.rebuild_key, rows[-1][0].member_id)
            return len(rows)
        await self.redis.set(self.cache.built_key, utcnow().isoformat())
        await self.redis.delete(self.cache.rebuild_key)
        log.info("Redis views rebuilt from PostgreSQL")
        return 0


def _ranges(part: list[Item]) -> dict[tuple[str, int], tuple[int, int]]:
    """The first and last offset of a part's records in each topic partition."""
    ends: dict[tuple[str, int], tuple[int, int]] = {}
    for msg, _ in part:
        first, _ = ends.get((msg.topic, msg.partition), (msg.offset, 0))
        ends[(msg.topic, msg.partition)] = (first, msg.offset)
    return ends


def _extent(part: list[Item]) -> str:
    """Where a part's records are, for the log: topic[partition]@first-last, ..."""
    return ", ".join(f"{topic}[{p}]@{first}-{last}" for (topic, p), (first, last) in _ranges(part).items())


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        for tp in revoked:
            self.scorer.epochs.pop(tp.partition, None)
            self.scorer.committed.pop(tp.partition, None)

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
            s.committed[c.partition] = c.next_offset or 0
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
