"""The scorer: consumes activity, applies it with exactly-once effect, publishes level changes.

Exactly-once comes from PostgreSQL, not Kafka: one transaction per batch (`unit_of_work`)
stores the applied records (a repeated member/event id is skipped), the members' new figures
and facts, their level changes (the outbox) and the partitions' next offsets, guarded by the
epoch this consumer claimed on assignment. On assignment the consumer seeks to the stored
offsets, so a crash, restart or rebalance replays exactly what was not committed.

Nothing a record carries can stop a partition. A failure is either transient (a store or the
broker is away or busy: retried with backoff, and /readyz says so when progress stops),
the record's own doing (it cannot be decoded, or the store refuses it): that record is
isolated by halving the batch, dead-lettered with its reason, and the rest commits; or a
fault of the scorer's own code, which every record of that member would hit: the record is
isolated the same way, but its partition stops there (nothing of it after the record is
committed, nothing is dead-lettered), /readyz names it, and it is read again later.

This module is the consumer loop. After each commit the members' views go to Redis
(`views`); the relay (`outbox`), the tenure sweep, the Redis repair and the health gauges
run as workers supervised together (`workers`).
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
from aiokafka.errors import NoOffsetForPartitionError, OffsetOutOfRangeError
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import db
from services.common.kafka import client_options
from services.common.kafka import producer as make_producer
from services.common.members import MemberCache
from services.scorer import http as scorer_http
from services.scorer import repository as repo
from services.scorer.deadletters import dead_letter
from services.scorer.failpoints import Failpoints
from services.scorer.failures import refused_record, retry, transient
from services.scorer.metrics import (
    BATCH_SECONDS,
    CODE_FAULTS,
    FENCED,
    LAG,
    LEVEL_CHANGES,
    OUT_OF_RANGE,
    OUTBOX,
    OUTBOX_AGE,
    RECORDS,
    UNSYNCED,
)
from services.scorer.outbox import Relay
from services.scorer.records import decode_record
from services.scorer.settings import ScorerSettings
from services.scorer.unit_of_work import Committed, Fenced, Incoming, UnitOfWork
from services.scorer.views import Views
from services.scorer.workers import Supervisor
from shared.events import ActivityRecord
from shared.scoring import oldest_kept

log = logging.getLogger("scorer")

TENURE_PAGE = 500
PRUNE_PAGE = 1000  # period rows deleted in one transaction

Item = tuple[ConsumerRecord[bytes, bytes], ActivityRecord | None]  # None: dead-lettered, only its offset moves


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class CodeFault:
    """A partition stopped at a record that our own code failed to score."""

    offset: int
    reason: str
    retry_at: float  # monotonic: when the partition is read again from its stored offset
    stopped: bool = True  # False once it is read again, until a commit passes the offset


class Scorer:
    def __init__(self, settings: ScorerSettings) -> None:
        self.settings = s = settings
        self.engine: AsyncEngine = db.engine(
            s.database_url,
            repo.SESSION_PREFIX + s.instance,
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
            # An offset the broker no longer holds is ours to handle (see _out_of_range), not
            # silently reset: a silent reset fences every batch against the stored offset.
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
        self.epochs: dict[int, int] = {}  # partition -> epoch claimed on assignment
        self.committed: dict[int, int] = {}  # partition -> next offset stored in PostgreSQL
        self.faults: dict[int, CodeFault] = {}  # partition -> the code fault that stopped it
        self.progress_at = time.monotonic()  # the last commit, or the last time nothing waited

    # -- running ----------------------------------------------------------------------

    async def run(self) -> None:
        await self._retry("start the producer", self.producer.start)
        self.consumer.subscribe([self.settings.topic_activity], listener=_Rebalance(self))
        await self._retry("start the consumer", self.consumer.start)
        log.info("scorer %s consuming %s", self.settings.instance, self.settings.topic_activity)
        http = scorer_http.server(self, self.settings.host, self.settings.port)
        serving = asyncio.create_task(http.serve())
        s = self.settings
        self.workers.start("relay", s.relay_interval, self.relay.once, self.relay.wake)
        self.workers.start("tenure", s.tenure_interval, self.tenure_once)
        self.workers.start("repair", s.repair_interval, self.views.repair_once)
        self.workers.start("health", s.health_interval, self.measure)
        self.workers.start("prune", s.prune_interval, self.prune_once)
        # A batch commits while the next is fetched and decoded: one commit in flight at a time,
        # in order. (A fetch that a fence or rebalance made stale is refused by the offset guard.)
        committing: asyncio.Task[None] | None = None
        try:
            while not self.stopping.is_set():
                self._read_stopped_again()
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
                    if committing:
                        await committing
                        committing = None
                    await self._retry("resume partitions out of range", partial(self._out_of_range, exc.args[0]))
                    continue
                if batch:
                    items = await self.decode(batch)
                    if committing:
                        await committing
                        committing = None
                    if items:
                        self.failpoints.hit("before_commit")  # only with a batch in hand
                        committing = asyncio.create_task(self._apply(items, utcnow(), time.monotonic()))
                elif not committing and not self.lag():
                    self.progress_at = time.monotonic()
            if committing:
                await committing
        except Exception as exc:
            if not (self.stopping.is_set() and transient(exc)):
                raise
            # stopping while a dependency is away: what was not committed is read again later
        finally:
            if committing:
                await asyncio.gather(committing, return_exceptions=True)
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

    def stop(self) -> None:
        self.stopping.set()

    async def _retry(self, what: str, step: Callable[[], Awaitable[Any]]) -> Any:
        return await retry(what, step, self.stopping, self.settings.retry_max)

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
        waiting = sum(self.lag().values())
        out = {}
        if waiting and now - self.progress_at > self.settings.stall_timeout.total_seconds():
            out["consumer"] = (
                f"wedged: {waiting} records wait and none was committed for {now - self.progress_at:.0f} s"
            )
        for partition, fault in sorted(self.faults.items()):
            out[f"partition {partition}"] = f"stopped by a code fault at offset {fault.offset}: {fault.reason}"
        return out | self.workers.problems()

    async def level_changes_late(self) -> str | None:
        """Why level changes are not reaching Kafka, or None while the oldest one waiting is
        younger than CL_OUTBOX_MAX_AGE. Any relay failure that lasts (a deleted topic, a denied
        authorization, a send that always times out, a permission PostgreSQL refuses) ages the
        outbox, whether or not the failure looks transient."""
        async with self.engine.connect() as conn:
            age = await repo.oldest_unsent_age(conn)
        OUTBOX_AGE.set(age or 0)
        bound = self.settings.outbox_max_age.total_seconds()
        if age is None or age <= bound:
            return None
        relay = self.workers.workers.get("relay")
        error = (relay and relay.last_error) or "no relay error here (another scorer may hold the relay lease)"
        return f"oldest unsent level change is {age:.0f} s old (bound {bound:g} s): {error}"

    async def measure(self) -> int:
        """Refresh the lag, outbox and Redis backlog gauges."""
        LAG.clear()  # partitions this scorer no longer owns are not its to report
        for partition, waiting in self.lag().items():
            LAG.labels(str(partition)).set(waiting)
        async with self.engine.connect() as conn:
            backlog = await repo.backlog(conn)
        OUTBOX.set(backlog.unsent_level_changes)
        OUTBOX_AGE.set(backlog.oldest_unsent_age or 0)
        UNSYNCED.set(backlog.unsynced_members)
        return 0

    async def tenure_once(self) -> int:
        """Promote members whose tenure alone now meets a higher passive level; end pins whose time is up."""
        done = await self.work.sweep_tenure(utcnow(), TENURE_PAGE, list(self.views.written))
        await self._after_commit(done)
        for change in done.changes:  # tenure, or override when a pin ended
            LEVEL_CHANGES.labels(change.cause_kind).inc()
        return len(done.states) if len(done.states) == TENURE_PAGE else 0

    async def prune_once(self) -> int:
        """Delete a batch of the period points past their retention (the periods' boards in
        Redis have expired long before)."""
        s = self.settings
        oldest = oldest_kept(utcnow().date(), s.periods_weeks_kept, s.periods_months_kept, s.periods_years_kept)
        async with self.engine.begin() as conn:
            pruned = await repo.prune_periods(conn, oldest, PRUNE_PAGE)
        if pruned:
            log.info("pruned %d period points older than %s", pruned, ", ".join(oldest.values()))
        return pruned if pruned == PRUNE_PAGE else 0

    # -- a batch of activity -----------------------------------------------------------

    async def decode(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> list[Item]:
        """The batch's records of partitions still ours, decoded; those that cannot be are
        dead-lettered (and kept as items without a record, so their offsets move on)."""
        items: list[Item] = []
        invalid: list[tuple[ConsumerRecord[bytes, bytes], str]] = []
        for tp, msgs in batch.items():
            if tp.partition not in self.epochs or self._stopped(tp.partition):
                continue  # partitions not (or no longer) ours, or stopped: read again later
            for msg in msgs:
                try:
                    items.append((msg, decode_record(msg.key, msg.value)))
                except Exception as exc:  # RecordError, or a validation bug: either way not this partition's end
                    items.append((msg, None))
                    invalid.append((msg, str(exc) or repr(exc)))
        if invalid:
            await self._retry(
                "write to the dead-letter topic",
                partial(dead_letter, self.producer, self.settings.topic_dlq, invalid, "invalid"),
            )
        return items

    async def _apply(self, items: list[Item], now: datetime, fetched_at: float) -> None:
        """Commit the items in order. When the store refuses a part, it is halved until the one
        record at fault is found; that record is dead-lettered and its offset moves on."""
        stack = [items]
        while stack:
            part = stack.pop()
            if not part:
                continue
            try:
                done = await self._retry(f"commit {_extent(part)}", partial(self._commit, part, now))
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
                if not refused_record(exc):  # our code failed, not the record: stop, never dead-letter
                    self._code_fault(msg, exc)
                    # The part's other partitions (offsets of dead letters) go on, the earliest first.
                    stack = [[item for item in p if item[0].partition != msg.partition] for p in [*stack, part]]
                    continue
                reason = f"refused by the store: {exc.__class__.__name__}: {getattr(exc, 'orig', None) or exc}"
                await self._retry(
                    "write to the dead-letter topic",
                    partial(dead_letter, self.producer, self.settings.topic_dlq, [(msg, reason)], "refused"),
                )
                stack.append([(m, None if m is msg else record) for m, record in part])
                continue
            self.failpoints.hit("after_commit")
            await self._after_commit(done)
        BATCH_SECONDS.observe(time.monotonic() - fetched_at)

    async def _commit(self, part: list[Item], now: datetime) -> Committed:
        """The part's offsets and records in one transaction, as far as its partitions are still ours."""
        # A revoke may land between tries; a code fault stops a partition between parts.
        part = [item for item in part if item[0].partition in self.epochs and not self._stopped(item[0].partition)]
        if not part:
            return Committed()
        moves = [repo.OffsetMove(p, self.epochs[p], first, last + 1) for (_, p), (first, last) in _ranges(part).items()]
        incoming = [
            Incoming(record, (msg.value or b"").decode(), msg.partition, msg.offset)
            for msg, record in part
            if record is not None
        ]
        done = await self.work.commit(moves, incoming, now, list(self.views.written))
        for move in moves:
            self.committed[move.partition] = move.next_offset
            fault = self.faults.get(move.partition)
            if fault and move.next_offset > fault.offset:
                log.warning("partition %d goes on past offset %d: its code fault is gone", move.partition, fault.offset)
                del self.faults[move.partition]
        self.progress_at = time.monotonic()
        RECORDS.labels("applied").inc(done.applied)
        RECORDS.labels("repeated").inc(len(incoming) - done.applied - done.erased)
        RECORDS.labels("erased").inc(done.erased)
        LEVEL_CHANGES.labels("activity").inc(len(done.changes))
        return done

    async def _after_commit(self, done: Committed) -> None:
        """What follows a commit outside its transaction: views to Redis, the relay woken."""
        await self.views.publish(done)
        if done.changes:
            self.relay.wake.set()

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
                self._stop_reading(tp)

    def _stop_reading(self, tp: TopicPartition) -> None:
        """Fetch no more of a partition (another consumer has claimed it, or a code fault
        stopped it). A rebalance may already have taken it from this consumer (a fence that
        lands after it), and aiokafka refuses to pause a partition it does not hold: then there
        is nothing left to stop."""
        if tp in self.consumer.assignment():
            self.consumer.pause(tp)

    # -- code faults ------------------------------------------------------------------

    def _code_fault(self, msg: ConsumerRecord[bytes, bytes], exc: Exception) -> None:
        """Our code failed to score this record: the record is not to blame, and the member's
        next records would fail alike. The partition stops here, loudly, and is read again
        from its stored offset after CL_CODE_FAULT_RETRY (a fixed rules file or a deploy may
        have cured it); records already committed stay committed."""
        retry_in = self.settings.code_fault_retry.total_seconds()
        log.error(
            "code fault scoring %s[%d]@%d; the partition stops, read again in %.0f s",
            msg.topic,
            msg.partition,
            msg.offset,
            retry_in,
            exc_info=exc,
        )
        CODE_FAULTS.labels(str(msg.partition)).inc()
        if msg.partition not in self.epochs:
            return  # revoked meanwhile: its next owner reads it again
        reason = f"{exc.__class__.__name__}: {exc}"[:300]
        self.faults[msg.partition] = CodeFault(msg.offset, reason, time.monotonic() + retry_in)
        self._stop_reading(TopicPartition(msg.topic, msg.partition))

    def _stopped(self, partition: int) -> bool:
        fault = self.faults.get(partition)
        return fault is not None and fault.stopped

    def _read_stopped_again(self) -> None:
        """Partitions stopped by a code fault whose wait is over: read again from the stored offset."""
        now = time.monotonic()
        for partition, fault in self.faults.items():
            if fault.stopped and now >= fault.retry_at and partition in self.epochs:
                tp = TopicPartition(self.settings.topic_activity, partition)
                log.warning("partition %d stopped by a code fault: reading it again", partition)
                self.consumer.seek(tp, self.committed[partition])
                self.consumer.resume(tp)
                fault.stopped = False

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
                self._stop_reading(tp)
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
            self.scorer.faults.pop(tp.partition, None)  # whoever gets it reads it again

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
