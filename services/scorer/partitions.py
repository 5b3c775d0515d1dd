"""The partitions this scorer owns: the epoch it claimed for each (its writes carry it, so a
consumer that lost a partition is fenced), the offset stored for each, the partitions a code
fault stopped, and what is done when the broker no longer holds a stored offset.

Offsets live in PostgreSQL with the totals (`services.write.offsets`), never in Kafka: on
assignment the consumer claims the partitions and seeks to the stored offsets, so a crash,
restart or rebalance reads again exactly what was not committed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from services.scorer.metrics import OUT_OF_RANGE
from services.write.offsets import Offsets

log = logging.getLogger("scorer")

Retry = Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]]  # what to retry, and how


@dataclass
class CodeFault:
    """A partition stopped at a record that our own code failed to score (`batch`)."""

    offset: int
    reason: str
    retry_at: float  # monotonic: when the partition is read again from its stored offset
    stopped: bool = True  # False once it is read again, until a commit passes the offset


class Partitions:
    def __init__(self, consumer: AIOKafkaConsumer, offsets: Offsets, topic: str, instance: str, retry: Retry) -> None:
        self.consumer, self.offsets, self.topic, self.instance = consumer, offsets, topic, instance
        self.retry = retry
        self.epochs: dict[int, int] = {}  # partition -> epoch claimed on assignment
        self.committed: dict[int, int] = {}  # partition -> next offset stored in PostgreSQL
        self.faults: dict[int, CodeFault] = {}  # partition -> the code fault that stopped it

    def owned(self, partition: int) -> bool:
        """Ours, and not stopped by a code fault: its records are to be applied."""
        fault = self.faults.get(partition)
        return partition in self.epochs and not (fault is not None and fault.stopped)

    def lag(self) -> dict[int, int]:
        """Records each owned partition holds beyond its stored offset (as of the last fetch)."""
        out = {}
        assigned = self.consumer.assignment()  # aiokafka asserts on a partition it does not hold
        for partition, committed in self.committed.items():
            tp = TopicPartition(self.topic, partition)
            if partition in self.epochs and tp in assigned and (high := self.consumer.highwater(tp)) is not None:
                out[partition] = max(0, high - committed)
        return out

    def problems(self) -> dict[str, str]:
        return {
            f"partition {partition}": f"stopped by a code fault at offset {fault.offset}: {fault.reason}"
            for partition, fault in sorted(self.faults.items())
        }

    def committed_to(self, partition: int, next_offset: int) -> None:
        """A commit stored this partition's next offset (one that lands after the partition was
        revoked leaves nothing behind: the next owner reads the stored offset)."""
        if partition not in self.epochs:
            return
        self.committed[partition] = next_offset
        fault = self.faults.get(partition)
        if fault and next_offset > fault.offset:
            log.warning("partition %d goes on past offset %d: its code fault is gone", partition, fault.offset)
            del self.faults[partition]

    # -- rebalances ---------------------------------------------------------------------

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        """Claim the partitions (a new epoch each) and seek to their stored offsets."""
        if not assigned:
            return
        partitions = sorted(tp.partition for tp in assigned)
        self.consumer.resume(*assigned)  # a partition paused after a refused write is ours again
        for claim in await self.retry("claim partitions", lambda: self.offsets.claim(partitions, self.instance)):
            tp = TopicPartition(self.topic, claim.partition)
            self.epochs[claim.partition] = claim.epoch
            self.committed[claim.partition] = claim.next_offset or 0
            if claim.next_offset is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, claim.next_offset)
        log.info("assigned partitions %s", partitions)

    def revoked(self, revoked: set[TopicPartition]) -> None:
        for tp in revoked:
            self.epochs.pop(tp.partition, None)
            self.committed.pop(tp.partition, None)
            self.faults.pop(tp.partition, None)  # whoever gets it reads it again

    # -- fences, stops and offsets out of range -------------------------------------------

    async def after_fence(self, partitions: set[int]) -> None:
        """Resume a partition from its stored offset if it is still ours; otherwise stop reading it."""
        for claim in await self.offsets.stored(sorted(partitions)):
            tp = TopicPartition(self.topic, claim.partition)
            if self.epochs.get(claim.partition) == claim.epoch and claim.next_offset is not None:
                log.warning("partition %d resumes at its stored offset %d", claim.partition, claim.next_offset)
                self.consumer.seek(tp, claim.next_offset)
                self.committed[claim.partition] = claim.next_offset
            else:
                log.warning("partition %d belongs to another consumer now; not reading it", claim.partition)
                self.epochs.pop(claim.partition, None)
                self.stop_reading(tp)

    def stop_reading(self, tp: TopicPartition) -> None:
        """Fetch no more of a partition (another consumer has claimed it, or a code fault
        stopped it). A rebalance may already have taken it from this consumer (a fence that
        lands after it), and aiokafka refuses to pause a partition it does not hold: then there
        is nothing left to stop."""
        if tp in self.consumer.assignment():
            self.consumer.pause(tp)

    def stop(self, partition: int, fault: CodeFault) -> None:
        """A code fault stops this partition until `fault.retry_at`."""
        if partition not in self.epochs:
            return  # revoked meanwhile: its next owner reads it again
        self.faults[partition] = fault
        self.stop_reading(TopicPartition(self.topic, partition))

    def read_stopped_again(self) -> None:
        """Partitions stopped by a code fault whose wait is over: read again from the stored offset."""
        now = time.monotonic()
        for partition, fault in self.faults.items():
            if fault.stopped and now >= fault.retry_at and partition in self.epochs:
                tp = TopicPartition(self.topic, partition)
                log.warning("partition %d stopped by a code fault: reading it again", partition)
                self.consumer.seek(tp, self.committed[partition])
                self.consumer.resume(tp)
                fault.stopped = False

    async def out_of_range(self, positions: dict[TopicPartition, int]) -> None:
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
            if not await self.offsets.reset(tp.partition, epoch, resume):
                self.epochs.pop(tp.partition, None)
                self.stop_reading(tp)
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


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, partitions: Partitions) -> None:
        self.partitions = partitions

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.partitions.revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.partitions.assigned(assigned)
