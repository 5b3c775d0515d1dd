"""A batch of activity: decoded, applied in one transaction (`services.write.unit_of_work`),
its views written after the commit.

Nothing a record carries can stop a partition. A record that cannot be decoded is
dead-lettered with its reason. When the store refuses a part of a batch, the part is halved
until the one record at fault is found; that record is dead-lettered and the rest commits. A
fault of the scorer's own code, which every record of that member would hit, is isolated the
same way, but its partition stops there (nothing of it after the record is committed, nothing
is dead-lettered), /readyz names it, and it is read again later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta
from functools import partial

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition

from services.common.failures import refused_record, transient
from services.scorer.deadletters import dead_letter
from services.scorer.failpoints import Failpoints
from services.scorer.metrics import BATCH_SECONDS, CODE_FAULTS, FENCED, LEVEL_CHANGES, RECORDS
from services.scorer.partitions import CodeFault, Partitions, Retry
from services.scorer.records import RecordError, decode_record
from services.write.sql.offsets import OffsetMove
from services.write.unit_of_work import Committed, Fenced, Incoming, UnitOfWork
from services.write.views import Views
from shared.events import ActivityRecord

log = logging.getLogger("scorer")

Item = tuple[ConsumerRecord[bytes, bytes], ActivityRecord | None]  # None: dead-lettered, only its offset moves


class Batches:
    def __init__(
        self,
        partitions: Partitions,
        work: UnitOfWork,
        views: Views,
        relayed: asyncio.Event,
        producer: AIOKafkaProducer,
        dead_letters: str,
        code_fault_retry: timedelta,
        retry: Retry,
        failpoints: Failpoints,
    ) -> None:
        self.partitions, self.work, self.views, self.relayed = partitions, work, views, relayed
        self.producer, self.dead_letters, self.code_fault_retry = producer, dead_letters, code_fault_retry
        self.retry, self.failpoints = retry, failpoints
        self.progress_at = time.monotonic()  # the last commit, or the last time nothing waited
        self.publishing: asyncio.Task[None] | None = None  # the last commit's views on their way to Redis
        self.publish_turn = asyncio.Lock()  # the lanes' commits hand their views over one at a time
        self.deleting: set[int] = set()  # written pending rows a commit in flight deletes

    async def decode(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> list[Item]:
        """The batch's records of partitions still ours, decoded; those that cannot be are
        dead-lettered (and kept as items without a record, so their offsets move on). A failure
        of our own decoding code is no record's fault: it stops the partition (a code fault)."""
        items: list[Item] = []
        invalid: list[tuple[ConsumerRecord[bytes, bytes], str]] = []
        for tp, msgs in batch.items():
            if not self.partitions.owned(tp.partition):
                continue  # partitions not (or no longer) ours, or stopped: read again later
            for msg in msgs:
                try:
                    items.append((msg, decode_record(msg.key, msg.value)))
                except RecordError as exc:
                    items.append((msg, None))
                    invalid.append((msg, str(exc)))
                except Exception as exc:  # noqa: BLE001 - a bug of ours: the partition stops here
                    self.code_fault(msg, exc)
                    break
        if invalid:
            await self.retry(
                "write to the dead-letter topic",
                partial(dead_letter, self.producer, self.dead_letters, invalid, "invalid"),
            )
        return items

    async def apply(self, items: list[Item], now: datetime, fetched_at: float) -> None:
        """Commit the items in order. When the store refuses a part, it is halved until the one
        record at fault is found; that record is dead-lettered and its offset moves on."""
        stack = [items]
        while stack:
            part = stack.pop()
            if not part:
                continue
            try:
                done = await self.retry(f"commit {_extent(part)}", partial(self.commit, part, now))
            except Fenced as fenced:
                FENCED.inc()
                log.warning("%s; this batch's records of them are dropped", fenced)
                await self.retry("read stored offsets", partial(self.partitions.after_fence, fenced.partitions))
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
                    self.code_fault(msg, exc)
                    # The part's other partitions (offsets of dead letters) go on, the earliest first.
                    stack = [[item for item in p if item[0].partition != msg.partition] for p in [*stack, part]]
                    continue
                reason = f"refused by the store: {exc.__class__.__name__}: {getattr(exc, 'orig', None) or exc}"
                await self.retry(
                    "write to the dead-letter topic",
                    partial(dead_letter, self.producer, self.dead_letters, [(msg, reason)], "refused"),
                )
                stack.append([(m, None if m is msg else record) for m, record in part])
                continue
            self.failpoints.hit("after_commit")
            await self.after_commit(done)
        BATCH_SECONDS.observe(time.monotonic() - fetched_at)

    async def commit(self, part: list[Item], now: datetime) -> Committed:
        """The part's offsets and records in one transaction, as far as its partitions are still ours."""
        # A revoke may land between tries; a code fault stops a partition between parts.
        part = [item for item in part if self.partitions.owned(item[0].partition)]
        if not part:
            return Committed()
        epochs = self.partitions.epochs
        moves = [OffsetMove(p, epochs[p], first, last + 1) for (_, p), (first, last) in _ranges(part).items()]
        incoming = [
            Incoming(record, (msg.value or b"").decode(), msg.partition, msg.offset)
            for msg, record in part
            if record is not None
        ]
        # Each written pending row is deleted by one transaction in flight: two lanes deleting the
        # same row would wait for each other.
        written = sorted(self.views.written - self.deleting)
        self.deleting.update(written)
        try:
            done = await self.work.commit(moves, incoming, now, written)
        finally:
            self.deleting.difference_update(written)
        self.views.deleted(written)
        for move in moves:
            self.partitions.committed_to(move.partition, move.next_offset)
        self.progress_at = time.monotonic()
        RECORDS.labels("applied").inc(done.applied)
        RECORDS.labels("repeated").inc(len(incoming) - done.applied - done.erased)
        RECORDS.labels("erased").inc(done.erased)
        LEVEL_CHANGES.labels("activity").inc(len(done.changes))
        return done

    async def after_commit(self, done: Committed) -> None:
        """What follows a commit outside its transaction: the relay woken, and the views to
        Redis while the next batch commits. One write at a time, in commit order (the previous
        one is awaited first, and its failure surfaces here); views are versioned, so Redis
        keeps the newest whatever lands first."""
        if done.changes:
            self.relayed.set()
        async with self.publish_turn:
            await self.published()
            self.publishing = asyncio.create_task(self.views.publish(done))

    async def published(self) -> None:
        """Wait for the views on their way to Redis."""
        if self.publishing is not None:
            publishing, self.publishing = self.publishing, None
            await publishing

    def code_fault(self, msg: ConsumerRecord[bytes, bytes], exc: Exception) -> None:
        """Our code failed to score this record: the record is not to blame, and the member's
        next records would fail alike. The partition stops here, loudly, and is read again
        from its stored offset after CL_CODE_FAULT_RETRY (a fixed rules file or a deploy may
        have cured it); records already committed stay committed."""
        retry_in = self.code_fault_retry.total_seconds()
        log.error(
            "code fault scoring %s[%d]@%d; the partition stops, read again in %.0f s",
            msg.topic,
            msg.partition,
            msg.offset,
            retry_in,
            exc_info=exc,
        )
        CODE_FAULTS.labels(str(msg.partition)).inc()
        reason = f"{exc.__class__.__name__}: {exc}"[:300]
        self.partitions.stop(msg.partition, CodeFault(msg.offset, reason, time.monotonic() + retry_in))


def lanes(items: list[Item], count: int) -> dict[int, list[Item]]:
    """A batch's items by commit lane: partition p's in lane p mod `count`, in their order."""
    out: dict[int, list[Item]] = {}
    for item in items:
        out.setdefault(item[0].partition % count, []).append(item)
    return out


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
