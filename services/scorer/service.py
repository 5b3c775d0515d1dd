"""The scorer: consumes activity, applies it with exactly-once effect, publishes level changes.

Exactly-once comes from PostgreSQL, not Kafka: one transaction per batch stores the applied
records (a repeated member/event id is skipped), the members' new figures and facts, their
level changes (the outbox) and the partitions' next offsets, guarded by the epoch this
consumer claimed on assignment (`services.write`).

This module is the consumer loop, as aiokafka's examples read: fetch a batch, decode it,
apply and commit it. What a partition is owned with lives in `partitions` (epochs, stored
offsets, fences, offsets out of range, the rebalance listener); what a batch goes through in
`batch` (the commit, halving a part the store refuses, dead letters, code faults). After each
commit the members' views go to Redis (`services.write.views`); the relay (`outbox`), the
tenure sweep, the Redis repair, the period pruning and the health gauges run as workers
supervised together (`workers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import NoOffsetForPartitionError, OffsetOutOfRangeError
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import db
from services.common.failures import retry, transient
from services.common.kafka import client_options
from services.common.kafka import producer as make_producer
from services.common.members import MemberCache
from services.scorer import http as scorer_http
from services.scorer.batch import Batches, lanes
from services.scorer.failpoints import Failpoints
from services.scorer.metrics import LAG, LEVEL_CHANGES, OUTBOX, OUTBOX_AGE, UNSYNCED
from services.scorer.outbox import Relay
from services.scorer.partitions import Partitions, Rebalance
from services.scorer.settings import ScorerSettings
from services.scorer.workers import Supervisor
from services.write import health
from services.write.offsets import Offsets
from services.write.sql.outbox import SESSION_PREFIX
from services.write.unit_of_work import UnitOfWork
from services.write.views import Views

log = logging.getLogger("scorer")

TENURE_PAGE = 500
PRUNE_PAGE = 1000  # period rows deleted in one transaction


def utcnow() -> datetime:
    return datetime.now(UTC)


class Scorer:
    def __init__(self, settings: ScorerSettings) -> None:
        self.settings = s = settings
        self.engine: AsyncEngine = db.engine(
            s.database_url,
            SESSION_PREFIX + s.instance,
            idle_in_transaction_ms=int(s.idle_in_transaction_timeout.total_seconds() * 1000),
        )
        self.failpoints = Failpoints(s.failpoints)
        redis_timeout = s.redis_timeout.total_seconds()
        self.redis = Redis.from_url(
            s.redis_url,
            client_name=f"scorer:{s.instance}",
            # A paused Redis accepts connections and never answers: every call gives up in time,
            # and once (redis-py would otherwise retry a timed-out command three times).
            socket_timeout=redis_timeout,
            socket_connect_timeout=redis_timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self.producer = make_producer(s, f"scorer-{s.instance}")
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap,
            **client_options(s),
            group_id=s.group_id,
            client_id=f"scorer-{s.instance}",
            enable_auto_commit=False,  # offsets live in PostgreSQL, with the totals
            # An offset the broker no longer holds is ours to handle (`Partitions.out_of_range`),
            # not silently reset: a silent reset fences every batch against the stored offset.
            auto_offset_reset="none",
            session_timeout_ms=int(s.session_timeout.total_seconds() * 1000),
            heartbeat_interval_ms=int(s.session_timeout.total_seconds() * 1000) // 3,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self.work = UnitOfWork(self.engine, s.rules, s.group_id, s.topic_activity)
        self.views = Views(
            self.engine,
            self.redis,
            MemberCache(self.redis, s.redis_prefix),
            self.work.book,
            pause=s.redis_pause,
            grace=s.redis_timeout * 2,
        )
        self.relay = Relay(
            self.engine, self.producer, s.topic_level_changes, s.event_source, s.instance, self.failpoints
        )
        self.stopping = asyncio.Event()
        self.workers = Supervisor(self.stopping, s.stall_timeout)
        offsets = Offsets(self.engine, s.group_id, s.topic_activity)
        self.partitions = Partitions(self.consumer, offsets, s.topic_activity, s.instance, self._retry)
        self.batches = Batches(
            self.partitions,
            self.work,
            self.views,
            self.relay.wake,
            self.producer,
            s.topic_dlq,
            s.code_fault_retry,
            self._retry,
            self.failpoints,
        )

    # -- running ----------------------------------------------------------------------

    async def run(self) -> None:
        s = self.settings
        await self._retry("start the producer", self.producer.start)
        self.consumer.subscribe([s.topic_activity], listener=Rebalance(self.partitions))
        await self._retry("start the consumer", self.consumer.start)
        log.info("scorer %s consuming %s", s.instance, s.topic_activity)
        http = scorer_http.server(self, s.host, s.port)
        serving = asyncio.create_task(http.serve())
        self.workers.start("relay", s.relay_interval, self.relay.once, self.relay.wake)
        self.workers.start("tenure", s.tenure_interval, self.tenure_once)
        self.workers.start("repair", s.repair_interval, self.views.repair_once)
        self.workers.start("health", s.health_interval, self.measure)
        self.workers.start("prune", s.prune_interval, self.prune_once)
        try:
            await self._consume()
        except Exception as exc:
            if not (self.stopping.is_set() and transient(exc)):
                raise
            # stopping while a dependency is away: what was not committed is read again later
        finally:
            http.should_exit = True
            await self.workers.stop()
            await asyncio.gather(serving, return_exceptions=True)
            await self.consumer.stop()
            with contextlib.suppress(Exception):
                await self.relay.once()
                await self.relay.release()
            await self.producer.stop()
            await self.redis.aclose()
            await self.engine.dispose()
            log.info("scorer %s stopped", s.instance)

    async def _consume(self) -> None:
        """Fetch a batch, decode it, apply and commit it, in `CL_COMMIT_LANES` lanes: partition
        p's records commit in lane p mod lanes, one commit in flight per lane, in order; the
        lanes' transactions run at once (they share no partition, so no member). Each fetch asks
        only for the partitions of lanes with no commit in flight: aiokafka hands out one
        partition's buffered records until they run out, so a fetch of every partition would
        mostly bring more for the lane still committing. (A fetch that a fence or rebalance made
        stale is refused by the offset guard.)"""
        s = self.settings
        committing: dict[int, asyncio.Task[None]] = {}  # each lane's commit in flight

        async def settled(lanes: list[int]) -> None:
            """Wait for these lanes' commits (a failure surfaces here)."""
            for lane in lanes:
                if task := committing.pop(lane, None):
                    await task

        try:
            while not self.stopping.is_set():
                self.partitions.read_stopped_again()
                await settled([lane for lane, task in committing.items() if task.done()])
                free = [tp for tp in self.consumer.assignment() if tp.partition % s.commit_lanes not in committing]
                if committing and not free:
                    await asyncio.wait(committing.values(), return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    batch = await self._fetch(free, list(committing.values()))
                except NoOffsetForPartitionError:
                    # The fetcher asked Kafka for a committed offset (there never is one) before the
                    # rebalance listener's seek to the offset stored in PostgreSQL; the seek follows.
                    await asyncio.sleep(0.1)
                    continue
                except OffsetOutOfRangeError as exc:
                    await settled(list(committing))
                    await self._retry(
                        "resume partitions out of range", partial(self.partitions.out_of_range, exc.args[0])
                    )
                    continue
                if batch:
                    items = await self.batches.decode(batch)
                    for lane, part in lanes(items, s.commit_lanes).items():
                        await settled([lane])  # none in flight: its partitions were not fetched otherwise
                        self.failpoints.hit("before_commit")  # only with a batch in hand
                        committing[lane] = asyncio.create_task(self.batches.apply(part, utcnow(), time.monotonic()))
                elif not committing and not self.partitions.lag():
                    self.batches.progress_at = time.monotonic()
            await settled(list(committing))
            await self.batches.published()
        finally:
            if committing:
                await asyncio.gather(*committing.values(), return_exceptions=True)
            if self.batches.publishing:
                await asyncio.gather(self.batches.publishing, return_exceptions=True)

    async def _fetch(
        self, partitions: list[TopicPartition], committing: list[asyncio.Task[None]]
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """The next records of these partitions (all assigned ones when none is given). While
        commits are in flight, waiting for records gives up as soon as one of them ends, so
        its lane's partitions are asked for next."""
        fetching = self.consumer.getmany(
            *partitions,
            timeout_ms=int(self.settings.fetch_wait.total_seconds() * 1000),
            max_records=self.settings.batch_max_records,
        )
        if not committing:
            return await fetching
        fetch = asyncio.ensure_future(fetching)
        await asyncio.wait([fetch, *committing], return_when=asyncio.FIRST_COMPLETED)
        if not fetch.done():  # still waiting, so nothing was taken from the buffer
            fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetch
            return {}
        return fetch.result()

    def stop(self) -> None:
        self.stopping.set()

    async def _retry(self, what: str, step: Callable[[], Awaitable[Any]]) -> Any:
        return await retry(what, step, self.stopping, self.settings.retry_max)

    # -- health (`http.Health`) ---------------------------------------------------------

    async def ping_postgres(self) -> None:
        await health.ping(self.engine)

    async def ping_kafka(self) -> None:
        await self.consumer.topics()

    async def ping_redis(self) -> None:
        await self.redis.ping()

    def parts(self) -> list[str]:
        """What /readyz reports on besides the stores: the consumer and each worker."""
        return ["consumer", *self.workers.workers]

    def problems(self) -> dict[str, str]:
        """What keeps this scorer from doing its work, by part (empty: all is well)."""
        now = time.monotonic()
        waiting = sum(self.partitions.lag().values())
        out = {}
        progress_at = self.batches.progress_at
        if waiting and now - progress_at > self.settings.stall_timeout.total_seconds():
            out["consumer"] = f"wedged: {waiting} records wait and none was committed for {now - progress_at:.0f} s"
        return out | self.partitions.problems() | self.workers.problems()

    async def level_changes_late(self) -> str | None:
        """Why level changes are not reaching Kafka, or None while the oldest one waiting is
        younger than CL_OUTBOX_MAX_AGE. Any relay failure that lasts (a deleted topic, a denied
        authorization, a send that always times out, a permission PostgreSQL refuses) ages the
        outbox, whether or not the failure looks transient."""
        age = await health.oldest_unsent_age(self.engine)
        OUTBOX_AGE.set(age or 0)
        bound = self.settings.outbox_max_age.total_seconds()
        if age is None or age <= bound:
            return None
        relay = self.workers.workers.get("relay")
        error = (relay and relay.last_error) or "no relay error here (another scorer may hold the relay lease)"
        return f"oldest unsent level change is {age:.0f} s old (bound {bound:g} s): {error}"

    # -- workers ------------------------------------------------------------------------

    async def measure(self) -> int:
        """Refresh the lag, outbox and Redis backlog gauges."""
        LAG.clear()  # partitions this scorer no longer owns are not its to report
        for partition, waiting in self.partitions.lag().items():
            LAG.labels(str(partition)).set(waiting)
        backlog = await health.backlog(self.engine)
        OUTBOX.set(backlog.unsent_level_changes)
        OUTBOX_AGE.set(backlog.oldest_unsent_age or 0)
        UNSYNCED.set(backlog.unsynced_members)
        return 0

    async def tenure_once(self) -> int:
        """Promote members whose tenure alone now meets a higher passive level; end pins whose time is up."""
        done = await self.work.sweep_tenure(utcnow(), TENURE_PAGE, list(self.views.written))
        await self.batches.after_commit(done)
        for change in done.changes:  # tenure, or override when a pin ended
            LEVEL_CHANGES.labels(change.cause_kind).inc()
        return len(done.states) if len(done.states) == TENURE_PAGE else 0

    async def prune_once(self) -> int:
        """Delete a batch of the period points past their retention (the periods' boards in
        Redis have expired long before)."""
        oldest = self.settings.oldest_kept(utcnow().date())
        pruned = await self.work.prune_periods(oldest, PRUNE_PAGE)
        if pruned:
            log.info("pruned %d period points older than %s", pruned, ", ".join(oldest.values()))
        return pruned if pruned == PRUNE_PAGE else 0


async def main(settings: ScorerSettings | None = None) -> None:
    settings = settings or ScorerSettings()
    scorer = Scorer(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, scorer.stop)
    await scorer.run()
